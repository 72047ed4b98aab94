//! What the gateway forwards. The container sits on net0 and on net1 with IP forwarding on, so
//! without a policy anyone on net0 with a route via it would reach net1 without the tunnel.
//!
//! The policy fails closed. One nftables table, `inet lab_vpn`, holds a forward chain whose
//! policy is drop and which only jumps, through the `tunnels` verdict map, into one chain per
//! running interface. [`install_guard`] makes that table with no tunnel in it: the unit runs it
//! (`lab-vpn guard`) before anything else, so the container forwards nothing before lab-vpn
//! starts, when its config is refused, or after it stops, crashes or is killed. A running
//! daemon adds its interface's chain (peers reach the configured networks, replies come back,
//! optionally masqueraded) and on exit takes only that out again, leaving the drop. Every
//! change is one `nft -f` transaction; no other table is touched.

use ipnet::IpNet;
use std::io::Write;
use std::process::{Command, Stdio};

/// The table that outlives the daemon.
pub const TABLE: &str = "lab_vpn";

/// Why the policy could not be changed; the table is then as it was (one transaction).
#[derive(Debug, thiserror::Error)]
pub enum ForwardingError {
    /// `nft` could not be run.
    #[error("cannot run nft (the nftables package is needed to keep net0 out of the networks behind the gateway): {0}")]
    Spawn(std::io::Error),
    /// `nft` refused the ruleset: what it printed.
    #[error("nft refused the forwarding policy: {0}")]
    Refused(String),
}

/// An interface's part of the policy, in the table while this value lives.
pub struct ForwardingPolicy {
    interface: String,
}

/// The table with its drop policy and no tunnel, made or brought back to shape without touching
/// the tunnels of a running daemon: `add` is a no-op for what exists, and only the forward
/// chain is flushed and refilled, so running it again (each start, each reload) changes
/// nothing else.
pub fn guard_ruleset() -> String {
    format!(
        "add table inet {TABLE}\n\
         add map inet {TABLE} tunnels {{ type ifname : verdict; }}\n\
         add chain inet {TABLE} forward {{ type filter hook forward priority filter; policy drop; }}\n\
         flush chain inet {TABLE} forward\n\
         add rule inet {TABLE} forward iifname vmap @tunnels\n\
         add rule inet {TABLE} forward oifname vmap @tunnels\n"
    )
}

/// `interface`'s chains (filter, nat), with what nft names cannot hold replaced.
fn chains(interface: &str) -> (String, String) {
    let safe: String = interface
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    (format!("tunnel_{safe}"), format!("nat_{safe}"))
}

/// The nat chain, created then deleted when not wanted: nft has no "delete if present", and an
/// empty nat hook would still cost every new connection a lookup.
fn nat_chain(interface: &str, nat: &str, masquerade: bool) -> String {
    let mut out = format!(
        "add chain inet {TABLE} {nat} {{ type nat hook postrouting priority srcnat; policy accept; }}\n\
         flush chain inet {TABLE} {nat}\n"
    );
    if masquerade {
        out.push_str(&format!(
            "add rule inet {TABLE} {nat} iifname \"{interface}\" oifname != \"{interface}\" masquerade\n"
        ));
    } else {
        out.push_str(&format!("delete chain inet {TABLE} {nat}\n"));
    }
    out
}

