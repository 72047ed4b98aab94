//! Dashboards and logging on net1: what the manager VM runs to watch the lab (Prometheus with
//! the lab's scrape targets and alert rules, the blackbox exporter probing the Talos nodes,
//! Grafana with the repository's dashboards, systemd-journal-remote), and what the host and the
//! containers run to be watched (the node exporter, systemd-journal-upload).
//!
//! The manager gets its share as part of its one cloud-init user-data (render/manager.rs).

use super::containers::staged_in;
use super::manager::{CloudConfigPart, WriteFile};
use super::{role_address, RenderError, RenderedFile};
use crate::model::{Lab, NetworkId, Role};
use crate::render::containers::{LB_METRICS_PORT, VPN_METRICS_PORT};
use std::fmt::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// The node exporter's port on the host's net1 address (its registered default).
pub const NODE_EXPORTER_PORT: u16 = 9100;
/// systemd-journal-remote's port on the manager's net1 address (its registered default).
pub const JOURNAL_REMOTE_PORT: u16 = 19532;
/// The Talos API: the one port every Talos node answers on without extra setup.
pub const TALOS_API_PORT: u16 = 50000;
/// A configured peer without a handshake for this long raises `LabVpnPeerNoHandshake`: an
/// admin laptop is off for a night, rarely for a whole day.
pub const HANDSHAKE_ALERT_HOURS: u32 = 24;

/// Where Debian's prometheus package reads its config; the rules sit beside it, named
/// relative to it (as `promtool check config` resolves them).
pub const PROMETHEUS_CONFIG: &str = "/etc/prometheus/prometheus.yml";
/// The alert rules, next to [`PROMETHEUS_CONFIG`].
pub const RULES_FILE: &str = "lab.rules.yml";
/// Debian's prometheus-blackbox-exporter reads its modules here.
pub const BLACKBOX_CONFIG: &str = "/etc/prometheus/blackbox.yml";
/// Grafana's datasource provisioning.
pub const GRAFANA_DATASOURCE: &str = "/etc/grafana/provisioning/datasources/lab.yaml";
/// Grafana's dashboard provider, pointing at [`DASHBOARD_DIR`].
pub const GRAFANA_DASHBOARD_PROVIDER: &str = "/etc/grafana/provisioning/dashboards/lab.yaml";
/// Where the repository's dashboards are installed on the manager.
pub const DASHBOARD_DIR: &str = "/var/lib/grafana/dashboards/lab";
/// The datasource's UID, which every dashboard panel names.
pub const DATASOURCE_UID: &str = "lab-prometheus";
/// Where journal-remote writes what the lab's machines upload (one journal file per sender).
pub const REMOTE_JOURNAL_DIR: &str = "/var/log/journal/remote";
/// The journal-remote socket drop-in: the manager's net1 address only.
pub const JOURNAL_REMOTE_SOCKET_DROPIN: &str =
    "/etc/systemd/system/systemd-journal-remote.socket.d/lab.conf";
/// The journal-remote service drop-in: plain HTTP (see [`journal_remote_service_dropin`]).
pub const JOURNAL_REMOTE_SERVICE_DROPIN: &str =
    "/etc/systemd/system/systemd-journal-remote.service.d/lab.conf";
/// The uploader's drop-in, host and containers alike: the manager's URL, and retries for as
/// long as the manager is not there.
pub const JOURNAL_UPLOAD_DROPIN: &str =
    "/etc/systemd/system/systemd-journal-upload.service.d/lab.conf";
/// The node exporter drop-in on the host: its net1 address only.
pub const NODE_EXPORTER_DROPIN: &str =
    "/etc/systemd/system/prometheus-node-exporter.service.d/lab.conf";
/// The host's node exporter unit (Debian's prometheus-node-exporter).
pub const NODE_EXPORTER_UNIT: &str = "prometheus-node-exporter.service";
/// The uploader's unit (Debian's systemd-journal-remote package ships it).
pub const JOURNAL_UPLOAD_UNIT: &str = "systemd-journal-upload.service";

