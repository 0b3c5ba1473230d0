//! Where upstream requests may lead: the redirect policy and the DNS resolver of each remote's
//! client, so that a redirect cannot reach loopback, private or link-local addresses (or
//! downgrade an HTTPS upstream to plain HTTP) unless the config names the host.
//!
//! Hosts the config names (base_url's, api_url's, `allowed_redirect_hosts`, an HTTP proxy) and
//! token realms named by base_url's own challenge may have any address. Every other host must
//! be public: an IP-literal redirect target is checked by the policy, and a name by the
//! resolver, which drops its non-public addresses, so the address actually connected to is the
//! one checked (a name that resolves differently later gains nothing).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, RwLock};

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::redirect::Policy;

use crate::config::UpstreamHost;

/// Redirects followed in a row before a request fails.
pub const MAX_REDIRECTS: usize = 10;

/// Why a redirect, or the addresses its host resolved to, were refused.
#[derive(Debug)]
pub struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

#[derive(Debug)]
struct TooManyRedirects;

impl std::fmt::Display for TooManyRedirects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "more than {MAX_REDIRECTS} redirects")
    }
}

impl std::error::Error for TooManyRedirects {}

/// True when `e` or one of its causes is a refused redirect.
pub fn is_refused(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if c.is::<Refused>() {
            return true;
        }
        cur = c.source();
    }
    false
}

/// The hosts one remote may reach whatever their address, and whether its base_url is HTTPS.
#[derive(Debug)]
pub struct Destinations {
    https: bool,
    trusted: RwLock<HashSet<UpstreamHost>>,
}

impl Destinations {
    /// The destinations of a remote at `base`: its host and the `trusted` ones may have any
    /// address.
    pub fn new(base: &Url, trusted: impl IntoIterator<Item = UpstreamHost>) -> Arc<Destinations> {
        let mut set: HashSet<UpstreamHost> = trusted.into_iter().collect();
        set.extend(UpstreamHost::of_url(base));
        Arc::new(Destinations {
            https: base.scheme() == "https",
            trusted: RwLock::new(set),
        })
    }

    /// Lets `url`'s host have any address from now on (a token realm base_url named).
    pub fn trust(&self, url: &Url) {
        if let Some(host) = UpstreamHost::of_url(url) {
            let known = self.trusted.read().expect("trusted lock").contains(&host);
            if !known {
                self.trusted.write().expect("trusted lock").insert(host);
            }
        }
    }

    fn is_trusted(&self, host: &UpstreamHost) -> bool {
        self.trusted.read().expect("trusted lock").contains(host)
    }

    /// Whether a redirect may go to `target`. A host name passes here; the resolver then keeps
    /// only the addresses it may have.
    pub fn check_redirect(&self, target: &Url) -> Result<(), Refused> {
        let to = target.origin().ascii_serialization();
        if self.https && target.scheme() != "https" {
            return Err(Refused(format!(
                "redirect to {to} refused: base_url is https and the target is not"
            )));
        }
        let Some(host) = UpstreamHost::of_url(target) else {
            return Err(Refused(format!(
                "redirect to {to} refused: the target has no host"
            )));
        };
        match host {
            UpstreamHost::Ip(ip) if !is_public(ip) && !self.is_trusted(&host) => {
                Err(Refused(format!(
                    "redirect to {to} refused: {ip} is not a public address, and not base_url's host or in allowed_redirect_hosts"
                )))
            }
            _ => Ok(()),
        }
    }