/// The guard plus `interface`'s chain: peers to `reach`, replies back, masquerade if asked.
pub fn ruleset(interface: &str, reach: &[IpNet], masquerade: bool) -> String {
    let (tunnel, nat) = chains(interface);
    let set = |v6: bool| {
        reach
            .iter()
            .filter(|n| matches!(n, IpNet::V6(_)) == v6)
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = guard_ruleset();
    out.push_str(&format!(
        "add chain inet {TABLE} {tunnel}\n\
         flush chain inet {TABLE} {tunnel}\n\
         add rule inet {TABLE} {tunnel} ct state established,related accept\n"
    ));
    for (family, nets) in [("ip", set(false)), ("ip6", set(true))] {
        if !nets.is_empty() {
            out.push_str(&format!(
                "add rule inet {TABLE} {tunnel} iifname \"{interface}\" {family} daddr {{ {nets} }} accept\n"
            ));
        }
    }
    out.push_str(&format!(
        "add element inet {TABLE} tunnels {{ \"{interface}\" : jump {tunnel} }}\n"
    ));
    out.push_str(&nat_chain(interface, &nat, masquerade));
    out
}

/// Takes `interface`'s chains out; the guard stays. Each object is made first so that the
/// deletes hold whether or not it was there.
pub fn removal(interface: &str) -> String {
    let (tunnel, nat) = chains(interface);
    let mut out = guard_ruleset();
    out.push_str(&format!(
        "add chain inet {TABLE} {tunnel}\n\
         add element inet {TABLE} tunnels {{ \"{interface}\" : jump {tunnel} }}\n\
         delete element inet {TABLE} tunnels {{ \"{interface}\" }}\n\
         flush chain inet {TABLE} {tunnel}\n\
         delete chain inet {TABLE} {tunnel}\n"
    ));
    out.push_str(&nat_chain(interface, &nat, false));
    out
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

/// Installs the drop policy with no tunnel through it (`lab-vpn guard`).
pub fn install_guard() -> Result<(), ForwardingError> {
    nft(&guard_ruleset())
}

impl ForwardingPolicy {
    /// Adds `interface`'s chain: its peers reach `reach`, masqueraded as the gateway when
    /// `masquerade`, and the replies come back.
    pub fn install(
        interface: &str,
        reach: &[IpNet],
        masquerade: bool,
    ) -> Result<Self, ForwardingError> {
        nft(&ruleset(interface, reach, masquerade))?;
        if std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").is_ok_and(|v| v.trim() == "0") {
            tracing::warn!(
                "IPv4 forwarding is off here (net.ipv4.ip_forward = 0): peers reach the gateway but not the networks behind it"
            );
        }
        Ok(Self {
            interface: interface.to_owned(),
        })
    }

    /// Replaces the interface's part (a reload changed what peers reach, or masquerading).
    pub fn update(
        &self,
        interface: &str,
        reach: &[IpNet],
        masquerade: bool,
    ) -> Result<(), ForwardingError> {
        nft(&ruleset(interface, reach, masquerade))
    }
}

impl Drop for ForwardingPolicy {
    fn drop(&mut self) {
        if let Err(e) = nft(&removal(&self.interface)) {
            // The guard's drop still holds: what is left is a chain only this interface's
            // packets can reach, and the interface goes with the daemon.
            tracing::warn!(interface = %self.interface, error = %e, "cannot remove the interface's forwarding rules");
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
        let text = ruleset("wg0", &reach, false);
        assert!(text.contains("policy drop;"));
        assert!(text.contains(
            "add rule inet lab_vpn tunnel_wg0 iifname \"wg0\" ip daddr { 10.10.1.0/24 } accept"
        ));
        assert!(text.contains(
            "add rule inet lab_vpn tunnel_wg0 iifname \"wg0\" ip6 daddr { fd00:10::/64 } accept"
        ));
        assert!(!text.contains("masquerade"));
        assert!(ruleset("wg0", &reach, true).contains("masquerade"));
        assert_eq!(chains("wg-admin.0").0, "tunnel_wg_admin_0");
    }

    #[test]
    fn nothing_takes_the_drop_away() {
        for text in [guard_ruleset(), removal("wg0"), ruleset("wg0", &[], true)] {
            assert!(!text.contains("delete table"), "{text}");
            assert!(text.contains("policy drop;"), "{text}");
            assert!(
                !text.contains("delete chain inet lab_vpn forward"),
                "{text}"
            );
        }
    }
}
