//! Sidecar settings: from `SidecarSettings` (sidecar.proto) to the compiled form the
//! capture path reads, and the questions it asks of it: which outbound (or inbound) bind
//! serves a captured HTTP connection, and what happens to traffic no bind serves (allow
//! or deny, and how its TLS is handled).
//!
//! Nothing here touches sockets; `listen::capture` does the capturing. The mesh CA is
//! loaded here, once per config, so a bad CA is a config error, not a failed handshake.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use agentmesh_proto::config::v1 as pb;

use super::FieldError;
use super::ir::{Bind, Config};
use crate::http::route::HostPattern;
use crate::listen::capture::mesh_ca::{self, MeshCa};

/// How long the capture path waits for a client's first bytes by default.
pub const DEFAULT_DETECT_TIMEOUT: Duration = Duration::from_millis(100);

/// What the sidecar does with captured traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutboundAction {
    /// Forward to the original destination, unchanged.
    #[default]
    Allow,
    /// Refuse: 403 for HTTP, a TCP reset otherwise.
    Deny,
}

/// Compiled sidecar settings.
#[derive(Debug, Clone)]
pub struct Sidecar {
    /// Keys of the binds that serve captured HTTP and are never opened as sockets.
    pub outbound_binds: Vec<String>,
    /// What happens to traffic no bind serves and no rule decides.
    pub outbound_default: OutboundAction,
    /// How long to wait for the client's first bytes before treating the connection as
    /// server-speaks-first.
    pub protocol_detect_timeout: Duration,
    /// Egress rules, in order.
    pub egress: Vec<EgressRule>,
    /// The CA minting intercepted TLS's leaves; set when configured.
    pub mesh_ca: Option<Arc<MeshCa>>,
    /// Whether the inbound capture listener is served (followed on reload).
    pub inbound_enabled: bool,
    /// Keys of the binds that serve captured inbound HTTP and are never opened as sockets.
    pub inbound_binds: Vec<String>,
    /// What happens to inbound traffic no inbound bind serves.
    pub inbound_default: OutboundAction,
}

impl Default for Sidecar {
    fn default() -> Self {
        Sidecar {
            outbound_binds: Vec::new(),
            outbound_default: OutboundAction::Allow,
            protocol_detect_timeout: DEFAULT_DETECT_TIMEOUT,
            egress: Vec::new(),
            mesh_ca: None,
            inbound_enabled: false,
            inbound_binds: Vec::new(),
            inbound_default: OutboundAction::Allow,
        }
    }
}

/// How TLS to a destination is handled (`EgressTls` in sidecar.proto).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum EgressTls {
    /// TLS passes through untouched; plain HTTP stays plain.
    #[default]
    Passthrough,
    /// Plain HTTP from the app is sent on over TLS the proxy opens.
    Originate {
        /// Port the TLS connection goes to; `None`: the original destination's.
        port: Option<u16>,
        /// CA bundle verifying the destination; `None`: the web PKI roots.
        ca: Option<CaBundle>,
    },
    /// The app's TLS is terminated with a mesh CA leaf and re-encrypted.
    Intercept {
        /// CA bundle verifying the destination; `None`: the web PKI roots.
        ca: Option<CaBundle>,
    },
}

/// The CA certificates verifying a destination the proxy opens TLS to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CaBundle {
    /// A PEM file (`caFile`).
    File(Arc<str>),
    /// PEM text (`caPem`).
    Pem(Arc<str>),
}

impl CaBundle {
    /// The upstream TLS spec trusting this bundle, verifying `server_name`.
    pub fn upstream_tls(ca: Option<&CaBundle>, server_name: &str) -> pb::UpstreamTls {
        let (ca_file, ca_pem) = match ca {
            None => (String::new(), String::new()),
            Some(CaBundle::File(f)) => (f.to_string(), String::new()),
            Some(CaBundle::Pem(p)) => (String::new(), p.to_string()),
        };
        pb::UpstreamTls {
            ca_file,
            ca_pem,
            sni: server_name.to_owned(),
            ..pb::UpstreamTls::default()
        }
    }
}

/// One compiled egress rule; empty lists match anything.
#[derive(Debug, Clone)]
pub struct EgressRule {
    /// Name, for logs.
    pub name: Arc<str>,
    /// SNI / Host patterns.
    pub hostnames: Vec<HostPattern>,
    /// Destination networks.
    pub addresses: Vec<Cidr>,
    /// Destination ports.
    pub ports: Vec<u16>,
    /// The decision.
    pub action: OutboundAction,
    /// How TLS is handled when allowed.
    pub tls: EgressTls,
}

