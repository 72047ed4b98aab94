//! `lab-bootstrap upgrade talos`, the real binary in a network namespace where every Talos node
//! of configs/lab.toml (3 control planes, 2 workers) is a stand-in apid on its net1 address
//! (mutual TLS with the lab's PKI; `Upgrade` makes it go away and come back at the new tag; the
//! control planes share one etcd), and the lb container's `lab-lb ctl` is a recording stand-in
//! run through `--run-via` (tests/tests/local_lab.rs drains the real lab-lb). Asserted on the
//! calls' times: each node upgraded only after every one of its servers at the balancer was
//! drained to zero and enabled only after, one node at a time (workers first), nothing taken
//! down while a control plane is unhealthy or missing from etcd; a run killed after the second
//! node and run again finishes without touching the first two; lab.toml's talos_version set
//! at the end with its comments kept, and a release lab.toml cannot take refused first.
//! Node removal the same way, with `plan`/`apply --proxmox-only` against the Proxmox simulator
//! (in the namespace too): a `[[machine]]` deleted from lab.toml is drained, leaves etcd (a
//! control plane) and is reset before the simulator sees its VM's deletion; a removal that
//! would leave etcd below quorum is refused before anything is drained, left or destroyed. The
//! stand-in's own etcd refuses the same, and its last member's leaving.

#[path = "support/talos_api.rs"]
#[allow(dead_code)]
mod apid;
mod support;

use lab_bootstrap::state_dir::StateDir;
use lab_bootstrap::talos::Secrets;
use lab_bootstrap::Lab;
use lab_talos_api::stand_in::{Etcd, Readiness, StandIn};
use lab_tests::netns::Netns;
use lab_tests::workspace;
use std::collections::HashSet;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::proxmox_sim::Simulator;

const BIN: &str = env!("CARGO_BIN_EXE_lab-bootstrap");
const FROM: &str = "v1.13.8";
const TO: &str = "v1.13.9";

/// Talos nodes of configs/lab.toml: name, net1 address, its servers at the balancer.
const NODES: [(&str, &str, &[&str]); 5] = [
    (
        "cp1",
        "10.10.1.11",
        &[
            "kube-apiserver/10.10.2.11:6443",
            "talos-api/10.10.2.11:50000",
        ],
    ),
    (
        "cp2",
        "10.10.1.12",
        &[
            "kube-apiserver/10.10.2.12:6443",
            "talos-api/10.10.2.12:50000",
        ],
    ),
    (
        "cp3",
        "10.10.1.13",
        &[
            "kube-apiserver/10.10.2.13:6443",
            "talos-api/10.10.2.13:50000",
        ],
    ),
    (
        "w1",
        "10.10.1.21",
        &["ingress-http/10.10.2.21:80", "ingress-https/10.10.2.21:443"],
    ),
    (
        "w2",
        "10.10.1.22",
        &["ingress-http/10.10.2.22:80", "ingress-https/10.10.2.22:443"],
    ),
];

/// `pct exec <vmid> -- lab-lb ctl …` as the lb container would answer it, each request logged
/// with its time: the servers' states kept in files, `wait-drained` of the server named in
/// `slow` hanging (a drain that does not finish).
const CTL: &str = r#"#!/bin/sh
dir=$(dirname "$0")
[ "$1 $2 $4 $5 $6" = "pct exec -- lab-lb ctl" ] || { echo "unexpected: $*" >&2; exit 2; }
shift 6
echo "$(date +%s.%N) $*" >> "$dir/ctl.log"
key=$(echo "$2" | tr / ,)
case "$1" in
servers)
  echo "backend server state health active weight"
  while read -r server; do
    state=$(cat "$dir/lb-state/$(echo "$server" | tr / ,)" 2>/dev/null || echo ready)
    echo "${server%%/*} ${server#*/} $state up 0 1"
  done < "$dir/servers" ;;
drain) echo drained > "$dir/lb-state/$key" ;;
enable) echo ready > "$dir/lb-state/$key" ;;
wait-drained)
  if [ "$(cat "$dir/slow" 2>/dev/null)" = "$2" ]; then sleep 600; fi ;;
*) echo "error: unknown request" >&2; exit 1 ;;
esac
"#;

