//! Where a captured connection was going: the original destination that iptables'
//! REDIRECT replaced with the proxy's capture port, and the loop guard that refuses
//! destinations that are the proxy itself.
//!
//! The kernel keeps the original destination in conntrack and hands it back through
//! `SO_ORIGINAL_DST` (`SOL_IP`, IPv4) or `IP6T_SO_ORIGINAL_DST` (`SOL_IPV6`, IPv6); `nix`
//! wraps both, so this crate needs no `unsafe`. Tests supply destinations through the
//! [`OrigDstSource`] trait instead.

use std::io;
use std::net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6};

use nix::sys::socket::{SockaddrIn, SockaddrIn6, getsockopt, sockopt};
use tokio::net::TcpStream;

/// Tells the capture path where a redirected connection was originally going.
pub trait OrigDstSource: Send + Sync + 'static {
    /// The original destination of `tcp`, accepted from `peer`.
    fn orig_dst(&self, tcp: &TcpStream, peer: SocketAddr) -> io::Result<SocketAddr>;
}

/// Reads the original destination the kernel kept for a REDIRECTed connection.
#[derive(Debug, Clone, Copy, Default)]
pub struct SoOriginalDst;

impl OrigDstSource for SoOriginalDst {
    fn orig_dst(&self, tcp: &TcpStream, peer: SocketAddr) -> io::Result<SocketAddr> {
        // The address family of the connection decides which table (iptables or
        // ip6tables) holds the original destination.
        if peer.ip().to_canonical().is_ipv4() {
            let raw = getsockopt(tcp, sockopt::OriginalDst).map_err(io::Error::from)?;
            Ok(SocketAddr::V4(SocketAddrV4::from(SockaddrIn::from(raw))))
        } else {
            let raw = getsockopt(tcp, sockopt::Ip6tOriginalDst).map_err(io::Error::from)?;
            Ok(SocketAddr::V6(SocketAddrV6::from(SockaddrIn6::from(raw))))
        }
    }
}

/// Refuses destinations that would send a captured connection back into the proxy: one
/// of its own ports on one of the machine's (pod's) own addresses.
#[derive(Debug, Clone)]
pub struct LoopGuard {
    ports: Vec<u16>,
}

impl LoopGuard {
    /// A guard for the proxy's own `ports` (capture, admin, metrics, readiness...).
    pub fn new(ports: impl IntoIterator<Item = u16>) -> Self {
        let mut ports: Vec<u16> = ports.into_iter().filter(|p| *p != 0).collect();
        ports.sort_unstable();
        ports.dedup();
        LoopGuard { ports }
    }

    /// Whether a connection to `dst` would come back to the proxy.
    pub fn is_loop(&self, dst: SocketAddr) -> bool {
        // The port check is cheap and almost always false; only then look at addresses.
        self.ports.binary_search(&dst.port()).is_ok() && is_local(dst.ip())
    }
}

/// Whether `ip` is one of this network namespace's own addresses (loopback, unspecified,
/// or assigned to an interface).
fn is_local(ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    if ip.is_loopback() || ip.is_unspecified() {
        return true;
    }
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        // Cannot tell: refusing a real destination is better than a loop.
        return true;
    };
    addrs.filter_map(|a| a.address).any(|a| {
        a.as_sockaddr_in().map(|s| IpAddr::V4(s.ip())) == Some(ip)
            || a.as_sockaddr_in6()
                .map(|s| IpAddr::V6(s.ip()).to_canonical())
                == Some(ip)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn own_port_on_a_local_address_is_a_loop() {
        let guard = LoopGuard::new([16001, 16020]);
        assert!(guard.is_loop("127.0.0.1:16001".parse().unwrap()));
        assert!(guard.is_loop("[::1]:16020".parse().unwrap()));
        assert!(guard.is_loop("0.0.0.0:16001".parse().unwrap()));
        assert!(!guard.is_loop("127.0.0.1:8080".parse().unwrap()));
        // Our port number on another host is just that host's service.
        assert!(!guard.is_loop("198.51.100.7:16001".parse().unwrap()));
    }
}
