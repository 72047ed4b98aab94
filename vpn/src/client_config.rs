//! The wg-quick configuration an admin peer needs to reach the gateway: what `peer add` prints
//! and encodes as a QR code for phones.

use crate::key::{PrivateKey, PublicKey};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ipnet::IpNet;
use std::fmt;
use std::net::IpAddr;

pub struct ClientConfig {
    /// Written as a comment, so the file says whose it is.
    pub name: String,
    /// `None` when the user brought their own key pair: the line is left for them to fill in.
    pub private_key: Option<PrivateKey>,
    pub address: IpNet,
    pub dns: Vec<IpAddr>,
    pub gateway_key: PublicKey,
    pub preshared_key: Option<[u8; 32]>,
    pub endpoint: String,
    /// The tunnel network and the networks behind the gateway: never a default route.
    pub allowed_ips: Vec<IpNet>,
    pub keepalive: Option<u16>,
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
        if !self.dns.is_empty() {
            writeln!(f, "DNS = {}", join(&self.dns))?;
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
        assert!(text.contains("Address = 10.10.100.7/32\nDNS = 10.10.1.1\n"));
        assert!(text.contains(&format!("PublicKey = {gateway}\n")));
        assert!(text.contains("AllowedIPs = 10.10.100.0/24, 10.10.1.0/24\n"));
        assert!(text.contains("PersistentKeepalive = 25\n"));
        assert!(!text.contains("\nPrivateKey"), "no key was generated here");
    }
}
