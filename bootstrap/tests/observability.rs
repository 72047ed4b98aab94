//! Dashboards and logging on net1, as `lab-bootstrap render` writes them into the manager's
//! cloud-init user-data: Prometheus's own `promtool` accepts the scrape config and the rules,
//! and the rules fire on what breaks a lab (`promtool test rules`) (cloud-init's own schema
//! accepts the snippet: tests/manager.rs); the dashboards are the repository's, valid JSON, every panel on the
//! provisioned datasource; and every metric the dashboards and the rules name is served by a
//! real lab-lb and lab-vpn.

use lab_bootstrap::render::observability::{self, DATASOURCE_UID};
use lab_tests::binaries::workspace_bin;
use lab_tests::daemon_process::DaemonProcess;
use lab_tests::netns::Netns;
use lab_tests::notify_socket::NotifySocket;
use lab_tests::{http, ports, workspace};
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use toml_edit::value;

const BIN: &str = env!("CARGO_BIN_EXE_lab-bootstrap");

/// `lab-bootstrap render --root <root>` of the example lab.
fn render(root: &Path) {
    let output = Command::new(BIN)
        .arg("render")
        .arg("--root")
        .arg(root)
        .arg("--state")
        .arg(root.join("state"))
        .arg(workspace::config_path("lab.toml"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "render failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The manager's user-data as render wrote it.
fn user_data(root: &Path) -> String {
    std::fs::read_to_string(root.join("var/lib/vz/snippets/lab-manager.yaml")).unwrap()
}

/// The snippet's cloud-config (the first line is cloud-init's `#cloud-config`).
fn cloud_config(text: &str) -> Value {
    let body = text.strip_prefix("#cloud-config\n").unwrap();
    serde_norway::from_str(body).unwrap()
}

/// The snippet's `write_files`, written under `dir` at their paths, as the manager would.
fn unpack(config: &Value, dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for file in config["write_files"].as_array().unwrap() {
        let path = dir.join(file["path"].as_str().unwrap().trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, file["content"].as_str().unwrap()).unwrap();
        out.push(path);
    }
    out
}

fn rendered() -> (tempfile::TempDir, Value) {
    let root = tempfile::tempdir().unwrap();
    render(root.path());
    let text = user_data(root.path());
    let config = cloud_config(&text);
    unpack(&config, &root.path().join("manager"));
    (root, config)
}

fn promtool(args: &[&str]) -> String {
    let output = Command::new("promtool").args(args).output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?}:\n{said}");
    said
}

#[test]
fn promtool_accepts_the_rendered_scrape_config_and_rules() {
    let (root, _) = rendered();
    let config = root.path().join("manager/etc/prometheus/prometheus.yml");
    // `check config` also reads the rule files the config names, relative to it.
    let said = promtool(&["check", "config", config.to_str().unwrap()]);
    assert!(said.contains("SUCCESS: 1 rule files found"), "{said}");
    let rules = root.path().join("manager/etc/prometheus/lab.rules.yml");
    let said = promtool(&["check", "rules", rules.to_str().unwrap()]);
    assert!(said.contains("SUCCESS: 7 rules found"), "{said}");
}

#[test]
fn every_machine_is_scraped_under_its_own_name() {
    let (root, _) = rendered();
    let config =
        std::fs::read_to_string(root.path().join("manager/etc/prometheus/prometheus.yml")).unwrap();
    // (job, target, instance) as the example lab's addresses and names say.
    for (job, target, instance) in [
        ("prometheus", "localhost:9090", "manager"),
        ("lab-lb", "10.10.2.2:8404", "lb"),
        ("lab-vpn", "10.10.1.2:9586", "vpn"),
        ("node", "10.10.1.1:9100", "host"),
        ("talos", "10.10.1.11:50000", "cp1"),
        ("talos", "10.10.1.13:50000", "cp3"),
        ("talos", "10.10.1.22:50000", "w2"),
    ] {
        let job_at = config.find(&format!("job_name: {job}\n")).unwrap();
        let line = format!("- targets: ['{target}']\n        labels: {{instance: '{instance}'}}");
        let at = config
            .find(&line)
            .unwrap_or_else(|| panic!("{line}\n{config}"));
        assert!(at > job_at, "{target} is not under job {job}");
    }
}

/// The rules fire on the states they name, and only on them, as Prometheus evaluates them.
#[test]
fn alerts_fire_on_what_breaks_a_lab() {
    let (root, _) = rendered();
    let dir = root.path().join("manager/etc/prometheus");
    let test = format!(
        r#"rule_files: [lab.rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'lab_lb_config_last_reload_successful{{instance="lb"}}'
        values: '1 1 0 0'
      - series: 'lab_vpn_config_last_reload_successful{{instance="vpn"}}'
        values: '1 1 1 1'
      - series: 'lab_lb_server_up{{backend="kube-api",server="10.10.2.11:6443"}}'
        values: '1 0 0 0 0 0'
      - series: 'lab_lb_server_up{{backend="kube-api",server="10.10.2.12:6443"}}'
        values: '1 1 1 1 1 1'
      - series: 'up{{job="node",instance="host"}}'
        values: '0 0 0 0 0 0 0'
      - series: 'up{{job="lab-lb",instance="lb"}}'
        values: '1 1 1 1 1 1 1'
      - series: 'probe_success{{job="talos",instance="cp1"}}'
        values: '0 0 0 0 0 0 0'
    alert_rule_test:
      - eval_time: 3m
        alertname: LabLbConfigReloadFailed
        exp_alerts:
          - exp_labels: {{severity: critical, instance: lb}}
            exp_annotations:
              summary: "lab-lb on lb refused its config and runs the previous one"
              description: "journalctl -u lab-lb on the lb container, or `lab-lb check /etc/lab-lb/lb.toml`, says why."
      - eval_time: 3m
        alertname: LabVpnConfigReloadFailed
        exp_alerts: []
      - eval_time: 1m
        alertname: LabBackendServerDown
        exp_alerts: []
      - eval_time: 4m
        alertname: LabBackendServerDown
        exp_alerts:
          - exp_labels: {{severity: warning, backend: kube-api, server: "10.10.2.11:6443"}}
            exp_annotations:
              summary: "backend kube-api: server 10.10.2.11:6443 is held down by lab-lb"
      - eval_time: 6m
        alertname: LabTargetDown
        exp_alerts:
          - exp_labels: {{severity: critical, job: node, instance: host}}
            exp_annotations:
              summary: "node on host cannot be scraped"
      - eval_time: 6m
        alertname: LabTalosNodeUnreachable
        exp_alerts:
          - exp_labels: {{severity: critical, job: talos, instance: cp1}}
            exp_annotations:
              summary: "Talos node cp1 does not answer on its API port 50000"
  # `vpn` drops 10 datagrams a second, `vpn-2` none.
  - interval: 1m
    input_series:
      - series: 'lab_vpn_udp_receive_drops_total{{instance="vpn"}}'
        values: '0+600x30'
      - series: 'lab_vpn_udp_receive_drops_total{{instance="vpn-2"}}'
        values: '0+0x30'
    alert_rule_test:
      - eval_time: 8m
        alertname: LabVpnReceiveDrops
        exp_alerts: []
      - eval_time: 20m
        alertname: LabVpnReceiveDrops
        exp_alerts:
          - exp_labels: {{severity: info, instance: vpn}}
            exp_annotations:
              summary: "lab-vpn on vpn drops tunnel packets its UDP socket cannot hold"
              description: "The daemon falls behind under load. A larger [vpn] udp_receive_buffer in lab.toml (with the host's net.core.rmem_max raised to match) trades these drops for latency under load."
  # The test's clock starts at 0 (1970): `laptop` never shook hands (0, as lab-vpn says),
  # `phone` does every hour (the value is the time of its latest handshake).
  - interval: 1h
    input_series:
      - series: 'wireguard_latest_handshake_seconds{{friendly_name="laptop"}}'
        values: '0+0x30'
      - series: 'wireguard_latest_handshake_seconds{{friendly_name="phone"}}'
        values: '0+3600x30'
    alert_rule_test:
      - eval_time: {before}h
        alertname: LabVpnPeerNoHandshake
        exp_alerts: []
      - eval_time: {after}h
        alertname: LabVpnPeerNoHandshake
        exp_alerts:
          - exp_labels: {{severity: info, friendly_name: laptop}}
            exp_annotations:
              summary: "VPN peer laptop has had no handshake for {hours} hours (or never)"
"#,
        hours = observability::HANDSHAKE_ALERT_HOURS,
        before = observability::HANDSHAKE_ALERT_HOURS - 1,
        after = observability::HANDSHAKE_ALERT_HOURS + 1,
    );
    std::fs::write(dir.join("lab.rules.test.yml"), test).unwrap();
    promtool(&[
        "test",
        "rules",
        dir.join("lab.rules.test.yml").to_str().unwrap(),
    ]);
}

#[test]
fn the_manager_installs_and_starts_what_it_serves() {
    let (_, config) = rendered();
    let packages: Vec<&str> = config["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    for package in [
        "prometheus",
        "prometheus-blackbox-exporter",
        "systemd-journal-remote",
        "curl",
        "gnupg",
    ] {
        assert!(packages.contains(&package), "{packages:?}");
    }
    // Written after the packages, so no package default replaces them (the tools' setup files,
    // tests/manager.rs's, belong to no package).
    let mut watched = 0;
    for file in config["write_files"].as_array().unwrap() {
        let path = file["path"].as_str().unwrap();
        if path.contains("lab-manager") {
            continue;
        }
        assert_eq!(file["defer"], true, "{path}");
        watched += 1;
    }
    assert!(watched >= 8, "{watched} files of dashboards and logging");
    let runcmd = config["runcmd"].to_string();
    for unit in [
        "systemd-journal-remote.socket",
        "prometheus",
        "prometheus-blackbox-exporter",
        observability::GRAFANA_INSTALLER,
    ] {
        assert!(runcmd.contains(&format!("\"{unit}\"")), "{runcmd}");
    }
    // Grafana's installer is the rendered one, executable, and starts Grafana.
    let installer = config["write_files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == observability::GRAFANA_INSTALLER)
        .unwrap();
    assert_eq!(installer["permissions"], "0755");
    let script = installer["content"].as_str().unwrap();
    assert_eq!(script, observability::grafana_installer());
    assert!(script.ends_with("systemctl enable --now grafana-server\n"));
    let syntax = Command::new("sh")
        .args(["-n", "-c", script])
        .status()
        .unwrap();
    assert!(syntax.success());
}

/// The Grafana installer's key check (the script up to where it trusts the key, run with a
/// local key in place of apt.grafana.com's): a key of another fingerprint is refused, saying
/// which; the one with the pinned fingerprint passes.
#[test]
fn grafanas_apt_key_is_trusted_only_with_the_pinned_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("gnupg");
    std::fs::create_dir(&home).unwrap();
    std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let gpg = |args: &[&str]| {
        let out = Command::new("gpg")
            .env("GNUPGHOME", &home)
            .args(["--batch", "--passphrase", ""])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    gpg(&[
        "--quick-gen-key",
        "lab test <test@lab.invalid>",
        "ed25519",
        "sign",
        "never",
    ]);
    let key = dir.path().join("key.asc");
    std::fs::write(&key, gpg(&["--armor", "--export"])).unwrap();
    let ours = gpg(&["--with-colons", "--list-keys"])
        .lines()
        .find_map(|l| l.strip_prefix("fpr:::::::::"))
        .unwrap()
        .trim_end_matches(':')
        .to_owned();

    let installer = observability::grafana_installer();
    let (check, _) = installer
        .split_once(observability::GRAFANA_KEY_CHECKED)
        .unwrap();
    let local = check.replace(
        observability::GRAFANA_APT_KEY_URL,
        &format!("file://{}", key.display()),
    );
    let run = |script: &str| Command::new("sh").args(["-c", script]).output().unwrap();
    let refused = run(&local);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        said.contains(&format!(
            "holds the key(s) {ours}, not {}; Grafana is not installed",
            observability::GRAFANA_APT_KEY_FINGERPRINT
        )),
        "{said}"
    );
    let pinned = local.replace(observability::GRAFANA_APT_KEY_FINGERPRINT, &ours);
    let passed = run(&pinned);
    assert!(
        passed.status.success(),
        "{}",
        String::from_utf8_lossy(&passed.stderr)
    );
}

#[test]
fn journal_remote_listens_on_the_managers_net1_address_over_http() {
    let (root, _) = rendered();
    let read =
        |path: &str| std::fs::read_to_string(root.path().join("manager").join(&path[1..])).unwrap();
    let socket = read(observability::JOURNAL_REMOTE_SOCKET_DROPIN);
    // The package's own ListenStream (every address) is reset before ours.
    assert!(
        socket.contains("ListenStream=\nListenStream=10.10.1.5:19532\n"),
        "{socket}"
    );
    let service = read(observability::JOURNAL_REMOTE_SERVICE_DROPIN);
    assert!(
        service.contains("ExecStart=\nExecStart=/lib/systemd/systemd-journal-remote --listen-http=-3 --output=/var/log/journal/remote/\n"),
        "{service}"
    );
}

/// Every dashboard is the repository's file, valid JSON, each panel and query on the
/// provisioned datasource; the provider reads them where they are written.
#[test]
fn dashboards_are_the_repositorys_and_use_the_provisioned_datasource() {
    let (root, config) = rendered();
    let manager = root.path().join("manager");
    let datasource =
        std::fs::read_to_string(manager.join(&observability::GRAFANA_DATASOURCE[1..])).unwrap();
    assert!(
        datasource.contains(&format!("uid: {DATASOURCE_UID}\n"))
            && datasource.contains("url: http://localhost:9090\n"),
        "{datasource}"
    );
    let provider =
        std::fs::read_to_string(manager.join(&observability::GRAFANA_DASHBOARD_PROVIDER[1..]))
            .unwrap();
    assert!(
        provider.contains(&format!("path: {}\n", observability::DASHBOARD_DIR)),
        "{provider}"
    );
    let written: Vec<&str> = config["write_files"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["path"].as_str())
        .filter(|p| p.starts_with(observability::DASHBOARD_DIR))
        .collect();
    assert_eq!(written.len(), 2, "{written:?}");
    for name in ["lab-lb.json", "lab-vpn.json"] {
        let shipped =
            std::fs::read_to_string(workspace::root().join("deploy/grafana").join(name)).unwrap();
        let installed = std::fs::read_to_string(
            manager.join(&format!("{}/{name}", observability::DASHBOARD_DIR)[1..]),
        )
        .unwrap();
        assert_eq!(installed, shipped, "{name}");
        let dashboard: Value = serde_json::from_str(&shipped).unwrap();
        assert_eq!(dashboard["uid"], name.trim_end_matches(".json"));
        let panels = dashboard["panels"].as_array().unwrap();
        assert!(panels.len() >= 5, "{name}");
        for panel in panels {
            assert_eq!(
                panel["datasource"]["uid"], DATASOURCE_UID,
                "{name}: {panel}"
            );
            let targets = panel["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{name}: {}", panel["title"]);
            for target in targets {
                assert_eq!(target["datasource"]["uid"], DATASOURCE_UID);
                assert!(!target["expr"].as_str().unwrap().is_empty());
            }
        }
    }
}

/// The metric names of the lab's own programs in `text` (PromQL or a rules file).
fn lab_metric_names(text: &str) -> BTreeSet<String> {
    let pattern = regex::Regex::new(r"\b(?:lab_lb|lab_vpn|wireguard)_[a-zA-Z0-9_]+").unwrap();
    pattern
        .find_iter(text)
        .map(|m| m.as_str().to_owned())
        .collect()
}

/// Every sample name an exposition serves, and for each `# TYPE`d family the names its samples
/// take (`_total` of a counter, `_bucket`/`_sum`/`_count` of a histogram).
fn served_names(exposition: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split_whitespace();
            let (Some(name), Some(kind)) = (words.next(), words.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            out.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#') {
            if let Some(name) = line.split(['{', ' ']).next().filter(|n| !n.is_empty()) {
                out.insert(name.to_owned());
            }
        }
    }
    out
}

/// The example lb.toml with its listeners, servers and metrics on loopback ports.
fn lb_config(dir: &Path) -> (PathBuf, SocketAddr) {
    let mut config = workspace::config_document("lb.toml");
    let metrics = ports::free_tcp();
    config["metrics"]["listen"] = value(metrics.to_string());
    for listener in config["listener"]
        .as_array_of_tables_mut()
        .unwrap()
        .iter_mut()
    {
        listener["listen"] = value(ports::free_tcp().to_string());
    }
    for backend in config["backend"]
        .as_array_of_tables_mut()
        .unwrap()
        .iter_mut()
    {
        for server in backend["server"].as_array_mut().unwrap().iter_mut() {
            let server = server.as_inline_table_mut().unwrap();
            server.insert("address", ports::free_tcp().to_string().into());
        }
    }
    let path = dir.join("lb.toml");
    std::fs::write(&path, config.to_string()).unwrap();
    (path, metrics)
}

/// The example vpn.toml with a key of its own (0600) and metrics on loopback.
fn vpn_config(dir: &Path) -> (PathBuf, SocketAddr) {
    use std::os::unix::fs::PermissionsExt;
    let key = dir.join("private.key");
    std::fs::write(
        &key,
        lab_schema::vpn::key::PrivateKey::generate().expose_base64(),
    )
    .unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut config = workspace::config_document("vpn.toml");
    let metrics = ports::free_tcp();
    config["metrics"]["listen"] = value(metrics.to_string());
    config["interface"]["private_key_file"] = value("private.key");
    // `wg` sockets live in one directory for every namespace: a name of this test's own.
    config["interface"]["name"] = value(format!("wgo{}", std::process::id() % 100000));
    let path = dir.join("vpn.toml");
    std::fs::write(&path, config.to_string()).unwrap();
    (path, metrics)
}

/// Scrapes `metrics` in `ns` until every name of `wanted` is served (health checks and the
/// first reload counters may take a moment); returns those still missing at the deadline.
fn missing_from(ns: &Netns, metrics: SocketAddr, wanted: &BTreeSet<String>) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let response = http::get_in(Some(ns), metrics, "/metrics", &[]);
        assert_eq!(response.status, 200);
        let served = served_names(&response.body);
        let missing: Vec<String> = wanted.difference(&served).cloned().collect();
        if missing.is_empty() || Instant::now() > deadline {
            return missing;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn every_metric_the_dashboards_and_rules_name_is_served_by_the_daemons() {
    let (root, _) = rendered();
    let mut named = lab_metric_names(&observability::alert_rules());
    for (_, dashboard) in observability::DASHBOARDS {
        let dashboard: Value = serde_json::from_str(dashboard).unwrap();
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                named.extend(lab_metric_names(target["expr"].as_str().unwrap()));
            }
        }
    }
    let rules =
        std::fs::read_to_string(root.path().join("manager/etc/prometheus/lab.rules.yml")).unwrap();
    named.extend(lab_metric_names(&rules));
    let (lb_names, vpn_names): (BTreeSet<String>, BTreeSet<String>) =
        named.into_iter().partition(|n| n.starts_with("lab_lb_"));
    // What the rules rely on is among them: a rename in the daemons fails here.
    assert!(lb_names.contains("lab_lb_server_up"), "{lb_names:?}");
    assert!(lb_names.contains("lab_lb_config_last_reload_successful"));
    assert!(vpn_names.contains("wireguard_latest_handshake_seconds"));
    assert!(vpn_names.contains("lab_vpn_config_last_reload_successful"));

    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::new("obsm");
    let mut missing = Vec::new();
    for (program, (config, metrics), names) in [
        ("lab-lb", lb_config(dir.path()), &lb_names),
        ("lab-vpn", vpn_config(dir.path()), &vpn_names),
    ] {
        let mut notify = NotifySocket::new();
        let bin = workspace_bin(program);
        let command =
            DaemonProcess::command_in(Some(&ns), bin.to_str().unwrap(), &config, notify.path());
        let daemon = DaemonProcess::spawn(command);
        notify.expect(&["READY=1"], Duration::from_secs(20));
        missing.extend(
            missing_from(&ns, metrics, names)
                .into_iter()
                .map(|n| format!("{program}: {n}")),
        );
        drop(daemon);
    }
    assert!(
        missing.is_empty(),
        "named in the dashboards or rules, not served:\n{}",
        missing.join("\n")
    );
}

