//! Broken labs: configs/lab.toml with one thing wrong, made by the test from the table below,
//! each refused by the real `lab-bootstrap validate` with exit 78 naming the key that is wrong.
//! And the new sections of lab.toml ([[lb.route]], [[vpn.peer]], [host]) reach the rendered
//! files.

use lab_bootstrap::model::Lab;
use lab_bootstrap::render::containers::{lb_config, vpn_config};
use lab_bootstrap::render::nftables;
use lab_daemon::config::load;
use std::path::{Path, PathBuf};
use std::process::Command;
use toml_edit::{DocumentMut, Item, Value};

const BIN: &str = env!("CARGO_BIN_EXE_lab-bootstrap");

/// One change to the example, at a key path (`machine[2].nic[0].address`), with a TOML value.
enum Edit {
    /// Replaces a value that is there.
    Set(&'static str, &'static str),
    /// Adds what is not there: a key (and the tables above it), or the next table of an array.
    Add(&'static str, &'static str),
    Remove(&'static str),
}

use Edit::{Add, Remove, Set};

struct Broken {
    what: &'static str,
    edits: &'static [Edit],
    /// The key validate names.
    key: &'static str,
}

const LAPTOP_KEY: &str = "UcbHrqf+sj9jMaUWqHr0ffKnPvCGJGgK99qCWdHQP3k=";

#[rustfmt::skip]
const BROKEN: &[Broken] = &[
    Broken { what: "the broadcast address", edits: &[Set("machine[2].nic[0].address", r#""10.10.1.255""#)], key: "machine[2].nic[0].address" },
    Broken { what: "the manager outside net1", edits: &[Set("machine[2].nic[0].address", r#""10.10.2.5""#)], key: "machine[2].nic[0].address" },
    Broken { what: "a static address inside the DHCP range", edits: &[Set("machine[2].nic[0].address", r#""10.10.1.150""#)], key: "machine[2].nic[0].address" },
    Broken { what: "two machines at one address", edits: &[Set("machine[4].nic[0].address", r#""10.10.1.11""#)], key: "machine[4].nic[0].address" },
    Broken { what: "the vpn given the lb's derived MAC", edits: &[Add("machine[1].nic[0].mac", r#""BC:24:11:00:0C:80""#)], key: "machine[1].nic[0].mac" },
    Broken { what: "two machines with one name", edits: &[Set("machine[1].name", r#""lb""#)], key: "machine[1].name" },
    Broken { what: "two machines with one VMID", edits: &[Set("machine[1].vmid", "200")], key: "machine[1].vmid" },
    Broken { what: "a machine name Kubernetes would refuse as a node name", edits: &[Set("machine[4].name", r#""CP2""#)], key: "machine[4].name" },
    Broken { what: "a machine name that is no RFC 1123 host name", edits: &[Set("machine[3].name", r#""cp_1""#)], key: "machine[3].name" },
    Broken { what: "a Linux name Proxmox does not create bridges with (pve-iface)", edits: &[Set("networks.net1.bridge", r#""lab-admin""#)], key: "networks.net1.bridge" },
    Broken { what: "a bridge name over Linux's 15 bytes", edits: &[Set("networks.net1.bridge", r#""vmbr-administration""#)], key: "networks.net1.bridge" },
    Broken { what: "a `/` in an interface name", edits: &[Set("networks.net2.bridge", r#""vmbr/2""#)], key: "networks.net2.bridge" },
    Broken { what: "net2 containing net1", edits: &[Set("networks.net2.cidr", r#""10.10.0.0/16""#)], key: "networks.net2.cidr" },
    Broken { what: "a domain with `_`", edits: &[Add("networks.domain", r#""home_lab""#)], key: "networks.domain" },
    Broken { what: "a domain ending in a dot", edits: &[Add("networks.domain", r#""lab.""#)], key: "networks.domain" },
    Broken { what: "mDNS's domain", edits: &[Add("networks.domain", r#""local""#)], key: "networks.domain" },
    Broken { what: "a worker named like the vpn container's DNS name", edits: &[Set("machine[1].name", r#""gateway""#), Set("machine[6].name", r#""vpn""#)], key: "machine[6].name" },
    Broken { what: "a lab name that is no DNS label", edits: &[Set("cluster.name", r#""home_lab""#)], key: "cluster.name" },
    Broken { what: "the endpoint on a control plane, not the lb", edits: &[Set("cluster.endpoint", r#""https://10.10.2.11:6443""#)], key: "cluster.endpoint" },
    Broken { what: "a port listed twice", edits: &[Set("host.management_access", "[22, 22]")], key: "host.management_access[1]" },
    Broken { what: "a storage name Proxmox refuses", edits: &[Set("proxmox.storage", r#""local-lvm-""#)], key: "proxmox.storage" },
    Broken { what: "more memory than an 8 GiB host has", edits: &[Set("proxmox.memory_mib", "8192")], key: "proxmox.memory_mib" },
    Broken { what: "backups kept: none", edits: &[Add("backup.keep", "0")], key: "backup.keep" },
    Broken { what: "a backup directory relative to wherever the timer runs", edits: &[Add("backup.dir", r#""backups""#)], key: "backup.dir" },
    Broken { what: "a checksum of the wrong length", edits: &[Add("images.talos", r#"{ url = "https://factory.talos.dev/image/x/v1.13.9/nocloud-amd64.raw", sha256 = "abc123" }"#)], key: "images.talos.sha256" },
    Broken { what: "an image without checksum", edits: &[Add("images.lxc_template", r#"{ url = "http://download.proxmox.com/images/system/debian-12-standard_12.12-1_amd64.tar.zst" }"#)], key: "images.lxc_template" },
    Broken { what: "a path instead of a URL", edits: &[Add("images.debian", r#"{ url = "/tmp/debian.qcow2", sha256 = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" }"#)], key: "images.debian.url" },
    Broken { what: "two routes with one name", edits: &[Set("lb.route[1].name", r#""kube-apiserver""#)], key: "lb.route[1].name" },
    Broken { what: "two routes on net2:6443", edits: &[Set("lb.route[1].port", "6443")], key: "lb.route[1].port" },
    Broken { what: "a route on the lb's metrics port", edits: &[Set("lb.route[1].port", "8404")], key: "lb.route[1].port" },
    Broken { what: "the lb has no net1 address", edits: &[Set("lb.route[0].listen", r#""net1""#)], key: "lb.route[0].listen" },
    Broken { what: "a route with no roles and no machines", edits: &[Remove("lb.route[0].roles")], key: "lb.route[0]" },
    Broken { what: "a route to the manager, which has no net2 address", edits: &[Remove("lb.route[0].roles"), Add("lb.route[0].machines", r#"["manager"]"#)], key: "lb.route[0].machines[0]" },
    Broken { what: "a route to a machine that does not exist", edits: &[Remove("lb.route[0].roles"), Add("lb.route[0].machines", r#"["cp9"]"#)], key: "lb.route[0].machines[0]" },
    // Within the host's memory still, so the routes to workers are all that is wrong.
    Broken { what: "routes to workers in a lab without workers", edits: &[Set("machine[6].role", r#""control-plane""#), Set("machine[6].memory_mib", "2048"), Set("machine[7].role", r#""control-plane""#), Set("machine[7].memory_mib", "2048")], key: "lb.route[2].roles[0]" },
    Broken { what: "root as the cloud-init user", edits: &[Set("manager.user", r#""root""#)], key: "manager.user" },
    Broken { what: "a missing key file", edits: &[Add("manager.ssh_keys_file", r#""keys/nobody.pub""#)], key: "manager.ssh_keys_file" },
    Broken { what: "a WireGuard key where SSH keys belong", edits: &[Add("manager.ssh_keys_file", r#""keys/laptop.pub""#)], key: "manager.ssh_keys_file" },
    Broken { what: "a public key that is not base64 of 32 bytes", edits: &[Set("vpn.peer[0].public_key", r#""not-a-key""#)], key: "vpn.peer[0].public_key" },
    Broken { what: "a missing key file", edits: &[Remove("vpn.peer[0].public_key"), Add("vpn.peer[0].public_key_file", r#""keys/laptop-does-not-exist.pub""#)], key: "vpn.peer[0].public_key_file" },
    Broken { what: "both public_key and public_key_file", edits: &[Add("vpn.peer[0].public_key_file", r#""keys/laptop.pub""#)], key: "vpn.peer[0]" },
    Broken { what: "a peer on lab-vpn's own address", edits: &[Set("vpn.peer[0].address", r#""10.10.100.1""#)], key: "vpn.peer[0].address" },
    Broken { what: "a peer address outside the tunnel", edits: &[Set("vpn.peer[0].address", r#""10.10.1.200""#)], key: "vpn.peer[0].address" },
    Broken { what: "two peers at one address", edits: &[Add("vpn.peer[1]", r#"{ name = "phone", public_key = "m9XYp+SdT1i0HAvFg2d+VIqb0LEk+0iGEwjRTtPPVFM=", address = "10.10.100.2" }"#)], key: "vpn.peer[1].address" },
    Broken { what: "two peers with one name", edits: &[Add("vpn.peer[1]", r#"{ name = "laptop", public_key = "m9XYp+SdT1i0HAvFg2d+VIqb0LEk+0iGEwjRTtPPVFM=", address = "10.10.100.3" }"#)], key: "vpn.peer[1].name" },
    Broken { what: "a public endpoint without a port", edits: &[Add("vpn.public_endpoint", r#""home.example.org""#)], key: "vpn.public_endpoint" },
    Broken { what: "a public endpoint that is no host name", edits: &[Add("vpn.public_endpoint", r#""home_router!:51820""#)], key: "vpn.public_endpoint" },
    Broken { what: "a UDP receive buffer too small for one GRO bundle", edits: &[Add("vpn.udp_receive_buffer", "4096")], key: "vpn.udp_receive_buffer" },
];

/// A key path's steps: table keys and array indices.
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

fn steps(path: &str) -> Vec<Step<'_>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, indices) = part
            .split_once('[')
            .map_or((part, ""), |(k, rest)| (k, rest));
        out.push(Step::Key(key));
        for index in indices.split('[').filter(|i| !i.is_empty()) {
            let index = index.trim_end_matches(']').parse().unwrap();
            out.push(Step::Index(index));
        }
    }
    out
}

/// The item at `steps`, which must be there.
fn at<'a>(mut item: &'a mut Item, steps: &[Step], path: &str) -> &'a mut Item {
    for step in steps {
        let next = match step {
            Step::Key(key) => item.get_mut(*key),
            Step::Index(index) => item.get_mut(*index),
        };
        item = next.unwrap_or_else(|| panic!("{path}: not in configs/lab.toml"));
    }
    item
}

fn value(path: &str, text: &str) -> Value {
    text.parse()
        .unwrap_or_else(|e| panic!("{path}: {text} is no TOML value: {e}"))
}

fn edit(doc: &mut DocumentMut, edit: &Edit) {
    let (Set(path, _) | Add(path, _) | Remove(path)) = edit;
    let steps = steps(path);
    let (last, parent) = steps.split_last().unwrap();
    match (edit, last) {
        (Set(_, text), _) => {
            let item = at(doc.as_item_mut(), &steps, path);
            assert!(item.is_value(), "{path}: not a value");
            *item = Item::Value(value(path, text));
        }
        (Add(_, text), Step::Key(key)) => {
            // Tables above the key are made as needed ([images] is all comments in the example).
            let mut item = doc.as_item_mut();
            for step in parent {
                item = match step {
                    Step::Key(key) => &mut item[*key],
                    Step::Index(index) => at(item, &[Step::Index(*index)], path),
                };
            }
            assert!(item.get(*key).is_none(), "{path}: already there");
            item[*key] = Item::Value(value(path, text));
        }
        (Add(_, text), Step::Index(index)) => {
            let tables = at(doc.as_item_mut(), parent, path)
                .as_array_of_tables_mut()
                .unwrap_or_else(|| panic!("{path}: not an array of tables"));
            assert_eq!(tables.len(), *index, "{path}: adds the next table only");
            let Value::InlineTable(table) = value(path, text) else {
                panic!("{path}: {text} is no table");
            };
            tables.push(table.into_table());
        }
        (Remove(_), Step::Key(key)) => {
            at(doc.as_item_mut(), parent, path)
                .as_table_like_mut()
                .and_then(|table| table.remove(key))
                .unwrap_or_else(|| panic!("{path}: not in configs/lab.toml"));
        }
        (Remove(_), Step::Index(_)) => panic!("{path}: removes keys only"),
    }
}

#[test]
fn every_broken_lab_is_refused_naming_its_key() {
    let example = std::fs::read_to_string(example()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Key files are found relative to the lab.toml naming them.
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    std::fs::write(
        dir.path().join("keys/laptop.pub"),
        format!("{LAPTOP_KEY}\n"),
    )
    .unwrap();
    let mut failures = Vec::new();
    for (n, broken) in BROKEN.iter().enumerate() {
        let mut doc: DocumentMut = example.parse().unwrap();
        for change in broken.edits {
            edit(&mut doc, change);
        }
        let file = dir.path().join(format!("broken-{n}.toml"));
        std::fs::write(&file, doc.to_string()).unwrap();
        let key = broken.key;
        let out = Command::new(BIN)
            .arg("validate")
            .arg(&file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(78) || !stderr.contains(&format!("key `{key}`:")) {
            failures.push(format!(
                "{} ({}): exit {:?}, expected key `{key}`:\n{stderr}",
                broken.what,
                file.display(),
                out.status.code()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The broken labs are the example with one thing wrong: the example itself passes, so each
/// refusal is that one thing.
#[test]
fn the_example_the_broken_labs_are_made_from_passes() {
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