/// The dashboards the repository ships, as installed under [`DASHBOARD_DIR`].
pub const DASHBOARDS: [(&str, &str); 2] = [
    (
        "lab-lb.json",
        include_str!("../../../deploy/grafana/lab-lb.json"),
    ),
    (
        "lab-vpn.json",
        include_str!("../../../deploy/grafana/lab-vpn.json"),
    ),
];

/// Grafana is not packaged by Debian: its own apt repository, whose signing key is trusted only
/// with this full fingerprint (the one apt.grafana.com publishes since its 2023 key rotation).
pub const GRAFANA_APT_KEY_FINGERPRINT: &str = "B53AE77BADB630A683046005963FA27710458545";
/// Where apt.grafana.com publishes that key.
pub const GRAFANA_APT_KEY_URL: &str = "https://apt.grafana.com/gpg.key";
/// The script that installs Grafana on the manager.
pub const GRAFANA_INSTALLER: &str = "/usr/local/sbin/lab-install-grafana";
/// The line of [`grafana_installer`] after which the key is trusted.
pub const GRAFANA_KEY_CHECKED: &str = "# The key is the published one: from here on it is trusted.";

/// Installs Grafana from apt.grafana.com once the key it serves proves to be the one key with
/// [`GRAFANA_APT_KEY_FINGERPRINT`]. Run after the Debian packages, so a failure here (the
/// repository down, a changed key) costs Grafana alone, said in cloud-init's log.
pub fn grafana_installer() -> String {
    format!(
        r#"#!/bin/sh
# Written by lab-bootstrap: Grafana is not in Debian; apt.grafana.com's key is trusted only if
# it is exactly the key with the published fingerprint.
set -eu
FINGERPRINT={GRAFANA_APT_KEY_FINGERPRINT}
KEY_URL={GRAFANA_APT_KEY_URL}
KEYRING=/etc/apt/keyrings/grafana.gpg
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export GNUPGHOME="$tmp"
curl -fsSL --retry 5 "$KEY_URL" -o "$tmp/key.asc"
gpg --batch --dearmor < "$tmp/key.asc" > "$tmp/key.gpg"
# The primary key of every key in the file: one, and the published one.
found=$(gpg --batch --show-keys --with-colons "$tmp/key.gpg" | awk -F: '$1 == "pub" {{ p = 1; next }} $1 == "fpr" && p {{ print $10; p = 0 }}')
if [ "$found" != "$FINGERPRINT" ]; then
  echo "lab-install-grafana: $KEY_URL holds the key(s) $found, not $FINGERPRINT; Grafana is not installed" >&2
  exit 1
fi
{GRAFANA_KEY_CHECKED}
install -d -m 0755 /etc/apt/keyrings
install -m 0644 "$tmp/key.gpg" "$KEYRING"
echo "deb [signed-by=$KEYRING] https://apt.grafana.com stable main" > /etc/apt/sources.list.d/grafana.list
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q grafana
systemctl daemon-reload
systemctl enable --now grafana-server
"#
    )
}

fn manager_net1(lab: &Lab) -> Result<Ipv4Addr, RenderError> {
    role_address(lab, Role::Manager, NetworkId::Net1)
}

/// One scrape target: the address to scrape and the machine it is, as its `instance` label.
fn target(address: impl std::fmt::Display, machine: &str) -> String {
    format!("      - targets: ['{address}']\n        labels: {{instance: '{machine}'}}\n")
}

