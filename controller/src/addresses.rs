//! A Gateway's requested addresses (`spec.addresses`): which agentmesh can give it, and
//! how.
//!
//! Two types are supported. `IPAddress` (the default type) values become the
//! `externalIPs` of the gateway's Service, so traffic to them reaches the proxies; an
//! `IPAddress` entry without a value asks for whatever address the Service is assigned
//! (a LoadBalancer's). `Hostname` values become the Service's
//! `external-dns.alpha.kubernetes.io/hostname` annotation, so that ExternalDNS points
//! them at the Service. Any other type (`NamedAddress`, an implementation-specific one)
//! is refused: the Gateway is not accepted (`Accepted: False`, reason
//! `UnsupportedAddress`, as the Gateway API says). A value that cannot be used (not an
//! IP, not a hostname) or a Hostname without a value makes the Gateway not programmed
//! (`AddressNotUsable`, `AddressNotAssigned`).
//!
//! Used by both translation (status) and rendering (the Service), so the two agree. This
//! module must not decide anything about listeners.

use std::net::IpAddr;

use gateway_api::apis::standard::gateways::Gateway;

/// The annotation ExternalDNS reads to publish a Service under hostnames.
pub const EXTERNAL_DNS_HOSTNAME: &str = "external-dns.alpha.kubernetes.io/hostname";

/// The addresses a Gateway may have, read from its spec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Addresses {
    /// `IPAddress` values, in spec order, without repeats.
    pub ips: Vec<IpAddr>,
    /// `Hostname` values (lowercase), in spec order, without repeats.
    pub hostnames: Vec<String>,
}

/// Why a Gateway's addresses cannot all be given to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressProblem {
    /// The Gateway API condition the problem sets False (`Accepted` or `Programmed`).
    pub condition: &'static str,
    /// `UnsupportedAddress`, `AddressNotUsable` or `AddressNotAssigned`.
    pub reason: &'static str,
    /// The field (`spec.addresses[1].type`).
    pub field: String,
    /// What is wrong, naming the value.
    pub message: String,
}

impl std::fmt::Display for AddressProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Reads `gateway.spec.addresses`; the first problem found, if any.
pub fn read(gateway: &Gateway) -> Result<Addresses, AddressProblem> {
    let mut out = Addresses::default();
    for (i, address) in gateway.spec.addresses.iter().flatten().enumerate() {
        let field = format!("spec.addresses[{i}]");
        let kind = address.r#type.as_deref().unwrap_or("IPAddress");
        let value = address.value.as_deref().map(str::trim).unwrap_or_default();
        match kind {
            "IPAddress" if value.is_empty() => {}
            "IPAddress" => match value.parse::<IpAddr>() {
                Ok(ip) if !out.ips.contains(&ip) => out.ips.push(ip),
                Ok(_) => {}
                Err(_) => {
                    return Err(AddressProblem {
                        condition: "Programmed",
                        reason: "AddressNotUsable",
                        field: format!("{field}.value"),
                        message: format!("{value:?} is not an IP address"),
                    });
                }
            },
            "Hostname" if value.is_empty() => {
                return Err(AddressProblem {
                    condition: "Programmed",
                    reason: "AddressNotAssigned",
                    field: format!("{field}.value"),
                    message: "a Hostname address needs a value (agentmesh does not invent one)"
                        .into(),
                });
            }
            "Hostname" => {
                let name = value.to_ascii_lowercase();
                let valid = !name.starts_with("*.")
                    && agentmesh_proxy::http::route::HostPattern::parse(&name).is_ok();
                if !valid {
                    return Err(AddressProblem {
                        condition: "Programmed",
                        reason: "AddressNotUsable",
                        field: format!("{field}.value"),
                        message: format!("{value:?} is not a hostname"),
                    });
                }
                if !out.hostnames.contains(&name) {
                    out.hostnames.push(name);
                }
            }
            other => {
                return Err(AddressProblem {
                    condition: "Accepted",
                    reason: "UnsupportedAddress",
                    field: format!("{field}.type"),
                    message: format!(
                        "address type {other:?} is not supported (IPAddress, Hostname)"
                    ),
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_api::apis::standard::gateways::GatewayAddresses;

    fn gateway(addresses: &[(Option<&str>, Option<&str>)]) -> Gateway {
        let mut g = Gateway::default();
        g.spec.addresses = Some(
            addresses
                .iter()
                .map(|(t, v)| GatewayAddresses {
                    r#type: t.map(str::to_string),
                    value: v.map(str::to_string),
                })
                .collect(),
        );
        g
    }

    #[test]
    fn ip_and_hostname_addresses_are_read_and_others_refused_by_field() {
        let read_ok = read(&gateway(&[
            (None, Some("198.18.0.10")),
            (Some("IPAddress"), Some("2001:db8::1")),
            (Some("IPAddress"), None),
            (Some("Hostname"), Some("Gw.Example.com")),
            (Some("IPAddress"), Some("198.18.0.10")),
        ]))
        .expect("valid addresses");
        assert_eq!(
            read_ok.ips,
            vec![
                "198.18.0.10".parse::<IpAddr>().expect("ip"),
                "2001:db8::1".parse::<IpAddr>().expect("ip")
            ]
        );
        assert_eq!(read_ok.hostnames, vec!["gw.example.com".to_string()]);

        let named = read(&gateway(&[(Some("NamedAddress"), Some("pool-a"))]));
        assert!(
            matches!(&named, Err(p) if p.reason == "UnsupportedAddress"
                && p.condition == "Accepted" && p.field == "spec.addresses[0].type"),
            "{named:?}"
        );
        let bad_ip = read(&gateway(&[(None, Some("10.0.0.300"))]));
        assert!(
            matches!(&bad_ip, Err(p) if p.reason == "AddressNotUsable" && p.field == "spec.addresses[0].value"),
            "{bad_ip:?}"
        );
        let no_host = read(&gateway(&[
            (Some("IPAddress"), None),
            (Some("Hostname"), None),
        ]));
        assert!(
            matches!(&no_host, Err(p) if p.reason == "AddressNotAssigned" && p.field == "spec.addresses[1].value"),
            "{no_host:?}"
        );
    }
}
