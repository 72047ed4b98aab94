//! A lab across several Proxmox nodes, end to end against the API simulator: placement, the
//! SDN VXLAN zone with the lab's VNets, HA resources with node-affinity rules (Proxmox 9) or
//! groups (Proxmox 8); guests HA moved, left where they are; and the one-node lab exactly as
//! before any of this existed.

mod support;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use support::proxmox_sim::Simulator;

fn config(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../configs")
        .join(name)
}

fn golden(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn run(sim: &Simulator, op: &str, file: &Path, extra: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lab-bootstrap"))
        .arg(op)
        .args(["--proxmox-only", "--api", "pvesh", "--pvesh"])
        .arg(sim.pvesh_shim())
        .args(extra)
        .arg(file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every write as one line, `METHOD path k=v k=v`, in the order made.
fn write_lines(sim: &Simulator) -> String {
    let mut out = String::new();
    for call in sim.writes() {
        let _ = write!(out, "{} {}", call.method, call.path);
        for (k, v) in &call.params {
            let _ = write!(out, " {k}={v}");
        }
        out.push('\n');
    }
    out
}

/// The one-node lab of configs/lab.toml plans and applies byte for byte as it did before
/// `[[node]]`, SDN and HA existed: the plan's text and every write the apply makes.
#[test]
fn a_one_node_lab_plans_and_applies_exactly_as_before() {
    let sim = Simulator::start();
    let out = run(&sim, "plan", &config("lab.toml"), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        golden("one-node-plan.txt")
    );
    let out = run(&sim, "apply", &config("lab.toml"), &["--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(sim.rejected().is_empty(), "{:?}", sim.rejected());
    assert_eq!(write_lines(&sim), golden("one-node-apply-writes.txt"));
}

const NODES: [(&str, &str); 3] = [
    ("pve1", "192.168.1.11"),
    ("pve2", "192.168.1.12"),
    ("pve3", "192.168.1.13"),
];

/// A three-node cluster running Proxmox `version`.
fn cluster(version: &str) -> Simulator {
    let sim = Simulator::start();
    sim.state.lock().unwrap().make_cluster(&NODES, version);
    sim
}

fn apply_cluster(sim: &Simulator, file: &Path) -> String {
    let out = run(sim, "apply", file, &["--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(sim.rejected().is_empty(), "{:?}", sim.rejected());
    text(&out)
}

/// The node each guest of the simulator is on, by VMID.
fn guest_nodes(sim: &Simulator) -> std::collections::BTreeMap<u32, String> {
    let s = sim.state.lock().unwrap();
    s.lxc
        .iter()
        .chain(s.qemu.iter())
        .map(|(id, (node, _))| (*id, node.clone()))
        .collect()
}

#[test]
fn a_three_node_lab_is_spread_over_the_nodes_on_vxlan_vnets_and_a_second_apply_writes_nothing() {
    let sim = cluster("9.0.10");
    let file = config("lab-cluster.toml");
    let out = run(&sim, "plan", &file, &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(
        t.contains("Lab router (gateway, DHCP, firewall on the VNets' bridges): node pve1"),
        "{t}"
    );
    assert!(t.contains("on nodes pve1, pve2, pve3"), "{t}");
    assert!(t.contains("+ sdn-zone \"homelab\""), "{t}");
    assert!(t.contains("+ vnet \"vmbr1\""), "{t}");
    assert!(!t.contains("+ bridge"), "no bridges on a cluster: {t}");
    assert!(
        t.contains("# vm 205 (manager) on pve1 will be created"),
        "{t}"
    );
    assert!(
        sim.writes().is_empty(),
        "plan only reads: {:?}",
        sim.writes()
    );

    apply_cluster(&sim, &file);
    {
        let s = sim.state.lock().unwrap();
        assert_eq!(
            s.sdn, s.sdn_running,
            "PUT /cluster/sdn put everything into effect"
        );
        let zone = &s.sdn.zones["homelab"];
        assert_eq!(zone["type"], "vxlan");
        assert_eq!(zone["peers"], "192.168.1.11,192.168.1.12,192.168.1.13");
        for (vnet, tag, cidr, gateway) in [
            ("vmbr1", "10001", "10.10.1.0/24", "10.10.1.1"),
            ("vmbr2", "10002", "10.10.2.0/24", "10.10.2.1"),
        ] {
            assert_eq!(s.sdn.vnets[vnet]["zone"], "homelab");
            assert_eq!(s.sdn.vnets[vnet]["tag"], tag);
            let subnet = &s.sdn.subnets[&format!("{vnet}/homelab-{}", cidr.replace('/', "-"))];
            assert_eq!(subnet["gateway"], gateway);
        }
        // Guests' NICs are on the VNets, and no bridge was made on any node.
        assert!(s.qemu[&211].1["net0"].contains("bridge=vmbr1"));
        for node in ["pve1", "pve2", "pve3"] {
            let bridges: Vec<&String> = s.network[node].keys().collect();
            assert_eq!(bridges, ["vmbr0"], "{node}");
        }
    }
    let nodes = guest_nodes(&sim);
    assert_eq!(nodes[&205], "pve1", "the manager is pinned to pve1");
    let mut control_planes = vec![&nodes[&211], &nodes[&212], &nodes[&213]];
    control_planes.sort();
    assert_eq!(control_planes, ["pve1", "pve2", "pve3"], "{nodes:?}");
    // The layout docs/ARCHITECTURE.md shows: the spread groups on the nodes with the most room
    // left, then the workers packed onto the first node with room.
    let layout: Vec<(u32, &str)> = nodes.iter().map(|(id, n)| (*id, n.as_str())).collect();
    assert_eq!(
        layout,
        [
            (200, "pve2"),
            (201, "pve3"),
            (205, "pve1"),
            (211, "pve3"),
            (212, "pve2"),
            (213, "pve1"),
            (221, "pve1"),
            (222, "pve1")
        ]
    );

    sim.clear_calls();
    let out = run(&sim, "plan", &file, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("No changes. The nodes pve1, pve2, pve3 match lab.toml."),
        "{}",
        text(&out)
    );
    apply_cluster(&sim, &file);
    assert!(sim.writes().is_empty(), "{:?}", sim.writes());
}

/// HA where lab.toml asks for it: Proxmox 9 takes node-affinity rules, Proxmox 8 groups (the
/// simulator refuses groups on 9 and has no rules on 8, as Proxmox does).
#[test]
fn proxmox_9_gets_ha_rules_and_proxmox_8_ha_groups() {
    let file = config("lab-cluster.toml");
    let sim = cluster("9.0.10");
    apply_cluster(&sim, &file);
    let nodes = guest_nodes(&sim);
    {
        let s = sim.state.lock().unwrap();
        let sids: Vec<&String> = s.ha_resources.keys().collect();
        assert_eq!(sids, ["vm:205", "vm:211", "vm:212", "vm:213"]);
        assert!(s.ha_groups.is_empty());
        let rule = &s.ha_rules["lab-homelab-cp2"];
        assert_eq!(rule["type"], "node-affinity");
        assert_eq!(rule["resources"], "vm:212");
        let home = &nodes[&212];
        assert!(
            rule["nodes"].starts_with(&format!("{home}:2,")),
            "cp2 prefers its own node {home}: {}",
            rule["nodes"]
        );
        // Made before the host side starts the guest: HA must not start it early.
        assert_eq!(s.ha_resources["vm:212"]["state"], "stopped");
    }

    let sim = cluster("8.4.14");
    apply_cluster(&sim, &file);
    let s = sim.state.lock().unwrap();
    assert!(s.ha_rules.is_empty());
    let groups: Vec<&String> = s.ha_groups.keys().collect();
    assert_eq!(
        groups,
        [
            "lab-homelab-cp1",
            "lab-homelab-cp2",
            "lab-homelab-cp3",
            "lab-homelab-manager"
        ]
    );
    assert_eq!(s.ha_resources["vm:205"]["group"], "lab-homelab-manager");
    assert!(s.ha_groups["lab-homelab-manager"]["nodes"].starts_with("pve1:2,"));
}

#[test]
fn destroy_removes_the_labs_vnets_zone_and_ha_objects_and_nothing_else() {
    let sim = cluster("9.0.10");
    let file = config("lab-cluster.toml");
    {
        // The user's own zone and VNet, in effect, and an HA guest of their own.
        let mut s = sim.state.lock().unwrap();
        let strings = |pairs: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        s.sdn.zones.insert(
            "mine".into(),
            strings(&[("zone", "mine"), ("type", "simple")]),
        );
        s.sdn.vnets.insert(
            "myvnet".into(),
            strings(&[("vnet", "myvnet"), ("zone", "mine")]),
        );
        s.sdn_running = s.sdn.clone();
        s.qemu
            .insert(900, ("pve2".into(), strings(&[("name", "my-own-vm")])));
        s.ha_resources.insert(
            "vm:900".into(),
            strings(&[("sid", "vm:900"), ("state", "started")]),
        );
    }
    apply_cluster(&sim, &file);
    // The guests run, as the host side leaves them.
    sim.state
        .lock()
        .unwrap()
        .running
        .extend([200, 201, 205, 211]);
    sim.clear_calls();
    let out = run(&sim, "destroy", &file, &["--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(sim.rejected().is_empty(), "{:?}", sim.rejected());
    let s = sim.state.lock().unwrap();
    assert_eq!(s.sdn.zones.keys().collect::<Vec<_>>(), ["mine"]);
    assert_eq!(s.sdn.vnets.keys().collect::<Vec<_>>(), ["myvnet"]);
    assert!(s.sdn.subnets.is_empty());
    assert_eq!(s.sdn, s.sdn_running, "the removal is put into effect");
    assert_eq!(s.ha_resources.keys().collect::<Vec<_>>(), ["vm:900"]);
    assert!(s.ha_rules.is_empty());
    let guests: Vec<&u32> = s.lxc.keys().chain(s.qemu.keys()).collect();
    assert_eq!(guests, [&900]);
}

/// An apply stopped after writing the SDN objects but before `PUT /cluster/sdn`: the next plan
/// says the SDN changes are due, and the next apply makes exactly that call.
#[test]
fn sdn_changes_not_in_effect_yet_are_put_into_effect_by_the_next_apply() {
    let sim = cluster("9.0.10");
    let file = config("lab-cluster.toml");
    apply_cluster(&sim, &file);
    sim.state.lock().unwrap().sdn_running = Default::default();
    sim.clear_calls();
    let out = run(&sim, "plan", &file, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("~ sdn of the cluster"),
        "{}",
        text(&out)
    );
    apply_cluster(&sim, &file);
    assert_eq!(write_lines(&sim), "PUT /cluster/sdn\n");
}

fn validate(file: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lab-bootstrap"))
        .arg("validate")
        .arg(file)
        .output()
        .unwrap()
}

fn document(name: &str) -> toml_edit::DocumentMut {
    std::fs::read_to_string(config(name))
        .unwrap()
        .parse()
        .unwrap()
}

fn cluster_with(edit: impl FnOnce(&mut toml_edit::DocumentMut)) -> (tempfile::TempDir, PathBuf) {
    let mut doc = document("lab-cluster.toml");
    edit(&mut doc);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lab.toml");
    std::fs::write(&file, doc.to_string()).unwrap();
    (dir, file)
}

#[test]
fn the_cluster_example_passes_validate() {
    let out = validate(&config("lab-cluster.toml"));
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("3 nodes (pve1, pve2, pve3, lab router on pve1)"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_placement_that_cannot_fit_is_refused_naming_the_node_and_its_budget() {
    // Three 6 GiB nodes (4 GiB each for machines): the first worker finds no room.
    let (_dir, file) = cluster_with(|doc| {
        for node in doc["node"].as_array_of_tables_mut().unwrap().iter_mut() {
            node["memory_mib"] = toml_edit::value(6144);
        }
    });
    let out = validate(&file);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    assert!(
        text(&out).contains("key `machine[6]`: `w1` (3072 MiB, 40 GiB) fits on no node: pve1 has 1024 MiB and 164 GiB left of 4096 MiB and 200 GiB"),
        "{}",
        text(&out)
    );
    // Everything pinned to a 12 GiB pve1 overflows it, named with its budget.
    let (_dir, file) = cluster_with(|doc| {
        doc["node"][0]["memory_mib"] = toml_edit::value(12288);
        for m in doc["machine"].as_array_of_tables_mut().unwrap().iter_mut() {
            m["node"] = toml_edit::value("pve1");
        }
    });
    let out = validate(&file);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    assert!(
        text(&out).contains("key `node[0]`: node `pve1`: the machines pinned to it (lb, vpn, manager, cp1, cp2, cp3, w1, w2) ask for 14080 MiB memory, more than its budget of 10240 MiB memory (memory_mib less host_reserve_mib)"),
        "{}",
        text(&out)
    );
}

#[test]
fn cluster_keys_are_checked_against_what_proxmox_takes() {
    let (_dir, file) = cluster_with(|doc| {
        doc["networks"]["net2"]["bridge"] = toml_edit::value("vmbr-two");
        doc["networks"]["net2"]["vni"] = toml_edit::value(10001);
        doc["proxmox"]["node"] = toml_edit::value("pve9");
        doc["machine"][0]["ha"] = toml_edit::value(true);
    });
    let out = validate(&file);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    for expected in [
        "key `networks.net2.bridge`: `vmbr-two` is not an SDN VNet name",
        "key `networks.net2.vni`: 10001 is net1's VXLAN id too",
        "key `proxmox.node`: `pve9` is not a [[node]]",
        "key `machine[0].ha`: the lb containers stay on their node",
    ] {
        assert!(text(&out).contains(expected), "{expected}: {}", text(&out));
    }
    // HA on one node is refused: there is nowhere to move to.
    let mut doc = document("lab.toml");
    doc["machine"][2]["ha"] = toml_edit::value(true);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lab.toml");
    std::fs::write(&file, doc.to_string()).unwrap();
    let out = validate(&file);
    assert!(
        text(&out).contains("key `machine[2].ha`: Proxmox HA moves a guest to another node"),
        "{}",
        text(&out)
    );
}

/// On several nodes the router node puts the gateway on the VNets' bridges itself (SDN's VXLAN
/// bridges carry no address); on one node Proxmox's bridge has it and the unit adds none.
#[test]
fn the_router_node_carries_the_gateway_on_the_vnets() {
    let unit = |file: &Path| {
        let lab = lab_daemon::config::load::<lab_bootstrap::Lab>(file).unwrap();
        lab_bootstrap::render::host_files(&lab)
            .unwrap()
            .into_iter()
            .find(|f| f.path.ends_with("lab-network.service"))
            .unwrap()
            .contents
    };
    let cluster = unit(&config("lab-cluster.toml"));
    for line in [
        "ExecStart=/usr/sbin/ip address replace 10.10.1.1/24 dev vmbr1",
        "ExecStart=/usr/sbin/ip address replace 10.10.2.1/24 dev vmbr2",
        "ExecStop=-/usr/sbin/ip address del 10.10.1.1/24 dev vmbr1",
    ] {
        assert!(cluster.contains(line), "{line}: {cluster}");
    }
    assert!(!unit(&config("lab.toml")).contains("ip address"));
}

#[test]
fn the_two_containers_of_an_lb_and_a_vpn_pair_are_made_on_different_nodes() {
    let sim = cluster("9.0.10");
    let (_dir, file) = cluster_with(|doc| {
        doc["lb"]["replicas"] = toml_edit::value(2);
        doc["vpn"]["replicas"] = toml_edit::value(2);
    });
    apply_cluster(&sim, &file);
    let nodes = guest_nodes(&sim);
    // The second container of each pair is its first's VMID + 100.
    for (first, role) in [(200, "lb"), (201, "vpn")] {
        let (a, b) = (nodes.get(&first), nodes.get(&(first + 100)));
        assert!(a.is_some() && b.is_some(), "{role} pair: {nodes:?}");
        assert_ne!(a, b, "both {role} containers on one node: {nodes:?}");
    }
}

/// Proxmox HA (or an admin) moved the lb container and the manager VM: plan says where they
/// are and plans no move back, a change to one is made on the node it is on, and destroy
/// removes them there.
#[test]
fn guests_moved_to_another_node_are_left_there_changed_there_and_destroyed_there() {
    let sim = cluster("9.0.10");
    let file = config("lab-cluster.toml");
    apply_cluster(&sim, &file);
    assert_eq!(guest_nodes(&sim)[&200], "pve2");
    assert_eq!(guest_nodes(&sim)[&205], "pve1");
    {
        let mut s = sim.state.lock().unwrap();
        s.move_guest(200, "pve3");
        s.move_guest(205, "pve2");
    }
    sim.clear_calls();
    let out = run(&sim, "plan", &file, &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    for expected in [
        "container 200 (lb): on node pve3, placed on pve2: left there (HA moved it, or an admin)",
        "vm 205 (manager): on node pve2, placed on pve1: left there (HA moved it, or an admin)",
        "No changes. The nodes pve1, pve2, pve3 match lab.toml.",
    ] {
        assert!(t.contains(expected), "{expected}\n{t}");
    }
    assert!(sim.rejected().is_empty(), "{:?}", sim.rejected());

    // A change to the lb is made where it is.
    let (_dir, edited) = cluster_with(|doc| {
        for m in doc["machine"].as_array_of_tables_mut().unwrap().iter_mut() {
            if m["name"].as_str() == Some("lb") {
                m["memory_mib"] = toml_edit::value(640);
            }
        }
    });
    let out = run(&sim, "plan", &edited, &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(
        t.contains("# container 200 (lb) on pve3 will be updated in place"),
        "{t}"
    );
    apply_cluster(&sim, &edited);
    assert_eq!(
        write_lines(&sim),
        "PUT /nodes/pve3/lxc/200/config memory=640\n"
    );
    assert_eq!(guest_nodes(&sim)[&200], "pve3", "no move back");

    sim.clear_calls();
    let out = run(&sim, "destroy", &edited, &["--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(sim.rejected().is_empty(), "{:?}", sim.rejected());
    let writes = write_lines(&sim);
    assert!(writes.contains("DELETE /nodes/pve3/lxc/200 "), "{writes}");
    assert!(writes.contains("DELETE /nodes/pve2/qemu/205 "), "{writes}");
    assert!(guest_nodes(&sim).is_empty(), "{:?}", guest_nodes(&sim));
}

/// A guest HA moved to a node lab.toml does not list: plan and apply refuse before anything
/// changes, naming the guest, the node and the key to add; destroy still finds it there.
#[test]
fn a_guest_on_a_node_lab_toml_does_not_list_is_refused_naming_it_and_the_node() {
    let sim = Simulator::start();
    let mut nodes = NODES.to_vec();
    nodes.push(("pve4", "192.168.1.14"));
    sim.state.lock().unwrap().make_cluster(&nodes, "9.0.10");
    let file = config("lab-cluster.toml");
    apply_cluster(&sim, &file);
    sim.state.lock().unwrap().move_guest(200, "pve4");
    sim.clear_calls();
    let expected = "container 200 (lb) is on node pve4, which lab.toml does not list: add it as a [[node]] (name = \"pve4\"";
    for op in ["plan", "apply"] {
        let out = run(&sim, op, &file, &["--yes"][..usize::from(op == "apply")]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "{op}: {t}");
        assert!(t.contains(expected), "{op}: {t}");
        assert!(!t.contains("will be created"), "{op}: {t}");
    }
    assert!(sim.writes().is_empty(), "{:?}", sim.writes());

    let out = run(&sim, "destroy", &file, &["--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        write_lines(&sim).contains("DELETE /nodes/pve4/lxc/200 "),
        "{}",
        write_lines(&sim)
    );
    assert!(guest_nodes(&sim).is_empty(), "{:?}", guest_nodes(&sim));
}
