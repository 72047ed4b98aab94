//! `lab-bootstrap render --root DIR`: every host file lands under DIR at its host path, a second
//! render changes nothing, a file edited by hand is backed up before it is replaced, and the
//! units pass `systemd-analyze verify`.

use lab_tests::{systemd_unit, workspace};
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_lab-bootstrap");

const EXPECTED: [&str; 6] = [
    "etc/lab/dnsmasq-vmbr1.conf",
    "etc/lab/dnsmasq-vmbr2.conf",
    "etc/lab/lab.nft",
    "etc/sysctl.d/90-lab.conf",
    "etc/systemd/system/lab-dnsmasq@.service",
    "etc/systemd/system/lab-network.service",
];

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

    let expected: Vec<PathBuf> = EXPECTED.iter().map(PathBuf::from).collect();
    assert_eq!(tree(&root), expected);
    // Nothing beside the root: no stray temporary files or backups outside it.
    assert_eq!(tree(outer.path()).len(), EXPECTED.len());

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
