//! `lab-bootstrap validate`: everything a user can get wrong in lab.toml is caught before
//! anything is touched, each with the key, its line and what is wrong.

use lab_tests::suites::config_check::{self, Checker};
use lab_tests::workspace;
use toml_edit::{value, DocumentMut};

const VALIDATE: Checker<'static> = Checker {
    bin: env!("CARGO_BIN_EXE_lab-bootstrap"),
    subcommand: "validate",
};

#[test]
fn example_lab_passes_validate() {
    config_check::example_passes(VALIDATE, "lab.toml");
}

#[test]
fn misspelt_key_is_refused_with_line_and_column() {
    config_check::misspelt_key_refused(VALIDATE, "lab.toml", "vmid", "vmdi");
}

#[test]
fn not_toml_empty_and_missing_files_are_refused_clearly() {
    config_check::unreadable_files_refused(VALIDATE);
}

/// Applies `edit` to the example and expects `validate` to refuse it naming `expected`.
fn refused(edit: impl FnOnce(&mut DocumentMut), expected: &[&str]) {
    let mut lab = workspace::config_document("lab.toml");
    edit(&mut lab);
    config_check::document_refused_with(VALIDATE, "lab.toml", &lab, expected);
}

fn line_of(needle: &str) -> usize {
    let text = workspace::config_text("lab.toml");
    text.lines().position(|l| l.starts_with(needle)).unwrap() + 1
}

#[test]
fn overlapping_networks_are_refused() {
    refused(
        |lab| lab["networks"]["net2"]["cidr"] = value("10.10.0.0/16"),
        &["key `networks.net2.cidr`: 10.10.0.0/16 overlaps net1 (10.10.1.0/24)"],
    );
}

#[test]
fn address_outside_its_network_or_on_its_edges_is_refused() {
    refused(
        |lab| lab["machine"][2]["nic"][0]["address"] = value("10.10.2.5"),
        &["key `machine[2].nic[0].address`: 10.10.2.5 is outside 10.10.1.0/24 (net1)"],
    );
    refused(
        |lab| lab["machine"][2]["nic"][0]["address"] = value("10.10.1.255"),
        &["10.10.1.255 is the broadcast address of 10.10.1.0/24"],
    );
    refused(
        |lab| lab["networks"]["net1"]["host"] = value("10.10.1.0"),
        &["key `networks.net1.host`: 10.10.1.0 is the network address of 10.10.1.0/24"],
    );
}

#[test]
fn duplicate_vmid_ip_name_and_mac_are_refused() {
    let vmid_line = line_of("vmid = 201");
    refused(
        |lab| lab["machine"][1]["vmid"] = value(200),
        &[&format!(
            "lab.toml:{vmid_line}:8: key `machine[1].vmid`: VMID 200 is already used by `lb`"
        )],
    );
    refused(
        |lab| lab["machine"][4]["nic"][0]["address"] = value("10.10.1.11"),
        &["key `machine[4].nic[0].address`: 10.10.1.11 is already `cp1` (net1)"],
    );
    refused(
        |lab| lab["machine"][4]["name"] = value("cp1"),
        &["key `machine[4].name`: machine `cp1` is already defined as machine[3]"],
    );
    refused(
        |lab| lab["machine"][2]["nic"][0]["mac"] = value("BC:24:11:00:0C:80"),
        &["key `machine[2].nic[0].mac`: MAC BC:24:11:00:0C:80 is already `lb` (net0)'s"],
    );
}

#[test]
fn static_address_inside_dhcp_range_is_refused() {
    refused(
        |lab| lab["machine"][2]["nic"][0]["address"] = value("10.10.1.150"),
        &["key `machine[2].nic[0].address`: 10.10.1.150 is inside net1's DHCP range"],
    );
}

#[test]
fn more_memory_than_the_host_has_is_refused() {
    refused(
        |lab| lab["machine"][6]["memory_mib"] = value(8192),
        &["key `proxmox.memory_mib`: the machines ask for 19200 MiB but the host has 16384 MiB"],
    );
}

