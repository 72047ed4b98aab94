//! `[lb] replicas = 2` / `[vpn] replicas = 2`: two containers each in the desired state and
//! the rendered files, keepalived's config accepted by the real `keepalived -t`, its drop-in by
//! `systemd-analyze verify`, and the clashes a pair can bring refused by `validate`.

use lab_bootstrap::model::{Lab, Role};
use lab_bootstrap::proxmox::desired::{desired, Kind, Sources};
use lab_tests::binaries::workspace_bin;
use lab_tests::netns::Netns;
use lab_tests::suites::config_check::{self, Checker};
use lab_tests::{systemd_unit, workspace};
use std::path::Path;
use std::process::Command;
use toml_edit::{value, DocumentMut};

const BIN: &str = env!("CARGO_BIN_EXE_lab-bootstrap");

const VALIDATE: Checker<'static> = Checker {
    bin: BIN,
    subcommand: "validate",
};

/// The example lab with both pairs.
fn paired() -> DocumentMut {
    let mut lab = workspace::config_document("lab.toml");
    lab["lb"]["replicas"] = value(2);
    lab["vpn"]["replicas"] = value(2);
    lab
}

fn lab_of(document: &DocumentMut) -> Lab {
    lab_daemon::config::parse::<Lab>(&workspace::config_path("lab.toml"), &document.to_string())
        .unwrap()
}

/// `render --root` of `document`, written beside the example so relative paths resolve.
fn render(document: &DocumentMut, root: &Path) {
    let file = root.join("lab.toml");
    std::fs::write(&file, document.to_string()).unwrap();
    let output = Command::new(BIN)
        .arg("render")
        .arg("--root")
        .arg(root.join("root"))
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "render failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn staged(root: &Path, container: &str, path: &str) -> std::path::PathBuf {
    root.join(format!("root/var/lib/lab/containers/{container}{path}"))
}

/// `keepalived -t` on `config` in a namespace with the container's interfaces (eth0, eth1),
/// which keepalived checks are there.
fn keepalived_test(config: &Path) -> std::process::Output {
    let ns = Netns::new("keepalived");
    for (interface, peer) in [("eth0", "p0"), ("eth1", "p1")] {
        ns.run(&[
            "ip", "link", "add", interface, "type", "veth", "peer", "name", peer,
        ]);
    }
    ns.command("keepalived")
        .arg("-t")
        .arg("-f")
        .arg(config)
        .output()
        .expect("keepalived (Debian's keepalived) is installed by scripts/test.sh")
}

#[test]
fn a_pair_is_two_containers_with_their_own_addresses_names_and_vmids() {
    let lab = lab_of(&paired());
    let containers: Vec<(String, String, String)> = desired(&lab, &Sources::defaults(&lab))
        .into_iter()
        .filter(|r| r.kind == Kind::Container)
        .map(|r| {
            let nets = format!("{} | {}", r.create["net0"], r.create["net1"]);
            (r.id, r.create["hostname"].clone(), nets)
        })
        .collect();
    let expected = [
        ("200", "lb", "192.168.1.254/24", "10.10.2.254/24"),
        ("201", "vpn", "192.168.1.252/24", "10.10.1.252/24"),
        ("300", "lb-2", "192.168.1.253/24", "10.10.2.253/24"),
        ("301", "vpn-2", "192.168.1.251/24", "10.10.1.251/24"),
    ];
    assert_eq!(containers.len(), expected.len(), "{containers:#?}");
    for ((id, hostname, nets), (vmid, name, net0, other)) in containers.iter().zip(expected) {
        assert_eq!((id.as_str(), hostname.as_str()), (vmid, name));
        assert!(nets.contains(&format!("ip={net0},")), "{name}: {nets}");
        assert!(nets.contains(&format!("ip={other},")), "{name}: {nets}");
        // The published addresses are keepalived's, never a container's own.
        for published in ["192.168.1.50", "192.168.1.51", "10.10.2.2/", "10.10.1.2/"] {
            assert!(!nets.contains(published), "{name}: {nets}");
        }
    }
    // The second container's NICs have MACs of their own (derived from its VMID).
    let macs: Vec<String> = desired(&lab, &Sources::defaults(&lab))
        .into_iter()
        .filter(|r| r.kind == Kind::Container)
        .flat_map(|r| [r.create["net0"].clone(), r.create["net1"].clone()])
        .filter_map(|n| n.split("hwaddr=").nth(1).map(|s| s[..17].to_owned()))
        .collect();
    let mut unique = macs.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), macs.len(), "{macs:?}");
    assert_eq!(lab.instances(Role::Lb).len(), 2);
}

