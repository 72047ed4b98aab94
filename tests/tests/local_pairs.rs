//! The lb and vpn pairs end to end: `lab-bootstrap up --local --connect` on a two-node lab
//! (configs/lab-cluster.toml without its third node) with `[lb] replicas = 2` and `[vpn]
//! replicas = 2` builds two lb and two vpn namespaces, each
//! running its daemon and the real keepalived (Debian's) with the rendered keepalived.conf and
//! only the capabilities its unit keeps. Then, as a user would check it: killing the active
//! lab-lb moves 192.168.1.50 to the standby within 3 s, requests through it fail only in that
//! window (counted and printed, with wrk's count of the connections open at the kill) and new
//! connections succeed within 3 s; the killed side, restarted, does not take the address back;
//! the wireguard-go client keeps reaching net1 after the active lab-vpn is killed, within one
//! handshake. The failover times are printed (median of the kills).

use lab_tests::binaries::workspace_bin;
use lab_tests::workspace;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use toml_edit::value;

/// Kills of the active lab-lb; each costs about five seconds (failover, restart, its check
/// rising again).
const LB_KILLS: usize = 10;
/// What the issue asks of a failover.
const WITHIN: Duration = Duration::from_secs(3);
/// The stand-ins behind the lb's ingress, answering with their names.
const WORKERS: &[&str] = &["w1", "w2"];
/// wireguard-go starts a new handshake once a sent packet has had no answer for its keepalive
/// timeout plus rekey timeout (10 s + 5 s); then the handshake itself.
const ONE_HANDSHAKE: Duration = Duration::from_secs(22);

/// configs/lab-cluster.toml on its first two nodes (what was pinned to the third on the
/// second), with the lb and the vpn in pairs: a homelab's second box.
fn two_node_pairs() -> toml_edit::DocumentMut {
    let mut document = workspace::config_document("lab-cluster.toml");
    let nodes = document["node"]
        .as_array_of_tables_mut()
        .expect("configs/lab-cluster.toml has [[node]]s");
    while nodes.len() > 2 {
        nodes.remove(nodes.len() - 1);
    }
    let kept: Vec<String> = nodes
        .iter()
        .filter_map(|n| n.get("name")?.as_str().map(str::to_owned))
        .collect();
    if let Some(machines) = document["machine"].as_array_of_tables_mut() {
        for machine in machines.iter_mut() {
            let pinned = machine
                .get("node")
                .and_then(|n| n.as_str())
                .map(str::to_owned);
            if pinned.is_some_and(|n| !kept.contains(&n)) {
                machine["node"] = value(kept[1].as_str());
            }
        }
    }
    document["lb"]["replicas"] = value(2);
    document["vpn"]["replicas"] = value(2);
    document
}

struct LocalLab {
    name: String,
    bin: PathBuf,
    /// The daemons the test started again; reaped once `down` stopped them.
    restarted: std::cell::RefCell<Vec<std::process::Child>>,
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

    /// The container of the pair `containers` holding `address` now.
    fn holder<'a>(&self, containers: [&'a str; 2], address: &str) -> Option<&'a str> {
        containers.into_iter().find(|c| {
            let shown = Command::new("ip")
                .args(["-n", &self.ns(c), "-4", "-o", "address", "show"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&shown.stdout)
                .split_whitespace()
                .any(|w| w.split('/').next() == Some(address))
        })
    }

    fn kill(&self, service: &str) {
        let pid =
            std::fs::read_to_string(self.state().join(format!("pids/{service}.pid"))).unwrap();
        let status = Command::new("kill")
            .args(["-KILL", pid.trim()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {service} ({})", pid.trim());
    }

    /// Starts `program`'s service again in `container` on the config `up` wrote, as systemd's
    /// `Restart=` would; `down` stops it with everything else in the namespace.
    fn restart(&self, program: &str, container: &str) {
        let service = format!("{program}-{container}");
        let config = self.state().join(format!("{service}.toml"));
        let log = std::fs::File::create(self.state().join(format!("logs/{service}.log"))).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(container), "setsid"])
            .arg(workspace_bin(program))
            .arg("run")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        std::fs::write(
            self.state().join(format!("pids/{service}.pid")),
            format!("{}\n", child.id()),
        )
        .unwrap();
        self.restarted.borrow_mut().push(child);
    }
}