/// One stand-in per node in a namespace of its own, the lab's state rendered, the fake ctl.
struct Bench {
    dir: tempfile::TempDir,
    netns: Netns,
    nodes: Vec<(String, StandIn)>,
    sick: Arc<Mutex<HashSet<String>>>,
}

impl Bench {
    fn new(reboot: Duration, etcd_members: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("lab.toml");
        std::fs::write(&file, lab_text()).unwrap();
        let lab: Lab = lab_daemon::config::load(&file).unwrap();
        let state = StateDir::new(dir.path().join("state"));
        lab_bootstrap::render::state::render_all(&lab, &dir.path().join("root"), &state).unwrap();
        let secrets = Secrets::load(&state.talos_secrets()).unwrap();

        let netns = Netns::new("upgrade");
        for (_, net1, _) in NODES {
            netns.run(&["ip", "addr", "add", &format!("{net1}/32"), "dev", "lo"]);
        }
        // Health is judged by the nodes' kubelet (net2) addresses; here a node is ready when
        // its apid (on the net1 address) accepts connections and the test has not made it sick.
        let sick: Arc<Mutex<HashSet<String>>> = Arc::default();
        let judged = sick.clone();
        let readiness: Readiness = Arc::new(move |node: &str| {
            let net1 = node.replace("10.10.2.", "10.10.1.");
            !judged.lock().unwrap().contains(&net1)
                && net1.parse::<IpAddr>().is_ok_and(|ip| {
                    std::net::TcpStream::connect_timeout(
                        &(ip, 50000).into(),
                        Duration::from_millis(300),
                    )
                    .is_ok()
                })
        });
        let etcd = Etcd::new(
            &etcd_members
                .iter()
                .map(|name| {
                    let (_, net1, _) = NODES.iter().find(|(n, _, _)| n == name).unwrap();
                    ((*name).to_owned(), net1.replace("10.10.1.", "10.10.2."))
                })
                .collect::<Vec<_>>(),
        );
        let nodes = NODES
            .iter()
            .map(|(name, net1, _)| {
                let ip: IpAddr = net1.parse().unwrap();
                let tls =
                    lab_bootstrap::local::stand_in::talos_api_tls(&secrets, name, &[ip]).unwrap();
                let stand_in = StandIn::new(name, FROM, Vec::new(), readiness.clone())
                    .with_etcd(etcd.clone())
                    .with_reboot(reboot);
                let apid = netns.enter(|| apid::serve_on(ip, 50000, stand_in, tls));
                ((*name).to_owned(), apid.stand_in)
            })
            .collect();

        let ctl = dir.path().join("ctl");
        std::fs::write(&ctl, CTL).unwrap();
        std::fs::set_permissions(&ctl, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir(dir.path().join("lb-state")).unwrap();
        let servers: Vec<&str> = NODES
            .iter()
            .flat_map(|(_, _, s)| s.iter().copied())
            .collect();
        std::fs::write(dir.path().join("servers"), servers.join("\n") + "\n").unwrap();
        let bench = Self {
            dir,
            netns,
            nodes,
            sick,
        };
        // etcd bootstrapped on cp1, as apply leaves the cluster.
        let admin = lab_bootstrap::talos::AdminCredentials::load(&state.talos_admin()).unwrap();
        let credentials = credentials_of(&secrets, &admin);
        bench
            .netns
            .enter(|| {
                ask("10.10.1.11:50000", &credentials, async |c| {
                    c.bootstrap().await
                })
            })
            .unwrap();
        bench
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self, extra: &[&str]) -> Command {
        let mut command = self.netns.command(BIN);
        command.args(["upgrade", "talos", TO, "--drain-timeout", "5"]);
        if !extra.contains(&"--node-timeout") {
            command.args(["--node-timeout", "20"]);
        }
        command
            .arg("--state")
            .arg(self.path("state"))
            .arg("--run-via")
            .arg(self.path("ctl"))
            .args(extra)
            .arg(self.path("lab.toml"));
        command
    }

    fn upgrade(&self, extra: &[&str]) -> Output {
        self.command(extra).output().unwrap()
    }

    /// The talosconfig's credentials for the bench's lab.
    fn credentials(&self) -> lab_talos_api::client::Credentials {
        let state = StateDir::new(self.path("state"));
        let secrets = Secrets::load(&state.talos_secrets()).unwrap();
        let admin = lab_bootstrap::talos::AdminCredentials::load(&state.talos_admin()).unwrap();
        credentials_of(&secrets, &admin)
    }

    fn stand_in(&self, name: &str) -> &StandIn {
        &self.nodes.iter().find(|(n, _)| n == name).unwrap().1
    }

    /// The `Upgrade` calls node `name` got, with their times.
    fn upgrades(&self, name: &str) -> Vec<SystemTime> {
        self.stand_in(name)
            .record()
            .calls
            .into_iter()
            .filter(|(_, call)| call.starts_with("Upgrade "))
            .map(|(at, _)| at)
            .collect()
    }

    /// The fake ctl's log: (time, request).
    fn ctl_log(&self) -> Vec<(SystemTime, String)> {
        std::fs::read_to_string(self.path("ctl.log"))
            .unwrap_or_default()
            .lines()
            .map(|line| {
                let (at, request) = line.split_once(' ').unwrap();
                let seconds: f64 = at.parse().unwrap();
                (
                    UNIX_EPOCH + Duration::from_secs_f64(seconds),
                    request.to_owned(),
                )
            })
            .collect()
    }
}

/// configs/lab.toml at [`FROM`] (it says [`TO`]).
fn lab_text() -> String {
    workspace::config_text("lab.toml").replace(
        &format!("talos_version = \"{TO}\""),
        &format!("talos_version = \"{FROM}\""),
    )
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn times(log: &[(SystemTime, String)], request: &str) -> Vec<SystemTime> {
    log.iter()
        .filter(|(_, r)| r == request)
        .map(|(at, _)| *at)
        .collect()
}

/// Asserts the order of the whole run over `nodes` (in the order they must go): per node,
/// its servers drained, then waited for until drained, then `Upgrade`, then enabled; and
/// each node's enabling before the next node's draining.
fn assert_rolling(bench: &Bench, nodes: &[&str], log: &[(SystemTime, String)]) {
    let installer_tag = format!(":{TO}");
    let mut previous_enabled: Option<SystemTime> = None;
    for name in nodes {
        let (_, _, servers) = NODES.iter().find(|(n, _, _)| n == name).unwrap();
        let upgrades = bench.upgrades(name);
        assert_eq!(upgrades.len(), 1, "{name} upgraded once: {log:?}");
        let upgraded = upgrades[0];
        let call = &bench.stand_in(name).record().calls;
        assert!(
            call.iter().any(|(_, c)| c.ends_with(&installer_tag)),
            "{name}'s Upgrade names the installer at {TO}: {call:?}"
        );
        for server in *servers {
            let drained = times(log, &format!("drain {server}"));
            let waited = times(log, &format!("wait-drained {server} --timeout 5s"));
            let enabled = times(log, &format!("enable {server}"));
            assert!(
                drained.len() == 1 && waited.len() == 1 && enabled.len() == 1,
                "{server}: one drain, wait and enable: {log:?}"
            );
            assert!(drained[0] <= waited[0], "{server} drained before waited");
            assert!(
                waited[0] < upgraded,
                "{name} upgraded only after {server} drained to zero: {log:?}"
            );
            assert!(
                upgraded < enabled[0],
                "{server} enabled only after {name}'s upgrade"
            );
            if let Some(before) = previous_enabled {
                assert!(
                    before < drained[0],
                    "{name} taken down only after the node before it was back: {log:?}"
                );
            }
        }
        previous_enabled = servers
            .iter()
            .map(|s| times(log, &format!("enable {s}"))[0])
            .max();
        assert_eq!(bench.stand_in(name).talos_version(), TO, "{name}");
    }
}

#[test]
fn rolling_upgrade_drains_each_node_and_records_the_release() {
    let bench = Bench::new(Duration::from_millis(800), &["cp1", "cp2", "cp3"]);
    let out = bench.upgrade(&[]);
    assert!(out.status.success(), "{}", text(&out));
    let log = bench.ctl_log();
    assert_rolling(&bench, &["w1", "w2", "cp1", "cp2", "cp3"], &log);
    let printed = text(&out);
    for (name, net1, _) in NODES {
        assert!(
            printed.contains(&format!("{name} ({net1}) runs {TO}, healthy")),
            "progress per node: {printed}"
        );
    }
    // lab.toml records the release, comments and the rest as they were.
    let lab = std::fs::read_to_string(bench.path("lab.toml")).unwrap();
    assert_eq!(lab, workspace::config_text("lab.toml"));
    assert!(
        printed.contains("now says [cluster] talos_version"),
        "{printed}"
    );

    // Run again: every node at the release, nothing drained or upgraded.
    let again = bench.upgrade(&[]);
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(
        bench.ctl_log().len(),
        log.len() + NODES.len(),
        "only listings"
    );
    for (name, _, _) in NODES {
        assert_eq!(bench.upgrades(name).len(), 1, "{name} not upgraded again");
    }
}

#[test]
fn killed_after_the_second_node_and_run_again_leaves_the_first_two_alone() {
    let bench = Bench::new(Duration::from_millis(500), &["cp1", "cp2", "cp3"]);
    // cp1 (the third node) never finishes draining.
    let slow = "kube-apiserver/10.10.2.11:6443";
    std::fs::write(bench.path("slow"), slow).unwrap();
    let mut running = bench
        .command(&[])
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !bench
        .ctl_log()
        .iter()
        .any(|(_, r)| r.starts_with(&format!("wait-drained {slow}")))
    {
        assert!(
            Instant::now() < deadline,
            "never reached cp1: {:?}",
            bench.ctl_log()
        );
        assert!(running.try_wait().unwrap().is_none(), "upgrade ended early");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The whole group: lab-bootstrap and the ctl it waits on.
    let group = format!("-{}", running.id());
    Command::new("kill")
        .args(["-KILL", "--", &group])
        .status()
        .unwrap();
    running.wait().unwrap();
    std::fs::remove_file(bench.path("slow")).unwrap();
    for name in ["w1", "w2"] {
        assert_eq!(
            bench.upgrades(name).len(),
            1,
            "{name} upgraded before the kill"
        );
    }
    assert!(bench.upgrades("cp1").is_empty(), "cp1 not upgraded yet");
    let before = bench.ctl_log().len();
    let upgrade_calls: Vec<usize> = ["w1", "w2"]
        .iter()
        .map(|n| bench.stand_in(n).record().calls.len())
        .collect();

    let out = bench.upgrade(&[]);
    assert!(out.status.success(), "{}", text(&out));
    let rerun: Vec<(SystemTime, String)> = bench.ctl_log().split_off(before);
    for (name, net1, servers) in &NODES[3..] {
        assert!(
            text(&out).contains(&format!("{name} ({net1}) already runs {TO}: skipped")),
            "{}",
            text(&out)
        );
        for server in *servers {
            assert!(
                !rerun.iter().any(|(_, r)| r.contains(server)),
                "{name}'s {server} not touched again: {rerun:?}"
            );
        }
    }
    for (name, calls) in ["w1", "w2"].iter().zip(upgrade_calls) {
        assert_eq!(
            bench.stand_in(name).record().calls.len(),
            calls,
            "{name}: no Talos call that changes it"
        );
    }
    // cp1's servers, left drained by the killed run, are drained (again) and enabled by this
    // one, in order, and so are the other control planes'.
    assert_rolling(&bench, &["cp1", "cp2", "cp3"], &rerun);
    assert!(std::fs::read_to_string(bench.path("lab.toml"))
        .unwrap()
        .contains(&format!("talos_version = \"{TO}\"")));
}

#[test]
fn nothing_is_taken_down_while_a_control_plane_is_unhealthy() {
    let bench = Bench::new(Duration::from_millis(300), &["cp1", "cp2", "cp3"]);
    bench.sick.lock().unwrap().insert("10.10.1.13".to_owned());
    let out = bench.upgrade(&["--node-timeout", "3"]);
    assert!(!out.status.success());
    let printed = text(&out);
    assert!(
        printed.contains("not taking w1 (10.10.1.21) down: the cluster is not healthy")
            && printed.contains("10.10.2.13"),
        "{printed}"
    );
    for (name, _, _) in NODES {
        assert!(bench.upgrades(name).is_empty(), "{name} untouched");
    }
    assert!(
        !bench.ctl_log().iter().any(|(_, r)| r.starts_with("drain")),
        "nothing drained: {:?}",
        bench.ctl_log()
    );
    assert!(std::fs::read_to_string(bench.path("lab.toml"))
        .unwrap()
        .contains(&format!("talos_version = \"{FROM}\"")));
}

#[test]
fn no_control_plane_is_taken_down_while_etcd_lacks_one() {
    // cp3 left etcd (a removal half done): the workers go, no control plane does.
    let bench = Bench::new(Duration::from_millis(300), &["cp1", "cp2"]);
    let out = bench.upgrade(&[]);
    assert!(!out.status.success());
    let printed = text(&out);
    assert!(
        printed.contains(
            "not taking cp1 (10.10.1.11) down: etcd lacks control plane(s) cp3 (members: cp1, cp2)"
        ),
        "{printed}"
    );
    for name in ["w1", "w2"] {
        assert_eq!(bench.upgrades(name).len(), 1, "{name}");
    }
    for name in ["cp1", "cp2", "cp3"] {
        assert!(bench.upgrades(name).is_empty(), "{name} untouched");
    }
}

#[test]
fn a_node_that_does_not_come_back_is_named_and_left_drained() {
    let bench = Bench::new(Duration::from_secs(30), &["cp1", "cp2", "cp3"]);
    let out = bench.upgrade(&["--node-timeout", "3"]);
    assert!(!out.status.success());
    let printed = text(&out);
    assert!(
        printed.contains("w1 (10.10.1.21): back at the new release: w1 (10.10.1.21) back at v1.13.9 not done after"),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("`lab-bootstrap upgrade talos {TO}` again goes on from w1 (10.10.1.21)"))
            && printed.contains("left drained at the balancer until then: ingress-http/10.10.2.21:80, ingress-https/10.10.2.21:443"),
        "{printed}"
    );
    assert!(bench.upgrades("w2").is_empty());
}

#[test]
fn dry_run_prints_the_sequence_and_changes_nothing() {
    let bench = Bench::new(Duration::from_millis(300), &["cp1", "cp2", "cp3"]);
    let out = bench.upgrade(&["--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    let order: Vec<usize> = ["1. w1", "2. w2", "3. cp1", "4. cp2", "5. cp3"]
        .iter()
        .map(|step| {
            printed
                .find(step)
                .unwrap_or_else(|| panic!("{step}: {printed}"))
        })
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{printed}");
    assert!(
        printed.contains("drain kube-apiserver/10.10.2.11:6443, talos-api/10.10.2.11:50000")
            && printed.contains("every control plane an etcd member")
            && printed.contains(&format!("talos_version = \"{TO}\" (now {FROM})")),
        "{printed}"
    );
    for (name, _, _) in NODES {
        assert!(bench.upgrades(name).is_empty(), "{name}");
    }
    assert!(
        bench.ctl_log().iter().all(|(_, r)| r == "servers"),
        "{:?}",
        bench.ctl_log()
    );
    assert_eq!(
        std::fs::read_to_string(bench.path("lab.toml")).unwrap(),
        lab_text()
    );
}

#[test]
fn a_release_lab_toml_cannot_take_is_refused_before_any_node_is_touched() {
    let bench = Bench::new(Duration::from_millis(300), &["cp1", "cp2", "cp3"]);
    // No Kubernetes release of lab-bootstrap's table for it, and lab.toml names none.
    let out = bench
        .netns
        .command(BIN)
        .args(["upgrade", "talos", "v1.13.99", "--state"])
        .arg(bench.path("state"))
        .arg("--run-via")
        .arg(bench.path("ctl"))
        .arg(bench.path("lab.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let printed = text(&out);
    assert!(
        printed.contains("lab.toml with [cluster] talos_version = \"v1.13.99\" would not be valid")
            && printed.contains("nothing was changed")
            && printed.contains("set cluster.kubernetes_version"),
        "{printed}"
    );
    for (name, _, _) in NODES {
        assert!(bench.upgrades(name).is_empty(), "{name}");
    }
    assert!(bench.ctl_log().is_empty(), "{:?}", bench.ctl_log());
}

#[test]
fn a_version_that_is_no_release_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lab.toml");
    std::fs::write(&file, workspace::config_text("lab.toml")).unwrap();
    let out = Command::new(BIN)
        .args(["upgrade", "talos", "latest", "--state"])
        .arg(dir.path().join("state"))
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
    assert!(
        text(&out).contains("VERSION `latest` is not a Talos release"),
        "{}",
        text(&out)
    );
}

/// Three control planes' stand-ins on loopback sharing one etcd, `sick` ones not ready.
fn etcd_of_three(sick: &[&str]) -> (Vec<apid::Apid>, lab_talos_api::client::Credentials) {
    let secrets = Secrets::generate().unwrap();
    let admin = lab_bootstrap::talos::AdminCredentials::generate(&secrets).unwrap();
    let credentials = credentials_of(&secrets, &admin);
    let sick: HashSet<String> = sick.iter().map(|s| (*s).to_owned()).collect();
    let readiness: Readiness = Arc::new(move |node: &str| !sick.contains(node));
    let etcd = Etcd::new(&["cp1", "cp2", "cp3"].map(|name| (name.to_owned(), name.to_owned())));
    let loopback = IpAddr::from([127, 0, 0, 1]);
    let nodes = ["cp1", "cp2", "cp3"]
        .iter()
        .map(|name| {
            let tls =
                lab_bootstrap::local::stand_in::talos_api_tls(&secrets, name, &[loopback]).unwrap();
            let stand_in =
                StandIn::new(name, FROM, Vec::new(), readiness.clone()).with_etcd(etcd.clone());
            apid::serve(loopback, stand_in, tls)
        })
        .collect();
    (nodes, credentials)
}

/// The talosconfig's credentials: the bundle's OS CA, `admin`'s certificate and key.
fn credentials_of(
    secrets: &Secrets,
    admin: &lab_bootstrap::talos::AdminCredentials,
) -> lab_talos_api::client::Credentials {
    let pem = |encoded: &str| {
        use base64::Engine;
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .unwrap(),
        )
        .unwrap()
    };
    lab_talos_api::client::Credentials::from_pem(
        &pem(&secrets.certs.os.crt),
        &pem(&admin.crt),
        &pem(&admin.key),
    )
    .unwrap()
}

/// Runs `call` against the stand-in at `address` with `credentials`.
fn ask<T>(
    address: &str,
    credentials: &lab_talos_api::client::Credentials,
    call: impl AsyncFnOnce(
        &mut lab_talos_api::client::Client,
    ) -> Result<T, lab_talos_api::client::Error>,
) -> Result<T, lab_talos_api::client::Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let mut client = lab_talos_api::client::Client::connect(
                address,
                credentials,
                lab_talos_api::client::Timeouts::default(),
            )
            .await?;
            call(&mut client).await
        })
}

fn member_names(
    apid: &apid::Apid,
    credentials: &lab_talos_api::client::Credentials,
) -> Vec<String> {
    ask(&apid.address.to_string(), credentials, async |c| {
        c.etcd_member_list().await
    })
    .unwrap()
    .into_iter()
    .map(|m| m.hostname)
    .collect()
}

#[test]
fn etcd_refuses_a_leave_that_would_lose_quorum_and_the_last_member() {
    // cp3 is down: cp1 leaving would leave cp2 and cp3, one of them started, quorum 2.
    let (nodes, credentials) = etcd_of_three(&["cp3"]);
    let refused = ask(&nodes[0].address.to_string(), &credentials, async |c| {
        c.etcd_leave_cluster().await
    })
    .unwrap_err();
    assert!(
        refused.to_string().contains("EtcdLeaveCluster")
            && refused
                .to_string()
                .contains("not enough started members (1 of 2 started, quorum 2)"),
        "{refused}"
    );
    assert_eq!(member_names(&nodes[1], &credentials), ["cp1", "cp2", "cp3"]);
    // cp3 itself may go: cp1 and cp2 are both started.
    ask(&nodes[2].address.to_string(), &credentials, async |c| {
        c.etcd_leave_cluster().await
    })
    .unwrap();
    assert_eq!(member_names(&nodes[0], &credentials), ["cp1", "cp2"]);
    // A graceful reset leaves etcd as Talos's does; then cp1 is the last member, and stays.
    ask(&nodes[1].address.to_string(), &credentials, async |c| {
        c.reset().await
    })
    .unwrap();
    assert_eq!(member_names(&nodes[0], &credentials), ["cp1"]);
    let last = ask(&nodes[0].address.to_string(), &credentials, async |c| {
        c.etcd_leave_cluster().await
    })
    .unwrap_err();
    assert!(last.to_string().contains("last member"), "{last}");
    assert_eq!(member_names(&nodes[0], &credentials), ["cp1"]);
    let calls: Vec<String> = nodes[1]
        .stand_in
        .record()
        .calls
        .into_iter()
        .map(|(_, c)| c)
        .collect();
    assert_eq!(calls, ["Reset graceful=true", "EtcdLeaveCluster"]);
}

/// `lab-bootstrap OP --proxmox-only` in the bench's namespace, the Proxmox API being `sim`.
fn on_proxmox(bench: &Bench, sim: &Simulator, op: &str, extra: &[&str]) -> Output {
    bench
        .netns
        .command(BIN)
        .arg(op)
        .args(["--proxmox-only", "--api", "pvesh", "--pvesh"])
        .arg(sim.pvesh_shim())
        .arg("--state")
        .arg(bench.path("state"))
        .arg("--root")
        .arg(bench.path("root"))
        .arg("--run-via")
        .arg(bench.path("ctl"))
        .args(extra)
        .arg(bench.path("lab.toml"))
        .output()
        .unwrap()
}

/// The lab applied on a simulated Proxmox node in the bench's namespace, then `gone`
/// deleted from lab.toml.
fn applied_then_deleted(bench: &Bench, gone: &[&str]) -> Simulator {
    let sim = bench.netns.enter(Simulator::start);
    let out = on_proxmox(bench, &sim, "apply", &["--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    let mut doc: toml_edit::DocumentMut = std::fs::read_to_string(bench.path("lab.toml"))
        .unwrap()
        .parse()
        .unwrap();
    doc["machine"]
        .as_array_of_tables_mut()
        .unwrap()
        .retain(|m| !gone.contains(&m["name"].as_str().unwrap()));
    std::fs::write(bench.path("lab.toml"), doc.to_string()).unwrap();
    sim.clear_calls();
    sim
}

/// When the simulator was first asked to change guest `vmid`.
fn first_write_to(sim: &Simulator, vmid: &str) -> SystemTime {
    sim.writes()
        .iter()
        .filter(|c| c.path.split('/').any(|part| part == vmid))
        .map(|c| c.at)
        .min()
        .unwrap_or_else(|| panic!("no write to {vmid}: {:?}", sim.writes()))
}

/// When node `name` got `call`.
fn call_time(bench: &Bench, name: &str, call: &str) -> SystemTime {
    let calls = bench.stand_in(name).record().calls;
    calls
        .iter()
        .find(|(_, c)| c == call)
        .map(|(at, _)| *at)
        .unwrap_or_else(|| panic!("{name} got no {call}: {calls:?}"))
}

#[test]
fn a_deleted_node_is_drained_leaves_etcd_and_is_reset_before_its_vm_is_destroyed() {
    let bench = Bench::new(Duration::from_millis(300), &["cp1", "cp2", "cp3"]);
    // lab.toml keeps an odd number of control planes: two of three go.
    let sim = applied_then_deleted(&bench, &["cp2", "cp3", "w2"]);

    let plan = on_proxmox(&bench, &sim, "plan", &[]);
    assert_eq!(plan.status.code(), Some(2), "{}", text(&plan));
    let shown = text(&plan);
    assert!(
        shown.contains("Nodes leaving the cluster before their VM is destroyed:")
            && shown.contains("  - cp2 (10.10.1.12) (control-plane, VM 212): drain its servers at the balancer (10.10.2.12), EtcdLeaveCluster")
            && shown.contains("  - cp3 (10.10.1.13) (control-plane, VM 213): drain its servers at the balancer (10.10.2.13), EtcdLeaveCluster (refused if etcd would lose quorum), Reset (graceful), then VM 213 destroyed")
            && shown.contains("  - w2 (10.10.1.22) (worker, VM 222): drain its servers at the balancer (10.10.2.22), Reset (graceful), then VM 222 destroyed"),
        "{shown}"
    );
    assert!(sim.writes().is_empty(), "plan wrote: {:?}", sim.writes());
    assert!(bench.ctl_log().iter().all(|(_, r)| r == "servers"));

    let out = on_proxmox(&bench, &sim, "apply", &["--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(sim.rejected().is_empty(), "{:?}", sim.rejected());
    let log = bench.ctl_log();
    for (name, vmid, etcd) in [
        ("cp2", "212", true),
        ("cp3", "213", true),
        ("w2", "222", false),
    ] {
        let (_, _, servers) = NODES.iter().find(|(n, _, _)| *n == name).unwrap();
        let drained = servers
            .iter()
            .map(|s| {
                let waited = times(&log, &format!("wait-drained {s} --timeout 120s"));
                assert_eq!(waited.len(), 1, "{s} waited for once: {log:?}");
                assert!(times(&log, &format!("drain {s}"))[0] <= waited[0]);
                waited[0]
            })
            .max()
            .unwrap();
        let reset = call_time(&bench, name, "Reset graceful=true");
        if etcd {
            let left = call_time(&bench, name, "EtcdLeaveCluster");
            assert!(
                drained < left && left < reset,
                "{name}: drained, left etcd, reset"
            );
        } else {
            assert!(drained < reset, "{name}: drained, then reset");
        }
        assert!(
            reset < first_write_to(&sim, vmid),
            "{name}'s VM destroyed only after its reset"
        );
    }
    // One node after the other, in the plan's order (the VMs go after the last).
    assert!(
        call_time(&bench, "cp2", "Reset graceful=true")
            < call_time(&bench, "cp3", "EtcdLeaveCluster")
            && call_time(&bench, "cp3", "Reset graceful=true")
                < call_time(&bench, "w2", "Reset graceful=true")
    );
    // etcd lost cp2 and cp3 and nothing else; only their VMs and w2's were touched.
    assert_eq!(
        bench
            .netns
            .enter(|| ask("10.10.1.11:50000", &bench.credentials(), async |c| c
                .etcd_member_list()
                .await))
            .unwrap()
            .into_iter()
            .map(|m| m.hostname)
            .collect::<Vec<_>>(),
        ["cp1"]
    );
    for call in sim.writes() {
        assert!(
            ["212", "213", "222"]
                .iter()
                .any(|vmid| call.path.split('/').any(|part| part == *vmid)),
            "{call:?}"
        );
    }
    let again = on_proxmox(&bench, &sim, "plan", &[]);
    assert!(!text(&again).contains("Nodes leaving"), "{}", text(&again));
}

#[test]
fn a_removal_that_would_cost_etcd_its_quorum_is_refused_and_destroys_nothing() {
    let bench = Bench::new(Duration::from_millis(300), &["cp1", "cp2", "cp3"]);
    let sim = applied_then_deleted(&bench, &["cp2", "cp3"]);
    // cp3 is down: cp2 leaving would leave cp1 and cp3, one of them answering, below a
    // quorum of 2.
    bench
        .netns
        .run(&["ip", "addr", "del", "10.10.1.13/32", "dev", "lo"]);
    let out = on_proxmox(&bench, &sim, "apply", &["--yes"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("not removing cp2 (10.10.1.12): etcd would keep 2 members of which 1 answers, below its quorum of 2 (not answering: cp3); bring them back first; its VM is not destroyed"),
        "{}",
        text(&out)
    );
    for name in ["cp2", "cp3"] {
        assert!(
            bench.stand_in(name).record().calls.is_empty(),
            "{name} untouched"
        );
    }
    assert!(
        bench.ctl_log().iter().all(|(_, r)| !r.starts_with("drain")),
        "nothing drained: {:?}",
        bench.ctl_log()
    );
    assert!(sim.writes().is_empty(), "{:?}", sim.writes());
}