/// A decision about captured traffic and what made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Allow or deny.
    pub action: OutboundAction,
    /// Name of the rule that decided; `None` when the outbound default did.
    pub rule: Option<Arc<str>>,
    /// How TLS is handled (passthrough when the outbound default decided).
    pub tls: EgressTls,
}

impl Sidecar {
    /// Whether `key` is an outbound bind (served by capture, never opened).
    pub fn is_outbound_bind(&self, key: &str) -> bool {
        self.outbound_binds.iter().any(|k| k == key)
    }

    /// Whether `key` is an outbound or inbound bind: served by capture, never opened.
    pub fn is_capture_bind(&self, key: &str) -> bool {
        self.is_outbound_bind(key) || self.inbound_binds.iter().any(|k| k == key)
    }

    /// The outbound bind serving captured traffic to `dst`: the one with `dst`'s exact
    /// address and port, else one with `dst`'s port and an unspecified address.
    pub fn outbound_bind<'c>(&self, config: &'c Config, dst: SocketAddr) -> Option<&'c Arc<Bind>> {
        bind_for(&self.outbound_binds, config, dst)
    }

    /// The inbound bind serving captured inbound traffic to `dst`, chosen as
    /// [`outbound_bind`](Self::outbound_bind) does among the inbound binds.
    pub fn inbound_bind<'c>(&self, config: &'c Config, dst: SocketAddr) -> Option<&'c Arc<Bind>> {
        bind_for(&self.inbound_binds, config, dst)
    }

    /// Whether a captured inbound connection to `dst` that is not HTTP (TLS, opaque TCP)
    /// goes to the app: always under an `ALLOW` inbound default, else only when an
    /// inbound bind has `dst`'s port (and address, unless unspecified).
    pub fn inbound_port_allowed(&self, config: &Config, dst: SocketAddr) -> bool {
        self.inbound_default == OutboundAction::Allow || self.inbound_bind(config, dst).is_some()
    }

    /// Decides traffic no outbound bind serves: the first egress rule matching `name`
    /// (SNI or Host, lowercase, without port; `None` for opaque TCP) and `dst`, else the
    /// outbound default.
    pub fn decide(&self, name: Option<&str>, dst: SocketAddr) -> Verdict {
        let ip = dst.ip().to_canonical();
        self.egress
            .iter()
            .find(|r| {
                (r.hostnames.is_empty()
                    || name.is_some_and(|n| r.hostnames.iter().any(|p| p.matches(n))))
                    && (r.addresses.is_empty() || r.addresses.iter().any(|c| c.contains(ip)))
                    && (r.ports.is_empty() || r.ports.contains(&dst.port()))
            })
            .map_or(
                Verdict {
                    action: self.outbound_default,
                    rule: None,
                    tls: EgressTls::Passthrough,
                },
                |r| Verdict {
                    action: r.action,
                    rule: Some(r.name.clone()),
                    tls: r.tls.clone(),
                },
            )
    }
}

/// The bind among `keys` serving captured traffic to `dst`: the one with `dst`'s exact
/// address and port, else one with `dst`'s port and an unspecified address.
fn bind_for<'c>(keys: &[String], config: &'c Config, dst: SocketAddr) -> Option<&'c Arc<Bind>> {
    let dst_ip = dst.ip().to_canonical();
    let mut wildcard = None;
    for key in keys {
        let Some(bind) = config.bind(key) else {
            continue;
        };
        if bind.addr.port() != dst.port() {
            continue;
        }
        if bind.addr.ip().to_canonical() == dst_ip {
            return Some(bind);
        }
        if bind.addr.ip().is_unspecified() && wildcard.is_none() {
            wildcard = Some(bind);
        }
    }
    wildcard
}

/// An IP network: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `198.18.0.0/15`, `fd00::/8` or a plain address (a /32 or /128).
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let bad = || format!("{s:?} is not an IP address or CIDR network");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().map_err(|_| bad())?)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(bad());
        }
        Ok(Cidr { addr, prefix })
    }

    /// Whether `ip` (canonical: IPv4-mapped addresses as IPv4) is in the network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Compiles the sidecar settings; `bind_keys` are the keys of every bind in the config,
