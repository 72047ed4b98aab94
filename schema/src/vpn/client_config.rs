//! The wg-quick configuration an admin peer needs to reach the gateway: what `lab-vpn peer add`
//! prints and encodes as a QR code for phones, and what lab-bootstrap writes for lab.toml's
//! peers and the local lab's admin.

use super::key::{PrivateKey, PublicKey};
use super::VpnConfig;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ipnet::IpNet;
use std::fmt;
use std::net::IpAddr;

/// A peer's wg-quick config; its `Display` is the file.
pub struct ClientConfig {
    /// Written as a comment, so the file says whose it is.
    pub name: String,
    /// `None` when the user brought their own key pair: the line is left for them to fill in.
    pub private_key: Option<PrivateKey>,
    /// The peer's tunnel address.
    pub address: IpNet,
    /// DNS servers for the peer to use while connected.
    pub dns: Vec<IpAddr>,
    /// Search domains for the peer while connected, after the servers on the `DNS` line.
    pub dns_search: Vec<String>,
    /// The gateway's public key.
    pub gateway_key: PublicKey,
    /// A key shared by this peer and the gateway alone.
    pub preshared_key: Option<[u8; 32]>,
    /// `host:port` the peer sends to.
    pub endpoint: String,
    /// The tunnel network and the networks behind the gateway: never a default route.
    pub allowed_ips: Vec<IpNet>,
    /// `PersistentKeepalive`, seconds.
    pub keepalive: Option<u16>,
}

/// The peer's own side of a [`ClientConfig`].
pub struct ClientPeer {
    /// The peer's name.
    pub name: String,
    /// The peer's tunnel address.
    pub address: IpNet,
    /// `None` when the peer has its own key pair.
    pub private_key: Option<PrivateKey>,
    /// A key shared by this peer and the gateway alone.
    pub preshared_key: Option<[u8; 32]>,
}

/// No `Endpoint` can be written: neither given nor in `interface.public_endpoint`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("clients need the gateway's address: set interface.public_endpoint")]
pub struct NoEndpoint;

impl ClientConfig {
    /// The keepalive clients get unless told otherwise: under the 30 s a typical NAT keeps a
    /// UDP mapping, so the gateway can reach a peer behind one.
    pub const DEFAULT_KEEPALIVE: u16 = 25;

    /// The config `peer` needs to reach the gateway that `gateway` configures, whose public key
    /// is `gateway_key`: the gateway's DNS servers, `endpoint` (or the interface's
    /// `public_endpoint`), and as allowed IPs the tunnel networks and every network the gateway
    /// reaches.
    pub fn for_peer(
        gateway: &VpnConfig,
        gateway_key: PublicKey,
        peer: ClientPeer,
        endpoint: Option<String>,
        keepalive: Option<u16>,
    ) -> Result<Self, NoEndpoint> {
        let interface = &gateway.interface;
        let endpoint = endpoint
            .or_else(|| interface.public_endpoint.clone())
            .ok_or(NoEndpoint)?;
        let mut allowed_ips: Vec<IpNet> = interface.address.iter().map(IpNet::trunc).collect();
        allowed_ips.extend(interface.reach.iter().copied());
        Ok(Self {
            name: peer.name,
            private_key: peer.private_key,
            address: peer.address,
            dns: interface.dns.clone(),
            dns_search: interface.dns_search.clone(),
            gateway_key,
            preshared_key: peer.preshared_key,
            endpoint,
            allowed_ips,
            keepalive,
        })
    }
}

