//! The host's units: a dnsmasq per lab bridge, and a oneshot that loads the ruleset and the
//! routes once the bridges exist.
//!
//! The VPN route lives in `lab-network.service` rather than in `/etc/network/interfaces`:
//! Proxmox owns that file (its UI rewrites it), and ifupdown2 merges stanzas across files in
//! ways that are hard to undo; a unit of our own is installed and removed as a whole.

use super::{dnsmasq, nftables, HostAddress, HostRoute, CONFIG_DIR};
use std::fmt::Write;

/// Where [`dnsmasq_unit`] is installed: the template of every bridge's dnsmasq.
pub const DNSMASQ_UNIT_PATH: &str = "/etc/systemd/system/lab-dnsmasq@.service";
/// Where the oneshot that loads the ruleset and the routes is installed.
pub const NETWORK_UNIT_PATH: &str = "/etc/systemd/system/lab-network.service";
/// The oneshot's unit name, as systemctl takes it.
pub const NETWORK_UNIT: &str = "lab-network.service";

/// `lab-dnsmasq@<bridge>.service`: dnsmasq in the foreground (systemd tracks it, no pid file),
/// with only what DHCP and DNS on a bridge need.
pub fn dnsmasq_unit() -> String {
    let config = dnsmasq::config_path("%i");
    let config = config.display();
    format!(
        r#"# Written by lab-bootstrap: DHCP and DNS for one lab bridge (instance = bridge name).
[Unit]
Description=lab DHCP and DNS on %i
Documentation=man:dnsmasq(8)
After=network.target {network}
Wants={network}

[Service]
Type=simple
ExecStartPre=/usr/sbin/dnsmasq --test --conf-file={config}
ExecStart=/usr/sbin/dnsmasq --keep-in-foreground --pid-file= --conf-file={config}
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
StateDirectory=lab
CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_BIND_SERVICE CAP_NET_RAW CAP_SETUID CAP_SETGID CAP_CHOWN CAP_DAC_OVERRIDE
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths=/var/lib/lab
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK AF_PACKET
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native

[Install]
WantedBy=multi-user.target
"#,
        network = NETWORK_UNIT,
    )
}

/// `lab-network.service`: loads `table inet lab`, puts the host's `addresses` on their bridges
/// (on several nodes, the gateway on the VNets) and adds the routes, after the bridges are up.
pub fn network_unit(addresses: &[HostAddress], routes: &[HostRoute]) -> String {
    let mut exec = String::new();
    for address in addresses {
        let _ = writeln!(
            exec,
            "ExecStart=/usr/sbin/ip address replace {} dev {}",
            address.address, address.bridge
        );
    }
    for route in routes {
        let _ = writeln!(
            exec,
            "ExecStart=/usr/sbin/ip route replace {} via {} dev {}",
            route.destination, route.gateway, route.bridge
        );
    }
    for route in routes {
        let _ = writeln!(
            exec,
            "ExecStop=-/usr/sbin/ip route del {} via {} dev {}",
            route.destination, route.gateway, route.bridge
        );
    }
    for address in addresses {
        let _ = writeln!(
            exec,
            "ExecStop=-/usr/sbin/ip address del {} dev {}",
            address.address, address.bridge
        );
    }
    format!(
        r#"# Written by lab-bootstrap: the lab's firewall table and routes on the host.
[Unit]
Description=lab firewall (table inet lab) and routes
After=network-online.target
Wants=network-online.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/sbin/nft -f {ruleset}
{exec}ExecStop=-/usr/sbin/nft delete table inet lab
ExecReload=/usr/sbin/nft -f {ruleset}
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
CapabilityBoundingSet=CAP_NET_ADMIN
ReadOnlyPaths={CONFIG_DIR}

[Install]
WantedBy=multi-user.target
"#,
        ruleset = nftables::PATH,
    )
}
