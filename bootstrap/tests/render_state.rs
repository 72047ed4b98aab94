//! `render` and the state directory: the Talos machine configs land as the cloud-init snippets
//! `cicustom` points at, valid against the Talos 1.13 schema; the talosconfig and the peers'
//! client configs land in the state directory (0700, files 0600); secrets and the gateway key
//! are never made again, so a second render changes nothing.

#[path = "support/talos_schema.rs"]
mod talos_schema;

use lab_bootstrap::proxmox::desired::{desired, Sources};
use lab_bootstrap::Lab;
use lab_tests::workspace;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use talos_schema::{documents, TalosSchema};

const BIN: &str = env!("CARGO_BIN_EXE_lab-bootstrap");

fn render(root: &Path, state: Option<&Path>) -> String {
    render_lab(&workspace::config_path("lab.toml"), root, state)
}

fn render_lab(lab_toml: &Path, root: &Path, state: Option<&Path>) -> String {
    let mut command = Command::new(BIN);
    command.arg("render").arg("--root").arg(root);
    if let Some(state) = state {
        command.arg("--state").arg(state);
    }
    let out = command.arg(lab_toml).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Every file under `dir` with its contents.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

#[test]
fn snippets_are_where_cicustom_points_and_valid_talos_configs() {
    let root = tempfile::tempdir().unwrap();
    render(root.path(), None);
    let lab: Lab = lab_daemon::config::load(&workspace::config_path("lab.toml")).unwrap();
    let schema = TalosSchema::load();
    let mut checked = 0;
    // The manager's snippet is cloud-config, checked in tests/manager.rs.
    for vm in desired(&lab, &Sources::defaults(&lab))
        .into_iter()
        .filter(|vm| vm.name != "manager")
    {
        let Some(cicustom) = vm.create.get("cicustom") else {
            continue;
        };
        // `user=local:snippets/lab-cp1.yaml` is /var/lib/vz/snippets/lab-cp1.yaml on `local`.
        let volume = cicustom.strip_prefix("user=local:snippets/").unwrap();
        let file = root.path().join("var/lib/vz/snippets").join(volume);
        assert_eq!(mode(&file), 0o600, "{}", file.display());
        let docs = documents(&std::fs::read_to_string(&file).unwrap());
        assert!(docs.len() > 1, "{}", file.display());
        for doc in &docs {
            let errors = schema.errors(doc);
            assert!(errors.is_empty(), "{}: {errors:#?}", file.display());
        }
        // The snippet is this VM's: its hostname document names it.
        let hostname = docs.iter().find(|d| d["kind"] == "HostnameConfig").unwrap();
        assert_eq!(hostname["hostname"], vm.create["name"].as_str());
        checked += 1;
    }
    assert_eq!(checked, 5, "three control planes and two workers");
}

#[test]
fn state_is_private_and_a_second_render_changes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let state = state.path().join("lab-state");
    render(root.path(), Some(&state));
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("vpn-clients")), 0o700);
    let before_state = snapshot(&state);
    let names: Vec<String> = before_state
        .keys()
        .map(|p| p.strip_prefix(&state).unwrap().display().to_string())
        .collect();
    for expected in [
        "talos-secrets.yaml",
        "talos-admin.yaml",
        "talosconfig",
        "vpn-gateway.key",
        "vpn-clients/laptop.conf",
    ] {
        assert!(names.contains(&expected.to_owned()), "{names:?}");
    }
    for path in before_state.keys() {
        assert_eq!(mode(path), 0o600, "{}", path.display());
    }
    // With --state, nothing of the state goes under the root.
    assert!(!root.path().join("var/lib/lab-bootstrap").exists());

    let before_root = snapshot(root.path());
    let second = render(root.path(), Some(&state));
    assert!(
        second
            .lines()
            .all(|l| l.trim_start().starts_with("unchanged ")),
        "{second}"
    );
    assert_eq!(snapshot(&state), before_state, "secrets and keys kept");
    assert_eq!(snapshot(root.path()), before_root);
}

#[test]
fn the_peers_client_config_names_the_gateway_key_the_vpn_container_gets() {
    let root = tempfile::tempdir().unwrap();
    render(root.path(), None);
    let staged = root
        .path()
        .join("var/lib/lab/containers/vpn/etc/lab-vpn/private.key");
    assert_eq!(mode(&staged), 0o600);
    let private = std::fs::read_to_string(&staged).unwrap();
    let wg = Command::new("wg")
        .arg("pubkey")
        .stdin(std::fs::File::open(&staged).unwrap())
        .output()
        .unwrap();
    assert!(wg.status.success());
    let client = std::fs::read_to_string(
        root.path()
            .join("var/lib/lab-bootstrap/vpn-clients/laptop.conf"),
    )
    .unwrap();
    assert!(client.contains("Address = 10.10.100.2/32"), "{client}");
    assert!(client.contains("Endpoint = 192.168.1.51:51820"), "{client}");
    assert!(!client.contains(private.trim()), "no private key in it");
    // The gateway's public key, derived independently by wireguard-tools.
    let public = String::from_utf8(wg.stdout).unwrap();
    assert!(
        client.contains(&format!("PublicKey = {}", public.trim())),
        "{client}"
    );
}

#[test]
fn clients_dial_the_public_endpoint_and_lab_vpn_takes_the_receive_buffer_the_lab_names() {
    // configs/lab.toml names no file relative to itself, so a copy elsewhere means the same.
    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(workspace::config_path("lab.toml")).unwrap();
    let lab_toml = dir.path().join("lab.toml");
    std::fs::write(
        &lab_toml,
        example.replacen(
            "[[vpn.peer]]",
            "[vpn]\npublic_endpoint = \"home.example.org:51821\"\nudp_receive_buffer = 3145728\n\n[[vpn.peer]]",
            1,
        ),
    )
    .unwrap();
    let root = tempfile::tempdir().unwrap();
    render_lab(&lab_toml, root.path(), None);
    let client = std::fs::read_to_string(
        root.path()
            .join("var/lib/lab-bootstrap/vpn-clients/laptop.conf"),
    )
    .unwrap();
    assert!(
        client.contains("Endpoint = home.example.org:51821"),
        "{client}"
    );
    // lab-vpn itself still listens on 51820: the router maps its public port to it.
    let vpn_toml = std::fs::read_to_string(
        root.path()
            .join("var/lib/lab/containers/vpn/etc/lab-vpn/vpn.toml"),
    )
    .unwrap();
    assert!(vpn_toml.contains("listen_port = 51820"), "{vpn_toml}");
    assert!(
        vpn_toml.contains("public_endpoint = \"home.example.org:51821\""),
        "{vpn_toml}"
    );
    assert!(
        vpn_toml.contains("udp_receive_buffer = 3145728"),
        "{vpn_toml}"
    );
}

#[test]
fn a_damaged_gateway_key_is_refused_not_replaced() {
    let root = tempfile::tempdir().unwrap();
    render(root.path(), None);
    let key = root.path().join("var/lib/lab-bootstrap/vpn-gateway.key");
    std::fs::write(&key, "garbage\n").unwrap();
    let out = Command::new(BIN)
        .arg("render")
        .arg("--root")
        .arg(root.path())
        .arg(workspace::config_path("lab.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("vpn-gateway.key"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&key).unwrap(), "garbage\n");
}