    /// The addresses `host` may be connected at, out of those it resolved to: all of them for a
    /// trusted host, the public ones otherwise.
    fn admit(&self, host: &str, addrs: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, Refused> {
        if self.is_trusted(&UpstreamHost::of_host_str(host)) {
            return Ok(addrs);
        }
        let (public, internal): (Vec<SocketAddr>, Vec<SocketAddr>) =
            addrs.into_iter().partition(|a| is_public(a.ip()));
        if public.is_empty() && !internal.is_empty() {
            return Err(Refused(format!(
                "redirect to {host} refused: it resolves only to addresses that are not public ({}), and it is not base_url's host or in allowed_redirect_hosts",
                internal
                    .iter()
                    .map(|a| a.ip().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(public)
    }

    /// The redirect policy of the remote's client: at most [`MAX_REDIRECTS`] in a row, each to
    /// a target [`check_redirect`](Self::check_redirect) allows.
    pub fn policy(self: &Arc<Self>) -> Policy {
        let this = self.clone();
        Policy::custom(move |attempt| {
            if attempt.previous().len() > MAX_REDIRECTS {
                return attempt.error(TooManyRedirects);
            }
            match this.check_redirect(attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(refused) => attempt.error(refused),
            }
        })
    }

    /// The DNS resolver of the remote's client.
    pub fn resolver(self: &Arc<Self>) -> Arc<Resolver> {
        Arc::new(Resolver(self.clone()))
    }
}

/// Resolves with the system resolver, then keeps only the addresses the host may have.
pub struct Resolver(Arc<Destinations>);

impl Resolve for Resolver {
    fn resolve(&self, name: Name) -> Resolving {
        let destinations = self.0.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let kept = destinations.admit(&host, addrs)?;
            Ok(Box::new(kept.into_iter()) as Addrs)
        })
    }
}

/// The hosts of the HTTP proxies the environment configures, which the client connects to
/// for every request when they are set.
pub fn proxy_hosts() -> Vec<UpstreamHost> {
    [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ]
    .iter()
    .filter_map(|var| std::env::var(var).ok())
    .filter(|v| !v.trim().is_empty())
    .filter_map(|v| {
        let v = v.trim();
        let url = if v.contains("://") {
            Url::parse(v)
        } else {
            Url::parse(&format!("http://{v}"))
        };
        url.ok().and_then(|u| UpstreamHost::of_url(&u))
    })
    .collect()
}

/// True for an address on the public internet: not loopback, private (10/8, 172.16/12,
/// 192.168/16), shared (100.64/10), link-local, unique-local, unspecified, multicast,
/// documentation, benchmarking or reserved, nor an IPv6 form (mapped, compatible, NAT64,
/// 6to4) of such an IPv4 address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0 // "this network", unspecified
        || a == 10
        || a == 127
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 169 && b == 254)
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // documentation
        || (a == 192 && b == 168)
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || (a == 198 && b == 51 && c == 100) // documentation
        || (a == 203 && b == 0 && c == 113) // documentation
        || a >= 224) // multicast, reserved, broadcast
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from(((hi as u32) << 16) | lo as u32);
    if s[..6] == [0, 0, 0, 0, 0, 0xffff] || s[..6] == [0; 6] {
        // IPv4-mapped and IPv4-compatible (`::` and `::1` included, as 0.0.0.0 and 0.0.0.1).
        return is_public_v4(embedded(s[6], s[7]));
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_public_v4(embedded(s[6], s[7])); // NAT64
    }
    if s[0] == 0x2002 {
        return is_public_v4(embedded(s[1], s[2])); // 6to4
    }
    !((s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated)
        || (s[0] & 0xff00) == 0xff00 // multicast
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) // local-use NAT64 64:ff9b:1::/48
        || s[..4] == [0x100, 0, 0, 0]) // discard 100::/64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn public_and_internal_addresses() {
        for a in [
            "8.8.8.8",
            "1.1.1.1",
            "140.82.112.3",
            "185.199.108.133",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "2606:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(is_public(ip(a)), "{a} is public");
        }
        for a in [
            "127.0.0.1",
            "127.0.0.2",
            "127.255.255.254",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "169.254.169.254",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.2.1",
            "198.18.0.1",
            "::",
            "::1",
            "fe80::1",
            "febf::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::1",
        ] {
            assert!(!is_public(ip(a)), "{a} is not public");
        }
    }

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn redirect_targets() {
        let d = Destinations::new(
            &url("http://127.0.0.1:8081/repo"),
            [UpstreamHost::parse("10.0.0.5").unwrap()],
        );
        // base_url's host (any port), allowed hosts, public addresses, names (resolved later).
        for ok in [
            "http://127.0.0.1:9000/x",
            "http://10.0.0.5/x",
            "https://8.8.8.8/x",
            "http://objects.githubusercontent.com/x",
            "http://localhost/x",
            // 127.0.0.1 in other notations.
            "http://0x7f.1/x",
            "http://2130706433:80/x",
        ] {
            assert!(d.check_redirect(&url(ok)).is_ok(), "{ok}");
        }
        for refused in [
            "http://127.0.0.2/x",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]/x",
            "http://[::ffff:169.254.169.254]/x",
            "http://[::ffff:7f00:1]/x",
            "http://0x7f.2/x",
            "http://2130706434/x",
            "http://[fe80::1]/x",
            "http://10.0.0.6/x",
            "http://0.0.0.0/x",
        ] {
            let e = d
                .check_redirect(&url(refused))
                .expect_err(refused)
                .to_string();
            assert!(e.contains("is not a public address"), "{refused}: {e}");
        }
    }

    #[test]
    fn an_https_upstream_is_never_redirected_to_http() {
        let d = Destinations::new(&url("https://github.com"), []);
        assert!(
            d.check_redirect(&url(
                "https://release-assets.githubusercontent.com/github-production-release-asset/1"
            ))
            .is_ok()
        );
        for refused in [
            "http://github.com/x",
            "http://objects.githubusercontent.com/x",
        ] {
            let e = d.check_redirect(&url(refused)).unwrap_err();
            assert!(
                e.to_string().contains("base_url is https"),
                "{refused}: {e}"
            );
        }
        let plain = Destinations::new(&url("http://mirror.example"), []);
        assert!(plain.check_redirect(&url("https://cdn.example/x")).is_ok());
    }

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| SocketAddr::new(ip(a), 0)).collect()
    }

    #[test]
    fn resolved_addresses() {
        let d = Destinations::new(
            &url("http://nexus.internal:8081"),
            [UpstreamHost::parse("cache.internal").unwrap()],
        );
        // Trusted names keep every address.
        for host in ["nexus.internal", "NEXUS.internal.", "cache.internal"] {
            assert_eq!(
                d.admit(host, addrs(&["10.0.0.1", "::1"])).unwrap(),
                addrs(&["10.0.0.1", "::1"]),
                "{host}"
            );
        }
        // Other names keep only their public addresses, and are refused without one.
        assert_eq!(
            d.admit(
                "objects.githubusercontent.com",
                addrs(&["185.199.108.133", "10.0.0.1", "2606:50c0:8000::154"])
            )
            .unwrap(),
            addrs(&["185.199.108.133", "2606:50c0:8000::154"])
        );
        for internal in [
            &["127.0.0.1"][..],
            &["169.254.169.254"],
            &["::1", "10.0.0.1"],
        ] {
            let e = d.admit("rebound.example", addrs(internal)).unwrap_err();
            assert!(e.to_string().contains("not public"), "{e}");
        }
        // A realm base_url named becomes trusted.
        assert!(d.admit("auth.internal", addrs(&["10.0.0.2"])).is_err());
        d.trust(&url("https://auth.internal/token"));
        assert!(d.admit("auth.internal", addrs(&["10.0.0.2"])).is_ok());
    }

    #[tokio::test]
    async fn the_resolver_refuses_names_of_internal_addresses() {
        let d = Destinations::new(&url("http://127.0.0.1:1"), []);
        let r = d.resolver();
        let e = match r.resolve("localhost".parse().unwrap()).await {
            Ok(a) => panic!("localhost resolved to {:?}", a.collect::<Vec<_>>()),
            Err(e) => e,
        };
        assert!(is_refused(e.as_ref()), "{e}");
        let d = Destinations::new(&url("http://localhost:1"), []);
        let got: Vec<_> = d
            .resolver()
            .resolve("localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert!(got.iter().all(|a| a.ip().is_loopback()) && !got.is_empty());
    }
}