impl Drop for LocalLab {
    fn drop(&mut self) {
        let _ = self.bootstrap(&["down", "--local", "--name", &self.name]);
        for mut child in self.restarted.take() {
            let _ = child.wait();
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One request from `ns` with a new connection: whether one of `expected` answered it.
fn request(ns: &str, url: &str, timeout: &str, expected: &[&str]) -> bool {
    let output = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "curl",
            "-s",
            "--max-time",
            timeout,
            url,
        ])
        .output()
        .unwrap();
    output.status.success() && expected.contains(&text(&output.stdout).trim())
}

/// Polls `condition` every 20 ms for up to `timeout`; how long it took.
fn within(timeout: Duration, mut condition: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if condition() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Requests with a new connection each, back to back from `ns` until stopped: when each
/// started and whether it succeeded.
struct Prober {
    stop: Arc<AtomicBool>,
    results: Arc<Mutex<Vec<(Instant, bool)>>>,
    thread: std::thread::JoinHandle<()>,
}

impl Prober {
    fn start(ns: String, url: &'static str, expected: &'static [&'static str]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let results = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, results) = (stop.clone(), results.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let at = Instant::now();
                    let ok = request(&ns, url, "1", expected);
                    results.lock().unwrap().push((at, ok));
                }
            })
        };
        Self {
            stop,
            results,
            thread,
        }
    }

    /// Whether a request started after `since` succeeded.
    fn succeeded_since(&self, since: Instant) -> bool {
        self.results
            .lock()
            .unwrap()
            .iter()
            .any(|(at, ok)| *ok && *at >= since)
    }

    fn finish(self) -> Vec<(Instant, bool)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        Arc::try_unwrap(self.results).unwrap().into_inner().unwrap()
    }
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