fn join<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "# lab-vpn peer `{}`", self.name)?;
        writeln!(f, "[Interface]")?;
        match &self.private_key {
            Some(key) => writeln!(f, "PrivateKey = {}", key.expose_base64())?,
            None => writeln!(
                f,
                "# PrivateKey = <the private key of the public key given to `peer add`>"
            )?,
        }
        writeln!(f, "Address = {}", self.address)?;
        let mut dns: Vec<String> = self.dns.iter().map(ToString::to_string).collect();
        dns.extend(self.dns_search.iter().cloned());
        if !dns.is_empty() {
            writeln!(f, "DNS = {}", join(&dns))?;
        }
        writeln!(f)?;
        writeln!(f, "[Peer]")?;
        writeln!(f, "PublicKey = {}", self.gateway_key)?;
        if let Some(psk) = &self.preshared_key {
            writeln!(f, "PresharedKey = {}", STANDARD.encode(psk))?;
        }
        writeln!(f, "Endpoint = {}", self.endpoint)?;
        writeln!(f, "AllowedIPs = {}", join(&self.allowed_ips))?;
        if let Some(seconds) = self.keepalive {
            writeln!(f, "PersistentKeepalive = {seconds}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_as_wg_quick_writes_it() {
        let gateway = PrivateKey::generate().public_key();
        let config = ClientConfig {
            name: "phone".into(),
            private_key: None,
            address: "10.10.100.7/32".parse().unwrap(),
            dns: vec!["10.10.1.1".parse().unwrap()],
            dns_search: vec!["lab".into()],
            gateway_key: gateway,
            preshared_key: None,
            endpoint: "vpn.example.org:51820".into(),
            allowed_ips: vec![
                "10.10.100.0/24".parse().unwrap(),
                "10.10.1.0/24".parse().unwrap(),
            ],
            keepalive: Some(25),
        };
        let text = config.to_string();
        assert!(text.contains("Address = 10.10.100.7/32\nDNS = 10.10.1.1, lab\n"));
        assert!(text.contains(&format!("PublicKey = {gateway}\n")));
        assert!(text.contains("AllowedIPs = 10.10.100.0/24, 10.10.1.0/24\n"));
        assert!(text.contains("PersistentKeepalive = 25\n"));
        assert!(!text.contains("\nPrivateKey"), "no key was generated here");
    }

    fn gateway(public_endpoint: &str) -> VpnConfig {
        let text = format!(
            "[metrics]\nlisten = \"127.0.0.1:9586\"\n[interface]\nname = \"wg0\"\nprivate_key_file = \"/k\"\n\
             listen_port = 51820\naddress = [\"10.10.100.1/24\"]\nreach = [\"10.10.1.0/24\", \"10.10.2.0/24\"]\n\
             dns = [\"10.10.1.1\"]\ndns_search = [\"lab\"]\n{public_endpoint}"
        );
        toml::from_str(&text).unwrap()
    }

    fn peer() -> ClientPeer {
        ClientPeer {
            name: "phone".into(),
            address: "10.10.100.7/32".parse().unwrap(),
            private_key: None,
            preshared_key: None,
        }
    }

    #[test]
    fn a_peer_reaches_the_tunnel_and_every_network_behind_the_gateway() {
        let key = PrivateKey::generate().public_key();
        let config = gateway("public_endpoint = \"vpn.example.org:51820\"");
        let client = ClientConfig::for_peer(&config, key, peer(), None, Some(25)).unwrap();
        let nets: Vec<String> = client.allowed_ips.iter().map(ToString::to_string).collect();
        assert_eq!(nets, ["10.10.100.0/24", "10.10.1.0/24", "10.10.2.0/24"]);
        assert_eq!(client.endpoint, "vpn.example.org:51820");
        assert_eq!(client.dns, config.interface.dns);
        assert_eq!(client.dns_search, ["lab"]);
        assert_eq!(client.keepalive, Some(25));
        let given = Some("192.0.2.1:51820".to_owned());
        let client = ClientConfig::for_peer(&config, key, peer(), given, None).unwrap();
        assert_eq!(client.endpoint, "192.0.2.1:51820");
    }

    #[test]
    fn without_an_endpoint_there_is_no_client_config() {
        let key = PrivateKey::generate().public_key();
        let refused = ClientConfig::for_peer(&gateway(""), key, peer(), None, None).err();
        assert_eq!(refused, Some(NoEndpoint));
    }
}