/// `prometheus.yml`: lab-lb, lab-vpn, the host's node exporter and the Talos nodes (probed),
/// `job` naming the program and `instance` the machine.
pub fn prometheus_config(lab: &Lab) -> Result<String, RenderError> {
    let machine_name = |role: Role| {
        lab.machines
            .iter()
            .find(|m| m.role == role)
            .map(|m| m.name.to_string())
            .unwrap_or_else(|| role.as_str().to_owned())
    };
    let lb = role_address(lab, Role::Lb, NetworkId::Net2)?;
    let vpn = role_address(lab, Role::Vpn, NetworkId::Net1)?;
    let mut out = String::from(
        "# Written by lab-bootstrap from lab.toml: the lab's scrape targets, `instance` naming\n\
         # each machine as lab.toml does.\n\
         global:\n  scrape_interval: 30s\n  evaluation_interval: 30s\n\
         rule_files:\n",
    );
    let _ = writeln!(out, "  - {RULES_FILE}");
    out.push_str("scrape_configs:\n  - job_name: prometheus\n    static_configs:\n");
    out.push_str(&target("localhost:9090", &machine_name(Role::Manager)));
    // A pair's containers each serve their metrics on their own address.
    let own = |role: Role, network: NetworkId, fallback: Ipv4Addr| -> Vec<(Ipv4Addr, String)> {
        match lab.replicas(role).is_pair() {
            true => lab
                .instances(role)
                .iter()
                .filter_map(|m| Some((m.address_on(network)?, m.name.to_string())))
                .collect(),
            false => vec![(fallback, machine_name(role))],
        }
    };
    out.push_str("  - job_name: lab-lb\n    static_configs:\n");
    for (address, name) in own(Role::Lb, NetworkId::Net2, lb) {
        out.push_str(&target(format!("{address}:{LB_METRICS_PORT}"), &name));
    }
    out.push_str("  - job_name: lab-vpn\n    static_configs:\n");
    for (address, name) in own(Role::Vpn, NetworkId::Net1, vpn) {
        out.push_str(&target(format!("{address}:{VPN_METRICS_PORT}"), &name));
    }
    out.push_str("  - job_name: node\n    static_configs:\n");
    out.push_str(&target(
        format!("{}:{NODE_EXPORTER_PORT}", lab.networks.net1.host),
        "host",
    ));
    // Talos serves no metrics without extra setup (etcd's on localhost only, the kubelet's
    // behind authentication, no node exporter): its API port answering is what is checked.
    out.push_str(
        "  # Talos nodes expose no metrics without extra setup: the blackbox exporter checks\n\
         \x20 # that their API port answers (probe_success).\n\
         \x20 - job_name: talos\n    metrics_path: /probe\n    params:\n      module: [tcp_connect]\n\
         \x20   static_configs:\n",
    );
    for m in lab
        .machines
        .iter()
        .filter(|m| matches!(m.role, Role::ControlPlane | Role::Worker))
    {
        if let Some(address) = m.address_on(NetworkId::Net1) {
            out.push_str(&target(
                format!("{address}:{TALOS_API_PORT}"),
                &m.name.to_string(),
            ));
        }
    }
    out.push_str(
        "    relabel_configs:\n      - source_labels: [__address__]\n        target_label: __param_target\n\
         \x20     - target_label: __address__\n        replacement: localhost:9115\n",
    );
    Ok(out)
}

