//! The Proxmox schema checks the simulator makes: paths resolve to their templates, real calls
//! pass, and bad ones fail naming what is wrong.

mod support;

use serde_json::Value;
use std::path::Path;
use support::proxmox_schema::*;

fn schema() -> Schema {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../reference/proxmox/apidata.json");
    Schema::load(&path).unwrap()
}

fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn reason(r: Result<Resolved, SchemaError>) -> String {
    r.unwrap_err().to_string()
}

#[test]
fn concrete_paths_resolve_to_their_templates() {
    let s = schema();
    let r = s.resolve("/nodes/pve/lxc/200/config").unwrap();
    assert_eq!(r.template, "/nodes/{node}/lxc/{vmid}/config");
    assert_eq!(r.path_params["node"], "pve");
    assert_eq!(r.path_params["vmid"], "200");
    assert_eq!(
        s.resolve("/nodes/pve/network").unwrap().template,
        "/nodes/{node}/network"
    );
    assert!(matches!(
        s.resolve("/nodes/pve/nothing-here/1"),
        Err(SchemaError::NoPath { .. })
    ));
}

#[test]
fn a_real_container_create_is_valid() {
    let s = schema();
    s.validate(
        "POST",
        "/nodes/pve/lxc",
        &p(&[
            ("vmid", "200"),
            (
                "ostemplate",
                "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
            ),
            ("unprivileged", "1"),
            ("memory", "256"),
            (
                "net0",
                "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:0C:80,ip=192.168.1.50/24,gw=192.168.1.1",
            ),
            ("net1", "name=eth1,bridge=vmbr2,ip=10.10.2.2/24"),
            ("dev0", "/dev/net/tun"),
            ("tags", "lab-managed"),
        ]),
    )
    .unwrap();
}

#[test]
fn a_real_vm_create_is_valid() {
    let s = schema();
    s.validate(
        "POST",
        "/nodes/pve/qemu",
        &p(&[
            ("vmid", "311"),
            ("machine", "q35"),
            ("bios", "ovmf"),
            ("efidisk0", "local-lvm:1,efitype=4m,pre-enrolled-keys=0"),
            ("cpu", "host"),
            ("scsihw", "virtio-scsi-pci"),
            (
                "scsi0",
                "local-lvm:0,import-from=local:import/talos.raw,discard=on",
            ),
            ("net0", "virtio=BC:24:11:00:13:70,bridge=vmbr1"),
            (
                "net1",
                "model=virtio,macaddr=BC:24:11:00:13:71,bridge=vmbr2",
            ),
            ("agent", "1"),
            ("memory", "4096"),
            ("cicustom", "user=local:snippets/cp1.yaml"),
            ("ipconfig0", "ip=10.10.1.5/24,gw=10.10.1.1"),
        ]),
    )
    .unwrap();
}

#[test]
fn wrong_types_are_refused_naming_the_parameter() {
    let s = schema();
    let e = reason(s.validate("POST", "/nodes/pve/qemu", &p(&[("vmid", "abc")])));
    assert!(e.contains("`vmid`") && e.contains("not an integer"), "{e}");
    let e = reason(s.validate("POST", "/nodes/pve/qemu", &p(&[("vmid", "99")])));
    assert!(e.contains("minimum 100"), "{e}");
    let e = reason(s.validate(
        "POST",
        "/nodes/pve/lxc",
        &p(&[
            ("vmid", "200"),
            ("ostemplate", "x"),
            ("unprivileged", "maybe"),
        ]),
    ));
    assert!(e.contains("`unprivileged`") && e.contains("boolean"), "{e}");
}

#[test]
fn unknown_parameters_methods_and_enums_are_refused() {
    let s = schema();
    let e = reason(s.validate(
        "POST",
        "/nodes/pve/qemu",
        &p(&[("vmid", "300"), ("colour", "red")]),
    ));
    assert!(e.contains("unknown parameter `colour`"), "{e}");
    let e = reason(s.validate("PATCH", "/nodes/pve/qemu", &[]));
    assert!(e.contains("method not allowed"), "{e}");
    let e = reason(s.validate(
        "POST",
        "/nodes/pve/qemu",
        &p(&[("vmid", "300"), ("bios", "uefi")]),
    ));
    assert!(e.contains("`bios`") && e.contains("ovmf"), "{e}");
    // scsi is limited to 0..=30 by the schema.
    let e = reason(s.validate(
        "POST",
        "/nodes/pve/qemu",
        &p(&[("vmid", "300"), ("scsi31", "local-lvm:4")]),
    ));
    assert!(e.contains("unknown parameter `scsi31`"), "{e}");
}

