//! The end-to-end suite: `lab-bootstrap up --local --connect` builds the lab of
//! configs/lab.toml in namespaces, with the real dnsmasq, nft, lab-lb, lab-vpn and a
//! wireguard-go admin client; this test checks it as a user would, cell by cell of docs/ARCHITECTURE.md's
//! policy matrix and the lab's DNS through the tunnel, the Talos API stand-ins asked with the
//! lab's own client and talosconfig, the kubeconfig `up` fetched through it, and `down`
//! removes it, even when an assertion fails.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use lab_talos_api::client::{Client, Credentials, Timeouts};
use lab_tests::binaries::workspace_bin;
use lab_tests::dns;
use lab_tests::netns::Netns;
use lab_tests::workspace;
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The lab under test; `down` on drop, whatever happened.
struct LocalLab {
    name: String,
    bin: PathBuf,
}

impl LocalLab {
    fn bootstrap(&self, args: &[&str]) -> Output {
        Command::new(&self.bin).args(args).output().unwrap()
    }

    fn ns(&self, machine: &str) -> String {
        format!("{}-{machine}", self.name)
    }

    fn state(&self) -> PathBuf {
        PathBuf::from("/run/lab-bootstrap").join(&self.name)
    }
}

impl Drop for LocalLab {
    fn drop(&mut self) {
        let _ = self.bootstrap(&["down", "--local", "--name", &self.name]);
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// An https route on the lb's net0 port 8443 to the workers' HTTP: `one.apps.lab` to w1.
const APPS_ROUTE: &str = r#"
[[lb.route]]
name = "apps"
listen = "net0"
port = 8443
mode = "https"
roles = ["worker"]
target_port = 80
cert = [{ cert = "apps.crt", key = "apps.key" }]
http = [{ host = "one.apps.lab", machines = ["w1"] }]
"#;

/// `curl` from namespace `ns`: the body, or None if the connection failed or timed out.
fn curl(ns: &str, extra: &[&str], url: &str) -> Option<String> {
    let output = Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-s", "-k", "--max-time", "3"])
        .args(extra)
        .arg(url)
        .output()
        .unwrap();
    output
        .status
        .success()
        .then(|| text(&output.stdout).trim().to_owned())
}

/// Whether a connection from `ns` to `url` gets through to the server: curl gets further than
/// connecting (a TLS answer, a refusal of its missing client certificate included) rather
/// than failing to connect (7) or timing out (28), as it does where the firewall drops.
fn reaches(ns: &str, extra: &[&str], url: &str) -> bool {
    let status = Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-s", "-k", "--max-time", "3"])
        .args(extra)
        .arg(url)
        .status()
        .unwrap();
    !matches!(status.code(), Some(7 | 28))
}

/// The hostname `node`'s Talos API answers `Version` with, asked from namespace `ns` with the
/// talosconfig `up` wrote (its OS CA, its admin certificate), as talosctl would.
fn talos_hostname(lab: &LocalLab, ns: &str, node: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(lab.state().join("talos/talosconfig")).unwrap();
    let config: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    let context = &config["contexts"][config["context"].as_str().unwrap()];
    let field = |key: &str| {
        String::from_utf8(STANDARD.decode(context[key].as_str().unwrap()).unwrap()).unwrap()
    };
    let credentials = Credentials::from_pem(&field("ca"), &field("crt"), &field("key")).unwrap();
    let timeouts = Timeouts {
        connect: Duration::from_secs(3),
        call: Duration::from_secs(5),
    };
    lab_tests::netns::enter(ns, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut client = Client::connect(node, &credentials, timeouts)
                .await
                .map_err(|e| e.to_string())?;
            let version = client.version().await.map_err(|e| e.to_string())?;
            Ok(version.hostname)
        })
    })
}