/// The alert rules: what breaks a lab.
pub fn alert_rules() -> String {
    format!(
        r#"# Written by lab-bootstrap: what breaks a lab.
groups:
  - name: lab
    rules:
      - alert: LabLbConfigReloadFailed
        expr: lab_lb_config_last_reload_successful == 0
        labels: {{severity: critical}}
        annotations:
          summary: "lab-lb on {{{{ $labels.instance }}}} refused its config and runs the previous one"
          description: "journalctl -u lab-lb on the lb container, or `lab-lb check /etc/lab-lb/lb.toml`, says why."
      - alert: LabVpnConfigReloadFailed
        expr: lab_vpn_config_last_reload_successful == 0
        labels: {{severity: critical}}
        annotations:
          summary: "lab-vpn on {{{{ $labels.instance }}}} refused its config and runs the previous one"
          description: "journalctl -u lab-vpn on the vpn container, or `lab-vpn check /etc/lab-vpn/vpn.toml`, says why."
      - alert: LabBackendServerDown
        expr: lab_lb_server_up == 0
        for: 2m
        labels: {{severity: warning}}
        annotations:
          summary: "backend {{{{ $labels.backend }}}}: server {{{{ $labels.server }}}} is held down by lab-lb"
      - alert: LabVpnPeerNoHandshake
        expr: time() - wireguard_latest_handshake_seconds > {seconds}
        labels: {{severity: info}}
        annotations:
          summary: "VPN peer {{{{ $labels.friendly_name }}}} has had no handshake for {hours} hours (or never)"
      - alert: LabVpnReceiveDrops
        expr: rate(lab_vpn_udp_receive_drops_total[5m]) > 1
        for: 10m
        labels: {{severity: info}}
        annotations:
          summary: "lab-vpn on {{{{ $labels.instance }}}} drops tunnel packets its UDP socket cannot hold"
          description: "The daemon falls behind under load. A larger [vpn] udp_receive_buffer in lab.toml (with the host's net.core.rmem_max raised to match) trades these drops for latency under load."
      - alert: LabTargetDown
        expr: up == 0
        for: 5m
        labels: {{severity: critical}}
        annotations:
          summary: "{{{{ $labels.job }}}} on {{{{ $labels.instance }}}} cannot be scraped"
      - alert: LabTalosNodeUnreachable
        expr: probe_success{{job="talos"}} == 0
        for: 5m
        labels: {{severity: critical}}
        annotations:
          summary: "Talos node {{{{ $labels.instance }}}} does not answer on its API port {port}"
"#,
        seconds = HANDSHAKE_ALERT_HOURS * 3600,
        hours = HANDSHAKE_ALERT_HOURS,
        port = TALOS_API_PORT,
    )
}

/// The blackbox exporter's one module: a TCP connect.
pub fn blackbox_config() -> &'static str {
    "# Written by lab-bootstrap: the Talos nodes' API port answers.\n\
     modules:\n  tcp_connect:\n    prober: tcp\n    timeout: 5s\n"
}

/// Grafana's datasource: the manager's own Prometheus, under the UID the dashboards name.
pub fn grafana_datasource() -> String {
    format!(
        "# Written by lab-bootstrap.\napiVersion: 1\ndatasources:\n  - name: Prometheus\n    type: prometheus\n    uid: {DATASOURCE_UID}\n    access: proxy\n    url: http://localhost:9090\n    isDefault: true\n    editable: false\n"
    )
}

/// Grafana's dashboard provider, reading the repository's dashboards.
pub fn grafana_dashboard_provider() -> String {
    format!(
        "# Written by lab-bootstrap.\napiVersion: 1\nproviders:\n  - name: lab\n    folder: Lab\n    type: file\n    disableDeletion: true\n    options:\n      path: {DASHBOARD_DIR}\n"
    )
}

/// journal-remote listens on the manager's net1 address alone.
pub fn journal_remote_socket_dropin(lab: &Lab) -> Result<String, RenderError> {
    Ok(format!(
        "# Written by lab-bootstrap: the lab's journals arrive on net1 only.\n[Socket]\nListenStream=\nListenStream={}:{JOURNAL_REMOTE_PORT}\nFreeBind=true\n",
        manager_net1(lab)?
    ))
}

/// Plain HTTP: Debian's unit wants HTTPS with certificates of a PKI the lab does not have for
/// it; the journals travel on the lab's own networks, which the firewall keeps closed to net0.
pub fn journal_remote_service_dropin() -> String {
    format!(
        "# Written by lab-bootstrap: HTTP on the socket of the .socket unit, one file per sender.\n[Service]\nExecStart=\nExecStart=/lib/systemd/systemd-journal-remote --listen-http=-3 --output={REMOTE_JOURNAL_DIR}/\n"
    )
}

/// The uploader's drop-in: to the manager's journal-remote. The manager boots after the host
/// and the containers are set up (and may be rebuilt), so the uploader retries every 30 s for
/// ever instead of giving up after systemd's five quick restarts.
pub fn journal_upload_dropin(manager: Ipv4Addr) -> String {
    format!(
        "# Written by lab-bootstrap: this machine's journal goes to the manager.\n[Unit]\nStartLimitIntervalSec=0\n\n[Service]\nExecStart=\nExecStart=/lib/systemd/systemd-journal-upload --save-state --url=http://{manager}:{JOURNAL_REMOTE_PORT}\nRestart=always\nRestartSec=30s\n"
    )
}

