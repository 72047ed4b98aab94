//! lab.toml's `[images]` and `[manager]` reach the Proxmox calls: the template and disk images
//! by their file names on the file storage, the manager's cloud-init user and SSH keys. Run
//! end to end through `lab-bootstrap apply` against the schema-checking simulator.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use support::proxmox_sim::Simulator;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq7yJ0p1nY3v1m4c0Hn8p8pX2bq0k7o3O6Xo1Zk8v1Q ops@laptop";

fn example() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/lab.toml"))
        .unwrap()
}

/// The example with images, a manager user and a keys file next to it.
fn lab_with_sources(dir: &Path) -> PathBuf {
    std::fs::write(dir.join("authorized_keys"), format!("{KEY}\n")).unwrap();
    let sha = "0".repeat(128);
    let text = example().replace(
        "user = \"lab\"\n# ssh_keys_file = \"manager_authorized_keys\"",
        "user = \"ops\"\nssh_keys_file = \"authorized_keys\"",
    ) + &format!(
        r#"
[images.talos]
url = "https://factory.talos.dev/image/ce4c980550dd2ab1b17bbf2b08801c7eb59418eafe8f279833297925d67c7515/v1.13.9/nocloud-amd64.raw"
file = "talos-v1.13.9-factory-abc.raw"
sha512 = "{sha}"

[images.debian]
url = "https://cloud.debian.org/images/cloud/trixie/latest/debian-13-genericcloud-amd64.qcow2"
sha512 = "{sha}"

[images.lxc_template]
url = "http://download.proxmox.com/images/system/debian-13-standard_13.1-2_amd64.tar.zst"
sha512 = "{sha}"
"#
    );
    assert!(text.contains("ssh_keys_file = \"authorized_keys\""));
    let file = dir.join("lab.toml");
    std::fs::write(&file, text).unwrap();
    file
}

fn apply(sim: &Simulator, file: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lab-bootstrap"))
        .args([
            "apply",
            "--yes",
            "--proxmox-only",
            "--api",
            "pvesh",
            "--pvesh",
        ])
        .arg(sim.pvesh_shim())
        .arg(file)
        .output()
        .unwrap()
}