/// The `x-lab-client` header a stand-in answered with: the address it saw the request from.
fn seen_client(ns: &str, extra: &[&str], url: &str) -> Option<String> {
    let headers = curl(ns, &[extra, &["-D", "-", "-o", "/dev/null"]].concat(), url)?;
    headers.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("x-lab-client:")
            .map(|v| v.trim().to_owned())
    })
}

fn ip_in(ns: &str, args: &[&str]) -> String {
    let output = Command::new("ip")
        .args(["-n", ns])
        .args(args)
        .output()
        .unwrap();
    text(&output.stdout)
}

/// Polls `condition` for up to `timeout`.
fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    condition()
}

/// A probe machine of the test's own on net2 (no machine of the example lab is on net2 alone):
/// a namespace plugged into the lab's vmbr2 with an address from the lab's dnsmasq.
fn net2_probe(lab: &LocalLab) -> Netns {
    let probe = Netns::new("net2probe");
    let host = lab.ns("host");
    let port = format!("p{}", std::process::id() % 100000);
    Command::new("ip")
        .args(["-n", &host, "link", "add", &port, "type", "veth"])
        .args(["peer", "name", "eth0", "netns", &probe.name])
        .status()
        .unwrap();
    for args in [
        vec!["-n", &host, "link", "set", &port, "master", "vmbr2", "up"],
        vec!["-n", &probe.name, "link", "set", "eth0", "up"],
    ] {
        assert!(Command::new("ip").args(&args).status().unwrap().success());
    }
    let script = lab.state().join("udhcpc.script");
    probe.run(&[
        "udhcpc",
        "-i",
        "eth0",
        "-f",
        "-q",
        "-n",
        "-t",
        "10",
        "-T",
        "1",
        "-s",
        script.to_str().unwrap(),
    ]);
    probe.run(&["ip", "route", "add", "default", "via", "10.10.2.1"]);
    probe
}

