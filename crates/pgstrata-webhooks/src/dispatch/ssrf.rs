//! The SSRF guard: which addresses the dispatcher may connect to, and the connector that
//! resolves a host once, vets every address it got, and connects only to those (no second
//! resolution, so DNS rebinding between the check and the connection is impossible).
//!
//! Refused unless allow-listed: unspecified, loopback, private (RFC 1918, IPv6 unique local),
//! link-local, CGNAT (100.64.0.0/10), multicast, broadcast, documentation, benchmarking and
//! other reserved ranges, IPv4-mapped and IPv4-compatible IPv6, NAT64 (64:ff9b::/96,
//! 64:ff9b:1::/48) and 6to4/Teredo, whose embedded IPv4 address could be private. A name is
//! refused when any of its addresses is refused (a name that mixes public and private addresses
//! is an attack, not a misconfiguration).
//!
//! For an `https://` URL the connector runs TLS over the vetted TCP connection
//! ([`pgstrata_core::https`]): SNI is the URL's host and the certificate must hold that name and
//! chain to a webpki root (or a root the dispatcher was given); the address vetted is still the
//! one connected to, whatever the certificate says.

use hyper::Uri;
use hyper_util::rt::TokioIo;
use pgstrata_core::https::{MaybeTlsStream, TlsConnector};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;

/// A network: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Net {
    /// Whether `ip` is in this network (an IPv4 network never holds an IPv6 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix.min(32))).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix.min(128)))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Net {
    type Err = String;

    /// `10.0.0.0/8`, `::1/128`, or a bare address (a network of one).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an address or a network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix is not 0 to {max}"))?,
            None => max,
        };
        Ok(Net { addr, prefix })
    }
}

/// Which addresses the dispatcher may connect to: public ones, and the allow-listed networks
/// (a private network of the operator's own receivers; the tests' loopback receivers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    allow: Vec<Net>,
}

impl AddressPolicy {
    /// Public addresses only.
    pub fn public_only() -> Self {
        Self::default()
    }

    /// Also allows the addresses of `net` (`"127.0.0.1/32"`, `"10.1.0.0/16"`, `"::1"`).
    pub fn allow(mut self, net: &str) -> Result<Self, String> {
        self.allow.push(net.parse()?);
        Ok(self)
    }

    /// Why `ip` is refused, or None when the dispatcher may connect to it.
    pub fn refusal(&self, ip: IpAddr) -> Option<&'static str> {
        if self.allow.iter().any(|n| n.contains(ip)) {
            return None;
        }
        address_class(ip)
    }
}

