//! Which address a request comes from: the socket's peer, or, only when that peer is one of the
//! operator's trusted proxies, the right-most address of `X-Forwarded-For` that is not one.

use actix_web::http::header::HeaderValue;
use ipnet::IpNet;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// The `--trusted-proxy` networks: the only peers whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(networks: Vec<IpNet>) -> TrustedProxies {
        TrustedProxies(networks)
    }

    pub fn contains(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.0.iter().any(|network| network.contains(&address))
    }

    /// The client behind `peer`. Each proxy appends the address it was reached from, so the
    /// list reads left to right from the client to the last proxy, and everything left of the
    /// first untrusted hop (read from the right) was written by that hop: it may be anything.
    /// An entry that does not parse ends the walk at the trusted proxy that passed it on.
    pub fn client<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl DoubleEndedIterator<Item = &'a HeaderValue>,
    ) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.contains(client) {
            return client;
        }
        // Several `X-Forwarded-For` headers are one list, in order (RFC 9110 §5.3).
        for value in forwarded_for.rev() {
            let Ok(text) = value.to_str() else {
                return client;
            };
            for hop in text.rsplit(',') {
                let Some(address) = parse_hop(hop.trim()) else {
                    return client;
                };
                client = address;
                if !self.contains(address) {
                    return address;
                }
            }
        }
        // Every hop was a trusted proxy: the left-most is as close to the client as we know.
        client
    }
}

/// One hop of `X-Forwarded-For`: an address, possibly with a port (`1.2.3.4:80`, `[::1]:80`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let address = hop
        .parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()?;
    Some(address.to_canonical())
}

/// The key a client is limited under: its IPv4 address, or its IPv6 /64. One host is usually
/// given a whole /64, so keying by the full IPv6 address would let it take 2^64 budgets.
pub fn limit_key(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !(u128::from(u64::MAX));
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_network;

    fn proxies(networks: &[&str]) -> TrustedProxies {
        TrustedProxies::new(
            networks
                .iter()
                .map(|n| parse_network(n).expect("a valid network in the test"))
                .collect(),
        )
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("a valid address in the test")
    }

    fn headers(values: &[&'static str]) -> Vec<HeaderValue> {
        values.iter().map(|v| HeaderValue::from_static(v)).collect()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let forwarded = headers(&["1.1.1.1"]);
        assert_eq!(
            trusted.client(ip("203.0.113.9"), forwarded.iter()),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn behind_a_trusted_proxy_the_right_most_untrusted_hop_is_the_client() {
        let trusted = proxies(&["10.0.0.0/8", "192.168.1.1"]);
        // The client spoofed 6.6.6.6; 198.51.100.7 is who reached the edge proxy.
        let forwarded = headers(&["6.6.6.6, 198.51.100.7", "192.168.1.1"]);
        assert_eq!(
            trusted.client(ip("10.1.2.3"), forwarded.iter()),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn a_garbled_hop_stops_at_the_proxy_that_passed_it_on() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let forwarded = headers(&["198.51.100.7, not-an-address, 10.0.0.5"]);
        assert_eq!(
            trusted.client(ip("10.1.2.3"), forwarded.iter()),
            ip("10.0.0.5")
        );
        assert_eq!(
            trusted.client(ip("10.1.2.3"), std::iter::empty()),
            ip("10.1.2.3")
        );
    }

    #[test]
    fn ports_and_mapped_addresses_are_read_as_their_address() {
        let trusted = proxies(&["127.0.0.1"]);
        let forwarded = headers(&["[2001:db8::1]:443"]);
        assert_eq!(
            trusted.client(ip("::ffff:127.0.0.1"), forwarded.iter()),
            ip("2001:db8::1")
        );
    }

    #[test]
    fn an_ipv6_host_is_limited_by_its_64() {
        assert_eq!(
            limit_key(ip("2001:db8:1:2:aaaa::1")),
            limit_key(ip("2001:db8:1:2:bbbb::9"))
        );
        assert_ne!(
            limit_key(ip("2001:db8:1:2::1")),
            limit_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(limit_key(ip("192.0.2.1")), ip("192.0.2.1"));
    }
}
