//! The corpus of broken lab.toml files (tests/broken/): each is refused by the real
//! `lab-bootstrap validate` with exit 78 and the key its first line names. And the new sections
//! of lab.toml ([[lb.route]], [[vpn.peer]], [host]) reach the rendered files.

use lab_bootstrap::model::Lab;
use lab_bootstrap::render::containers::{lb_config, vpn_config};
use lab_bootstrap::render::nftables;
use lab_daemon::config::load;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_lab-bootstrap");

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/broken");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_broken_lab_is_refused_naming_its_key() {
    let files = corpus();
    assert!(files.len() >= 30, "corpus has {} files", files.len());
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let key = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} lacks `# expect: <key>`", file.display()))
            .trim();
        let out = Command::new(BIN)
            .arg("validate")
            .arg(file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(78) || !stderr.contains(&format!("key `{key}`:")) {
            failures.push(format!(
                "{}: exit {:?}, expected key `{key}`:\n{stderr}",
                file.display(),
                out.status.code()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The corpus files are the example with one thing wrong: the example itself passes, so each
/// refusal is that one thing.
#[test]
fn the_example_the_corpus_is_made_from_passes() {
    let out = Command::new(BIN)
        .arg("validate")
        .arg(example())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/lab.toml")
}

fn lab() -> Lab {
    load::<Lab>(&example()).unwrap()
}

#[test]
fn the_example_routes_are_the_defaults() {
    let lab = lab();
    assert!(lab.lb.routes.is_some());
    let mut defaults = lab.clone();
    defaults.lb.routes = None;
    assert_eq!(lb_config(&lab).unwrap(), lb_config(&defaults).unwrap());
}

#[test]
fn a_route_to_named_machines_reaches_exactly_them_on_the_target_port() {
    let mut lab = lab();
    let mut route = lab.lb_routes()[2].clone();
    route.name = "cp1-only".parse().unwrap();
    route.port = 8080;
    route.roles.clear();
    route.machines = vec!["cp1".parse().unwrap(), "w2".parse().unwrap()];
    route.target_port = Some(30080);
    lab.lb.routes.as_mut().unwrap().push(route);
    let config = lb_config(&lab).unwrap();
    let backend = config
        .backends
        .iter()
        .find(|b| b.name.to_string() == "cp1-only")
        .unwrap();
    let servers: Vec<String> = backend
        .servers
        .iter()
        .map(|s| s.address.to_string())
        .collect();
    assert_eq!(servers, ["10.10.2.11:30080", "10.10.2.22:30080"]);
    let listener = config
        .listeners
        .iter()
        .find(|l| l.name.to_string() == "cp1-only")
        .unwrap();
    assert_eq!(listener.listen.to_string(), "192.168.1.50:8080");
}

#[test]
fn vpn_peers_become_lab_vpn_peers_with_their_one_address() {
    let mut lab = lab();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("phone.pub");
    std::fs::write(&file, "m9XYp+SdT1i0HAvFg2d+VIqb0LEk+0iGEwjRTtPPVFM=\n").unwrap();
    let mut phone = lab.vpn.peers[0].clone();
    phone.name = "phone".parse().unwrap();
    phone.public_key = None;
    phone.public_key_file = Some(file.clone());
    phone.address = "10.10.100.3".parse().unwrap();
    lab.vpn.peers.push(phone);
    let peers = vpn_config(&lab).unwrap().peers;
    let summary: Vec<(String, String, String)> = peers
        .iter()
        .map(|p| {
            (
                p.name.to_string(),
                String::from(p.public_key),
                format!("{:?}", p.allowed_ips),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "laptop".to_owned(),
                "UcbHrqf+sj9jMaUWqHr0ffKnPvCGJGgK99qCWdHQP3k=".to_owned(),
                "[10.10.100.2/32]".to_owned()
            ),
            (
                "phone".to_owned(),
                "m9XYp+SdT1i0HAvFg2d+VIqb0LEk+0iGEwjRTtPPVFM=".to_owned(),
                "[10.10.100.3/32]".to_owned()
            )
        ]
    );
    // A key file gone between validate and render is an error naming the peer, not a panic.
    std::fs::remove_file(&file).unwrap();
    let err = vpn_config(&lab).unwrap_err().to_string();
    assert!(err.contains("vpn.peer `phone`"), "{err}");
}

#[test]
fn management_access_ports_are_the_ones_kept_open() {
    let mut lab = lab();
    lab.host.management_access = vec![2222, 8006];
    let rules = nftables::ruleset(&lab).unwrap();
    assert!(
        rules.contains("iifname \"vmbr0\" tcp dport { 2222, 8006 } accept"),
        "{rules}"
    );
    lab.host.management_access.clear();
    let rules = nftables::ruleset(&lab).unwrap();
    assert!(!rules.contains("dport {  }"), "{rules}");
    assert!(!rules.contains("tcp dport { 22"), "{rules}");
}
