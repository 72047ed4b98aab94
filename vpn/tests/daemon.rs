//! lab-vpn as a user and systemd see it: `check`, the notify protocol, metrics, reload, stop.

use lab_tests::suites::config_check::{self, Checker};
use lab_tests::suites::{lifecycle, systemd_env};
use lab_tests::{ports, systemd_unit, workspace};
use std::path::Path;
use toml_edit::{value, Array, DocumentMut, Item, Table};

const BIN: &str = env!("CARGO_BIN_EXE_lab-vpn");

#[test]
fn example_config_passes_check() {
    config_check::example_passes(Checker::daemon(BIN), "vpn.toml");
}

#[test]
fn misspelt_key_is_refused_with_line_and_column() {
    config_check::misspelt_key_refused(
        Checker::daemon(BIN),
        "vpn.toml",
        "listen_port",
        "listen_prot",
    );
}

#[test]
fn not_toml_empty_and_missing_files_are_refused_clearly() {
    config_check::unreadable_files_refused(Checker::daemon(BIN));
}

#[test]
fn run_refuses_a_bad_file_with_exit_78() {
    config_check::run_refuses_bad_file(BIN);
}

fn check_refuses(config: &DocumentMut, expected: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vpn.toml");
    std::fs::write(&file, config.to_string()).unwrap();
    let output = config_check::check(Checker::daemon(BIN), &file);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(config_check::EX_CONFIG),
        "{stderr}"
    );
    assert!(
        stderr.contains(expected),
        "expected `{expected}` in:\n{stderr}"
    );
}

fn second_peer(config: &mut DocumentMut, name: &str, key: &str, allowed: &str) {
    let mut peer = Table::new();
    peer["name"] = value(name);
    peer["public_key"] = value(key);
    let mut ips = Array::new();
    ips.push(allowed);
    peer["allowed_ips"] = value(ips);
    config["peer"].as_array_of_tables_mut().unwrap().push(peer);
}

#[test]
fn overlapping_allowed_ips_and_bad_keys_are_refused() {
    let mut config = workspace::config_document("vpn.toml");
    second_peer(
        &mut config,
        "phone",
        "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=",
        "10.10.100.0/30",
    );
    check_refuses(&config, "key `peer[1].allowed_ips[0]`: 10.10.100.0/30 overlaps 10.10.100.2/32 of peer `admin-laptop`");

    let mut config = workspace::config_document("vpn.toml");
    config["peer"][0]["public_key"] = value("c2hvcnQ=");
    check_refuses(
        &config,
        "key `peer[0].public_key`: a WireGuard key is 32 bytes",
    );
}

/// The example, moved onto loopback ports the test picked.
fn loopback_config() -> DocumentMut {
    let mut config = workspace::config_document("vpn.toml");
    config["metrics"]["listen"] = value(ports::free_tcp().to_string());
    config["interface"]["listen_port"] = value(i64::from(ports::free_udp().port()));
    config
}

fn add_peer(config: &mut DocumentMut) {
    second_peer(
        config,
        "phone",
        "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=",
        "10.10.100.3/32",
    );
    assert!(matches!(config["peer"], Item::ArrayOfTables(_)));
}

#[test]
fn notify_metrics_reload_and_stop() {
    lifecycle::run(lifecycle::Lifecycle {
        bin: BIN,
        prefix: "lab_vpn",
        config: loopback_config(),
        change: &add_peer,
        changed_metric: "lab_vpn_peers_configured 2",
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
    let unit = workspace::root().join("systemd/lab-vpn.service");
    if let Err(complaint) =
        systemd_unit::verify(&unit, &[("/usr/local/bin/lab-vpn", Path::new(BIN))])
    {
        panic!("systemd-analyze verify lab-vpn.service: {complaint}");
    }
}

#[test]
fn unit_is_notify_reloadable_and_least_privileged() {
    let text = std::fs::read_to_string(workspace::root().join("systemd/lab-vpn.service")).unwrap();
    let service = systemd_unit::assert_daemon_unit(&text, "/etc/lab-vpn/vpn.toml", "CAP_NET_ADMIN");
    let has = |k: &str, v: &str| service.contains(&(k.to_owned(), v.to_owned()));
    assert!(has("DeviceAllow", "/dev/net/tun rw"));
    assert!(has("DevicePolicy", "closed"));
    assert!(has(
        "RestrictAddressFamilies",
        "AF_INET AF_INET6 AF_UNIX AF_NETLINK"
    ));
}