/// The command a rendered drop-in runs: its last `ExecStart=` that is not the reset.
fn exec_start(dropin: &str) -> Vec<String> {
    dropin
        .lines()
        .filter_map(|l| l.strip_prefix("ExecStart="))
        .rfind(|c| !c.is_empty())
        .unwrap_or_else(|| panic!("no ExecStart in\n{dropin}"))
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// A journal entry uploaded as the host and containers upload, with the rendered commands,
/// reaches the manager's journal-remote as it runs there (socket-activated on the socket
/// drop-in's address, over HTTP), and `journalctl --directory` on what it wrote shows it.
#[test]
fn a_machines_journal_arrives_on_the_managers_journal_remote() {
    let (root, _) = rendered();
    let manager = root.path().join("manager");
    let read = |base: &Path, path: &str| std::fs::read_to_string(base.join(&path[1..])).unwrap();
    let socket = read(&manager, observability::JOURNAL_REMOTE_SOCKET_DROPIN);
    let listen = socket
        .lines()
        .filter_map(|l| l.strip_prefix("ListenStream="))
        .rfind(|a| !a.is_empty())
        .unwrap();
    let address: SocketAddr = listen.parse().unwrap();
    let out = root.path().join("remote");
    std::fs::create_dir(&out).unwrap();
    let remote: Vec<String> = exec_start(&read(
        &manager,
        observability::JOURNAL_REMOTE_SERVICE_DROPIN,
    ))
    .into_iter()
    .map(|arg| {
        arg.replace(
            observability::REMOTE_JOURNAL_DIR,
            out.to_str().unwrap().trim_end_matches('/'),
        )
    })
    .collect();
    // The lb container's uploader as apply pushes it.
    let upload_dropin = read(
        &root.path().join("var/lib/lab/containers/lb"),
        observability::JOURNAL_UPLOAD_DROPIN,
    );
    let state = root.path().join("upload-state");
    let mut upload: Vec<String> = exec_start(&upload_dropin)
        .into_iter()
        .map(|arg| {
            if arg == "--save-state" {
                format!("--save-state={}", state.display())
            } else {
                arg
            }
        })
        .collect();
    assert!(
        upload.contains(&format!("--url=http://{address}")),
        "{upload:?}"
    );
    // What the lb's journal would hold: one entry, made into a journal file by journal-remote
    // itself from the export format.
    let source = root.path().join("lb.journal");
    let mut make = Command::new("/lib/systemd/systemd-journal-remote")
        .arg("-o")
        .arg(&source)
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = make.stdin.take().unwrap();
        stdin
            .write_all(b"__REALTIME_TIMESTAMP=1700000000000000\nMESSAGE=lab-lb: serving 4 listeners\n_HOSTNAME=lb\nSYSLOG_IDENTIFIER=lab-lb\n\n")
            .unwrap();
    }
    assert!(make.wait().unwrap().success());
    upload.push(format!("--file={}", source.display()));
    upload.push("--follow=no".to_owned());

    let ns = Netns::new("jrnl");
    ns.run(&[
        "ip",
        "addr",
        "add",
        &format!("{}/32", address.ip()),
        "dev",
        "lo",
    ]);
    let mut sink = ns
        .command("systemd-socket-activate")
        .args(["-l", listen])
        .args(&remote)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // It says so once the socket is bound, before anyone connects (a probe would be the one
    // connection it serves).
    let mut said = std::io::BufReader::new(sink.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut said, &mut line).unwrap();
    assert!(line.starts_with("Listening on"), "{line}");
    let sent = ns
        .command("timeout")
        .arg("20")
        .args(&upload)
        .output()
        .unwrap();
    let _ = sink.kill();
    let _ = sink.wait();
    assert!(
        sent.status.success(),
        "{upload:?}: {}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let shown = Command::new("journalctl")
        .arg(format!("--directory={}", out.display()))
        .args(["-o", "short", "--no-pager"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains("lb lab-lb: lab-lb: serving 4 listeners"),
        "{shown}"
    );
}