/// The refused class `ip` belongs to, or None for a public unicast address.
pub fn address_class(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_class(v4),
        IpAddr::V6(v6) => v6_class(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn v4_class(ip: Ipv4Addr) -> Option<&'static str> {
    const CLASSES: [([u8; 4], u32, &str); 16] = [
        ([0, 0, 0, 0], 8, "this network (0.0.0.0/8)"),
        ([10, 0, 0, 0], 8, "private (10.0.0.0/8)"),
        ([100, 64, 0, 0], 10, "shared address space, CGNAT (100.64.0.0/10)"),
        ([127, 0, 0, 0], 8, "loopback (127.0.0.0/8)"),
        ([169, 254, 0, 0], 16, "link-local (169.254.0.0/16)"),
        ([172, 16, 0, 0], 12, "private (172.16.0.0/12)"),
        ([192, 0, 0, 0], 24, "reserved, IETF protocol assignments (192.0.0.0/24)"),
        ([192, 0, 2, 0], 24, "documentation (192.0.2.0/24)"),
        ([192, 88, 99, 0], 24, "reserved, 6to4 relay (192.88.99.0/24)"),
        ([192, 168, 0, 0], 16, "private (192.168.0.0/16)"),
        ([198, 18, 0, 0], 15, "benchmarking (198.18.0.0/15)"),
        ([198, 51, 100, 0], 24, "documentation (198.51.100.0/24)"),
        ([203, 0, 113, 0], 24, "documentation (203.0.113.0/24)"),
        ([224, 0, 0, 0], 4, "multicast (224.0.0.0/4)"),
        ([240, 0, 0, 0], 4, "reserved (240.0.0.0/4)"),
        ([255, 255, 255, 255], 32, "broadcast (255.255.255.255)"),
    ];
    CLASSES
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map(|(_, _, class)| *class)
}

fn v6_class(ip: Ipv6Addr) -> Option<&'static str> {
    let bits = u128::from(ip);
    let within = |net: u128, prefix: u32| {
        let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
        bits & mask == net & mask
    };
    if ip.is_unspecified() {
        Some("unspecified (::)")
    } else if ip.is_loopback() {
        Some("loopback (::1)")
    } else if within(0xffff_0000_0000, 96) {
        Some("IPv4-mapped IPv6 (::ffff:0:0/96)")
    } else if within(0, 96) {
        Some("IPv4-compatible IPv6 (::/96)")
    } else if within(0x0064_ff9b_0000_0000_0000_0000_0000_0000, 96) {
        Some("NAT64 (64:ff9b::/96)")
    } else if within(0x0064_ff9b_0001_0000_0000_0000_0000_0000, 48) {
        Some("local-use NAT64 (64:ff9b:1::/48)")
    } else if within(0x0100_0000_0000_0000_0000_0000_0000_0000, 64) {
        Some("discard-only (100::/64)")
    } else if within(0x2001_0000_0000_0000_0000_0000_0000_0000, 23) {
        Some("reserved, IETF protocol assignments incl. Teredo (2001::/23)")
    } else if within(0x2001_0db8_0000_0000_0000_0000_0000_0000, 32) {
        Some("documentation (2001:db8::/32)")
    } else if within(0x2002_0000_0000_0000_0000_0000_0000_0000, 16) {
        Some("6to4 (2002::/16)")
    } else if within(0x3fff_0000_0000_0000_0000_0000_0000_0000, 20) {
        Some("documentation (3fff::/20)")
    } else if within(0xfc00_0000_0000_0000_0000_0000_0000_0000, 7) {
        Some("unique local (fc00::/7)")
    } else if within(0xfe80_0000_0000_0000_0000_0000_0000_0000, 10) {
        Some("link-local (fe80::/10)")
    } else if within(0xfec0_0000_0000_0000_0000_0000_0000_0000, 10) {
        Some("site-local, deprecated (fec0::/10)")
    } else if within(0xff00_0000_0000_0000_0000_0000_0000_0000, 8) {
        Some("multicast (ff00::/8)")
    } else {
        None
    }
}

/// Why the connector did not connect.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL has no host, or a scheme the client does not speak.
    #[error("cannot connect to {0}")]
    Unsupported(String),
    /// The host did not resolve.
    #[error("{host} did not resolve: {reason}")]
    Resolve { host: String, reason: String },
    /// The SSRF guard refused an address of the host.
    #[error("refused address {ip} of {host}: {class}; allow-list it in the dispatcher if it is your own receiver")]
    Refused {
        host: String,
        ip: IpAddr,
        class: &'static str,
    },
    /// No vetted address accepted the connection in time.
    #[error("connecting to {host} ({addrs}) failed: {reason}")]
    Connect {
        host: String,
        addrs: String,
        reason: String,
    },
    /// The TLS handshake with an `https://` endpoint failed (untrusted or expired certificate,
    /// a certificate for another name, no common protocol) or timed out.
    #[error("TLS with {host} ({addr}) failed: {reason}")]
    Tls {
        host: String,
        addr: SocketAddr,
        reason: String,
    },
}

/// A connection of the delivery client: plain TCP for `http://`, TLS over TCP for `https://`.
pub type Conn = MaybeTlsStream;

/// A hyper connector (a `tower::Service<Uri>`) that resolves once, vets, connects to a vetted
/// address, and for `https://` runs TLS over that connection.
#[derive(Debug, Clone)]
pub struct VettedConnector {
    policy: Arc<AddressPolicy>,
    connect_timeout: Duration,
    tls: TlsConnector,
}

