//! Preflight end to end: `plan` shows what the node offers, and `apply` refuses, before any
//! write on the node or the host, a node that cannot take the lab: storages without the
//! content types the lab puts there, guests' disks that do not fit, a container template
//! neither there nor downloadable. The simulator's storages and appliance index are the node's.

mod support;
// The host tests only: the Proxmox tests run no program.
#[path = "support/stand_in.rs"]
mod stand_in;

use std::path::{Path, PathBuf};
use std::process::Output;

use support::proxmox_sim::{Simulator, GIB};

/// A lab.toml, a test root and a recording stand-in for the host's commands.
struct Bench {
    dir: tempfile::TempDir,
    sim: Simulator,
}

/// Logs every command; guests are stopped, and every program is there.
const STAND_IN: &str = r#"#!/bin/bash
echo "$*" >> "@DIR@/commands.log"
case "$1 $2" in "pct status"|"qm status") echo "status: stopped" ;; esac
exit 0
"#;

impl Bench {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        stand_in::stand_in_script(dir.path(), STAND_IN);
        std::fs::create_dir(dir.path().join("root")).unwrap();
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        for program in ["lab-lb", "lab-vpn"] {
            std::fs::write(dir.path().join("bin").join(program), program).unwrap();
        }
        let lab = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/lab.toml");
        std::fs::copy(lab, dir.path().join("lab.toml")).unwrap();
        Self {
            dir,
            sim: Simulator::start(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// plan or apply on the host (pvesh, the stand-in, the test root), or `--proxmox-only`.
    fn run(&self, op: &str, extra: &[&str]) -> (Output, String) {
        let out = self
            .sim
            .bootstrap_on_host(op, self.dir.path())
            .arg("--yes")
            .args(extra)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(self.sim.rejected().is_empty(), "{:?}", self.sim.rejected());
        (out, text)
    }

    fn commands(&self) -> String {
        std::fs::read_to_string(self.path("commands.log")).unwrap_or_default()
    }

    /// apply refused with `problem` on standard error, and nothing was written: no call but
    /// reads on the node, no command and no file on the host.
    fn assert_refused(&self, problem: &str) {
        let (out, text) = self.run("apply", &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(
            stderr.contains(&format!("lab-bootstrap: {problem}")),
            "{text}"
        );
        assert!(
            stderr.contains("apply refused by preflight: nothing was changed"),
            "{text}"
        );
        assert!(self.sim.writes().is_empty(), "{:?}", self.sim.writes());
        assert_eq!(self.commands(), "", "no command on the host");
        let root: Vec<_> = std::fs::read_dir(self.path("root")).unwrap().collect();
        assert!(root.is_empty(), "no file on the host: {root:?}");
        // plan says the same, and that apply would not go ahead.
        let (out, text) = self.run("plan", &[]);
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(text.contains("Preflight: 1 problem(s)"), "{text}");
        assert!(text.contains(&format!("FAIL {problem}")), "{text}");
    }

    fn set_content(&self, storage: &str, content: &str) {
        let mut s = self.sim.state.lock().unwrap();
        s.storages.get_mut(storage).unwrap().content = content.to_owned();
    }

    fn set_avail(&self, storage: &str, gib: u64) {
        let mut s = self.sim.state.lock().unwrap();
        s.storages.get_mut(storage).unwrap().avail = gib * GIB;
    }
}

#[test]
fn a_node_that_can_take_the_lab_passes_and_apply_fetches_the_template_first() {
    let bench = Bench::new();
    let (out, text) = bench.run("plan", &["--proxmox-only"]);
    assert_eq!(out.status.code(), Some(2), "{text}");
    for line in [
        "Preflight: OK",
        "ok   storage 'local' (proxmox.file_storage) allows snippets, import, vztmpl",
        "ok   storage 'local-lvm' (proxmox.storage) allows images, rootdir",
        "ok   storage 'local-lvm' has 400.0 GiB free for 164 GiB of 8 guest(s) to create",
        "ok   template local:vztmpl/debian-12-standard_12.12-1_amd64.tar.zst is downloaded from the node's appliance index",
        "+ template local:vztmpl/debian-12-standard_12.12-1_amd64.tar.zst (from the node's appliance index)",
    ] {
        assert!(text.contains(line), "{line}: {text}");
    }
    assert!(!text.contains("FAIL"), "{text}");
    assert!(bench.sim.writes().is_empty(), "{:?}", bench.sim.writes());

    let (out, text) = bench.run("apply", &["--proxmox-only"]);
    assert!(out.status.success(), "{text}");
    let writes: Vec<(String, String)> = bench
        .sim
        .writes()
        .into_iter()
        .map(|c| (c.method, c.path))
        .collect();
    let fetched = writes
        .iter()
        .position(|w| *w == ("POST".to_owned(), "/nodes/pve/aplinfo".to_owned()));
    let first_container = writes
        .iter()
        .position(|w| *w == ("POST".to_owned(), "/nodes/pve/lxc".to_owned()));
    assert!(
        fetched.is_some() && fetched < first_container,
        "the template before the containers made from it: {writes:?}"
    );
    // Now it is there: nothing more to fetch, and nothing to create either.
    bench.sim.clear_calls();
    let (out, text) = bench.run("plan", &["--proxmox-only"]);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("Preflight: OK"), "{text}");
    assert!(!text.contains("+ template"), "{text}");
}

#[test]
fn a_file_storage_without_snippets_and_import_is_refused_with_the_pvesm_command() {
    let bench = Bench::new();
    // A fresh install's `local`.
    bench.set_content("local", "iso,vztmpl,backup");
    bench.assert_refused(
        "proxmox.file_storage: storage 'local' does not allow the content type(s) snippets, import (the Talos machine configs as cloud-init user-data; the disk images the VMs are made from); run `pvesm set local --content iso,vztmpl,backup,snippets,import` on the node",
    );
}

#[test]
fn a_guest_storage_without_rootdir_is_refused() {
    let bench = Bench::new();
    bench.set_content("local-lvm", "images");
    bench.assert_refused(
        "proxmox.storage: storage 'local-lvm' does not allow the content type(s) rootdir (the containers' root filesystems); run `pvesm set local-lvm --content images,rootdir` on the node",
    );
}

#[test]
fn a_storage_the_node_does_not_have_is_refused_naming_the_key() {
    let bench = Bench::new();
    bench.sim.state.lock().unwrap().storages.remove("local-lvm");
    bench.assert_refused("proxmox.storage: storage 'local-lvm' cannot be read on node pve (");
}

#[test]
fn guests_whose_disks_do_not_fit_are_refused() {
    let bench = Bench::new();
    bench.set_avail("local-lvm", 100);
    bench.assert_refused(
        "proxmox.storage: the guests to create need 164 GiB on storage 'local-lvm' (machine[0] lb 4 GiB, machine[1] vpn 4 GiB, machine[2] manager 16 GiB, machine[3] cp1 20 GiB, machine[4] cp2 20 GiB, machine[5] cp3 20 GiB, machine[6] w1 40 GiB, machine[7] w2 40 GiB), which has 100.0 GiB free; free space there, or lower their disk_gib",
    );
}

#[test]
fn an_existing_guest_s_disk_is_not_counted_again() {
    let bench = Bench::new();
    let (out, text) = bench.run("apply", &["--proxmox-only"]);
    assert!(out.status.success(), "{text}");
    // w2 (40 GiB) was deleted by hand; the others hold their disks already.
    let w2 = {
        let mut s = bench.sim.state.lock().unwrap();
        let vmid = *s
            .qemu
            .iter()
            .find(|(_, (_, c))| c.get("name").map(String::as_str) == Some("w2"))
            .unwrap()
            .0;
        s.qemu.remove(&vmid);
        vmid
    };
    bench.set_avail("local-lvm", 50);
    bench.sim.clear_calls();
    let (out, text) = bench.run("plan", &["--proxmox-only"]);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains(&format!("+ vm \"{w2}\"")), "{text}");
    assert!(
        text.contains(
            "ok   storage 'local-lvm' has 50.0 GiB free for 40 GiB of 1 guest(s) to create"
        ),
        "{text}"
    );
    bench.set_avail("local-lvm", 30);
    bench.assert_refused(
        "proxmox.storage: the guests to create need 40 GiB on storage 'local-lvm' (machine[7] w2 40 GiB), which has 30.0 GiB free",
    );
}

#[test]
fn a_template_neither_there_nor_in_the_appliance_index_is_refused() {
    let bench = Bench::new();
    bench.sim.state.lock().unwrap().appliances.clear();
    bench.assert_refused(
        "images.lxc_template: the container template debian-12-standard_12.12-1_amd64.tar.zst is not on storage 'local' and the node's appliance index does not offer it; run `pveam update` on the node, or set [images.lxc_template] url and sha512",
    );
    // One already on the storage is enough.
    bench
        .sim
        .state
        .lock()
        .unwrap()
        .content
        .entry("pve/local".to_owned())
        .or_default()
        .push("local:vztmpl/debian-12-standard_12.12-1_amd64.tar.zst".to_owned());
    let (out, text) = bench.run("plan", &["--proxmox-only"]);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains(
            "ok   template local:vztmpl/debian-12-standard_12.12-1_amd64.tar.zst is there"
        ),
        "{text}"
    );
}
