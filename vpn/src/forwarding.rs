//! What the gateway forwards. The container sits on net0 and on net1 with IP forwarding on, so
//! without a policy anyone on net0 with a route via it would reach net1 without the tunnel.
//! The daemon owns one nftables table (`inet lab_vpn_<interface>`), replaced atomically with
//! `nft -f` and deleted on exit, never touching any other table: peers reach the configured
//! networks, replies come back, nothing else crosses; optionally peer traffic is masqueraded.

use ipnet::IpNet;
use std::io::Write;
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum ForwardingError {
    #[error("cannot run nft (the nftables package is needed to keep net0 out of the networks behind the gateway): {0}")]
    Spawn(std::io::Error),
    #[error("nft refused the forwarding policy: {0}")]
    Refused(String),
}

/// The forwarding policy of one interface, installed while this value lives.
pub struct ForwardingPolicy {
    table: String,
}

/// The policy for `interface`: peers to `reach`, replies back, masquerade if asked.
pub fn ruleset(table: &str, interface: &str, reach: &[IpNet], masquerade: bool) -> String {
    let set = |v6: bool| {
        reach
            .iter()
            .filter(|n| matches!(n, IpNet::V6(_)) == v6)
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (v4, v6) = (set(false), set(true));
    let mut peers_in = String::new();
    if !v4.is_empty() {
        peers_in.push_str(&format!(
            "    iifname \"{interface}\" ip daddr {{ {v4} }} accept\n"
        ));
    }
    if !v6.is_empty() {
        peers_in.push_str(&format!(
            "    iifname \"{interface}\" ip6 daddr {{ {v6} }} accept\n"
        ));
    }
    let nat = if masquerade {
        format!(
            "  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    iifname \"{interface}\" oifname != \"{interface}\" masquerade\n  }}\n"
        )
    } else {
        String::new()
    };
    // Creating then deleting the table first makes `nft -f` replace it in one transaction.
    format!(
        "table inet {table}\ndelete table inet {table}\ntable inet {table} {{\n  chain forward {{\n    type filter hook forward priority filter; policy drop;\n    ct state established,related accept\n{peers_in}  }}\n{nat}}}\n"
    )
}

/// `lab_vpn_<interface>`, with what nft names cannot hold replaced.
pub fn table_name(interface: &str) -> String {
    let safe: String = interface
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("lab_vpn_{safe}")
}

fn nft(script: &str) -> Result<(), ForwardingError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(ForwardingError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(ForwardingError::Spawn)?;
    }
    let output = child.wait_with_output().map_err(ForwardingError::Spawn)?;
    if output.status.success() {
        Ok(())
    } else {
        Err(ForwardingError::Refused(
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        ))
    }
}

impl ForwardingPolicy {
    pub fn install(
        interface: &str,
        reach: &[IpNet],
        masquerade: bool,
    ) -> Result<Self, ForwardingError> {
        let table = table_name(interface);
        nft(&ruleset(&table, interface, reach, masquerade))?;
        if std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").is_ok_and(|v| v.trim() == "0") {
            tracing::warn!(
                "IPv4 forwarding is off here (net.ipv4.ip_forward = 0): peers reach the gateway but not the networks behind it"
            );
        }
        Ok(Self { table })
    }

    /// Replaces the policy (a reload changed what peers reach, or masquerading).
    pub fn update(
        &self,
        interface: &str,
        reach: &[IpNet],
        masquerade: bool,
    ) -> Result<(), ForwardingError> {
        nft(&ruleset(&self.table, interface, reach, masquerade))
    }
}

impl Drop for ForwardingPolicy {
    fn drop(&mut self) {
        if let Err(e) = nft(&format!("delete table inet {}\n", self.table)) {
            tracing::warn!(table = %self.table, error = %e, "cannot remove the forwarding policy");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_reach_only_the_configured_networks() {
        let reach: Vec<IpNet> = vec![
            "10.10.1.0/24".parse().unwrap(),
            "fd00:10::/64".parse().unwrap(),
        ];
        let text = ruleset("lab_vpn_wg0", "wg0", &reach, false);
        assert!(text.contains("policy drop;"));
        assert!(text.contains("iifname \"wg0\" ip daddr { 10.10.1.0/24 } accept"));
        assert!(text.contains("iifname \"wg0\" ip6 daddr { fd00:10::/64 } accept"));
        assert!(!text.contains("masquerade"));
        assert!(ruleset("t", "wg0", &reach, true).contains("masquerade"));
        assert_eq!(table_name("wg-admin.0"), "lab_vpn_wg_admin_0");
    }
}
