//! Outbound safety: which URLs may be stored and which addresses may be
//! connected to. URLs are checked when a webhook is created; addresses are
//! checked again at connect time, after DNS, so a name that later resolves to a
//! private address (DNS rebinding) is refused before any connection is opened.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;
use ipnet::IpNet;

use super::local;

pub const MAX_URL_LEN: usize = 2048;

/// IANA's IPv4 and IPv6 special-purpose address registries (RFC 6890 and
/// their later entries), the ranges not globally reachable, plus multicast
/// and the IPv6 ranges outside global unicast: never connected to unless
/// the operator allows a CIDR covering them. Checked first: the registries'
/// globally reachable entries inside a refused block (anycast services).
static GLOBAL_EXCEPTIONS: LazyLock<Vec<IpNet>> = LazyLock::new(|| {
    [
        "192.0.0.9/32",    // Port Control Protocol anycast
        "192.0.0.10/32",   // TURN relay anycast
        "2001:1::1/128",   // Port Control Protocol anycast
        "2001:1::2/128",   // TURN relay anycast
        "2001:1::3/128",   // DNS-SD service registration anycast
        "2001:3::/32",     // AMT
        "2001:4:112::/48", // AS112-v6
        "2001:20::/28",    // ORCHIDv2
        "2001:30::/28",    // drone remote ID tags
        // Well-known NAT64: judged by the IPv4 address it carries first.
        "64:ff9b::/96",
    ]
    .into_iter()
    .map(|n| n.parse().expect("static CIDR"))
    .collect()
});

static REFUSED: LazyLock<Vec<(IpNet, &'static str)>> = LazyLock::new(|| {
    let mut v = [
        ("0.0.0.0/8", "unspecified (\"this network\")"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "carrier-grade NAT"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local (cloud metadata)"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "IETF protocol assignments"),
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "6to4 relay anycast"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("::/96", "IPv4-compatible (deprecated)"),
        ("::ffff:0:0:0/96", "IPv4-translated"),
        ("64:ff9b:1::/48", "local-use NAT64"),
        ("100::/64", "discard-only"),
        ("100:0:0:1::/64", "dummy prefix"),
        ("2001::/23", "IETF protocol assignments"),
        ("2001::/32", "Teredo"),
        ("2001:2::/48", "benchmarking"),
        ("2001:10::/28", "ORCHID (deprecated)"),
        ("2001:db8::/32", "documentation"),
        ("3fff::/20", "documentation"),
        ("5f00::/16", "segment routing (SRv6) SID"),
        ("fc00::/7", "unique local (private)"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local"),
        ("ff00::/8", "multicast"),
    ]
    .into_iter()
    .map(|(n, why)| (n.parse().expect("static CIDR"), why))
    .collect::<Vec<(IpNet, &str)>>();
    // The most specific first, so the reason named is the narrowest.
    v.sort_by_key(|(n, _)| std::cmp::Reverse(n.prefix_len()));
    v
});

/// IPv6 global unicast (RFC 4291): anything outside it that no entry above
/// names is reserved by the IETF, not an address a receiver has.
static GLOBAL_UNICAST: LazyLock<IpNet> = LazyLock::new(|| "2000::/3".parse().expect("static CIDR"));

/// Refuses addresses in the ranges above, except those the operator allows.
#[derive(Debug, Clone, Default)]
pub struct AddressGuard {
    allow: Vec<IpNet>,
}

impl AddressGuard {
    pub fn new(allow: Vec<IpNet>) -> Self {
        Self { allow }
    }

    /// The guard the configuration asks for (`delivery.allow_cidrs`): built
    /// once per process by whoever owns its clients (the daemon, the CLI)
    /// and shared from there.
    pub fn from_config(cfg: &crate::config::Config) -> anyhow::Result<Self> {
        Ok(Self::new(cfg.allow_nets()?))
    }

    /// Ok when `ip` may be connected to; otherwise the reason it may not.
    pub fn check(&self, ip: IpAddr) -> Result<(), Refusal> {
        if self.allow.iter().any(|n| n.contains(&ip)) {
            return Ok(());
        }
        if let IpAddr::V6(v6) = ip {
            // An IPv4-mapped address is the IPv4 host itself (the socket
            // connects over IPv4): judged as that address, allow-list and all.
            if let Some(v4) = v6.to_ipv4_mapped() {
                return self
                    .check(IpAddr::V4(v4))
                    .map_err(|why| Refusal(format!("{ip} embeds {why}")));
            }
            // NAT64 and 6to4 reach the IPv4 address they carry through a
            // gateway elsewhere: one that is not public is refused whatever
            // the operator allows for IPv4 (an allowed 127.0.0.0/8 is this
            // host's loopback, not the gateway's).
            if let Some(v4) = routed_v4(v6) {
                if let Some((net, why)) = refused_range(IpAddr::V4(v4)) {
                    return Err(Refusal(format!(
                        "{ip} routes to {v4}, a {why} address ({net}); allow the IPv6 form in delivery.allow_cidrs only if this receiver is really meant to be reachable"
                    )));
                }
            }
        }
        match refused_range(ip) {
            Some((net, why)) => Err(Refusal(format!(
                "{ip} is a {why} address ({net}); add a CIDR to delivery.allow_cidrs only if this receiver is really meant to be reachable"
            ))),
            None => Ok(()),
        }
    }
}

/// The special-purpose range `ip` is in and why it is refused; None: a
/// globally reachable address.
fn refused_range(ip: IpAddr) -> Option<(IpNet, &'static str)> {
    if GLOBAL_EXCEPTIONS.iter().any(|n| n.contains(&ip)) {
        return None;
    }
    if let Some((net, why)) = REFUSED.iter().find(|(net, _)| net.contains(&ip)) {
        return Some((*net, why));
    }
    match ip {
        IpAddr::V6(_) if !GLOBAL_UNICAST.contains(&ip) => Some((
            IpNet::new(ip, 3)
                .expect("a prefix length within the address")
                .trunc(),
            "reserved (outside global unicast 2000::/3)",
        )),
        _ => None,
    }
}

/// Why the guard refuses an address, in words for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Refusal {}

/// A connection refused by the guard, the host named: what the resolver
/// hands hyper (inside an `io::Error`), so the client knows the failure by
/// its type, not its words.
#[derive(Debug)]
pub struct RefusedAddress {
    /// The host as written in the URL, when it was a name.
    pub host: Option<String>,
    pub why: Refusal,
}

impl std::fmt::Display for RefusedAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.host {
            Some(host) => write!(f, "refused address: {host} resolves to {}", self.why),
            None => write!(f, "refused address: {}", self.why),
        }
    }
}
impl std::error::Error for RefusedAddress {}