#[test]
fn the_lb_and_vpn_pairs_fail_over_with_keepalived() {
    let lab = LocalLab {
        name: format!("labp{}", std::process::id() % 100000),
        bin: workspace_bin("lab-bootstrap"),
        restarted: Default::default(),
    };
    let dir = tempfile::tempdir().unwrap();
    let document = two_node_pairs();
    let lab_toml = dir.path().join("lab.toml");
    std::fs::write(&lab_toml, document.to_string()).unwrap();
    let up = lab.bootstrap(&[
        "up",
        "--local",
        "--connect",
        "--name",
        &lab.name,
        lab_toml.to_str().unwrap(),
    ]);
    let printed = text(&up.stdout);
    assert!(
        up.status.success(),
        "up failed:\n{printed}\n{}",
        text(&up.stderr)
    );
    for machine in ["lb", "lb-2", "vpn", "vpn-2"] {
        let row = printed
            .lines()
            .find(|l| l.starts_with(&format!("{machine} ")))
            .unwrap_or_else(|| panic!("no row for {machine}:\n{printed}"));
        assert!(row.ends_with("healthy"), "{row}");
    }
    let lbs = ["lb", "lb-2"];
    let vpns = ["vpn", "vpn-2"];
    // The first container of each pair holds the addresses, both of them (the sync group).
    assert_eq!(lab.holder(lbs, "192.168.1.50"), Some("lb"), "{printed}");
    assert_eq!(lab.holder(lbs, "10.10.2.2"), Some("lb"));
    assert_eq!(lab.holder(vpns, "192.168.1.51"), Some("vpn"));
    assert_eq!(lab.holder(vpns, "10.10.1.2"), Some("vpn"));
    // keepalived runs with the three capabilities its unit keeps, and no more.
    let pid = std::fs::read_to_string(lab.state().join("pids/keepalived-lb.pid")).unwrap();
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap();
    let bounding = status.lines().find(|l| l.starts_with("CapBnd:")).unwrap();
    // CAP_SETGID is 6, CAP_NET_ADMIN 12, CAP_NET_RAW 13.
    assert_eq!(bounding.split_whitespace().nth(1), Some("0000000000003040"));

    let outside = lab.ns("outside");
    let ingress = "http://192.168.1.50/";
    assert!(request(&outside, ingress, "3", WORKERS));

    // The lb: kill the active lab-lb again and again.
    let mut moves = Vec::new();
    let mut recoveries = Vec::new();
    for kill in 0..LB_KILLS {
        let active = lab
            .holder(lbs, "192.168.1.50")
            .expect("no lb holds the address");
        let standby = lbs.into_iter().find(|c| *c != active).unwrap();
        let probers = [(); 2].map(|_| Prober::start(outside.clone(), ingress, WORKERS));
        // wrk's keep-alive connections, open at the kill, on the first one.
        let wrk = (kill == 0).then(|| {
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &outside,
                    "wrk",
                    "-t1",
                    "-c8",
                    "-d4s",
                    "--timeout",
                    "1s",
                ])
                .arg(ingress)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        });
        std::thread::sleep(Duration::from_millis(500));
        let killed = Instant::now();
        lab.kill(&format!("lab-lb-{active}"));
        let moved = within(Duration::from_secs(10), || {
            lab.holder(lbs, "192.168.1.50") == Some(standby)
                && lab.holder(lbs, "10.10.2.2") == Some(standby)
        })
        .unwrap_or_else(|| panic!("kill {kill}: the addresses stayed on `{active}`"));
        // Until new connections get through, then a second more of them.
        within(Duration::from_secs(8), || {
            probers.iter().any(|p| p.succeeded_since(killed))
        });
        std::thread::sleep(Duration::from_secs(1));
        let results: Vec<(Instant, bool)> = probers.into_iter().flat_map(Prober::finish).collect();
        let mut after: Vec<(Duration, bool)> = results
            .iter()
            .filter(|(at, _)| *at >= killed)
            .map(|(at, ok)| (*at - killed, *ok))
            .collect();
        after.sort_by_key(|(at, _)| *at);
        let failed: Vec<Duration> = after
            .iter()
            .filter(|(_, ok)| !ok)
            .map(|(at, _)| *at)
            .collect();
        let first_good = after
            .iter()
            .find(|(_, ok)| *ok)
            .map(|(at, _)| *at)
            .unwrap_or_else(|| panic!("kill {kill}: no request succeeded after it"));
        let last_failed = failed.last().copied().unwrap_or_default();
        println!(
            "kill {kill}: `{active}` killed, addresses on `{standby}` after {moved:?}; {} of {} requests started after the kill failed, the last starting {last_failed:?} after it; first success {first_good:?}",
            failed.len(),
            after.len()
        );
        assert!(
            moved <= WITHIN,
            "kill {kill}: the address moved after {moved:?}"
        );
        // A request fails only if it started in the failover window (and ran into it).
        assert!(
            last_failed <= WITHIN,
            "kill {kill}: a request starting {last_failed:?} after the kill failed"
        );
        assert!(
            first_good <= WITHIN + Duration::from_secs(1),
            "kill {kill}: {first_good:?}"
        );
        moves.push(moved);
        recoveries.push(first_good);
        if let Some(wrk) = wrk {
            let output = wrk.wait_with_output().unwrap();
            let report = text(&output.stdout);
            println!("wrk through the kill (8 keep-alive connections):\n{report}");
            assert!(
                report.contains(" requests in "),
                "wrk did not run: {report}"
            );
            let errors = report
                .lines()
                .find(|l| l.contains("Socket errors"))
                .unwrap_or_default()
                .to_owned();
            let count = |what: &str| -> u64 {
                errors
                    .split(',')
                    .find_map(|p| {
                        p.trim()
                            .trim_start_matches("Socket errors:")
                            .trim()
                            .strip_prefix(what)
                    })
                    .and_then(|n| n.trim().parse().ok())
                    .unwrap_or(0)
            };
            // wrk counts a connection that was open at the kill, reset mid-request, as a read
            // error; a new connection refused while the address was still on the killed side
            // as a write error (its connect is non-blocking).
            println!(
                "wrk: {} requests failed on the 8 connections open at the kill, {} new connections were refused before the address moved",
                count("read") + count("timeout"),
                count("write") + count("connect")
            );
            // A dying process's sockets are closed one by one, in descriptor order: a
            // connection reset before the listening socket is closed reconnects at once into
            // that listener's queue, and fails again (a read error) when the listener goes.
            // Once each, at most: after the listener's close, connecting is refused.
            assert!(
                count("read") + count("timeout") <= 2 * 8,
                "more requests failed on open connections than were open, and reopened into \
                 the dying listener, could fail: {errors}"
            );
        }
        // The killed side comes back; it does not take the addresses back (nopreempt).
        lab.restart("lab-lb", active);
        let metrics = if active == "lb" {
            "10.10.2.254"
        } else {
            "10.10.2.253"
        };
        assert!(
            within(Duration::from_secs(10), || {
                Command::new("ip")
                    .args([
                        "netns",
                        "exec",
                        &lab.ns(active),
                        "curl",
                        "-sf",
                        "-o",
                        "/dev/null",
                    ])
                    .arg(format!("http://{metrics}:8404/metrics"))
                    .status()
                    .unwrap()
                    .success()
            })
            .is_some(),
            "the restarted lab-lb in `{active}` does not answer"
        );
        // Its check rises after two good answers, a second apart; then some margin.
        std::thread::sleep(Duration::from_millis(if kill == 0 { 5000 } else { 3000 }));
        assert_eq!(
            lab.holder(lbs, "192.168.1.50"),
            Some(standby),
            "kill {kill}: the restarted `{active}` took the address back"
        );
    }
    println!(
        "lb failover over {LB_KILLS} kills: the address moved after {:?} (median), requests succeeded again after {:?} (median)",
        median(moves),
        median(recoveries)
    );

    // The vpn: the admin client reaches net1 (the manager) through the tunnel; kill the active
    // lab-vpn and it reaches it again after one handshake with the other.
    let manager = "http://10.10.1.5/";
    assert!(request(&outside, manager, "3", &["manager"]));
    let active = lab.holder(vpns, "192.168.1.51").unwrap();
    let standby = vpns.into_iter().find(|c| *c != active).unwrap();
    let killed = Instant::now();
    lab.kill(&format!("lab-vpn-{active}"));
    let moved = within(Duration::from_secs(10), || {
        lab.holder(vpns, "192.168.1.51") == Some(standby)
            && lab.holder(vpns, "10.10.1.2") == Some(standby)
    })
    .unwrap_or_else(|| panic!("the vpn addresses stayed on `{active}`"));
    let back = within(ONE_HANDSHAKE + Duration::from_secs(5), || {
        request(&outside, manager, "1", &["manager"])
    })
    .map(|_| killed.elapsed());
    println!("vpn: `{active}` killed, addresses on `{standby}` after {moved:?}, net1 reached through the tunnel again after {back:?}");
    assert!(moved <= WITHIN, "the vpn address moved after {moved:?}");
    let back = back.expect("the VPN client did not reach net1 again");
    assert!(
        back <= ONE_HANDSHAKE,
        "net1 reached again only after {back:?}"
    );
    // The client's new session is with the standby: its handshake.
    let interface = if standby == "vpn" {
        format!("{}wg", lab.name)
    } else {
        format!("{}wg1", lab.name)
    };
    let wg = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.ns(standby),
            "wg",
            "show",
            &interface,
            "latest-handshakes",
        ])
        .output()
        .unwrap();
    let handshakes = text(&wg.stdout);
    assert!(
        handshakes
            .split_whitespace()
            .any(|w| w.parse::<u64>().is_ok_and(|t| t > 0)),
        "no handshake on `{standby}`: {handshakes}"
    );
    lab.restart("lab-vpn", active);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        lab.holder(vpns, "192.168.1.51"),
        Some(standby),
        "the restarted vpn took the address back"
    );
    assert!(request(&outside, manager, "3", &["manager"]));
}
