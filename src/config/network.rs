//! `--trusted-proxy` values: a network or one address. Here, below both `config` and `http`,
//! so that settings import nothing from `http` (`http::client_ip` decides who the client is).

use ipnet::IpNet;
use std::net::IpAddr;

/// A `--trusted-proxy` value: a network (`10.0.0.0/8`, `fd00::/8`) or one address.
pub fn parse_network(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("expected a network like 10.0.0.0/8 or an address, got {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_networks_are_refused() {
        assert!(parse_network("10.0.0.0/33").is_err());
        assert!(parse_network("proxy.local").is_err());
        assert!(parse_network("::1").is_ok());
    }
}
