//! `table inet lab`: the policy of docs/ARCHITECTURE.md between the host's bridges, and nothing else.
//!
//! Only routed traffic crosses the forward chain. The lb and vpn containers sit on net0 and on
//! a lab bridge themselves, so "outside → LB 80/443" and "outside → VPN UDP 51820" are switched
//! inside vmbr0, never forwarded; what the host forwards is lab networks to the internet, VPN
//! peers (routed to the vpn container's net1 address) into net2, and whatever must be stopped
//! (net0 into the lab, net2 into net1, peers to the internet).
//!
//! The node is not only the lab's: the forward chain accepts by default and sends only what
//! enters or leaves a lab bridge (net1, net2) through `lab_forward`, which ends in drop. net0
//! and any other bridge keep forwarding as they did without the table.

use super::{role_address, RenderError};
use crate::model::{Lab, NetworkId, Role};
use std::fmt::Write;

/// Where the ruleset is installed; `lab-network.service` loads it.
pub const PATH: &str = "/etc/lab/lab.nft";

/// The ruleset, loaded with `nft -f`: it replaces `table inet lab` in one transaction and
/// leaves every other table alone.
pub fn ruleset(lab: &Lab) -> Result<String, RenderError> {
    let n0 = &lab.networks.net0;
    let n1 = &lab.networks.net1;
    let n2 = &lab.networks.net2;
    let lb_net0 = role_address(lab, Role::Lb, NetworkId::Net0)?;
    let (b0, b1, b2) = (&n0.bridge, &n1.bridge, &n2.bridge);
    let (c1, c2) = (n1.cidr, n2.cidr);
    let (h1, h2) = (n1.host, n2.host);
    let tunnel = lab.vpn.tunnel;
    // Peers may use what the lb publishes on net0 ([[lb.route]] listening there).
    let lb_ports: Vec<String> = lab
        .lb_routes()
        .iter()
        .filter(|r| r.listen == NetworkId::Net0)
        .map(|r| r.port.to_string())
        .collect();
    let peers_to_lb = if lb_ports.is_empty() {
        "# The lb publishes nothing on net0.".to_owned()
    } else {
        format!(
            "iifname \"{b1}\" ip saddr {tunnel} oifname \"{b0}\" ip daddr {lb_net0} tcp dport {{ {} }} accept",
            lb_ports.join(", ")
        )
    };
    // The lb container, on net0 and net2, uploads its journal to the manager on net1: that
    // one port from that one address (a pair's containers from their own), nothing else from
    // net2 into net1.
    let lb_sources = match lab.replicas(Role::Lb).is_pair() {
        true => {
            let own: Vec<String> = lab
                .addresses_of_instances(Role::Lb, NetworkId::Net2)
                .iter()
                .map(ToString::to_string)
                .collect();
            format!("{{ {} }}", own.join(", "))
        }
        false => role_address(lab, Role::Lb, NetworkId::Net2)?.to_string(),
    };
    let lb_journal = match super::observability::journal_sink(lab) {
        Some(manager) => format!(
            "iifname \"{b2}\" ip saddr {lb_sources} oifname \"{b1}\" ip daddr {manager} tcp dport {} accept",
            super::observability::JOURNAL_REMOTE_PORT
        ),
        None => "# No manager on net1: no journal upload from the lb.".to_owned(),
    };
    let node_exporter = super::observability::NODE_EXPORTER_PORT;
    let ports = &lab.host.management_access;
    // `dport { }` is a syntax error: an empty list keeps no port open explicitly.
    let management = if ports.is_empty() {
        "# [host] management_access is empty: no port of the host is kept open explicitly."
            .to_owned()
    } else {
        let list = ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        format!("# The host's management (lab.toml [host] management_access) stays reachable from the uplink.\n\t\tiifname \"{b0}\" tcp dport {{ {list} }} accept")
    };

    let mut out = String::new();
    let _ = write!(
        out,
        r#"#!/usr/sbin/nft -f
# Written by lab-bootstrap from lab.toml. `nft -f` applies the whole file as one transaction:
# the table is created if missing, deleted and defined anew; other tables are not touched.
table inet lab {{}}
delete table inet lab

table inet lab {{
	chain input {{
		# Accept by default: the host's own access is never cut, only the lab bridges are narrowed.
		type filter hook input priority filter; policy accept;
		ct state established,related accept
		ct state invalid drop
		iifname "lo" accept
		# The lab's DNS serves each lab network on the host's address there and no one else:
		# not net0, not another bridge routing to that address. Other resolvers of the host
		# (its other addresses) are not the lab's to decide.
		ip daddr {h1} meta l4proto {{ tcp, udp }} th dport 53 iifname != "{b1}" drop
		ip daddr {h2} meta l4proto {{ tcp, udp }} th dport 53 iifname != "{b2}" drop
		# The node exporter (the manager's scrape of the host) likewise: net1 only.
		ip daddr {h1} tcp dport {node_exporter} iifname != "{b1}" drop
		{management}
		meta l4proto {{ icmp, ipv6-icmp }} accept
		# DHCP from the lab networks to the host's dnsmasq.
		iifname {{ "{b1}", "{b2}" }} udp dport 67 accept
		# net2's machines resolve through the host's DNS on net2.
		iifname "{b2}" ip daddr {h2} meta l4proto {{ tcp, udp }} th dport 53 accept
		# Administration and VPN peers may reach the host (its DNS on net1 included); net2
		# only gets DHCP, DNS and replies.
		iifname "{b1}" accept
		iifname "{b2}" drop
	}}

	chain forward {{
		# Only what enters or leaves a lab bridge is the lab's to decide: the node's other
		# bridges and guests (and, with br_netfilter, frames switched inside them) pass as
		# if this table were not here.
		type filter hook forward priority filter; policy accept;
		iifname {{ "{b1}", "{b2}" }} jump lab_forward
		oifname {{ "{b1}", "{b2}" }} jump lab_forward
	}}

	chain lab_forward {{
		# Frames switched inside one bridge pass here too when br_netfilter is loaded (Proxmox's
		# firewall loads it): nodes to each other. They are not routed by the host, and net1's
		# replies to VPN peers hairpin through it (the vpn container does not masquerade), so
		# conntrack has seen only one direction of them.
		iifname "{b1}" oifname "{b1}" accept
		iifname "{b2}" oifname "{b2}" accept
		ct state established,related accept
		ct state invalid drop

		# VPN peers, routed in through the vpn container's net1 address: administration only.
		iifname "{b1}" ip saddr {tunnel} oifname "{b2}" accept
		{peers_to_lb}
		iifname "{b1}" ip saddr {tunnel} drop

		# Administration reaches everything, the internet through NAT.
		iifname "{b1}" ip saddr {c1} accept

		# The lb's journal to the manager's journal-remote.
		{lb_journal}

		# Application traffic: its own network and the internet, never into net1 (replies only).
		iifname "{b2}" ip saddr {c2} oifname "{b0}" accept

		# Nothing else enters or leaves the lab networks: nothing from net0 or the node's other
		# bridges; the LB and the VPN carry what may enter.
		drop
	}}

	chain postrouting {{
		type nat hook postrouting priority srcnat; policy accept;
		oifname "{b0}" ip saddr {{ {c1}, {c2} }} masquerade
	}}
}}
"#
    );
    Ok(out)
}