impl VettedConnector {
    /// `connect_timeout` bounds the TCP connection, and then the TLS handshake.
    pub fn new(policy: AddressPolicy, connect_timeout: Duration, tls: TlsConnector) -> Self {
        Self {
            policy: Arc::new(policy),
            connect_timeout,
            tls,
        }
    }
}

/// Resolves `host` (unless it is an address literal) and vets every address: all of them, or
/// the refusal of the first refused one.
pub async fn vetted_addresses(policy: &AddressPolicy, host: &str, port: u16) -> Result<Vec<SocketAddr>, ConnectError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| ConnectError::Resolve {
                host: bare.to_owned(),
                reason: e.to_string(),
            })?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(ConnectError::Resolve {
            host: bare.to_owned(),
            reason: "no address".to_owned(),
        });
    }
    for a in &addrs {
        if let Some(class) = policy.refusal(a.ip()) {
            return Err(ConnectError::Refused {
                host: bare.to_owned(),
                ip: a.ip(),
                class,
            });
        }
    }
    Ok(addrs)
}

impl tower_service::Service<Uri> for VettedConnector {
    type Response = TokioIo<Conn>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let policy = self.policy.clone();
        let timeout = self.connect_timeout;
        let tls = self.tls.clone();
        Box::pin(async move {
            let (https, default_port) = match uri.scheme_str() {
                Some("http") => (false, 80),
                Some("https") => (true, 443),
                _ => {
                    return Err(ConnectError::Unsupported(format!(
                        "{uri}: the client speaks http and https only"
                    )));
                }
            };
            let host = uri
                .host()
                .ok_or_else(|| ConnectError::Unsupported(uri.to_string()))?
                .to_owned();
            let port = uri.port_u16().unwrap_or(default_port);
            let addrs = vetted_addresses(&policy, &host, port).await?;
            let mut last = String::new();
            for addr in &addrs {
                match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
                    Ok(Ok(stream)) => {
                        // Small requests: send them at once.
                        let _ = stream.set_nodelay(true);
                        if !https {
                            return Ok(TokioIo::new(MaybeTlsStream::Plain(stream)));
                        }
                        // The name checked is the URL's host; the address is the vetted one.
                        let tls_err = |reason: String| ConnectError::Tls {
                            host: host.clone(),
                            addr: *addr,
                            reason,
                        };
                        return match tokio::time::timeout(timeout, tls.connect(&host, stream)).await {
                            Ok(Ok(s)) => Ok(TokioIo::new(MaybeTlsStream::Tls(s))),
                            Ok(Err(e)) => Err(tls_err(e.to_string())),
                            Err(_) => Err(tls_err(format!("no handshake within {} ms", timeout.as_millis()))),
                        };
                    }
                    Ok(Err(e)) => last = e.to_string(),
                    Err(_) => last = format!("no answer within {} ms", timeout.as_millis()),
                }
            }
            Err(ConnectError::Connect {
                host,
                addrs: addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
                reason: last,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_refused_class_and_the_allow_list() {
        let refused = [
            "0.0.0.0",
            "10.1.2.3",
            "100.64.0.1",
            "127.0.0.1",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:8.8.8.8",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "64:ff9b:1::1",
            "100::1",
            "2001::1",
            "2001:db8::1",
            "2002:a00:1::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
        ];
        let policy = AddressPolicy::public_only();
        for ip in refused {
            assert!(policy.refusal(ip.parse().unwrap()).is_some(), "{ip} should be refused");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700:4700::1111",
            "2a00:1450::1",
        ] {
            assert_eq!(policy.refusal(ip.parse().unwrap()), None, "{ip} should be allowed");
        }
        let policy = AddressPolicy::public_only().allow("127.0.0.1/32").unwrap();
        assert_eq!(policy.refusal("127.0.0.1".parse().unwrap()), None);
        assert!(policy.refusal("127.0.0.2".parse().unwrap()).is_some());
        assert!(policy.refusal("::1".parse().unwrap()).is_some());
        assert!("10.0.0.0/33".parse::<Net>().is_err());
    }
}