#[test]
fn required_parameters_are_enforced() {
    let s = schema();
    let e = reason(s.validate("POST", "/nodes/pve/lxc", &p(&[("vmid", "200")])));
    assert!(e.contains("missing required parameter `ostemplate`"), "{e}");
}

#[test]
fn bad_property_strings_are_refused() {
    let s = schema();
    let lxc = |net: &str| {
        reason(s.validate(
            "POST",
            "/nodes/pve/lxc",
            &p(&[
                ("vmid", "200"),
                ("ostemplate", "local:vztmpl/x.tar.zst"),
                ("net0", net),
            ]),
        ))
    };
    let e = lxc("name=eth0,bridge=vmbr0,colour=red");
    assert!(
        e.contains("`net0`") && e.contains("unknown key `colour`"),
        "{e}"
    );
    let e = lxc("bridge=vmbr0");
    assert!(e.contains("missing key `name`"), "{e}");
    let e = lxc("name=eth0,hwaddr=01:00:00:00:00:01");
    assert!(e.contains("key `hwaddr`"), "{e}");
    let e = lxc("name=eth0,ip=300.1.1.1/24");
    assert!(e.contains("key `ip`"), "{e}");
    let e = lxc("name=eth0,mtu=10");
    assert!(e.contains("key `mtu`") && e.contains("minimum 64"), "{e}");
    let e = reason(s.validate(
        "POST",
        "/nodes/pve/qemu",
        &p(&[("vmid", "300"), ("net0", "rtl9999=BC:24:11:00:00:10")]),
    ));
    assert!(e.contains("unknown key `rtl9999`"), "{e}");
    let e = reason(s.validate(
        "POST",
        "/nodes/pve/qemu",
        &p(&[
            ("vmid", "300"),
            ("ipconfig0", "ip=10.0.0.5/24,gateway=10.0.0.1"),
        ]),
    ));
    assert!(
        e.contains("`ipconfig0`") && e.contains("unknown key `gateway`"),
        "{e}"
    );
}

#[test]
fn every_pattern_in_the_schema_compiles() {
    fn walk(v: &Value, bad: &mut Vec<String>, count: &mut usize) {
        match v {
            Value::Object(map) => {
                if let Some(Value::String(p)) = map.get("pattern") {
                    *count += 1;
                    if let Err(e) = compile(p) {
                        bad.push(format!("{p}: {e}"));
                    }
                }
                map.values().for_each(|v| walk(v, bad, count));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, bad, count)),
            _ => {}
        }
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../reference/proxmox/apidata.json");
    let tree: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let (mut bad, mut count) = (Vec::new(), 0);
    walk(&tree, &mut bad, &mut count);
    assert!(count > 100, "{count} patterns");
    assert!(bad.is_empty(), "{bad:#?}");
}

#[test]
fn perl_patterns_are_translated() {
    let s = schema();
    // `tags` is a pve-tag-list; `name` on a VM is a dns-name; cpu's pattern-less enum aside,
    // `hookscript` and friends use `(?^:` groups.
    s.validate(
        "PUT",
        "/nodes/pve/qemu/300/config",
        &p(&[("tags", "lab-managed;talos")]),
    )
    .unwrap();
    let e = reason(s.validate(
        "PUT",
        "/nodes/pve/qemu/300/config",
        &p(&[("tags", "Bad Tag!")]),
    ));
    assert!(e.contains("`tags`"), "{e}");
    assert!(pattern_matches("(?^:[A-Za-z0-9\\.\\-_]+)", "abc.d"));
    assert!(!pattern_matches("(?^:[A-Za-z0-9\\.\\-_]+)", "a b"));
}

#[test]
fn proxmox_name_formats_are_proxmoxs() {
    let s = schema();
    let vm = |name: &str| {
        s.validate(
            "POST",
            "/nodes/pve/qemu",
            &p(&[("vmid", "300"), ("name", name)]),
        )
    };
    vm("cp1").unwrap();
    vm("cp1.lab.example").unwrap();
    for bad in ["cp_1", "-cp1", "cp1.", "a b"] {
        assert!(reason(vm(bad)).contains("`name`"), "{bad}");
    }
    let bridge = |iface: &str| {
        s.validate(
            "POST",
            "/nodes/pve/network",
            &p(&[("iface", iface), ("type", "bridge")]),
        )
    };
    bridge("vmbr1").unwrap();
    for bad in ["lab-admin", "1vmbr", "vmbr/1"] {
        assert!(reason(bridge(bad)).contains("`iface`"), "{bad}");
    }
    assert!(reason(s.validate("GET", "/nodes/pve_1/qemu", &[])).contains("pve_1"));
}
