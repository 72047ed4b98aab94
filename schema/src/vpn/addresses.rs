//! Where a new peer goes in the tunnel network.

use super::VpnConfig;
use ipnet::IpNet;
use std::net::IpAddr;

/// The first host address of the tunnel network that is neither the gateway's nor inside any
/// peer's allowed IPs.
pub fn next_free_address(config: &VpnConfig) -> Option<IpNet> {
    let tunnel = config.interface.address.first()?;
    let taken = |candidate: IpAddr| {
        config
            .interface
            .address
            .iter()
            .any(|a| a.addr() == candidate)
            || config
                .peers
                .iter()
                .flat_map(|p| &p.allowed_ips)
                .any(|net| net.contains(&candidate))
    };
    let host_prefix = match tunnel {
        IpNet::V4(_) => 32,
        IpNet::V6(_) => 128,
    };
    // Bounded: a /16 or larger tunnel network is searched in its first 65536 addresses.
    tunnel
        .trunc()
        .hosts()
        .take(65536)
        .find(|candidate| !taken(*candidate))
        .and_then(|address| IpNet::new(address, host_prefix).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(peers: &str) -> VpnConfig {
        let text = format!(
            "[metrics]\nlisten = \"127.0.0.1:9586\"\n[interface]\nname = \"wg0\"\nprivate_key_file = \"/k\"\nlisten_port = 51820\naddress = [\"10.10.100.1/24\"]\nreach = [\"10.10.1.0/24\"]\n{peers}"
        );
        toml::from_str(&text).unwrap()
    }

    #[test]
    fn the_next_address_skips_the_gateway_and_every_peer() {
        assert_eq!(
            next_free_address(&config("")).unwrap().to_string(),
            "10.10.100.2/32"
        );
        let peers = "[[peer]]\nname = \"a\"\npublic_key = \"PlDxK2P0RXcx9wY0OZizdDpbKz5EKh3ywta4oUaLiYE=\"\nallowed_ips = [\"10.10.100.2/31\"]\n";
        assert_eq!(
            next_free_address(&config(peers)).unwrap().to_string(),
            "10.10.100.4/32"
        );
    }
}