#[test]
fn images_and_the_manager_login_come_from_lab_toml() {
    let dir = tempfile::tempdir().unwrap();
    let file = lab_with_sources(dir.path());
    let sim = Simulator::start();
    let out = apply(&sim, &file);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(sim.rejected().is_empty(), "{:?}", sim.rejected());
    let writes = sim.writes();
    let create = |path: &str, name: &str| -> Vec<(String, String)> {
        writes
            .iter()
            .find(|c| {
                c.method == "POST"
                    && c.path == path
                    && c.params
                        .iter()
                        .any(|(k, v)| (k == "name" || k == "hostname") && v == name)
            })
            .unwrap_or_else(|| panic!("no create of {name}: {writes:?}"))
            .params
            .clone()
    };
    let param = |params: &[(String, String)], key: &str| -> String {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let lb = create("/nodes/pve/lxc", "lb");
    assert_eq!(
        param(&lb, "ostemplate"),
        "local:vztmpl/debian-13-standard_13.1-2_amd64.tar.zst"
    );
    let cp1 = create("/nodes/pve/qemu", "cp1");
    assert!(
        param(&cp1, "scsi0").contains("import-from=local:import/talos-v1.13.9-factory-abc.raw"),
        "{cp1:?}"
    );
    let manager = create("/nodes/pve/qemu", "manager");
    assert!(
        param(&manager, "scsi0")
            .contains("import-from=local:import/debian-13-genericcloud-amd64.qcow2"),
        "{manager:?}"
    );
    assert_eq!(param(&manager, "ciuser"), "ops");
    // The manager resolves through the lab's DNS on net1, the lab's names unqualified too.
    assert_eq!(param(&manager, "nameserver"), "10.10.1.1");
    assert_eq!(param(&manager, "searchdomain"), "lab");
    let keys = percent_encoding::percent_decode_str(&param(&manager, "sshkeys"))
        .decode_utf8()
        .unwrap()
        .into_owned();
    assert_eq!(keys, KEY);
}

#[test]
fn a_keys_file_gone_before_apply_is_refused_before_any_call() {
    let dir = tempfile::tempdir().unwrap();
    let file = lab_with_sources(dir.path());
    std::fs::remove_file(dir.path().join("authorized_keys")).unwrap();
    let sim = Simulator::start();
    let out = apply(&sim, &file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("key `manager.ssh_keys_file`"), "{stderr}");
    assert!(sim.writes().is_empty(), "{:?}", sim.writes());
}

fn plan(sim: &Simulator, file: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lab-bootstrap"))
        // The Proxmox side only: the host side would read this machine's files and units.
        .args(["plan", "--proxmox-only", "--api", "pvesh", "--pvesh"])
        .arg(sim.pvesh_shim())
        .arg(file)
        .output()
        .unwrap()
}

#[test]
fn missing_images_are_downloaded_with_their_checksum_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = lab_with_sources(dir.path());
    let sim = Simulator::start();
    // The Debian cloud image is there already.
    sim.state.lock().unwrap().content.insert(
        "pve/local".to_owned(),
        vec!["local:import/debian-13-genericcloud-amd64.qcow2".to_owned()],
    );
    let out = plan(&sim, &file);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("+ image local:import/talos-v1.13.9-factory-abc.raw"),
        "{text}"
    );
    assert!(
        text.contains("+ image local:vztmpl/debian-13-standard_13.1-2_amd64.tar.zst"),
        "{text}"
    );
    assert!(!text.contains("+ image local:import/debian-13"), "{text}");

    let out = apply(&sim, &file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(sim.rejected().is_empty(), "{:?}", sim.rejected());
    let downloads: Vec<Vec<(String, String)>> = sim
        .writes()
        .into_iter()
        .filter(|c| c.path == "/nodes/pve/storage/local/download-url")
        .map(|c| {
            let mut p = c.params;
            p.sort();
            p
        })
        .collect();
    let sha = "0".repeat(128);
    let expected = |url: &str, content: &str, name: &str| {
        let mut p: Vec<(String, String)> = [
            ("checksum", sha.as_str()),
            ("checksum-algorithm", "sha512"),
            ("content", content),
            ("filename", name),
            ("url", url),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        p.sort();
        p
    };
    assert_eq!(
        downloads,
        [
            expected(
                "https://factory.talos.dev/image/ce4c980550dd2ab1b17bbf2b08801c7eb59418eafe8f279833297925d67c7515/v1.13.9/nocloud-amd64.raw",
                "import",
                "talos-v1.13.9-factory-abc.raw"
            ),
            expected(
                "http://download.proxmox.com/images/system/debian-13-standard_13.1-2_amd64.tar.zst",
                "vztmpl",
                "debian-13-standard_13.1-2_amd64.tar.zst"
            ),
        ]
    );
    // Downloaded before any guest is created from them.
    let writes = sim.writes();
    let first_guest = writes
        .iter()
        .position(|c| c.path == "/nodes/pve/lxc" || c.path == "/nodes/pve/qemu")
        .unwrap();
    let last_download = writes
        .iter()
        .rposition(|c| c.path.ends_with("/download-url"))
        .unwrap();
    assert!(last_download < first_guest);

    sim.clear_calls();
    let out = plan(&sim, &file);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

const GUEST_AGENT_ID: &str = "ce4c980550dd2ab1b17bbf2b08801c7eb59418eafe8f279833297925d67c7515";
const WITH_ISCSI_ID: &str = "dc7b152cb3ea99b821fcb7340ce7168313ce393d663740b791c36f6e95fc8586";

/// The example with `extra` appended, written next to nothing else.
fn example_with(dir: &Path, replace: (&str, &str), extra: &str) -> PathBuf {
    let text = example();
    assert!(text.contains(replace.0), "{}", replace.0);
    let file = dir.join("lab.toml");
    std::fs::write(&file, text.replace(replace.0, replace.1) + extra).unwrap();
    file
}

#[test]
fn plan_shows_the_talos_schematic_its_extensions_installer_and_disk_image() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Simulator::start();
    let default = ("", "");
    let out = plan(&sim, &example_with(dir.path(), default, ""));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    let id = GUEST_AGENT_ID;
    for line in [
        format!("  schematic {id} (extensions siderolabs/qemu-guest-agent)"),
        format!("  installer factory.talos.dev/nocloud-installer/{id}:v1.13.9"),
        format!("  disk image https://factory.talos.dev/image/{id}/v1.13.9/nocloud-amd64.qcow2 as local:import/talos-v1.13.9-{id}-nocloud-amd64.qcow2"),
        // Without [images.talos] the VMs import the factory image expected on the storage.
        format!("import-from=local:import/talos-v1.13.9-{id}-nocloud-amd64.qcow2"),
    ] {
        assert!(text.contains(&line), "{line}\n{text}");
    }

    // A second extension: another schematic, another installer and disk image.
    let two = (
        r#"talos_extensions = ["siderolabs/qemu-guest-agent"]"#,
        r#"talos_extensions = ["siderolabs/iscsi-tools", "siderolabs/qemu-guest-agent"]"#,
    );
    let out = plan(&sim, &example_with(dir.path(), two, ""));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    let id = WITH_ISCSI_ID;
    for line in [
        format!("  schematic {id} (extensions siderolabs/iscsi-tools, siderolabs/qemu-guest-agent)"),
        format!("  installer factory.talos.dev/nocloud-installer/{id}:v1.13.9"),
        format!("  disk image https://factory.talos.dev/image/{id}/v1.13.9/nocloud-amd64.qcow2 as local:import/talos-v1.13.9-{id}-nocloud-amd64.qcow2"),
    ] {
        assert!(text.contains(&line), "{line}\n{text}");
    }
    assert!(!text.contains(GUEST_AGENT_ID), "{text}");
}

#[test]
fn the_factory_image_is_downloaded_with_the_pinned_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let sha = "ab".repeat(32);
    let file = example_with(
        dir.path(),
        ("", ""),
        &format!("\n[images.talos]\nsha256 = \"{sha}\"\n"),
    );
    let sim = Simulator::start();
    let out = apply(&sim, &file);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(sim.rejected().is_empty(), "{:?}", sim.rejected());
    let id = GUEST_AGENT_ID;
    let mut download = sim
        .writes()
        .into_iter()
        .find(|c| c.path == "/nodes/pve/storage/local/download-url")
        .expect("the Talos image is downloaded")
        .params;
    download.sort();
    let mut expected: Vec<(String, String)> = [
        ("checksum", sha.as_str()),
        ("checksum-algorithm", "sha256"),
        ("content", "import"),
        (
            "filename",
            &format!("talos-v1.13.9-{id}-nocloud-amd64.qcow2"),
        ),
        (
            "url",
            &format!("https://factory.talos.dev/image/{id}/v1.13.9/nocloud-amd64.qcow2"),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    expected.sort();
    assert_eq!(download, expected);
}

#[test]
fn a_factory_image_not_matching_the_pinned_checksum_stops_apply_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    let file = example_with(
        dir.path(),
        ("", ""),
        &format!("\n[images.talos]\nsha256 = \"{}\"\n", "ab".repeat(32)),
    );
    let sim = Simulator::start();
    let url =
        format!("https://factory.talos.dev/image/{GUEST_AGENT_ID}/v1.13.9/nocloud-amd64.qcow2");
    // What the factory serves now is another image than the one pinned.
    sim.state
        .lock()
        .unwrap()
        .served
        .insert(url.clone(), "cd".repeat(32));
    let out = apply(&sim, &file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "images.talos: {url} does not match the checksum pinned in lab.toml. The Image Factory publishes no checksum"
        )),
        "{stderr}"
    );
    assert!(
        !sim.writes().iter().any(|c| c.path == "/nodes/pve/qemu"),
        "no VM is created from an image that was not stored"
    );
}
