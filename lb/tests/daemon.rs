//! lab-lb as a user and systemd see it: `check`, the notify protocol, metrics, reload, stop.

use lab_tests::suites::config_check::{self, Checker};
use lab_tests::suites::{lifecycle, systemd_env};
use lab_tests::{ports, systemd_unit, workspace};
use std::path::Path;
use toml_edit::{value, DocumentMut, InlineTable};

const BIN: &str = env!("CARGO_BIN_EXE_lab-lb");

#[test]
fn example_config_passes_check() {
    config_check::example_passes(Checker::daemon(BIN), "lb.toml");
}

#[test]
fn misspelt_key_is_refused_with_line_and_column() {
    config_check::misspelt_key_refused(Checker::daemon(BIN), "lb.toml", "balance", "balence");
}

#[test]
fn not_toml_empty_and_missing_files_are_refused_clearly() {
    config_check::unreadable_files_refused(Checker::daemon(BIN));
}

#[test]
fn run_refuses_a_bad_file_with_exit_78() {
    config_check::run_refuses_bad_file(BIN);
}

#[test]
fn two_listeners_on_one_address_are_refused() {
    let mut config = workspace::config_document("lb.toml");
    let first = config["listener"][0]["listen"].as_str().map(str::to_owned);
    config["listener"][1]["listen"] = value(first.unwrap_or_default());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lb.toml");
    std::fs::write(&file, config.to_string()).unwrap();
    let output = config_check::check(Checker::daemon(BIN), &file);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(config_check::EX_CONFIG),
        "{stderr}"
    );
    assert!(
        stderr.contains("key `listener[1].listen`: 10.10.2.2:6443 is already taken by listener `kube-apiserver`"),
        "{stderr}"
    );
    let text = config.to_string();
    let second = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.starts_with("listen = \"10.10.2.2:6443\""))
        .nth(1)
        .map(|(i, _)| i)
        .unwrap();
    assert!(
        stderr.contains(&format!("lb.toml:{}:10:", second + 1)),
        "{stderr}"
    );
}

/// The example, moved onto loopback ports the test picked.
fn loopback_config() -> DocumentMut {
    let mut config = workspace::config_document("lb.toml");
    config["metrics"]["listen"] = value(ports::free_tcp().to_string());
    if let Some(listeners) = config["listener"].as_array_of_tables_mut() {
        for listener in listeners.iter_mut() {
            listener["listen"] = value(ports::free_tcp().to_string());
        }
    }
    config
}

fn add_server_to_workers_http(config: &mut DocumentMut) {
    let backends = config["backend"].as_array_of_tables_mut().unwrap();
    let workers = backends
        .iter_mut()
        .find(|b| b["name"].as_str() == Some("workers-http"))
        .unwrap();
    let mut server = InlineTable::new();
    server.insert("address", "10.10.2.23:80".into());
    workers["server"].as_array_mut().unwrap().push(server);
}

#[test]
fn notify_metrics_reload_and_stop() {
    lifecycle::run(lifecycle::Lifecycle {
        bin: BIN,
        prefix: "lab_lb",
        config: loopback_config(),
        change: &add_server_to_workers_http,
        changed_metric: "lab_lb_backend_servers{backend=\"workers-http\"} 3",
    });
}

#[test]
fn watchdog_is_fed_when_systemd_asks() {
    systemd_env::watchdog_is_fed(BIN, &loopback_config());
    systemd_env::watchdog_of_another_process_is_ignored(BIN, &loopback_config());
}

#[test]
fn logs_have_no_timestamps_under_journald() {
    systemd_env::no_timestamps_under_journald(BIN, &loopback_config());
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    let unit = workspace::root().join("systemd/lab-lb.service");
    if let Err(complaint) =
        systemd_unit::verify(&unit, &[("/usr/local/bin/lab-lb", Path::new(BIN))])
    {
        panic!("systemd-analyze verify lab-lb.service: {complaint}");
    }
}

#[test]
fn unit_is_notify_reloadable_and_least_privileged() {
    let text = std::fs::read_to_string(workspace::root().join("systemd/lab-lb.service")).unwrap();
    let service =
        systemd_unit::assert_daemon_unit(&text, "/etc/lab-lb/lb.toml", "CAP_NET_BIND_SERVICE");
    assert!(service.contains(&("PrivateDevices".to_owned(), "yes".to_owned())));
}