/// A name that did not resolve (the resolver's error, or no address).
#[derive(Debug)]
pub struct DnsFailure {
    pub host: String,
    /// The resolver's words; None when it answered with no address.
    pub cause: Option<String>,
}

impl std::fmt::Display for DnsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.cause {
            Some(e) => write!(f, "DNS lookup of {} failed: {e}", self.host),
            None => write!(f, "DNS lookup of {} returned no address", self.host),
        }
    }
}
impl std::error::Error for DnsFailure {}

/// The IPv4 address a well-known-prefix NAT64 (64:ff9b::/96) or 6to4
/// (2002::/16) address routes to.
fn routed_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let o = v6.octets();
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    None
}

/// A name that stands for loopback whatever DNS answers: `localhost` and
/// every name under `.localhost` (RFC 6761 §6.3; resolvers answer them
/// locally, so a DNS check at send time would not see them differently).
pub fn is_loopback_name(host: &str) -> bool {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    h == "localhost" || h.ends_with(".localhost")
}

impl AddressGuard {
    /// The one rule for a URL's host before a webhook is stored: an IP must
    /// be one `check` allows; a loopback name (`localhost`) is judged as
    /// 127.0.0.1, the address it always resolves to; any other name is
    /// judged at send time, after DNS (`GuardedResolver`).
    pub fn check_host<S: AsRef<str>>(&self, host: &url::Host<S>) -> Result<(), Refusal> {
        match host {
            url::Host::Ipv4(ip) => self.check(IpAddr::V4(*ip)),
            url::Host::Ipv6(ip) => self.check(IpAddr::V6(*ip)),
            url::Host::Domain(d) if is_loopback_name(d.as_ref()) => {
                self.check(IpAddr::V4(Ipv4Addr::LOCALHOST)).map_err(|why| {
                    Refusal(format!(
                        "{} always resolves to 127.0.0.1: {why}",
                        d.as_ref()
                    ))
                })
            }
            url::Host::Domain(_) => Ok(()),
        }
    }
}