#[test]
fn the_local_lab_comes_up_works_as_designed_and_goes_away() {
    let lab = LocalLab {
        name: format!("labt{}", std::process::id() % 100000),
        bin: workspace_bin("lab-bootstrap"),
    };
    // configs/lab.toml, and an https route terminating TLS with the lab's own certificate.
    let dir = tempfile::tempdir().unwrap();
    let apps = lab_tests::certs::make_for(dir.path(), "apps", &["*.apps.lab", "apps.lab"], "lab");
    let lab_toml = dir.path().join("lab.toml");
    // One Talos release before the example's, so a rolling upgrade to it runs below.
    let lab_text = workspace::config_text("lab.toml")
        .replace("talos_version = \"v1.13.9\"", "talos_version = \"v1.13.8\"");
    assert!(
        lab_text.contains("v1.13.8"),
        "configs/lab.toml's talos_version moved"
    );
    std::fs::write(&lab_toml, lab_text + APPS_ROUTE).unwrap();
    let config = lab_toml.to_str().unwrap();
    let up = lab.bootstrap(&["up", "--local", "--connect", "--name", &lab.name, config]);
    let printed = text(&up.stdout);
    assert!(
        up.status.success(),
        "up failed:\n{printed}\n{}",
        text(&up.stderr)
    );
    for machine in ["lb", "vpn", "manager", "cp1", "cp2", "cp3", "w1", "w2"] {
        let row = printed
            .lines()
            .find(|l| l.starts_with(&format!("{machine} ")))
            .unwrap_or_else(|| panic!("no row for {machine}:\n{printed}"));
        assert!(row.ends_with("healthy"), "{row}");
    }

    // The Talos client bootstrapped the stand-ins' cluster, waited for it and wrote the admin
    // kubeconfig next to the talosconfig, for root alone; up and status say where.
    let kubeconfig = lab.state().join("talos/kubeconfig");
    assert!(
        printed.contains(&format!("kubeconfig written to {}", kubeconfig.display())),
        "{printed}"
    );
    assert!(
        printed.contains("etcd bootstrapped on cp1 (10.10.1.11)"),
        "{printed}"
    );
    let mode = std::fs::metadata(&kubeconfig).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", kubeconfig.display());
    let kubeconfig_yaml: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(&kubeconfig).unwrap()).unwrap();
    assert_eq!(
        kubeconfig_yaml["clusters"][0]["cluster"]["server"].as_str(),
        Some("https://10.10.2.2:6443")
    );
    let status = lab.bootstrap(&["status", "--local", "--name", &lab.name]);
    assert!(
        text(&status.stdout).contains(&format!("kubeconfig: {}", kubeconfig.display())),
        "{}",
        text(&status.stdout)
    );

    // A backup through the stand-ins' Talos API, from the lab's host namespace as `up` talks
    // to them: the snapshot cp1 streamed, its checksum the manifest's, checked by sha256sum;
    // and restore --dry-run takes the archive for this lab.
    let talos_state = lab.state().join("talos");
    let backups = dir.path().join("backups");
    let backup = Command::new("ip")
        .args(["netns", "exec", &lab.ns("host")])
        .arg(&lab.bin)
        .arg("backup")
        .arg("--state")
        .arg(&talos_state)
        .arg("--output")
        .arg(&backups)
        .arg(config)
        .output()
        .unwrap();
    assert!(
        backup.status.success(),
        "{}{}",
        text(&backup.stdout),
        text(&backup.stderr)
    );
    let archive = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".tar.gz"))
        .unwrap();
    let mode = std::fs::metadata(&archive).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", archive.display());
    let unpacked = tempfile::tempdir().unwrap();
    let untar = Command::new("tar")
        .arg("-xzf")
        .arg(&archive)
        .arg("-C")
        .arg(unpacked.path())
        .status()
        .unwrap();
    assert!(untar.success());
    let manifest: serde_norway::Value =
        serde_norway::from_slice(&std::fs::read(unpacked.path().join("manifest.json")).unwrap())
            .unwrap();
    let sum = Command::new("sha256sum")
        .arg(unpacked.path().join("etcd.snapshot"))
        .output()
        .unwrap();
    let sum = text(&sum.stdout);
    let sum = sum.split_whitespace().next().unwrap();
    assert_eq!(manifest["snapshot"]["sha256"].as_str(), Some(sum));
    assert_eq!(
        manifest["snapshot"]["node"].as_str(),
        Some("cp1 (10.10.1.11)")
    );
    assert!(
        text(&backup.stdout).contains(sum),
        "{}",
        text(&backup.stdout)
    );
    assert_eq!(
        std::fs::read(unpacked.path().join("etcd.snapshot")).unwrap(),
        lab_talos_api::stand_in::etcd_snapshot_of("cp1")
    );
    let restore = lab.bootstrap(&[
        "restore",
        "--dry-run",
        "--state",
        talos_state.to_str().unwrap(),
        archive.to_str().unwrap(),
        config,
    ]);
    assert!(
        restore.status.success(),
        "{}{}",
        text(&restore.stdout),
        text(&restore.stderr)
    );

    // The balancer's runtime API answers on the lab's socket, listing the control planes
    // behind the Talos API and the kube-apiserver (what a rolling upgrade drains).
    let ctl = Command::new(workspace_bin("lab-lb"))
        .args(["ctl", "--socket"])
        .arg(lab.state().join("lab-lb.sock"))
        .arg("servers")
        .output()
        .unwrap();
    let servers = text(&ctl.stdout);
    assert!(ctl.status.success(), "{servers}{}", text(&ctl.stderr));
    for backend in ["kube-apiserver", "talos-api"] {
        for address in ["10.10.2.11", "10.10.2.12", "10.10.2.13"] {
            assert!(
                servers
                    .lines()
                    .any(|l| l.starts_with(backend) && l.contains(address) && l.contains("ready")),
                "{backend} {address}: {servers}"
            );
        }
    }

    // Every machine got its reserved address from dnsmasq: on the interface, and as a lease.
    let leases = std::fs::read_to_string(lab.state().join("dnsmasq-vmbr1.leases")).unwrap()
        + &std::fs::read_to_string(lab.state().join("dnsmasq-vmbr2.leases")).unwrap();
    for (machine, interface, address) in [
        ("vpn", "eth1", "10.10.1.2"),
        ("lb", "eth1", "10.10.2.2"),
        ("manager", "eth0", "10.10.1.5"),
        ("cp1", "eth0", "10.10.1.11"),
        ("cp1", "eth1", "10.10.2.11"),
        ("cp3", "eth1", "10.10.2.13"),
        ("w2", "eth0", "10.10.1.22"),
        ("w2", "eth1", "10.10.2.22"),
    ] {
        let shown = ip_in(
            &lab.ns(machine),
            &["-4", "-o", "address", "show", "dev", interface],
        );
        assert!(
            shown.contains(&format!("{address}/24")),
            "{machine} {interface}: {shown}"
        );
        assert!(
            leases.contains(&format!(" {address} {machine} ")),
            "no lease for {machine} {address}:\n{leases}"
        );
    }

    let outside = lab.ns("outside");
    let manager = lab.ns("manager");
    // The outside without the tunnel: its own routes into the lab, through eth0.
    let direct = ["--interface", "eth0"];

    // From outside: ingress through lab-lb, balanced over the workers' stand-ins.
    let mut workers = BTreeSet::new();
    for _ in 0..6 {
        workers.insert(curl(&outside, &direct, "http://192.168.1.50/").expect("no ingress"));
    }
    assert_eq!(workers, BTreeSet::from(["w1".to_owned(), "w2".to_owned()]));
    let tls = curl(&outside, &direct, "https://192.168.1.50/").expect("no TLS ingress");
    assert!(tls == "w1" || tls == "w2", "{tls}");
    // The https route: lab-lb answers with the lab's certificate (verified against it), the
    // rule's host goes to w1 alone, any other to both workers' HTTP.
    let verified = |host: &str| {
        let output = Command::new("ip")
            .args(["netns", "exec", &outside, "curl", "-s", "--max-time", "3"])
            .args(direct)
            .arg("--cacert")
            .arg(&apps.cert)
            .args(["--resolve", &format!("{host}:8443:192.168.1.50")])
            .arg(format!("https://{host}:8443/"))
            .output()
            .unwrap();
        assert!(output.status.success(), "{host}: {}", text(&output.stderr));
        text(&output.stdout).trim().to_owned()
    };
    for _ in 0..4 {
        assert_eq!(verified("one.apps.lab"), "w1");
    }
    let mut by_any = BTreeSet::new();
    for _ in 0..6 {
        by_any.insert(verified("apps.lab"));
    }
    assert_eq!(by_any, BTreeSet::from(["w1".to_owned(), "w2".to_owned()]));

    // Policy matrix. net0 / outside: LB yes (above), VPN yes (below), net1 no, net2 no.
    assert_eq!(
        curl(&outside, &direct, "http://10.10.1.5/"),
        None,
        "outside reached net1"
    );
    assert!(
        !reaches(&outside, &direct, "https://10.10.1.11:50000/"),
        "outside reached the Talos API on net1"
    );
    assert_eq!(
        curl(&outside, &direct, "http://10.10.2.21/"),
        None,
        "outside reached net2"
    );

    // VPN peers (the wireguard-go client): net1 yes, net2 yes, the LB's API on net2 yes.
    assert_eq!(
        curl(&outside, &[], "http://10.10.1.5/").as_deref(),
        Some("manager")
    );
    assert!(reaches(&outside, &[], "https://10.10.1.11:50000/"));
    assert_eq!(
        talos_hostname(&lab, &outside, "10.10.1.11").as_deref(),
        Ok("cp1"),
        "Talos API on net1 through the VPN"
    );
    assert_eq!(
        curl(&outside, &[], "http://10.10.2.21/").as_deref(),
        Some("w1")
    );
    let api = curl(&outside, &[], "https://10.10.2.2:6443/").expect("no API via the VPN");
    assert!(api.starts_with("cp"), "{api}");
    // Peers keep their tunnel addresses (no masquerade): the host routes the tunnel back.
    let peer_source = seen_client(&outside, &[], "http://10.10.1.5/").unwrap();
    assert!(peer_source.starts_with("10.10.100."), "{peer_source}");
    let wg = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.ns("vpn"),
            "wg",
            "show",
            &format!("{}wg", lab.name),
            "dump",
        ])
        .output()
        .unwrap();
    let dump = text(&wg.stdout);
    let admin = dump
        .lines()
        .skip(1)
        .find(|l| l.split('\t').nth(3) == Some("10.10.100.3/32") || l.contains(&peer_source))
        .unwrap_or_else(|| panic!("no admin peer in wg show:\n{dump}"));
    let handshake: u64 = admin.split('\t').nth(4).unwrap().parse().unwrap();
    assert!(handshake > 0, "no handshake: {admin}");

    // DNS for VPN peers: the admin's config names the host's net1 address and the lab's
    // domain, and through the tunnel the lab's names resolve there (from the outside's eth0
    // the firewall would drop the query).
    let admin_config = std::fs::read_to_string(lab.state().join("admin.conf")).unwrap();
    assert!(
        admin_config.lines().any(|l| l == "DNS = 10.10.1.1, lab"),
        "{admin_config}"
    );
    let host_dns = SocketAddr::from(([10, 10, 1, 1], 53));
    for (name, address) in [
        ("manager.lab", [10, 10, 1, 5]),
        ("cp1.lab", [10, 10, 1, 11]),
        ("cp1", [10, 10, 1, 11]),
        ("lb.lab", [10, 10, 2, 2]),
    ] {
        let answer = lab_tests::netns::enter(&outside, || {
            dns::resolve_udp(host_dns, name, Duration::from_secs(2))
        });
        assert_eq!(
            answer.map(|a| a.addresses),
            Ok(vec![Ipv4Addr::from(address)]),
            "{name} through the tunnel"
        );
    }

    // An internet server on the outside, to see who reaches it and as what.
    let internet = lab.bootstrap(&["--help"]); // binary runs; the stand-in is its subcommand
    assert!(internet.status.success());
    let mut server = Command::new("ip")
        .args([
            "netns",
            "exec",
            &outside,
            lab.bin.to_str().unwrap(),
            "stand-in",
            "internet",
        ])
        .args(["--http", "8080"])
        .spawn()
        .unwrap();
    assert!(eventually(Duration::from_secs(10), || curl(
        &outside,
        &[],
        "http://127.0.0.1:8080/"
    )
    .is_some()));

    // net1: LB yes, net1 yes, net2 yes, internet yes through NAT (seen as the host's address).
    let ingress = curl(&manager, &[], "http://192.168.1.50/").expect("net1 to the LB");
    assert!(ingress == "w1" || ingress == "w2");
    assert_eq!(
        talos_hostname(&lab, &manager, "10.10.1.12").as_deref(),
        Ok("cp2")
    );
    assert_eq!(
        curl(&manager, &[], "http://10.10.2.22/").as_deref(),
        Some("w2")
    );
    assert_eq!(
        seen_client(&manager, &[], "http://192.168.1.1:8080/").as_deref(),
        Some("192.168.1.10"),
        "net1 to the internet is not masqueraded behind the host"
    );

    // net2: net1 no (replies only), net2 yes, internet yes through NAT.
    let probe = net2_probe(&lab);
    let probe_address = ip_in(&probe.name, &["-4", "-o", "address", "show", "dev", "eth0"]);
    assert!(
        probe_address.contains("10.10.2.1") && !probe_address.contains("10.10.2.2/"),
        "an unknown MAC gets a dynamic address from the range: {probe_address}"
    );
    assert_eq!(
        curl(&probe.name, &[], "http://10.10.1.5/"),
        None,
        "net2 reached net1"
    );
    assert_eq!(
        curl(&probe.name, &[], "http://10.10.2.21/").as_deref(),
        Some("w1")
    );
    assert_eq!(
        seen_client(&probe.name, &[], "http://192.168.1.1:8080/").as_deref(),
        Some("192.168.1.10")
    );
    // VPN peers to the internet: no (the gateway forwards peers only to net1 and net2).
    let peers_out = curl(
        &outside,
        &["--interface", &format!("{}wc", lab.name)],
        "http://192.168.1.1:8080/",
    );
    assert_eq!(
        peers_out, None,
        "a VPN peer reached the internet through the gateway"
    );
    let _ = server.kill();
    let _ = server.wait();

    // Metrics, scraped from net1 as Prometheus would, pass promtool.
    for url in [
        "http://10.10.2.2:8404/metrics",
        "http://10.10.1.2:9586/metrics",
    ] {
        let body = curl(&manager, &[], url).unwrap_or_else(|| panic!("cannot scrape {url}"));
        // `curl` above trims; the exposition format ends with a newline.
        lab_tests::promtool::check_metrics(&format!("{body}\n"))
            .unwrap_or_else(|e| panic!("{url}: {e}"));
    }
    // The lb's kind=tls health check takes the control planes' apid, mutual TLS and all.
    let metrics = curl(&manager, &[], "http://10.10.2.2:8404/metrics").unwrap();
    for cp in ["10.10.2.11", "10.10.2.12", "10.10.2.13"] {
        let series = format!("server=\"{cp}:50000\"}} 1");
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("lab_lb_server_up{") && l.ends_with(&series)),
            "{cp}:50000 not up:\n{metrics}"
        );
    }

    // A rolling Talos upgrade of the stand-ins (each goes away for its reboot: apid, API server
    // and ingress ports refused, open connections cut) under wrk load through the balancer's
    // kube-apiserver listener, one connection per request so a drain can finish: not one
    // request fails, so every node was drained at the real lab-lb before it went away. The
    // lb container's `pct exec <vmid> -- lab-lb ctl` is the lab's socket here.
    let lb_ctl = dir.path().join("lb-ctl");
    std::fs::write(
        &lb_ctl,
        format!(
            "#!/bin/sh\n[ \"$1 $2\" = \"pct exec\" ] || exit 2\nshift 6\nexec {} ctl --socket {} \"$@\"\n",
            workspace_bin("lab-lb").display(),
            lab.state().join("lab-lb.sock").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&lb_ctl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let wrk = Command::new("ip")
        .args([
            "netns",
            "exec",
            &manager,
            "wrk",
            "--threads",
            "2",
            "--connections",
            "8",
        ])
        .args([
            "--duration",
            "300s",
            "--timeout",
            "5s",
            "-H",
            "Connection: close",
        ])
        .arg("https://10.10.2.2:6443/")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("wrk");
    std::thread::sleep(Duration::from_secs(1));
    let upgrade = Command::new("ip")
        .args(["netns", "exec", &lab.ns("host")])
        .arg(&lab.bin)
        .args(["upgrade", "talos", "v1.13.9", "--drain-timeout", "20"])
        .args(["--node-timeout", "60", "--state"])
        .arg(&talos_state)
        .arg("--run-via")
        .arg(&lb_ctl)
        .arg(config)
        .output()
        .unwrap();
    // wrk reports what it did when interrupted.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(wrk.id()).unwrap()),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let report = wrk.wait_with_output().unwrap();
    let report = format!("{}{}", text(&report.stdout), text(&report.stderr));
    let upgraded = text(&upgrade.stdout);
    assert!(
        upgrade.status.success(),
        "{upgraded}{}",
        text(&upgrade.stderr)
    );
    for node in [
        "w1 (10.10.1.21)",
        "w2 (10.10.1.22)",
        "cp1 (10.10.1.11)",
        "cp2 (10.10.1.12)",
        "cp3 (10.10.1.13)",
    ] {
        assert!(
            upgraded.contains(&format!("{node} runs v1.13.9, healthy")),
            "{node}: {upgraded}"
        );
    }
    assert!(report.contains("requests in"), "{report}");
    assert!(!report.contains("Socket errors"), "{report}");
    assert!(!report.contains("Non-2xx"), "{report}");
    // Every server is back in the balancer, enabled and passing its health check.
    let all_back = || {
        let listing = Command::new(workspace_bin("lab-lb"))
            .args(["ctl", "--socket"])
            .arg(lab.state().join("lab-lb.sock"))
            .arg("servers")
            .output()
            .unwrap();
        let listing = text(&listing.stdout);
        listing.lines().count() > 1
            && listing.lines().skip(1).all(|l| {
                l.split_whitespace().nth(2) == Some("ready")
                    && l.split_whitespace().nth(3) == Some("up")
            })
    };
    assert!(
        eventually(Duration::from_secs(30), all_back),
        "not every server back"
    );

    // A control plane's API stand-in stops: health checks take it out, the API stays up.
    let pid: i32 = std::fs::read_to_string(lab.state().join("pids/stand-in-cp1.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    // Whatever the backend is called: cp1's API server, held down.
    let series = "server=\"10.10.2.11:6443\"} 0";
    assert!(
        eventually(Duration::from_secs(30), || {
            curl(&manager, &[], "http://10.10.2.2:8404/metrics").is_some_and(|m| {
                m.lines()
                    .any(|l| l.starts_with("lab_lb_server_up{") && l.ends_with(series))
            })
        }),
        "cp1 not marked down"
    );
    for _ in 0..6 {
        let answer = curl(&manager, &[], "https://10.10.2.2:6443/").expect("the API went down");
        assert!(answer == "cp2" || answer == "cp3", "{answer}");
    }
    let status = lab.bootstrap(&["status", "--local", "--name", &lab.name]);
    let status_text = text(&status.stdout);
    assert!(
        status_text.contains("stand-in for control-plane"),
        "{status_text}"
    );
    let cp1_row = status_text.lines().find(|l| l.starts_with("cp1 ")).unwrap();
    assert!(cp1_row.contains("DOWN"), "{cp1_row}");

    // `up` again is harmless; `down` removes everything, twice.
    let again = lab.bootstrap(&["up", "--local", "--name", &lab.name, config]);
    assert!(again.status.success());
    assert!(text(&again.stdout).contains("already up"));
    drop(probe);
    // A lab named after this one (`<name>-b`) is not this one's to remove.
    let neighbour = format!("{}-b-host", lab.name);
    let added = Command::new("ip")
        .args(["netns", "add", &neighbour])
        .status()
        .unwrap();
    assert!(added.success());
    for _ in 0..2 {
        let down = lab.bootstrap(&["down", "--local", "--name", &lab.name]);
        assert!(down.status.success(), "{}", text(&down.stderr));
    }
    let survived = text(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .lines()
    .any(|l| l.split_whitespace().next() == Some(neighbour.as_str()));
    let _ = Command::new("ip")
        .args(["netns", "del", &neighbour])
        .status();
    assert!(survived, "down took {neighbour}");
    let namespaces = text(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    );
    assert!(
        !namespaces.contains(&format!("{}-", lab.name)),
        "namespaces left: {namespaces}"
    );
    assert!(!lab.state().exists());
    assert!(!PathBuf::from(format!("/var/run/wireguard/{}wg.sock", lab.name)).exists());
    let processes = text(
        &Command::new("ps")
            .args(["-eo", "args"])
            .output()
            .unwrap()
            .stdout,
    );
    assert!(
        !processes.contains(&lab.state().display().to_string()),
        "processes left:\n{processes}"
    );
}