#[test]
fn endpoint_must_be_the_load_balancers_net2_address() {
    refused(
        |lab| lab["cluster"]["endpoint"] = value("https://10.10.1.11:6443"),
        &["key `cluster.endpoint`: the Kubernetes endpoint is the load balancer's net2 address: expected `https://10.10.2.2:6443`"],
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    refused(
        |lab| {
            lab["machine"][1]["vmid"] = value(200);
            lab["networks"]["net2"]["cidr"] = value("10.10.0.0/16");
        },
        &["key `machine[1].vmid`", "key `networks.net2.cidr`"],
    );
}

#[test]
fn vpn_tunnel_overlapping_a_network_or_too_small_is_refused() {
    refused(
        |lab| {
            lab["vpn"] = toml_edit::table();
            lab["vpn"]["tunnel"] = value("10.10.1.0/25");
        },
        &["key `vpn.tunnel`: 10.10.1.0/25 overlaps net1 (10.10.1.0/24)"],
    );
    refused(
        |lab| {
            lab["vpn"] = toml_edit::table();
            lab["vpn"]["tunnel"] = value("10.10.100.0/31");
        },
        &["key `vpn.tunnel`: 10.10.100.0/31 has no room for the gateway and a peer"],
    );
}

#[test]
fn bridge_names_linux_cannot_have_are_refused() {
    refused(
        |lab| lab["networks"]["net1"]["bridge"] = value("vmbr1234567890ab"),
        &["key `networks.net1.bridge`: `vmbr1234567890ab` is 16 bytes; Linux interface names are at most 15"],
    );
    refused(
        |lab| lab["networks"]["net2"]["bridge"] = value("vmbr/2"),
        &["key `networks.net2.bridge`: `vmbr/2` has '/'"],
    );
    refused(
        |lab| lab["networks"]["net0"]["bridge"] = value("vmbr 0"),
        &["key `networks.net0.bridge`: `vmbr 0` has ' '"],
    );
    refused(
        |lab| lab["networks"]["net0"]["bridge"] = value(".."),
        &["key `networks.net0.bridge`: `..` is not a Linux interface name"],
    );
    refused(
        |lab| lab["networks"]["net0"]["bridge"] = value(""),
        &["key `networks.net0.bridge`: an interface name must not be empty"],
    );
    // What nftables strings and systemd instance names would have to escape.
    refused(
        |lab| lab["networks"]["net2"]["bridge"] = value("vmbr\"2"),
        &["key `networks.net2.bridge`: `vmbr\"2` has '\"'"],
    );
}

#[test]
fn lab_bridges_proxmox_cannot_create_are_refused() {
    // Fine for Linux, but not Proxmox's pve-iface; net0 exists already and may be so named.
    refused(
        |lab| lab["networks"]["net1"]["bridge"] = value("lab-admin"),
        &["key `networks.net1.bridge`: `lab-admin` is not a name Proxmox creates a bridge with"],
    );
    refused(
        |lab| lab["networks"]["net2"]["bridge"] = value("2vmbr"),
        &["key `networks.net2.bridge`: `2vmbr` is not a name Proxmox creates a bridge with"],
    );
    let mut lab = workspace::config_document("lab.toml");
    lab["networks"]["net0"]["bridge"] = value("uplink-br.1");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lab.toml");
    std::fs::write(&file, lab.to_string()).unwrap();
    let out = std::process::Command::new(VALIDATE.bin)
        .arg("validate")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn machine_names_that_are_not_host_names_are_refused() {
    for (name, why) in [
        ("cp_1", "`cp_1` is not an RFC 1123 host name"),
        ("cp1-", "`cp1-` is not an RFC 1123 host name"),
        ("cp1.lab", "`cp1.lab` is not an RFC 1123 host name"),
        (
            "CP1",
            "`CP1` has capitals; it becomes the Kubernetes node name",
        ),
    ] {
        refused(
            |lab| lab["machine"][3]["name"] = value(name),
            &[&format!("key `machine[3].name`: {why}")],
        );
    }
}

#[test]
fn lab_node_and_storage_names_proxmox_refuses_are_refused() {
    refused(
        |lab| lab["cluster"]["name"] = value("home_lab"),
        &["key `cluster.name`: `home_lab` is not an RFC 1123 label"],
    );
    refused(
        |lab| lab["proxmox"]["node"] = value("pve.lan"),
        &["key `proxmox.node`: `pve.lan` is not a Proxmox node name"],
    );
    refused(
        |lab| lab["proxmox"]["storage"] = value("local/lvm"),
        &["key `proxmox.storage`: `local/lvm` is not a Proxmox storage ID"],
    );
    refused(
        |lab| lab["proxmox"]["file_storage"] = value("1local"),
        &["key `proxmox.file_storage`: `1local` is not a Proxmox storage ID"],
    );
}

#[test]
fn talos_extensions_that_are_not_owner_slash_name_or_listed_twice_are_refused() {
    refused(
        |lab| {
            let mut list = toml_edit::Array::new();
            list.push("siderolabs/qemu-guest-agent");
            list.push("qemu-guest-agent");
            list.push("SideroLabs/iscsi-tools");
            list.push("siderolabs/qemu-guest-agent");
            lab["cluster"]["talos_extensions"] = value(list);
        },
        &[
            "key `cluster.talos_extensions[1]`: `qemu-guest-agent` is not an official Talos system extension like `siderolabs/qemu-guest-agent`",
            "key `cluster.talos_extensions[2]`: `SideroLabs/iscsi-tools` is not an official Talos system extension",
            "key `cluster.talos_extensions[3]`: `siderolabs/qemu-guest-agent` is listed twice",
        ],
    );
}

#[test]
fn a_talos_image_without_a_pinned_checksum_is_refused_saying_why() {
    refused(
        |lab| {
            lab["images"] = toml_edit::table();
            lab["images"]["talos"] = toml_edit::table();
            lab["images"]["talos"]["file"] = value("talos.qcow2");
        },
        &["key `images.talos`: give exactly one of `sha256` and `sha512`: the Image Factory builds the image on request and publishes no checksum"],
    );
}

#[test]
fn a_factory_image_url_of_another_schematic_or_release_is_refused() {
    let id = "ce4c980550dd2ab1b17bbf2b08801c7eb59418eafe8f279833297925d67c7515";
    let talos_image = |lab: &mut DocumentMut, url: &str| {
        lab["images"] = toml_edit::table();
        lab["images"]["talos"] = toml_edit::table();
        lab["images"]["talos"]["url"] = value(url);
        lab["images"]["talos"]["sha256"] = value("ab".repeat(32));
    };
    // The stock image's schematic: the disk would lack the guest agent the installer brings.
    refused(
        |lab| {
            talos_image(
                lab,
                "https://factory.talos.dev/image/376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba/v1.13.9/nocloud-amd64.qcow2",
            )
        },
        &[&format!("key `images.talos.url`: names the factory schematic `376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba`, but `cluster.talos_extensions` make `{id}`")],
    );
    refused(
        |lab| {
            talos_image(
                lab,
                &format!("https://factory.talos.dev/image/{id}/v1.12.0/nocloud-amd64.qcow2"),
            )
        },
        &["key `images.talos.url`: names Talos `v1.12.0`, but `cluster.talos_version` is `v1.13.9`"],
    );
}