/// Turns a host name into addresses. The system resolver in production; tests
/// plug in a stub to prove that a private answer is refused before any connect.
pub trait Resolve: Send + Sync + 'static {
    fn resolve(
        &self,
        host: String,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>>;
}

/// The operating system's resolver (getaddrinfo via tokio).
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(
        &self,
        host: String,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>> {
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .map(|sa| sa.ip())
                .collect())
        })
    }
}

/// The resolver handed to hyper's connector: resolves, then refuses the whole
/// name if any answer is refused (a mixed answer is how rebinding attacks look).
#[derive(Clone)]
pub struct GuardedResolver {
    guard: Arc<AddressGuard>,
    inner: Arc<dyn Resolve>,
}

impl GuardedResolver {
    pub fn new(guard: Arc<AddressGuard>, inner: Arc<dyn Resolve>) -> Self {
        Self { guard, inner }
    }
}

type ResolveFuture =
    Pin<Box<dyn Future<Output = std::io::Result<std::vec::IntoIter<SocketAddr>>> + Send>>;

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = ResolveFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let guard = self.guard.clone();
        let inner = self.inner.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let ips = inner.resolve(host.clone()).await.map_err(|e| {
                if local::is_shortage(&e) || local::descriptors_exhausted() {
                    return std::io::Error::other(local::DescriptorShortage {
                        what: format!("resolving {host}"),
                    });
                }
                std::io::Error::new(
                    e.kind(),
                    DnsFailure {
                        host: host.clone(),
                        cause: Some(e.to_string()),
                    },
                )
            })?;
            if ips.is_empty() {
                return Err(std::io::Error::other(DnsFailure { host, cause: None }));
            }
            for ip in &ips {
                guard.check(*ip).map_err(|why| {
                    std::io::Error::new(
                        std::io::ErrorKind::PermissionDenied,
                        RefusedAddress {
                            host: Some(host.clone()),
                            why,
                        },
                    )
                })?;
            }
            Ok(ips
                .into_iter()
                .map(|ip| SocketAddr::new(ip, 0))
                .collect::<Vec<_>>()
                .into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(g: &AddressGuard, s: &str) -> bool {
        g.check(s.parse().unwrap()).is_err()
    }

    #[test]
    fn refuses_every_non_public_range() {
        let g = AddressGuard::default();
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "224.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "2002:c0a8:0101::1",
            "::10.0.0.1",
        ] {
            assert!(refused(&g, ip), "{ip} should be refused");
        }
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
        ] {
            assert!(!refused(&g, ip), "{ip} should be allowed");
        }
    }

    #[test]
    fn operator_allow_list_wins_including_mapped_forms() {
        let g = AddressGuard::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(!refused(&g, "127.0.0.1"));
        assert!(!refused(&g, "::ffff:127.0.0.1"));
        assert!(refused(&g, "10.0.0.1"));
        assert!(refused(&g, "::1"));
    }

    #[test]
    fn hosts_before_a_webhook_is_stored() {
        let g = AddressGuard::default();
        let host = |h: &str| url::Host::parse(h).unwrap();
        for ok in [
            "example.com",
            "1.1.1.1",
            "[2606:4700::1111]",
            "localhost.example.com",
        ] {
            assert!(g.check_host(&host(ok)).is_ok(), "{ok}");
        }
        for (h, words) in [
            ("10.0.0.1", "private"),
            ("[::ffff:192.168.0.1]", "private"),
            ("[::1]", "loopback"),
            (
                "localhost",
                "localhost always resolves to 127.0.0.1: 127.0.0.1 is a loopback",
            ),
            ("api.LOCALHOST", "always resolves to 127.0.0.1"),
        ] {
            let e = g.check_host(&host(h)).unwrap_err().to_string();
            assert!(e.contains(words), "{h}: {e}");
        }
        let allowed = AddressGuard::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(allowed.check_host(&host("localhost")).is_ok());
        assert!(is_loopback_name("Localhost.") && !is_loopback_name("notlocalhost"));
    }
}