/// The manager's net1 address, where journals go; `None` for a lab without a manager there.
pub fn journal_sink(lab: &Lab) -> Option<Ipv4Addr> {
    lab.machines
        .iter()
        .find(|m| m.role == Role::Manager)
        .and_then(|m| m.address_on(NetworkId::Net1))
}

/// The host's files: its node exporter's drop-in, and its uploader's when there is a manager.
pub fn host_files(lab: &Lab) -> Vec<RenderedFile> {
    let mut out = vec![RenderedFile {
        path: PathBuf::from(NODE_EXPORTER_DROPIN),
        contents: node_exporter_dropin(lab),
        mode: 0o644,
    }];
    if let Some(manager) = journal_sink(lab) {
        out.push(RenderedFile {
            path: PathBuf::from(JOURNAL_UPLOAD_DROPIN),
            contents: journal_upload_dropin(manager),
            mode: 0o644,
        });
        for container in [Role::Lb, Role::Vpn]
            .map(|role| lab.instances(role))
            .concat()
        {
            out.push(RenderedFile {
                path: staged_in(container.name.as_str(), JOURNAL_UPLOAD_DROPIN),
                contents: journal_upload_dropin(manager),
                mode: 0o644,
            });
        }
    }
    out
}

/// The host's node exporter, on its net1 address alone: the manager scrapes it there, and
/// nothing on net0 or net2 sees it.
pub fn node_exporter_dropin(lab: &Lab) -> String {
    format!(
        "# Written by lab-bootstrap: the node exporter on the host's net1 address only.\n[Service]\nExecStart=\nExecStart=/usr/bin/prometheus-node-exporter --web.listen-address={}:{NODE_EXPORTER_PORT}\n",
        lab.networks.net1.host
    )
}

fn file(path: &str, content: &str) -> WriteFile {
    WriteFile {
        path: path.to_owned(),
        permissions: "0644",
        content: content.to_owned(),
        defer: true,
    }
}

fn executable(path: &str, content: &str) -> WriteFile {
    WriteFile {
        permissions: "0755",
        ..file(path, content)
    }
}

/// The manager's share of dashboards and logging, for its one cloud-config: the packages,
/// their configs, the dashboards, and the services started.
pub fn manager_part(lab: &Lab) -> Result<CloudConfigPart, RenderError> {
    let mut files = vec![
        file(PROMETHEUS_CONFIG, &prometheus_config(lab)?),
        file(&format!("/etc/prometheus/{RULES_FILE}"), &alert_rules()),
        file(BLACKBOX_CONFIG, blackbox_config()),
        file(GRAFANA_DATASOURCE, &grafana_datasource()),
        file(GRAFANA_DASHBOARD_PROVIDER, &grafana_dashboard_provider()),
        executable(GRAFANA_INSTALLER, &grafana_installer()),
        file(
            JOURNAL_REMOTE_SOCKET_DROPIN,
            &journal_remote_socket_dropin(lab)?,
        ),
        file(
            JOURNAL_REMOTE_SERVICE_DROPIN,
            &journal_remote_service_dropin(),
        ),
    ];
    for (name, dashboard) in DASHBOARDS {
        files.push(file(&format!("{DASHBOARD_DIR}/{name}"), dashboard));
    }
    let command = |words: &[&str]| words.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>();
    Ok(CloudConfigPart {
        packages: vec![
            "prometheus",
            "prometheus-blackbox-exporter",
            "systemd-journal-remote",
            // What the Grafana installer fetches and checks its key with.
            "curl",
            "gnupg",
        ],
        write_files: files,
        runcmd: vec![
            command(&[
                "systemctl",
                "enable",
                "--now",
                "systemd-journal-remote.socket",
            ]),
            command(&[
                "systemctl",
                "restart",
                "prometheus",
                "prometheus-blackbox-exporter",
            ]),
            command(&[GRAFANA_INSTALLER]),
        ],
    })
}