/// `issued` the intermediate CA the controller issued (for `meshCa.controller`).
pub fn compile(
    settings: Option<&pb::SidecarSettings>,
    bind_keys: &[&str],
    issued: Option<Arc<MeshCa>>,
) -> Result<Sidecar, Vec<FieldError>> {
    let Some(s) = settings else {
        return Ok(Sidecar::default());
    };
    let mut errs = Vec::new();
    let mut push = |field: String, reason: String| {
        errs.push(FieldError {
            resource: "sidecar settings".into(),
            field,
            reason,
        })
    };
    for (field, keys) in [
        ("outboundBinds", &s.outbound_binds),
        ("inboundBinds", &s.inbound_binds),
    ] {
        for (i, key) in keys.iter().enumerate() {
            if !bind_keys.contains(&key.as_str()) {
                push(format!("{field}[{i}]"), format!("no bind has key {key:?}"));
            }
        }
    }
    for (i, key) in s.inbound_binds.iter().enumerate() {
        if s.outbound_binds.contains(key) {
            push(
                format!("inboundBinds[{i}]"),
                format!("bind {key:?} is already an outbound bind"),
            );
        }
    }
    let action = |v: i32| pb::OutboundAction::try_from(v).ok().map(to_action);
    let outbound_default = action(s.outbound_default).unwrap_or_else(|| {
        push(
            "outboundDefault".into(),
            format!("unknown value {}", s.outbound_default),
        );
        OutboundAction::Allow
    });
    let inbound_default = action(s.inbound_default).unwrap_or_else(|| {
        push(
            "inboundDefault".into(),
            format!("unknown value {}", s.inbound_default),
        );
        OutboundAction::Allow
    });
    let protocol_detect_timeout = match &s.protocol_detect_timeout {
        None => DEFAULT_DETECT_TIMEOUT,
        Some(d) => match Duration::try_from(*d) {
            Ok(d) if !d.is_zero() && d <= Duration::from_secs(10) => d,
            _ => {
                push(
                    "protocolDetectTimeout".into(),
                    "must be a duration above 0 and at most 10s, such as \"100ms\"".into(),
                );
                DEFAULT_DETECT_TIMEOUT
            }
        },
    };
    let mesh_ca = s.mesh_ca.as_ref().and_then(|ca| {
        let files = !ca.cert_file.is_empty() || !ca.key_file.is_empty();
        match (files, ca.controller.is_some()) {
            (true, true) => {
                push(
                    "meshCa.controller".into(),
                    "set either certFile and keyFile, or controller, not both".into(),
                );
                None
            }
            (false, false) => {
                push(
                    "meshCa".into(),
                    "set certFile and keyFile, or controller (an intermediate the controller issues)"
                        .into(),
                );
                None
            }
            (false, true) => {
                if issued.is_none() {
                    push(
                        "meshCa.controller".into(),
                        "no intermediate CA has been issued by the controller (only a proxy \
                         configured over xDS can get one)"
                            .into(),
                    );
                }
                issued.clone()
            }
            (true, false) => {
                let size = match ca.cache_size {
                    0 => mesh_ca::DEFAULT_CACHE_SIZE,
                    n => usize::try_from(n).unwrap_or(usize::MAX),
                };
                MeshCa::load(&ca.cert_file, &ca.key_file, size)
                    .map_err(|(field, reason)| push(format!("meshCa.{field}"), reason))
                    .ok()
                    .map(Arc::new)
            }
        }
    });
    let mut egress = Vec::new();
    for (i, r) in s.egress.iter().enumerate() {
        let field = |f: &str| format!("egress[{i}].{f}");
        let mut hostnames = Vec::new();
        for (j, h) in r.hostnames.iter().enumerate() {
            match HostPattern::parse(h) {
                Ok(p) => hostnames.push(p),
                Err(e) => push(field(&format!("hostnames[{j}]")), e),
            }
        }
        let mut addresses = Vec::new();
        for (j, a) in r.addresses.iter().enumerate() {
            match Cidr::parse(a) {
                Ok(c) => addresses.push(c),
                Err(e) => push(field(&format!("addresses[{j}]")), e),
            }
        }
        let mut ports = Vec::new();
        for (j, p) in r.ports.iter().enumerate() {
            match port(*p) {
                Ok(p) => ports.push(p),
                Err(e) => push(field(&format!("ports[{j}]")), e),
            }
        }
        let rule_action = action(r.action).unwrap_or_else(|| {
            push(field("action"), format!("unknown value {}", r.action));
            OutboundAction::Deny
        });
        let tls = egress_tls(r, s.mesh_ca.is_some(), rule_action).unwrap_or_else(|(f, e)| {
            push(field(f), e);
            EgressTls::Passthrough
        });
        let name = if r.name.is_empty() {
            format!("egress[{i}]")
        } else {
            r.name.clone()
        };
        egress.push(EgressRule {
            name: name.into(),
            hostnames,
            addresses,
            ports,
            action: rule_action,
            tls,
        });
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(Sidecar {
        outbound_binds: s.outbound_binds.clone(),
        outbound_default,
        protocol_detect_timeout,
        egress,
        mesh_ca,
        inbound_enabled: s.inbound.as_ref().is_some_and(|i| i.enabled),
        inbound_binds: s.inbound_binds.clone(),
        inbound_default,
    })
}

/// A TCP port from its config value.
fn port(p: u32) -> Result<u16, String> {
    match u16::try_from(p) {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(format!("{p} is not a TCP port (1-65535)")),
    }
}

/// Compiles a rule's TLS handling; an error names the field (below the rule) at fault.
fn egress_tls(
    r: &pb::EgressRule,
    has_mesh_ca: bool,
    action: OutboundAction,
) -> Result<EgressTls, (&'static str, String)> {
    let mode =
        pb::EgressTls::try_from(r.tls).map_err(|_| ("tls", format!("unknown value {}", r.tls)))?;
    if mode != pb::EgressTls::Passthrough && action != OutboundAction::Allow {
        return Err(("tls", format!("{} needs action ALLOW", mode.as_str_name())));
    }
    if r.originate_port != 0 && mode != pb::EgressTls::Originate {
        return Err(("originatePort", "only applies with tls ORIGINATE".into()));
    }
    // Read now so a missing or broken bundle is a config error, not a failed call.
    let ca = match (r.ca_file.is_empty(), r.ca_pem.is_empty()) {
        (true, true) => None,
        (false, false) => return Err(("caPem", "set at most one of caFile and caPem".into())),
        (false, true) => {
            let certs = crate::listen::tls::read_certs(&r.ca_file).map_err(|e| ("caFile", e))?;
            trust_all(certs).map_err(|e| ("caFile", format!("{}: {e}", r.ca_file)))?;
            Some(CaBundle::File(r.ca_file.as_str().into()))
        }
        (true, false) => {
            let certs = rustls_pemfile::certs(&mut r.ca_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ("caPem", format!("invalid PEM: {e}")))?;
            if certs.is_empty() {
                return Err(("caPem", "holds no PEM certificate".into()));
            }
            trust_all(certs).map_err(|e| ("caPem", e))?;
            Some(CaBundle::Pem(r.ca_pem.as_str().into()))
        }
    };
    Ok(match mode {
        pb::EgressTls::Passthrough => {
            if ca.is_some() {
                let field = if r.ca_pem.is_empty() {
                    "caFile"
                } else {
                    "caPem"
                };
                return Err((field, "only applies with tls ORIGINATE or INTERCEPT".into()));
            }
            EgressTls::Passthrough
        }
        pb::EgressTls::Originate => EgressTls::Originate {
            port: match r.originate_port {
                0 => None,
                p => Some(port(p).map_err(|e| ("originatePort", e))?),
            },
            ca,
        },
        pb::EgressTls::Intercept => {
            if !has_mesh_ca {
                return Err((
                    "tls",
                    "INTERCEPT needs sidecar.meshCa (the CA that signs the minted certificates)"
                        .into(),
                ));
            }
            EgressTls::Intercept { ca }
        }
    })
}

/// Checks that rustls accepts every certificate as a trust anchor.
fn trust_all(certs: Vec<rustls::pki_types::CertificateDer<'static>>) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs {
        roots.add(c).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn to_action(a: pb::OutboundAction) -> OutboundAction {
    match a {
        pb::OutboundAction::Allow => OutboundAction::Allow,
        pb::OutboundAction::Deny => OutboundAction::Deny,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn rule(hosts: &[&str], addrs: &[&str], ports: &[u16], action: OutboundAction) -> EgressRule {
        EgressRule {
            name: "r".into(),
            hostnames: hosts
                .iter()
                .map(|h| HostPattern::parse(h).unwrap())
                .collect(),
            addresses: addrs.iter().map(|a| Cidr::parse(a).unwrap()).collect(),
            ports: ports.to_vec(),
            action,
            tls: EgressTls::Passthrough,
        }
    }

    #[test]
    fn cidr_contains_addresses_of_its_network_only() {
        let net = Cidr::parse("198.18.0.0/15").unwrap();
        assert!(net.contains("198.19.255.1".parse().unwrap()));
        assert!(!net.contains("198.20.0.1".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(
            Cidr::parse("fd00::/8")
                .unwrap()
                .contains("fd12::1".parse().unwrap())
        );
        assert!(
            !Cidr::parse("fd00::/8")
                .unwrap()
                .contains("10.0.0.1".parse().unwrap())
        );
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nope").is_err());
    }

    #[test]
    fn invalid_settings_name_the_field() {
        let settings = pb::SidecarSettings {
            outbound_binds: vec!["nope".into()],
            egress: vec![pb::EgressRule {
                addresses: vec!["10.0.0.0/40".into()],
                ports: vec![70000],
                ..Default::default()
            }],
            ..Default::default()
        };
        let errs = compile(Some(&settings), &["egress"], None).unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "outboundBinds[0]",
                "egress[0].addresses[0]",
                "egress[0].ports[0]"
            ]
        );
        assert!(errs[0].reason.contains("no bind has key \"nope\""));
    }

    #[test]
    fn a_controller_issued_mesh_ca_and_inline_ca_pem_are_checked() {
        let intercept = |ca_file: &str, ca_pem: &str| pb::EgressRule {
            hostnames: vec!["llm.test".into()],
            tls: pb::EgressTls::Intercept as i32,
            ca_file: ca_file.into(),
            ca_pem: ca_pem.into(),
            ..Default::default()
        };
        let settings = |rule: pb::EgressRule, mesh_ca: pb::MeshCa| pb::SidecarSettings {
            egress: vec![rule],
            mesh_ca: Some(mesh_ca),
            ..Default::default()
        };
        let controller = pb::MeshCa {
            controller: Some(pb::ControllerIssuedCa {}),
            ..Default::default()
        };
        // Controller-issued, before any intermediate was issued: a clear error.
        let errs = compile(
            Some(&settings(intercept("", ""), controller.clone())),
            &[],
            None,
        )
        .unwrap_err();
        assert_eq!(errs[0].field, "meshCa.controller");
        assert!(errs[0].reason.contains("no intermediate"), "{}", errs[0]);
        // Files and controller together.
        let both = pb::MeshCa {
            cert_file: "ca.crt".into(),
            ..controller.clone()
        };
        let errs = compile(Some(&settings(intercept("", ""), both)), &[], None).unwrap_err();
        assert!(errs[0].reason.contains("not both"), "{}", errs[0]);
        // Neither.
        let errs = compile(
            Some(&settings(intercept("", ""), pb::MeshCa::default())),
            &[],
            None,
        )
        .unwrap_err();
        assert_eq!(errs[0].field, "meshCa");
        // caPem: PEM certificates, and not next to caFile.
        let errs = compile(
            Some(&settings(intercept("", "not pem"), controller.clone())),
            &[],
            None,
        )
        .unwrap_err();
        assert!(
            errs.iter()
                .any(|e| e.field == "egress[0].caPem" && e.reason.contains("no PEM")),
            "{errs:?}"
        );
        let errs = compile(
            Some(&settings(intercept("ca.crt", "x"), controller)),
            &[],
            None,
        )
        .unwrap_err();
        assert!(
            errs.iter()
                .any(|e| e.field == "egress[0].caPem" && e.reason.contains("at most one")),
            "{errs:?}"
        );
    }

    #[test]
    fn first_matching_rule_decides_else_the_default() {
        let sidecar = Sidecar {
            outbound_default: OutboundAction::Deny,
            egress: vec![
                rule(&["*.openai.com"], &[], &[443], OutboundAction::Allow),
                rule(&[], &["198.18.0.0/15"], &[], OutboundAction::Allow),
            ],
            ..Sidecar::default()
        };
        let dst: SocketAddr = "203.0.113.9:443".parse().unwrap();
        assert_eq!(
            sidecar.decide(Some("api.openai.com"), dst).action,
            OutboundAction::Allow
        );
        assert_eq!(
            sidecar.decide(Some("evil.com"), dst).action,
            OutboundAction::Deny
        );
        // Opaque traffic has no name: only rules without hostnames apply to it.
        assert_eq!(sidecar.decide(None, dst).action, OutboundAction::Deny);
        let inside: SocketAddr = "198.18.0.7:5432".parse().unwrap();
        assert_eq!(sidecar.decide(None, inside).action, OutboundAction::Allow);
        assert_eq!(sidecar.decide(None, inside).rule.as_deref(), Some("r"));
    }
}
