//! Address families and CIDR blocks, the two network vocabulary types every other module
//! uses.
//!
//! This module only parses and formats; it never touches the system.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IP address family: each family has its own iptables binary and its own rule set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// IPv4, handled by `iptables*`.
    V4,
    /// IPv6, handled by `ip6tables*`.
    V6,
}

impl Family {
    /// Both families, IPv4 first (the order of every report and of `--dry-run`).
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    /// The loopback block of this family (`127.0.0.0/8` or `::1/128`).
    pub fn loopback(self) -> Cidr {
        match self {
            Family::V4 => Cidr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8),
            Family::V6 => Cidr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 128),
        }
    }

    /// The loopback address of this family (`127.0.0.1` or `::1`).
    pub fn loopback_addr(self) -> IpAddr {
        match self {
            Family::V4 => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Family::V6 => IpAddr::V6(Ipv6Addr::LOCALHOST),
        }
    }

    /// The family of an address.
    pub fn of(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// A CIDR block, always stored in its canonical form (host bits cleared), which is how
/// `iptables-save` prints it: `10.1.2.3/8` is kept as `10.0.0.0/8`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// Why a string is not a CIDR block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// The address part does not parse as IPv4 or IPv6.
    #[error("'{0}' is not an IPv4 or IPv6 address")]
    Address(String),
    /// The prefix length is not a number or is too long for the family.
    #[error("prefix length '{prefix}' is not in 0..={max}")]
    Prefix {
        /// The prefix as written.
        prefix: String,
        /// The longest prefix of the address's family.
        max: u8,
    },
}

impl Cidr {
    /// A block from an address and a prefix length (clamped to the family's width), with
    /// host bits cleared.
    pub fn new(addr: IpAddr, prefix: u8) -> Cidr {
        match addr {
            IpAddr::V4(a) => {
                let prefix = prefix.min(32);
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                Cidr {
                    addr: IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask)),
                    prefix,
                }
            }
            IpAddr::V6(a) => {
                let prefix = prefix.min(128);
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                Cidr {
                    addr: IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask)),
                    prefix,
                }
            }
        }
    }

    /// The family of the block.
    pub fn family(&self) -> Family {
        Family::of(self.addr)
    }

    /// Whether `addr` lies inside the block.
    pub fn contains(&self, addr: IpAddr) -> bool {
        Family::of(addr) == self.family() && Cidr::new(addr, self.prefix) == *self
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// Parses `ADDR/PREFIX` or a bare address (a host: `/32` or `/128`).
    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let (addr_text, prefix_text) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| CidrError::Address(addr_text.to_string()))?;
        let max = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        let prefix = match prefix_text {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max && !p.starts_with('+') => n,
                _ => {
                    return Err(CidrError::Prefix {
                        prefix: p.to_string(),
                        max,
                    });
                }
            },
        };
        Ok(Cidr::new(addr, prefix))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Result<Cidr, CidrError> {
        s.parse()
    }

    #[test]
    fn cidr_is_kept_in_canonical_form() {
        assert_eq!(
            cidr("10.1.2.3/8").map(|c| c.to_string()),
            Ok("10.0.0.0/8".into())
        );
        assert_eq!(
            cidr("10.1.2.3").map(|c| c.to_string()),
            Ok("10.1.2.3/32".into())
        );
        assert_eq!(
            cidr("2001:DB8::1/32").map(|c| c.to_string()),
            Ok("2001:db8::/32".into())
        );
        assert_eq!(
            cidr("0.0.0.0/0").map(|c| c.to_string()),
            Ok("0.0.0.0/0".into())
        );
        assert_eq!(cidr("::/0").map(|c| c.to_string()), Ok("::/0".into()));
    }

    #[test]
    fn invalid_cidrs_are_rejected() {
        assert!(matches!(cidr("10.0.0.0/33"), Err(CidrError::Prefix { .. })));
        assert!(matches!(cidr("::/129"), Err(CidrError::Prefix { .. })));
        assert!(matches!(cidr("10.0.0.0/+8"), Err(CidrError::Prefix { .. })));
        assert!(matches!(cidr("300.0.0.0/8"), Err(CidrError::Address(_))));
        assert!(matches!(cidr("example.com"), Err(CidrError::Address(_))));
    }

    #[test]
    fn contains_respects_family_and_prefix() {
        let block = cidr("198.18.0.0/15").expect("valid");
        assert!(block.contains("198.19.255.254".parse().expect("ip")));
        assert!(!block.contains("198.20.0.1".parse().expect("ip")));
        assert!(!block.contains("::1".parse().expect("ip")));
    }
}
