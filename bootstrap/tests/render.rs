//! `lab-bootstrap render --root DIR`: every host file lands under DIR at its host path, a second
//! render changes nothing, a file edited by hand is backed up before it is replaced, and the
//! units pass `systemd-analyze verify`.

use lab_tests::binaries::workspace_bin;
use lab_tests::{systemd_unit, workspace};
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_lab-bootstrap");

/// What render writes and reports, sorted.
const EXPECTED: [&str; 26] = [
    "etc/lab/dnsmasq-vmbr1.conf",
    "etc/lab/dnsmasq-vmbr2.conf",
    "etc/lab/lab.nft",
    "etc/sysctl.d/90-lab.conf",
    "etc/systemd/system/lab-dnsmasq@.service",
    "etc/systemd/system/lab-network.service",
    "etc/systemd/system/prometheus-node-exporter.service.d/lab.conf",
    "etc/systemd/system/systemd-journal-upload.service.d/lab.conf",
    "var/lib/lab-bootstrap/talosconfig",
    "var/lib/lab-bootstrap/vpn-clients/laptop.conf",
    "var/lib/lab/containers/lb/etc/lab-lb/lb.toml",
    "var/lib/lab/containers/lb/etc/systemd/system/lab-lb.service",
    "var/lib/lab/containers/lb/etc/systemd/system/lab-lb.service.d/10-lab-routes.conf",
    "var/lib/lab/containers/lb/etc/systemd/system/systemd-journal-upload.service.d/lab.conf",
    "var/lib/lab/containers/vpn/etc/lab-vpn/private.key",
    "var/lib/lab/containers/vpn/etc/lab-vpn/vpn.toml",
    "var/lib/lab/containers/vpn/etc/systemd/system/lab-vpn-guard.service",
    "var/lib/lab/containers/vpn/etc/systemd/system/lab-vpn.service",
    "var/lib/lab/containers/vpn/etc/systemd/system/lab-vpn.service.d/10-lab-routes.conf",
    "var/lib/lab/containers/vpn/etc/systemd/system/systemd-journal-upload.service.d/lab.conf",
    "var/lib/vz/snippets/lab-cp1.yaml",
    "var/lib/vz/snippets/lab-cp2.yaml",
    "var/lib/vz/snippets/lab-cp3.yaml",
    "var/lib/vz/snippets/lab-manager.yaml",
    "var/lib/vz/snippets/lab-w1.yaml",
    "var/lib/vz/snippets/lab-w2.yaml",
];

/// State made once and kept (not reported as rendered files), with the marker that makes the
/// directory lab-bootstrap's to purge.
const STATE: [&str; 4] = [
    "var/lib/lab-bootstrap/.lab-bootstrap-state",
    "var/lib/lab-bootstrap/talos-admin.yaml",
    "var/lib/lab-bootstrap/talos-secrets.yaml",
    "var/lib/lab-bootstrap/vpn-gateway.key",
];

fn expected_tree() -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = EXPECTED.iter().chain(&STATE).map(PathBuf::from).collect();
    all.sort();
    all
}

