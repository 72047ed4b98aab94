//! lab-vpn as a user and systemd see it: `check`, the notify protocol, metrics, reload, stop.

use lab_tests::suites::config_check::{self, Checker};
use lab_tests::{daemon_conventions, ports, systemd_unit, workspace};
use lab_vpn::key::PrivateKey;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use toml_edit::{value, Array, DocumentMut, Item, Table};

const BIN: &str = env!("CARGO_BIN_EXE_lab-vpn");

daemon_conventions! {
    bin: BIN,
    example: "vpn.toml",
    misspell: ("listen_port", "listen_prot"),
    metrics_prefix: "lab_vpn",
    loopback_config: loopback_config,
    in_netns: true,
    change: add_peer,
    changed_metric: "lab_vpn_peers_configured 2",
    unit: "lab-vpn.service",
    installed_at: "/usr/local/bin/lab-vpn",
}

fn check_refuses(config: &DocumentMut, expected: &str) {
    config_check::document_refused_with(Checker::daemon(BIN), "vpn.toml", config, &[expected]);
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

/// The example with a private key of its own next to it (0600) and metrics on loopback; it
/// runs in a namespace of its own, so the example's interface name and port stay.
fn loopback_config(dir: &Path) -> DocumentMut {
    let key = dir.join("private.key");
    std::fs::write(&key, PrivateKey::generate().expose_base64()).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut config = workspace::config_document("vpn.toml");
    config["metrics"]["listen"] = value(ports::free_tcp().to_string());
    config["interface"]["private_key_file"] = value("private.key");
    // `wg` sockets live in one directory for every namespace: no two tests share a name.
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    config["interface"]["name"] = value(format!("wgt{}x{n}", std::process::id() % 100000));
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
    assert!(has("LimitNOFILE", "4096"));
}
