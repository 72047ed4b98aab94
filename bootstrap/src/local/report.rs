//! What `up` prints at the end and `status` prints: a table of machines (networks, addresses,
//! what runs there, healthy or not) and commands to try.

use super::names::LocalLab;
use super::state_dir::LocalStateDir;
use super::{services, shell, stand_in};
use crate::model::{Lab, Machine, NetworkId, Role};
use crate::render;
use std::net::SocketAddr;
use std::time::Duration;

fn reachable(ns: &str, address: SocketAddr) -> bool {
    shell::tcp_reachable(ns, address, Duration::from_millis(500))
}

/// What runs on a machine, whether it is healthy, and why not.
fn machine_row(
    lab: &Lab,
    names: &LocalLab,
    state: &LocalStateDir,
    machine: &Machine,
) -> (String, String) {
    let name = machine.name.to_string();
    let ns = names.machine_ns(&name);
    let service_health = |service: &str, address: Option<SocketAddr>| -> String {
        match (services::running(state, service), address) {
            (None, _) => format!("DOWN ({service} not running)"),
            (Some(_), Some(address)) if !reachable(&ns, address) => {
                format!("DOWN ({address} not answering)")
            }
            (Some(_), _) => "healthy".to_owned(),
        }
    };
    match machine.role {
        Role::Lb => {
            let metrics = render::containers::lb_instance_config(lab, machine)
                .ok()
                .map(|c| c.metrics.listen);
            let pair = lab.replicas(Role::Lb).is_pair();
            (
                "lab-lb (process; no LXC here)".to_owned(),
                service_health(&services::daemon_service("lab-lb", pair, &name), metrics),
            )
        }
        Role::Vpn => {
            let metrics = machine
                .address_on(NetworkId::Net1)
                .map(|a| SocketAddr::from((a, render::containers::VPN_METRICS_PORT)));
            let pair = lab.replicas(Role::Vpn).is_pair();
            (
                format!("lab-vpn {} (process; no LXC here)", names.vpn_interface()),
                service_health(&services::daemon_service("lab-vpn", pair, &name), metrics),
            )
        }
        role => {
            let (http, mut tls) = stand_in::ports(role);
            let mut what = Vec::new();
            if !http.is_empty() {
                what.push(format!("http {http:?}"));
            }
            if !tls.is_empty() {
                what.push(format!("tls {tls:?}"));
            }
            if stand_in::talos_api(role) {
                what.push(format!("talos-api {}", stand_in::TALOS_API_PORT));
                tls.push(stand_in::TALOS_API_PORT);
            }
            let service = format!("stand-in-{name}");
            let health = match services::running(state, &service) {
                None => format!("DOWN ({service} not running)"),
                Some(_) => {
                    let down: Vec<u16> = http
                        .iter()
                        .chain(&tls)
                        .copied()
                        .filter(|p| !reachable(&ns, SocketAddr::from(([127, 0, 0, 1], *p))))
                        .collect();
                    if down.is_empty() {
                        "healthy".to_owned()
                    } else {
                        format!("DOWN (ports {down:?} not answering)")
                    }
                }
            };
            (
                format!("stand-in for {} ({})", role.as_str(), what.join(", ")),
                health,
            )
        }
    }
}

/// Prints the table of machines (and the dnsmasq servers' state) and the commands to try.
pub fn print(lab: &Lab, names: &LocalLab, state: &LocalStateDir) {
    lab_daemon::cli::out(&format!(
        "{:<10} {:<14} {:<34} {:<44} STATUS\n",
        "MACHINE", "NAMESPACE", "ADDRESSES", "RUNS"
    ));
    let dhcp: Vec<String> = render::DHCP_NETWORKS
        .iter()
        .map(|id| {
            let bridge = &lab.networks.get(*id).bridge;
            let up = services::running(state, &format!("dnsmasq-{bridge}")).is_some();
            format!("{bridge}:{}", if up { "up" } else { "DOWN" })
        })
        .collect();
    let host_addresses: Vec<String> = NetworkId::ALL
        .iter()
        .map(|id| format!("{} {}", id.as_str(), lab.networks.get(*id).host))
        .collect();
    lab_daemon::cli::out(&format!(
        "{:<10} {:<14} {:<34} {:<44} {}\n",
        "host",
        names.host_ns(),
        host_addresses.join(", "),
        "router, table inet lab, dnsmasq",
        dhcp.join(" ")
    ));
    for machine in &lab.guests() {
        let name = machine.name.to_string();
        let addresses: Vec<String> = machine
            .nics
            .iter()
            .map(|n| format!("{} {}", n.network.as_str(), n.address))
            .collect();
        let (runs, health) = machine_row(lab, names, state, machine);
        lab_daemon::cli::out(&format!(
            "{:<10} {:<14} {:<34} {:<44} {}\n",
            name,
            names.machine_ns(&name),
            addresses.join(", "),
            runs,
            health
        ));
    }
    let outside_runs = if services::running(state, "wireguard-go").is_some() {
        format!("home router; wireguard-go {}", names.client_interface())
    } else {
        "home router and the internet".to_owned()
    };
    lab_daemon::cli::out(&format!(
        "{:<10} {:<14} {:<34} {:<44}\n",
        "outside",
        names.outside_ns(),
        format!("net0 {}", super::build::home_router(lab)),
        outside_runs
    ));

    let talos = state.talos();
    for (what, path) in [
        ("talosconfig", talos.talosconfig()),
        ("kubeconfig", talos.kubeconfig()),
    ] {
        if path.exists() {
            lab_daemon::cli::out(&format!("{what}: {}\n", path.display()));
        }
    }

    let lb_net0 = render::role_address(lab, Role::Lb, NetworkId::Net0).ok();
    let lb_net2 = render::role_address(lab, Role::Lb, NetworkId::Net2).ok();
    let manager = lab.machines.iter().find(|m| m.role == Role::Manager);
    let vpn = lab.machines.iter().find(|m| m.role == Role::Vpn);
    lab_daemon::cli::out("\nTry:\n");
    if let Some(address) = lb_net0 {
        lab_daemon::cli::out(&format!(
            "  ip netns exec {} curl -s http://{address}/            # ingress: lab-lb to the workers' stand-ins\n",
            names.outside_ns()
        ));
    }
    if let (Some(manager), Some(address)) = (manager, lb_net2) {
        let ns = names.machine_ns(&manager.name.to_string());
        lab_daemon::cli::out(&format!(
            "  ip netns exec {ns} curl -sk https://{address}:6443/   # the API through lab-lb, from net1\n"
        ));
        lab_daemon::cli::out(&format!(
            "  ip netns exec {ns} curl -s http://{address}:{}/metrics  # lab-lb's metrics\n",
            render::containers::LB_METRICS_PORT
        ));
    }
    if let Some(vpn) = vpn {
        lab_daemon::cli::out(&format!(
            "  ip netns exec {} wg show {}\n",
            names.machine_ns(&vpn.name.to_string()),
            names.vpn_interface()
        ));
    }
    lab_daemon::cli::out(&format!(
        "  cat {}                    # the admin peer's wg-quick config\n",
        state.admin_client().display()
    ));
    lab_daemon::cli::out(&format!(
        "  lab-bootstrap down --local --name {}\n",
        names.prefix
    ));
}