/// Runs `render --root root` on the example lab; returns stdout's lines.
fn render(root: &Path) -> Vec<String> {
    let output = Command::new(BIN)
        .arg("render")
        .arg("--root")
        .arg(root)
        .arg(workspace::config_path("lab.toml"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "render failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Every file under `dir`, relative to it, sorted.
fn tree(dir: &Path) -> Vec<PathBuf> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                out.push(path.strip_prefix(base).unwrap().to_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn render_writes_every_file_under_root_once() {
    let outer = tempfile::tempdir().unwrap();
    let root = outer.path().join("root");
    let first = render(&root);
    assert_eq!(first.len(), EXPECTED.len(), "{first:#?}");
    assert!(
        first.iter().all(|l| l.trim_start().starts_with("created ")),
        "{first:#?}"
    );

    let expected = expected_tree();
    assert_eq!(tree(&root), expected);
    // Nothing beside the root: no stray temporary files or backups outside it.
    assert_eq!(tree(outer.path()).len(), expected.len());

    let second = render(&root);
    assert_eq!(second.len(), EXPECTED.len());
    assert!(
        second
            .iter()
            .all(|l| l.trim_start().starts_with("unchanged ")),
        "{second:#?}"
    );
    assert_eq!(tree(&root), expected);
}

#[test]
fn a_file_changed_by_hand_is_backed_up_and_replaced() {
    let root = tempfile::tempdir().unwrap();
    render(root.path());
    let nft = root.path().join("etc/lab/lab.nft");
    let rendered = std::fs::read_to_string(&nft).unwrap();
    std::fs::write(&nft, "# edited by hand\n").unwrap();

    let lines = render(root.path());
    let changed: Vec<_> = lines
        .iter()
        .filter(|l| l.trim_start().starts_with("changed "))
        .collect();
    assert_eq!(changed.len(), 1, "{lines:#?}");
    assert!(changed[0].ends_with("etc/lab/lab.nft"));
    assert_eq!(std::fs::read_to_string(&nft).unwrap(), rendered);
    assert_eq!(
        std::fs::read_to_string(root.path().join("etc/lab/lab.nft.bak")).unwrap(),
        "# edited by hand\n"
    );
}

#[test]
fn rendered_dnsmasq_configs_pass_dnsmasq_test() {
    let root = tempfile::tempdir().unwrap();
    render(root.path());
    for bridge in ["vmbr1", "vmbr2"] {
        let conf = root.path().join(format!("etc/lab/dnsmasq-{bridge}.conf"));
        let output = Command::new("dnsmasq")
            .arg("--test")
            .arg(format!("--conf-file={}", conf.display()))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}: {}",
            conf.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn rendered_units_pass_systemd_analyze_verify() {
    let root = tempfile::tempdir().unwrap();
    render(root.path());
    let units = root.path().join("etc/systemd/system");
    let dnsmasq = Path::new("/usr/sbin/dnsmasq");
    let nft = Path::new("/usr/sbin/nft");
    let ip = Path::new("/usr/sbin/ip");
    systemd_unit::verify(
        &units.join("lab-network.service"),
        &[("/usr/sbin/nft", nft), ("/usr/sbin/ip", ip)],
    )
    .unwrap();
    // A template is verified as one of its instances.
    let instance = root.path().join("lab-dnsmasq@vmbr1.service");
    std::fs::copy(units.join("lab-dnsmasq@.service"), &instance).unwrap();
    systemd_unit::verify(&instance, &[("/usr/sbin/dnsmasq", dnsmasq)]).unwrap();
}

/// Runs `program check file`; returns its one line of output.
fn check(program: &str, file: &Path) -> String {
    let output = Command::new(workspace_bin(program))
        .arg("check")
        .arg(file)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{program} check {}: {}",
        file.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn rendered_lb_toml_passes_lab_lb_check_and_balances_the_right_nodes() {
    let root = tempfile::tempdir().unwrap();
    render(root.path());
    let file = root
        .path()
        .join("var/lib/lab/containers/lb/etc/lab-lb/lb.toml");
    let summary = check("lab-lb", &file);
    assert!(
        summary.contains("4 listeners, 4 backends, 10 servers"),
        "{summary}"
    );
    let lb: toml_edit::DocumentMut = std::fs::read_to_string(&file).unwrap().parse().unwrap();
    let listeners = lb["listener"].as_array_of_tables().unwrap();
    let backends = lb["backend"].as_array_of_tables().unwrap();
    let servers_of = |listen: &str| -> Vec<String> {
        let listener = listeners
            .iter()
            .find(|l| l["listen"].as_str() == Some(listen))
            .unwrap_or_else(|| panic!("no listener on {listen}"));
        let backend = backends
            .iter()
            .find(|b| b["name"].as_str() == listener["backend"].as_str())
            .unwrap();
        backend["server"]
            .as_array_of_tables()
            .unwrap()
            .iter()
            .map(|s| s["address"].as_str().unwrap().to_owned())
            .collect()
    };
    // From configs/lab.toml: control planes cp1..3 and workers w1, w2 on net2.
    let cps = |port| {
        (11..=13)
            .map(|i| format!("10.10.2.{i}:{port}"))
            .collect::<Vec<_>>()
    };
    let workers = |port| [21, 22].map(|i| format!("10.10.2.{i}:{port}")).to_vec();
    assert_eq!(servers_of("10.10.2.2:6443"), cps(6443));
    assert_eq!(servers_of("10.10.2.2:50000"), cps(50000));
    assert_eq!(servers_of("192.168.1.50:80"), workers(80));
    assert_eq!(servers_of("192.168.1.50:443"), workers(443));
}

#[test]
fn rendered_vpn_toml_passes_lab_vpn_check_and_reaches_net1_and_net2() {
    let root = tempfile::tempdir().unwrap();
    render(root.path());
    let file = root
        .path()
        .join("var/lib/lab/containers/vpn/etc/lab-vpn/vpn.toml");
    let summary = check("lab-vpn", &file);
    assert!(
        summary
            .contains("interface wg0 on UDP 51820, 1 peers, reaching 10.10.1.0/24, 10.10.2.0/24"),
        "{summary}"
    );
    let vpn: toml_edit::DocumentMut = std::fs::read_to_string(&file).unwrap().parse().unwrap();
    assert_eq!(
        vpn["interface"]["address"].to_string().trim(),
        r#"["10.10.100.1/24"]"#
    );
    assert_eq!(
        vpn["interface"]["public_endpoint"].as_str(),
        Some("192.168.1.51:51820")
    );
    assert_eq!(vpn["metrics"]["listen"].as_str(), Some("10.10.1.2:9586"));
}
