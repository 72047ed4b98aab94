//! `lab-bootstrap plan|apply|destroy` end to end against the API simulator, through the pvesh
//! transport: every call is checked against the real Proxmox schema by the simulator.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use lab_bootstrap::proxmox::client::{ProxmoxApi, Pvesh};
use lab_bootstrap::proxmox::desired::{desired, Kind, Sources};
use lab_bootstrap::Lab;
use support::proxmox_sim::Simulator;

fn lab_toml() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/lab.toml")
}

fn lab() -> Lab {
    lab_daemon::config::load::<Lab>(&lab_toml()).unwrap()
}

fn run(sim: &Simulator, op: &str, file: &Path, extra: &[&str], stdin: &str) -> Output {
    let shim = sim.pvesh_shim();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lab-bootstrap"))
        .arg(op)
        .args(["--proxmox-only", "--api", "pvesh", "--pvesh"])
        .arg(&shim)
        .args(extra)
        .arg(file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The uplink bridge and a VM of the user's own, as on a real node before the lab.
fn seed_users_own(sim: &Simulator) {
    let mut s = sim.state.lock().unwrap();
    let vmbr0: BTreeMap<String, String> = [
        ("type", "bridge"),
        ("cidr", "192.168.1.10/24"),
        ("autostart", "1"),
        ("bridge_ports", "eno1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    s.network
        .entry("pve".into())
        .or_default()
        .insert("vmbr0".into(), vmbr0);
    let vm: BTreeMap<String, String> = [("name", "my-own-vm"), ("memory", "1024")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    s.qemu.insert(900, ("pve".into(), vm));
}

fn apply_all(sim: &Simulator, file: &Path) {
    let out = run(sim, "apply", file, &["--yes"], "");
    assert!(out.status.success(), "{}", text(&out));
    assert!(sim.rejected().is_empty(), "{:?}", sim.rejected());
}

#[test]
fn plan_on_an_empty_node_lists_every_create() {
    let sim = Simulator::start();
    seed_users_own(&sim);
    let out = run(&sim, "plan", &lab_toml(), &[], "");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    let lab = lab();
    for bridge in ["vmbr1", "vmbr2"] {
        assert!(t.contains(&format!("+ bridge \"{bridge}\"")), "{t}");
    }
    assert!(!t.contains("\"vmbr0\""), "the uplink is never touched: {t}");
    for m in &lab.machines {
        let kind = if m.role.is_container() {
            "container"
        } else {
            "vm"
        };
        assert!(t.contains(&format!("+ {kind} \"{}\"", m.vmid)), "{t}");
    }
    let expected = format!("Plan: {} to add, 0 to change", lab.machines.len() + 2);
    assert!(t.contains(&expected), "{t}");
    // Plan only reads.
    assert!(sim.writes().is_empty(), "{:?}", sim.writes());
    assert!(sim.rejected().is_empty(), "{:?}", sim.rejected());
}

#[test]
fn apply_creates_everything_and_a_second_apply_writes_nothing() {
    let sim = Simulator::start();
    seed_users_own(&sim);
    apply_all(&sim, &lab_toml());
    let lab = lab();
    {
        let s = sim.state.lock().unwrap();
        let bridges = &s.network["pve"];
        assert_eq!(bridges["vmbr1"]["cidr"], "10.10.1.1/24");
        assert_eq!(bridges["vmbr2"]["cidr"], "10.10.2.1/24");
        assert!(
            s.pending.get("pve").is_none_or(|p| p.is_empty()),
            "network applied"
        );
        for m in &lab.machines {
            let guests = if m.role.is_container() {
                &s.lxc
            } else {
                &s.qemu
            };
            let (_, config) = &guests[&m.vmid];
            assert_eq!(config["memory"], m.memory_mib.to_string());
            let mac = m.mac(0).unwrap().to_string();
            assert!(
                config["net0"].contains(&mac),
                "{}: {}",
                m.vmid,
                config["net0"]
            );
        }
        let (_, vpn) = &s.lxc[&201];
        assert_eq!(vpn["dev0"], "/dev/net/tun");
        assert_eq!(vpn["unprivileged"], "1");
    }

    sim.clear_calls();
    let out = run(&sim, "plan", &lab_toml(), &[], "");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("No changes"), "{}", text(&out));
    let out = run(&sim, "apply", &lab_toml(), &["--yes"], "");
    assert!(out.status.success(), "{}", text(&out));
    assert!(sim.writes().is_empty(), "{:?}", sim.writes());
    assert!(sim.rejected().is_empty(), "{:?}", sim.rejected());
}

#[test]
fn a_memory_change_is_one_update_in_place() {
    let sim = Simulator::start();
    apply_all(&sim, &lab_toml());
    sim.clear_calls();

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lab.toml");
    let mut doc: toml_edit::DocumentMut = std::fs::read_to_string(lab_toml())
        .unwrap()
        .parse()
        .unwrap();
    let machines = doc["machine"].as_array_of_tables_mut().unwrap();
    let w1 = machines
        .iter_mut()
        .find(|m| m["name"].as_str() == Some("w1"))
        .unwrap();
    let vmid = w1["vmid"].as_integer().unwrap();
    w1["memory_mib"] = toml_edit::value(2560);
    std::fs::write(&file, doc.to_string()).unwrap();

    let out = run(&sim, "plan", &file, &[], "");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains(&format!("~ vm \"{vmid}\"")), "{t}");
    assert!(t.contains("\"3072\" -> \"2560\""), "{t}");
    assert!(
        t.contains("0 to add, 1 to change, 0 to replace, 0 to destroy"),
        "{t}"
    );

    apply_all(&sim, &file);
    let writes = sim.writes();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(writes[0].method, "PUT");
    assert_eq!(writes[0].path, format!("/nodes/pve/qemu/{vmid}/config"));
    assert_eq!(
        writes[0].params,
        vec![("memory".to_owned(), "2560".to_owned())]
    );
}

#[test]
fn destroy_removes_only_what_is_ours() {
    let sim = Simulator::start();
    seed_users_own(&sim);
    apply_all(&sim, &lab_toml());

    // Without --yes and without a "yes" answer nothing is removed.
    sim.clear_calls();
    let out = run(&sim, "destroy", &lab_toml(), &[], "no\n");
    assert!(!out.status.success(), "{}", text(&out));
    assert!(sim.writes().is_empty(), "{:?}", sim.writes());

    let out = run(&sim, "destroy", &lab_toml(), &[], "yes\n");
    assert!(out.status.success(), "{}", text(&out));
    assert!(sim.rejected().is_empty(), "{:?}", sim.rejected());
    let s = sim.state.lock().unwrap();
    assert!(s.lxc.is_empty(), "{:?}", s.lxc.keys());
    assert_eq!(s.qemu.keys().copied().collect::<Vec<_>>(), vec![900]);
    assert_eq!(
        s.network["pve"].keys().cloned().collect::<Vec<_>>(),
        vec!["vmbr0".to_owned()]
    );
}

#[test]
fn a_vmid_taken_by_something_else_is_refused_before_any_write() {
    let sim = Simulator::start();
    {
        let mut s = sim.state.lock().unwrap();
        let vm: BTreeMap<String, String> = [("name", "someone-elses"), ("memory", "512")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        s.qemu.insert(221, ("pve".into(), vm));
    }
    let out = run(&sim, "apply", &lab_toml(), &["--yes"], "");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("vm 221 (w1) already exists and is not managed"),
        "{t}"
    );
    assert!(sim.writes().is_empty(), "{:?}", sim.writes());
}

#[test]
fn a_change_the_api_cannot_make_in_place_is_a_replace() {
    let sim = Simulator::start();
    apply_all(&sim, &lab_toml());
    {
        // Someone made the lb container privileged by hand, and it is running.
        let mut s = sim.state.lock().unwrap();
        s.lxc
            .get_mut(&200)
            .unwrap()
            .1
            .insert("unprivileged".into(), "0".into());
        s.running.insert(200);
    }
    sim.clear_calls();
    let out = run(&sim, "plan", &lab_toml(), &[], "");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("-/+ container \"200\""), "{t}");
    assert!(t.contains("forces replacement"), "{t}");

    apply_all(&sim, &lab_toml());
    let writes: Vec<(String, String)> = sim
        .writes()
        .into_iter()
        .map(|c| (c.method, c.path))
        .collect();
    let expected: Vec<(String, String)> = [
        ("POST", "/nodes/pve/lxc/200/status/stop"),
        ("DELETE", "/nodes/pve/lxc/200"),
        ("POST", "/nodes/pve/lxc"),
    ]
    .into_iter()
    .map(|(m, p)| (m.to_owned(), p.to_owned()))
    .collect();
    assert_eq!(writes, expected);
    assert_eq!(sim.state.lock().unwrap().lxc[&200].1["unprivileged"], "1");
}

#[test]
fn destroy_stops_running_guests_first() {
    let sim = Simulator::start();
    apply_all(&sim, &lab_toml());
    sim.state.lock().unwrap().running.extend([201, 211]);
    let out = run(&sim, "destroy", &lab_toml(), &["--yes"], "");
    assert!(out.status.success(), "{}", text(&out));
    assert!(sim.rejected().is_empty(), "{:?}", sim.rejected());
    let s = sim.state.lock().unwrap();
    assert!(s.lxc.is_empty() && s.qemu.is_empty());
    assert!(s.running.is_empty());
}

#[test]
fn a_drifted_bridge_is_updated_in_place_and_the_network_reloaded() {
    let sim = Simulator::start();
    apply_all(&sim, &lab_toml());
    {
        let mut s = sim.state.lock().unwrap();
        let vmbr2 = s.network.get_mut("pve").unwrap().get_mut("vmbr2").unwrap();
        vmbr2.insert("cidr".into(), "10.10.2.254/24".into());
    }
    sim.clear_calls();
    let out = run(&sim, "plan", &lab_toml(), &[], "");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("~ bridge \"vmbr2\""), "{t}");
    assert!(t.contains("\"10.10.2.254/24\" -> \"10.10.2.1/24\""), "{t}");

    apply_all(&sim, &lab_toml());
    let writes: Vec<(String, String)> = sim
        .writes()
        .into_iter()
        .map(|c| (c.method, c.path))
        .collect();
    assert_eq!(
        writes,
        vec![
            ("PUT".to_owned(), "/nodes/pve/network/vmbr2".to_owned()),
            ("PUT".to_owned(), "/nodes/pve/network".to_owned()),
        ]
    );
    assert_eq!(
        sim.state.lock().unwrap().network["pve"]["vmbr2"]["cidr"],
        "10.10.2.1/24"
    );
}

#[test]
fn an_apply_interrupted_before_the_network_reload_converges() {
    let sim = Simulator::start();
    // The bridges were written, then the run died before `PUT /nodes/pve/network`.
    let api = Pvesh::new(sim.pvesh_shim());
    let lab = lab();
    for bridge in desired(&lab, &Sources::defaults(&lab))
        .iter()
        .filter(|r| r.kind == Kind::Bridge)
    {
        let params: Vec<(String, String)> = bridge.create.clone().into_iter().collect();
        api.post("/nodes/pve/network", &params).unwrap();
    }
    // The template too came before the run died, so the reload is the first thing left.
    api.post(
        "/nodes/pve/aplinfo",
        &[
            ("storage".to_owned(), "local".to_owned()),
            (
                "template".to_owned(),
                "debian-12-standard_12.12-1_amd64.tar.zst".to_owned(),
            ),
        ],
    )
    .unwrap();
    sim.clear_calls();
    let out = run(&sim, "plan", &lab_toml(), &[], "");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("~ network of pve"), "{t}");
    assert!(!t.contains("+ bridge"), "{t}");

    apply_all(&sim, &lab_toml());
    let writes = sim.writes();
    assert_eq!(
        (writes[0].method.as_str(), writes[0].path.as_str()),
        ("PUT", "/nodes/pve/network"),
        "{writes:?}"
    );
    assert!(!writes
        .iter()
        .any(|c| c.method == "POST" && c.path == "/nodes/pve/network"));
    sim.clear_calls();
    let out = run(&sim, "plan", &lab_toml(), &[], "");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// configs/lab.toml under another lab's name, on bridges of its own.
fn renamed_lab() -> toml_edit::DocumentMut {
    let mut doc: toml_edit::DocumentMut = std::fs::read_to_string(lab_toml())
        .unwrap()
        .parse()
        .unwrap();
    doc["cluster"]["name"] = toml_edit::value("otherlab");
    doc["networks"]["net1"]["bridge"] = toml_edit::value("vmbr11");
    doc["networks"]["net2"]["bridge"] = toml_edit::value("vmbr12");
    doc
}

/// configs/lab.toml as another lab on the same node: its own name, bridges, VMIDs and
/// machine names (networks and addresses as they are: the node does not care).
fn other_lab(dir: &Path) -> PathBuf {
    let mut doc = renamed_lab();
    for m in doc["machine"].as_array_of_tables_mut().unwrap().iter_mut() {
        let vmid = m["vmid"].as_integer().unwrap();
        m["vmid"] = toml_edit::value(vmid + 300);
    }
    let file = dir.join("other.toml");
    std::fs::write(&file, doc.to_string()).unwrap();
    file
}

/// Guest VMIDs and bridge names on the node.
fn node_contents(sim: &Simulator) -> (Vec<u32>, Vec<String>) {
    let s = sim.state.lock().unwrap();
    let mut guests: Vec<u32> = s.lxc.keys().chain(s.qemu.keys()).copied().collect();
    guests.sort();
    let bridges = s.network["pve"].keys().cloned().collect();
    (guests, bridges)
}

#[test]
fn two_labs_on_one_node_never_touch_each_others_guests_or_bridges() {
    let sim = Simulator::start();
    seed_users_own(&sim);
    {
        // Someone put our tag and comment on things of their own by hand.
        let mut s = sim.state.lock().unwrap();
        let strings = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        s.qemu.insert(
            901,
            (
                "pve".into(),
                strings(&[
                    ("name", "hand-tagged"),
                    ("memory", "512"),
                    ("tags", "lab-bootstrap;worker"),
                ]),
            ),
        );
        s.network.get_mut("pve").unwrap().insert(
            "vmbr9".into(),
            strings(&[
                ("type", "bridge"),
                ("autostart", "1"),
                ("comments", "managed by lab-bootstrap"),
            ]),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let other = other_lab(dir.path());
    let (users_guests, users_bridges) = node_contents(&sim);

    apply_all(&sim, &lab_toml());
    let (with_one, bridges_with_one) = node_contents(&sim);
    // Applying the second lab creates its own and removes nothing of the first's.
    let out = run(&sim, "plan", &other, &[], "");
    let t = text(&out);
    assert!(t.contains(" 0 to destroy."), "{t}");
    apply_all(&sim, &other);
    let (with_both, bridges_with_both) = node_contents(&sim);
    assert!(with_one.iter().all(|g| with_both.contains(g)));
    assert!(bridges_with_one
        .iter()
        .all(|b| bridges_with_both.contains(b)));
    assert_eq!(with_both.len(), with_one.len() + lab().machines.len());
    // And the first lab sees nothing to change.
    let out = run(&sim, "plan", &lab_toml(), &[], "");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let out = run(&sim, "destroy", &lab_toml(), &["--yes"], "");
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(sim.rejected().is_empty(), "{:?}", sim.rejected());
    let (left, bridges_left) = node_contents(&sim);
    let others: Vec<u32> = lab().machines.iter().map(|m| m.vmid + 300).collect();
    let mut expected: Vec<u32> = users_guests.iter().copied().chain(others).collect();
    expected.sort();
    assert_eq!(left, expected, "{t}");
    let mut expected_bridges = users_bridges.clone();
    expected_bridges.extend(["vmbr11".to_owned(), "vmbr12".to_owned()]);
    expected_bridges.sort();
    assert_eq!(bridges_left, expected_bridges, "{t}");
    assert!(left.contains(&901) && bridges_left.contains(&"vmbr9".to_owned()));

    // The other lab is whole: nothing to create, and destroying it leaves only the user's.
    let out = run(&sim, "plan", &other, &[], "");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = run(&sim, "destroy", &other, &["--yes"], "");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(node_contents(&sim), (users_guests, users_bridges));
}

#[test]
fn a_guest_of_another_lab_at_a_wanted_vmid_is_a_conflict_naming_that_lab() {
    let sim = Simulator::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("same-vmids.toml");
    std::fs::write(&file, renamed_lab().to_string()).unwrap();
    apply_all(&sim, &lab_toml());
    sim.clear_calls();
    let out = run(&sim, "apply", &file, &["--yes"], "");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("it is lab homelab's"), "{t}");
    assert!(sim.writes().is_empty(), "{:?}", sim.writes());
}
