//! Who the client is, when reverse proxies stand in between.
//!
//! `X-Forwarded-For` is a list each proxy appends its peer to, so only its
//! right end was written by proxies we run; everything left of the first
//! hop we do not trust was written by the client and proves nothing.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// The client IP for a request from `peer` carrying the given
/// `X-Forwarded-For` header values (in the order they came).
///
/// - A peer that is not a trusted proxy is the client, whatever it sends.
/// - Otherwise the hops are read from the right: the first one that is
///   not a trusted proxy is the client. If every hop is trusted, the
///   leftmost is.
/// - A hop that does not parse ends the walk: the client wrote it, or a
///   proxy is broken, so nothing to its left can be believed. The answer
///   is then the peer.
pub fn client_ip<'a>(
    peer: IpAddr,
    forwarded_for: impl IntoIterator<Item = &'a str>,
    trusted: &[IpNet],
) -> IpAddr {
    let peer = canonical(peer);
    if !is_trusted(peer, trusted) {
        return peer;
    }
    let values: Vec<&str> = forwarded_for.into_iter().collect();
    let hops = values.iter().flat_map(|value| value.split(',')).rev();
    let mut leftmost = None;
    for hop in hops {
        let Some(ip) = parse_hop(hop) else {
            return peer;
        };
        if !is_trusted(ip, trusted) {
            return ip;
        }
        leftmost = Some(ip);
    }
    leftmost.unwrap_or(peer)
}

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

/// `::ffff:192.0.2.1` is 192.0.2.1: a dual-stack socket reports IPv4
/// peers that way, and a proxy list written in IPv4 must still match.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// A bare address, or one with a port (`192.0.2.1:5000`, `[2001:db8::1]:80`),
/// as some proxies write them.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|address| address.ip()))
        .ok()
        .map(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|net| net.parse().unwrap()).collect()
    }

    fn client(peer: &str, header: &[&str], trusted: &[&str]) -> IpAddr {
        client_ip(ip(peer), header.iter().copied(), &nets(trusted))
    }

    #[test]
    fn with_no_trusted_proxy_the_header_is_ignored() {
        assert_eq!(
            client("198.51.100.7", &["6.6.6.6"], &[]),
            ip("198.51.100.7")
        );
        assert_eq!(client("198.51.100.7", &[], &[]), ip("198.51.100.7"));
    }

    #[test]
    fn an_untrusted_peer_cannot_name_another_ip() {
        let trusted = ["10.0.0.0/8"];
        assert_eq!(
            client("198.51.100.7", &["6.6.6.6, 10.0.0.1"], &trusted),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn behind_a_trusted_proxy_the_rightmost_untrusted_hop_is_the_client() {
        let trusted = ["127.0.0.1/32"];
        // The client wrote 6.6.6.6; the proxy appended the address it saw.
        assert_eq!(
            client("127.0.0.1", &["6.6.6.6, 203.0.113.9"], &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(
            client("127.0.0.1", &["7.7.7.7, 203.0.113.9"], &trusted),
            ip("203.0.113.9"),
            "a different forged hop changes nothing"
        );
    }

    #[test]
    fn a_chain_of_trusted_proxies_is_walked_from_the_right() {
        let trusted = ["10.0.0.0/8", "127.0.0.1/32"];
        assert_eq!(
            client("127.0.0.1", &["6.6.6.6, 203.0.113.9, 10.1.2.3"], &trusted),
            ip("203.0.113.9")
        );
        // Several header lines are one list, in order.
        assert_eq!(
            client("127.0.0.1", &["6.6.6.6, 203.0.113.9", "10.1.2.3"], &trusted),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn when_every_hop_is_trusted_the_leftmost_is_the_client() {
        let trusted = ["10.0.0.0/8"];
        assert_eq!(
            client("10.0.0.1", &["10.9.9.9, 10.0.0.2"], &trusted),
            ip("10.9.9.9")
        );
        assert_eq!(client("10.0.0.1", &[], &trusted), ip("10.0.0.1"));
    }

    #[test]
    fn a_malformed_hop_ends_the_walk_at_the_peer() {
        let trusted = ["10.0.0.0/8"];
        assert_eq!(
            client("10.0.0.1", &["6.6.6.6, not-an-ip, 10.0.0.2"], &trusted),
            ip("10.0.0.1")
        );
        // An untrusted hop right of the bad one still counts.
        assert_eq!(
            client("10.0.0.1", &["garbage, 203.0.113.9"], &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(client("10.0.0.1", &[""], &trusted), ip("10.0.0.1"));
    }

    #[test]
    fn ports_brackets_and_mapped_addresses_are_understood() {
        let trusted = ["127.0.0.1/32", "2001:db8::/32"];
        assert_eq!(
            client("::ffff:127.0.0.1", &["203.0.113.9:4711"], &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(
            client("2001:db8::1", &["[2001:db9::5]:443"], &trusted),
            ip("2001:db9::5")
        );
        assert_eq!(
            client("127.0.0.1", &["::ffff:203.0.113.9"], &trusted),
            ip("203.0.113.9")
        );
    }
}