#[test]
fn a_single_lb_and_vpn_are_built_as_before() {
    let lab = lab_of(&workspace::config_document("lab.toml"));
    assert_eq!(lab.guests(), lab.machines);
    let single = lab_of(&{
        let mut document = workspace::config_document("lab.toml");
        document["lb"]["replicas"] = value(1);
        document
    });
    assert_eq!(
        desired(&single, &Sources::defaults(&single)),
        desired(&lab, &Sources::defaults(&lab))
    );
}

#[test]
fn each_container_of_a_pair_gets_its_files_and_keepalived_accepts_its_config() {
    let dir = tempfile::tempdir().unwrap();
    render(&paired(), dir.path());
    let root = dir.path();
    for (container, own_net0, peer_net0, own_inner, vips) in [
        (
            "lb",
            "192.168.1.254",
            "192.168.1.253",
            "10.10.2.254",
            ["192.168.1.50/24", "10.10.2.2/24"],
        ),
        (
            "lb-2",
            "192.168.1.253",
            "192.168.1.254",
            "10.10.2.253",
            ["192.168.1.50/24", "10.10.2.2/24"],
        ),
        (
            "vpn",
            "192.168.1.252",
            "192.168.1.251",
            "10.10.1.252",
            ["192.168.1.51/24", "10.10.1.2/24"],
        ),
        (
            "vpn-2",
            "192.168.1.251",
            "192.168.1.252",
            "10.10.1.251",
            ["192.168.1.51/24", "10.10.1.2/24"],
        ),
    ] {
        let config = staged(root, container, "/etc/keepalived/keepalived.conf");
        let output = keepalived_test(&config);
        assert!(
            output.status.success(),
            "{container}: keepalived -t: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = std::fs::read_to_string(&config).unwrap();
        assert!(
            text.contains(&format!("unicast_src_ip {own_net0}\n")),
            "{text}"
        );
        assert!(text.contains(&format!("    {peer_net0}\n")), "{text}");
        for vip in vips {
            assert!(
                text.contains(&format!("    {vip} dev eth")),
                "{container}: {text}"
            );
        }
        // The health check asks the daemon on the container's own address; nopreempt by default.
        assert!(text.contains(&format!("http://{own_inner}:")), "{text}");
        assert_eq!(text.matches("  nopreempt\n").count(), 2, "{text}");
        assert!(text.contains("vrrp_sync_group"), "{text}");
    }
    // Both vpn containers are the one gateway: the same key, 0600.
    let key = |c| staged(root, c, "/etc/lab-vpn/private.key");
    assert_eq!(
        std::fs::read(key("vpn")).unwrap(),
        std::fs::read(key("vpn-2")).unwrap()
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(key("vpn-2"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    // Each lab-lb listens on the published addresses and serves its metrics on its own; the
    // daemons accept what was rendered for each container.
    for (container, metrics) in [("lb", "10.10.2.254:8404"), ("lb-2", "10.10.2.253:8404")] {
        let config = staged(root, container, "/etc/lab-lb/lb.toml");
        let text = std::fs::read_to_string(&config).unwrap();
        assert!(text.contains(&format!("listen = \"{metrics}\"")), "{text}");
        assert!(text.contains("listen = \"192.168.1.50:80\""), "{text}");
        let check = Command::new(workspace_bin("lab-lb"))
            .arg("check")
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stderr)
        );
    }
    // The host reserves each container its own address, and the published ones are no NIC's.
    let dnsmasq = std::fs::read_to_string(root.join("root/etc/lab/dnsmasq-vmbr2.conf")).unwrap();
    assert!(dnsmasq.contains(",10.10.2.254\n"), "{dnsmasq}");
    assert!(dnsmasq.contains(",10.10.2.253\n"), "{dnsmasq}");
    assert!(!dnsmasq.contains(",10.10.2.2,lb\n"), "{dnsmasq}");
    // Each lb container may upload its journal from its own address; Prometheus scrapes each
    // container on its own address.
    let nft = std::fs::read_to_string(root.join("root/etc/lab/lab.nft")).unwrap();
    assert!(
        nft.contains("ip saddr { 10.10.2.254, 10.10.2.253 } oifname \"vmbr1\""),
        "{nft}"
    );
    let manager =
        std::fs::read_to_string(root.join("root/var/lib/vz/snippets/lab-manager.yaml")).unwrap();
    for target in [
        "10.10.2.254:8404",
        "10.10.2.253:8404",
        "10.10.1.252:9586",
        "10.10.1.251:9586",
    ] {
        assert!(manager.contains(&format!("'{target}'")), "{target}");
    }
    // `lb` is still the published address.
    assert!(
        dnsmasq.contains("host-record=lb.lab,lb,10.10.2.2\n"),
        "{dnsmasq}"
    );
}

#[test]
fn keepalived_test_mode_refuses_a_broken_config() {
    // What the test above relies on: `keepalived -t` does fail on a bad config.
    let dir = tempfile::tempdir().unwrap();
    render(&paired(), dir.path());
    let config = staged(dir.path(), "lb", "/etc/keepalived/keepalived.conf");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("virtual_router_id", "virtual_router_idx"),
    )
    .unwrap();
    assert!(!keepalived_test(&config).status.success());
}

#[test]
fn the_keepalived_dropin_passes_systemd_analyze_verify_with_three_capabilities() {
    let dir = tempfile::tempdir().unwrap();
    render(&paired(), dir.path());
    let dropin = staged(
        dir.path(),
        "lb",
        "/etc/systemd/system/keepalived.service.d/10-lab.conf",
    );
    let text = std::fs::read_to_string(&dropin).unwrap();
    assert!(
        text.contains("\nCapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_SETGID\n"),
        "{text}"
    );
    // Debian's own unit, as the container has it once the package is installed.
    let units = tempfile::tempdir().unwrap();
    let unit = units.path().join("keepalived.service");
    std::fs::copy("/lib/systemd/system/keepalived.service", &unit).unwrap();
    systemd_unit::verify_with_dropins(
        &unit,
        &[("10-lab.conf", &dropin)],
        &[("/usr/sbin/keepalived", Path::new("/usr/sbin/keepalived"))],
    )
    .unwrap();
}

#[test]
fn pairs_that_clash_or_make_no_sense_are_refused() {
    let refused = |edit: &dyn Fn(&mut DocumentMut), expected: &[&str]| {
        let mut lab = paired();
        edit(&mut lab);
        config_check::document_refused_with(VALIDATE, "lab.toml", &lab, expected);
    };
    refused(
        &|lab| lab["lb"]["replicas"] = value(3),
        &["lb.replicas", "3 containers: 1, or 2 for a keepalived pair"],
    );
    refused(
        &|lab| {
            lab["vpn"]["replicas"] = value(1);
            lab["vpn"]["preempt"] = value(true);
        },
        &["vpn.preempt", "only a pair"],
    );
    // The second lb would be VMID 300: taken by the manager here.
    refused(
        &|lab| {
            let machines = lab["machine"].as_array_of_tables_mut().unwrap();
            let manager = machines
                .iter_mut()
                .find(|m| m["name"].as_str() == Some("manager"))
                .unwrap();
            manager["vmid"] = value(300);
        },
        &["lb.replicas", "takes VMID 300", "already `manager`'s"],
    );
    // net2's DHCP range up to the top takes the lb pair's own addresses.
    refused(
        &|lab| lab["networks"]["net2"]["dhcp"]["end"] = value("10.10.2.254"),
        &["lb.replicas", "10.10.2.254 is inside net2's DHCP range"],
    );
}
