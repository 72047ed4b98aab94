//! lab-lb's L4 data path with real nginx backends and real clients (`curl`, raw sockets), all
//! on loopback.

use lab_tests::daemon_process::Started;
use lab_tests::nginx::{Nginx, BIG_BYTES};
use lab_tests::{http, ports, workspace};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_lab-lb");

/// The example's shared sections, with the test's metrics address and `body` (listeners and
/// backends) in place of the example's.
fn config(metrics: SocketAddr, body: &str) -> String {
    let mut doc = workspace::config_document("lb.toml");
    doc.remove("listener");
    doc.remove("backend");
    doc["metrics"]["listen"] = toml_edit::value(metrics.to_string());
    format!("{doc}\n{body}")
}

fn servers(backends: &[&Nginx]) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|b| format!("{{ address = \"{}\" }}", b.address))
        .collect();
    format!("server = [{}]", list.join(", "))
}

/// `curl http://<lb>/` from `source` (a loopback address); the body, or `None` if it failed.
fn fetch(lb: SocketAddr, source: Option<&str>) -> Option<String> {
    let mut command = Command::new("curl");
    command.args(["--silent", "--max-time", "5"]);
    if let Some(source) = source {
        command.args(["--interface", source]);
    }
    let output = command.arg(format!("http://{lb}/")).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn metric(metrics: SocketAddr, series: &str) -> f64 {
    let body = http::get(metrics, "/metrics", &[]).body;
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{body}"))
}

#[test]
fn round_robin_takes_turns_across_three_backends() {
    let backends = [Nginx::http("a"), Nginx::http("b"), Nginx::http("c")];
    let (lb, metrics) = (ports::free_tcp(), ports::free_tcp());
    let _daemon = Started::start(
        BIN,
        &config(
            metrics,
            &format!(
                "[[listener]]\nname = \"web\"\nlisten = \"{lb}\"\nmode = \"tcp\"\nbackend = \"web\"\n\n\
                 [[backend]]\nname = \"web\"\nbalance = \"round-robin\"\n{}\n",
                servers(&backends.iter().collect::<Vec<_>>())
            ),
        ),
    );
    let answers: Vec<String> = (0..9)
        .map(|_| fetch(lb, None).unwrap_or_default())
        .collect();
    for i in 3..9 {
        assert_eq!(answers[i], answers[i - 3], "not a rotation: {answers:?}");
    }
    let mut first_three = answers[..3].to_vec();
    first_three.sort();
    assert_eq!(first_three, ["a", "b", "c"]);
    assert_eq!(
        metric(
            metrics,
            "lab_lb_connections_accepted_total{listener=\"web\"}"
        ),
        9.0
    );
}

#[test]
fn weighted_round_robin_follows_weights() {
    let (heavy, light) = (Nginx::http("heavy"), Nginx::http("light"));
    let (lb, metrics) = (ports::free_tcp(), ports::free_tcp());
    let _daemon = Started::start(
        BIN,
        &config(
            metrics,
            &format!(
                "[[listener]]\nname = \"web\"\nlisten = \"{lb}\"\nmode = \"tcp\"\nbackend = \"web\"\n\n\
                 [[backend]]\nname = \"web\"\nbalance = \"weighted-round-robin\"\n\
                 server = [{{ address = \"{}\", weight = 3 }}, {{ address = \"{}\", weight = 1 }}]\n",
                heavy.address, light.address
            ),
        ),
    );
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..40 {
        *counts
            .entry(fetch(lb, None).unwrap_or_default())
            .or_default() += 1;
    }
    assert_eq!(counts.get("heavy"), Some(&30), "{counts:?}");
    assert_eq!(counts.get("light"), Some(&10), "{counts:?}");
}

/// Starts `curl` downloading `/big` through `lb` in the background; returns the child and
/// the file it writes to.
fn slow_download(
    lb: SocketAddr,
    dir: &std::path::Path,
    name: &str,
) -> (std::process::Child, std::path::PathBuf) {
    let out = dir.join(name);
    let child = Command::new("curl")
        .args(["--silent", "--max-time", "30", "--output"])
        .arg(&out)
        .arg(format!("http://{lb}/big"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("curl: {e}"));
    (child, out)
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn least_connections_sends_new_connections_to_the_idle_server() {
    let backends = [Nginx::http("a"), Nginx::http("b"), Nginx::http("c")];
    let (lb, metrics) = (ports::free_tcp(), ports::free_tcp());
    let _daemon = Started::start(
        BIN,
        &config(
            metrics,
            &format!(
                "[[listener]]\nname = \"web\"\nlisten = \"{lb}\"\nmode = \"tcp\"\nbackend = \"web\"\n\n\
                 [[backend]]\nname = \"web\"\nbalance = \"least-connections\"\n{}\n",
                servers(&backends.iter().collect::<Vec<_>>())
            ),
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut downloads = Vec::new();
    for i in 0..2 {
        downloads.push(slow_download(lb, dir.path(), &format!("d{i}")));
        wait_for("the download to be proxied", Duration::from_secs(5), || {
            metric(metrics, "lab_lb_connections_active{listener=\"web\"}") >= f64::from(i + 1)
        });
    }
    let answers: Vec<String> = (0..6)
        .map(|_| fetch(lb, None).unwrap_or_default())
        .collect();
    assert!(answers.iter().all(|a| a == &answers[0]), "{answers:?}");
    for (mut child, _) in downloads {
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[test]
fn consistent_hash_keeps_clients_and_moves_only_a_stopped_servers() {
    let mut backends = [Nginx::http("a"), Nginx::http("b"), Nginx::http("c")];
    let (lb, metrics) = (ports::free_tcp(), ports::free_tcp());
    let _daemon = Started::start(
        BIN,
        &config(
            metrics,
            &format!(
                "[[listener]]\nname = \"web\"\nlisten = \"{lb}\"\nmode = \"tcp\"\nbackend = \"web\"\n\n\
                 [[backend]]\nname = \"web\"\nbalance = \"consistent-hash\"\n{}\n",
                servers(&backends.iter().collect::<Vec<_>>())
            ),
        ),
    );
    let clients: Vec<String> = (2..32).map(|i| format!("127.0.0.{i}")).collect();
    let before: Vec<String> = clients
        .iter()
        .map(|c| fetch(lb, Some(c)).unwrap_or_default())
        .collect();
    for (client, server) in clients.iter().zip(&before) {
        assert_eq!(
            &fetch(lb, Some(client)).unwrap_or_default(),
            server,
            "{client} moved"
        );
    }
    let stopped = backends
        .iter()
        .map(|b| b.name.clone())
        .max_by_key(|name| before.iter().filter(|s| *s == name).count())
        .unwrap();
    assert!(before.iter().any(|s| s == &stopped));
    backends
        .iter_mut()
        .find(|b| b.name == stopped)
        .unwrap()
        .stop();
    for (client, server) in clients.iter().zip(&before) {
        let now = fetch(lb, Some(client)).unwrap_or_default();
        if server == &stopped {
            assert!(!now.is_empty() && now != stopped, "{client}: {now:?}");
        } else {
            assert_eq!(&now, server, "{client} moved although its server is up");
        }
    }
}

#[test]
fn a_dead_server_is_skipped_and_held_down() {
    let alive = Nginx::http("alive");
    let dead = ports::free_tcp(); // nothing listens there
    let (lb, metrics) = (ports::free_tcp(), ports::free_tcp());
    let _daemon = Started::start(
        BIN,
        &config(
            metrics,
            &format!(
                "[[listener]]\nname = \"web\"\nlisten = \"{lb}\"\nmode = \"tcp\"\nbackend = \"web\"\n\n\
                 [[backend]]\nname = \"web\"\nfailure_hold = \"30s\"\n\
                 server = [{{ address = \"{dead}\" }}, {{ address = \"{}\" }}]\n",
                alive.address
            ),
        ),
    );
    for _ in 0..6 {
        assert_eq!(fetch(lb, None).as_deref(), Some("alive"));
    }
    let series = format!("{{backend=\"web\",server=\"{dead}\"}}");
    assert_eq!(
        metric(
            metrics,
            &format!("lab_lb_server_connect_failures_total{series}")
        ),
        1.0
    );
    assert_eq!(metric(metrics, &format!("lab_lb_server_up{series}")), 0.0);
}

#[test]
fn with_every_server_down_connections_are_refused_at_once() {
    let (lb, metrics) = (ports::free_tcp(), ports::free_tcp());
    let (dead1, dead2) = (ports::free_tcp(), ports::free_tcp());
    let _daemon = Started::start(
        BIN,
        &config(
            metrics,
            &format!(
                "[[listener]]\nname = \"web\"\nlisten = \"{lb}\"\nmode = \"tcp\"\nbackend = \"web\"\n\n\
                 [[backend]]\nname = \"web\"\nserver = [{{ address = \"{dead1}\" }}, {{ address = \"{dead2}\" }}]\n"
            ),
        ),
    );
    for _ in 0..3 {
        let started = Instant::now();
        let mut stream = TcpStream::connect(lb).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(
            stream.read(&mut buf).unwrap_or(0),
            0,
            "expected the connection closed"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "refusal took {:?}",
            started.elapsed()
        );
    }
    assert_eq!(
        metric(
            metrics,
            "lab_lb_connections_refused_total{listener=\"web\",reason=\"no_server\"}"
        ),
        3.0
    );
}

/// `curl` over TLS to `name` through `lb`: the body and the subject of the certificate the
/// client saw.
fn fetch_tls(lb: SocketAddr, name: &str) -> (String, String) {
    let output = Command::new("curl")
        .args([
            "--silent",
            "--verbose",
            "--insecure",
            "--max-time",
            "5",
            "--resolve",
        ])
        .arg(format!("{name}:{}:127.0.0.1", lb.port()))
        .arg(format!("https://{name}:{}/", lb.port()))
        .output()
        .unwrap_or_else(|e| panic!("curl: {e}"));
    let verbose = String::from_utf8_lossy(&output.stderr);
    let subject = verbose
        .lines()
        .find_map(|l| l.trim_start_matches('*').trim().strip_prefix("subject: "))
        .unwrap_or("")
        .to_owned();
    (
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        subject,
    )
}

#[test]
fn tls_passthrough_routes_by_sni_and_the_client_sees_the_backends_certificate() {
    let (a, b, fallback) = (
        Nginx::https("a.example"),
        Nginx::https("x.apps.lab"),
        Nginx::https("default.lab"),
    );
    let (lb, metrics) = (ports::free_tcp(), ports::free_tcp());
    let _daemon = Started::start(
        BIN,
        &config(
            metrics,
            &format!(
                "[[listener]]\nname = \"https\"\nlisten = \"{lb}\"\nmode = \"tls-passthrough\"\nbackend = \"fallback\"\n\
                 route = [{{ sni = [\"a.example\"], backend = \"a\" }}, {{ sni = [\"*.apps.lab\"], backend = \"apps\" }}]\n\n\
                 [[backend]]\nname = \"a\"\nserver = [{{ address = \"{}\" }}]\n\n\
                 [[backend]]\nname = \"apps\"\nserver = [{{ address = \"{}\" }}]\n\n\
                 [[backend]]\nname = \"fallback\"\nserver = [{{ address = \"{}\" }}]\n",
                a.address, b.address, fallback.address
            ),
        ),
    );
    assert_eq!(
        fetch_tls(lb, "a.example"),
        ("a.example".into(), "CN=a.example".into())
    );
    assert_eq!(
        fetch_tls(lb, "b.apps.lab"),
        ("x.apps.lab".into(), "CN=x.apps.lab".into())
    );
    assert_eq!(
        fetch_tls(lb, "unknown.example"),
        ("default.lab".into(), "CN=default.lab".into())
    );
}

#[test]
fn garbage_and_cut_off_hellos_are_closed_and_the_proxy_keeps_serving() {
    let backend = Nginx::https("a.example");
    let (lb, metrics) = (ports::free_tcp(), ports::free_tcp());
    let _daemon = Started::start(
        BIN,
        &config(
            metrics,
            &format!(
                "[[listener]]\nname = \"https\"\nlisten = \"{lb}\"\nmode = \"tls-passthrough\"\nbackend = \"a\"\n\
                 hello_timeout = \"1s\"\n\n\
                 [[backend]]\nname = \"a\"\nserver = [{{ address = \"{}\" }}]\n",
                backend.address
            ),
        ),
    );
    let closed_after = |bytes: &[u8], then_close: bool| {
        let mut stream = TcpStream::connect(lb).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.write_all(bytes).unwrap();
        if then_close {
            let _ = stream.shutdown(std::net::Shutdown::Write);
        }
        let mut buf = [0u8; 64];
        stream.read(&mut buf).unwrap_or(0)
    };
    assert_eq!(closed_after(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", false), 0);
    // A handshake record header promising more than is ever sent, then EOF.
    assert_eq!(
        closed_after(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00], true),
        0
    );
    // The same, left hanging: closed by the hello timeout.
    let started = Instant::now();
    assert_eq!(
        closed_after(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00], false),
        0
    );
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(
        metric(
            metrics,
            "lab_lb_connections_refused_total{listener=\"https\",reason=\"bad_hello\"}"
        ),
        3.0
    );
    assert_eq!(fetch_tls(lb, "a.example").0, "a.example");
}

#[test]
fn connections_past_the_limit_are_refused_and_counted() {
    let backend = Nginx::http("a");
    let (lb, metrics) = (ports::free_tcp(), ports::free_tcp());
    let _daemon = Started::start(
        BIN,
        &config(
            metrics,
            &format!(
                "[[listener]]\nname = \"web\"\nlisten = \"{lb}\"\nmode = \"tcp\"\nbackend = \"web\"\nmax_connections = 2\n\n\
                 [[backend]]\nname = \"web\"\nserver = [{{ address = \"{}\" }}]\n",
                backend.address
            ),
        ),
    );
    let held: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(lb).unwrap()).collect();
    wait_for("two connections proxied", Duration::from_secs(5), || {
        metric(metrics, "lab_lb_connections_active{listener=\"web\"}") >= 2.0
    });
    let mut third = TcpStream::connect(lb).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = third.write_all(b"GET / HTTP/1.0\r\n\r\n");
    let mut buf = [0u8; 64];
    assert_eq!(third.read(&mut buf).unwrap_or(0), 0);
    assert_eq!(
        metric(
            metrics,
            "lab_lb_connections_refused_total{listener=\"web\",reason=\"limit\"}"
        ),
        1.0
    );
    drop(held);
    wait_for(
        "the held connections to close",
        Duration::from_secs(5),
        || metric(metrics, "lab_lb_connections_active{listener=\"web\"}") == 0.0,
    );
    assert_eq!(fetch(lb, None).as_deref(), Some("a"));
}

#[test]
fn reload_keeps_an_established_stream_and_new_connections_use_the_new_config() {
    let (old, new) = (Nginx::http("old"), Nginx::http("new"));
    let (lb, metrics) = (ports::free_tcp(), ports::free_tcp());
    let listener = |backend: &Nginx| {
        config(
            metrics,
            &format!(
                "[[listener]]\nname = \"web\"\nlisten = \"{lb}\"\nmode = \"tcp\"\nbackend = \"web\"\n\n\
                 [[backend]]\nname = \"web\"\nserver = [{{ address = \"{}\" }}]\n",
                backend.address
            ),
        )
    };
    let mut daemon = Started::start(BIN, &listener(&old));
    let dir = tempfile::tempdir().unwrap();
    let (mut download, file) = slow_download(lb, dir.path(), "big");
    wait_for("the download to start", Duration::from_secs(5), || {
        std::fs::metadata(&file)
            .map(|m| m.len() > 0)
            .unwrap_or(false)
    });
    let ready = daemon.reload(&listener(&new));
    assert!(!ready.contains("refused"), "{ready}");
    assert_eq!(fetch(lb, None).as_deref(), Some("new"));
    let status = download.wait().unwrap();
    assert!(status.success(), "the download was cut: {status:?}");
    assert_eq!(std::fs::metadata(&file).unwrap().len() as usize, BIG_BYTES);

    // A listener moved to another address: the old port closes, the new one serves.
    let moved = ports::free_tcp();
    let ready = daemon.reload(&listener(&new).replace(&lb.to_string(), &moved.to_string()));
    assert!(!ready.contains("refused"), "{ready}");
    assert_eq!(fetch(moved, None).as_deref(), Some("new"));
    assert!(
        TcpStream::connect(lb).is_err(),
        "the removed listener still accepts"
    );
}

#[test]
fn reload_onto_a_taken_port_changes_nothing() {
    let backend = Nginx::http("a");
    let (lb, metrics) = (ports::free_tcp(), ports::free_tcp());
    let body = |extra: &str| {
        config(
            metrics,
            &format!(
                "[[listener]]\nname = \"web\"\nlisten = \"{lb}\"\nmode = \"tcp\"\nbackend = \"web\"\n\n{extra}\
                 [[backend]]\nname = \"web\"\nserver = [{{ address = \"{}\" }}]\n",
                backend.address
            ),
        )
    };
    let mut daemon = Started::start(BIN, &body(""));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let extra = format!(
        "[[listener]]\nname = \"second\"\nlisten = \"{}\"\nmode = \"tcp\"\nbackend = \"web\"\n\n",
        taken.local_addr().unwrap()
    );
    let ready = daemon.reload(&body(&extra));
    assert!(ready.contains("reload refused"), "{ready}");
    assert_eq!(fetch(lb, None).as_deref(), Some("a"));
}

#[test]
fn slow_and_abandoned_clients_do_not_hurt_others_and_fds_return_to_baseline() {
    let backend = Nginx::https("a.example");
    let (lb, metrics) = (ports::free_tcp(), ports::free_tcp());
    let _daemon = Started::start(
        BIN,
        &config(
            metrics,
            &format!(
                "[[listener]]\nname = \"https\"\nlisten = \"{lb}\"\nmode = \"tls-passthrough\"\nbackend = \"a\"\n\
                 hello_timeout = \"2s\"\n\n\
                 [[backend]]\nname = \"a\"\nserver = [{{ address = \"{}\" }}]\n",
                backend.address
            ),
        ),
    );
    // Warm up (first TLS, first metrics scrape) before taking the baseline.
    assert_eq!(fetch_tls(lb, "a.example").0, "a.example");
    let baseline = metric(metrics, "process_open_fds");

    // A client dripping one byte of a ClientHello per second is cut at the hello timeout,
    // while others are served meanwhile.
    let slow = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(lb).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let started = Instant::now();
        for byte in [0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01] {
            if stream.write_all(&[byte]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        let mut buf = [0u8; 8];
        let n = stream.read(&mut buf).unwrap_or(0);
        (n, started.elapsed())
    });
    for _ in 0..3 {
        assert_eq!(fetch_tls(lb, "a.example").0, "a.example");
    }
    let (n, took) = slow.join().unwrap();
    assert_eq!(n, 0);
    assert!(
        took < Duration::from_secs(8),
        "slow client held for {took:?}"
    );

    // 1000 connections opened and abandoned (bounded: 1000 sockets, each closed at once).
    for _ in 0..1000 {
        drop(TcpStream::connect(lb).unwrap());
    }
    assert_eq!(fetch_tls(lb, "a.example").0, "a.example");
    wait_for(
        "all abandoned connections to be closed",
        Duration::from_secs(10),
        || metric(metrics, "lab_lb_connections_active{listener=\"https\"}") == 0.0,
    );
    wait_for(
        "file descriptors back to baseline",
        Duration::from_secs(10),
        || metric(metrics, "process_open_fds") <= baseline,
    );
}

#[test]
fn sigterm_stops_accepting_and_lets_established_connections_finish() {
    let backend = Nginx::http("a");
    let (lb, metrics) = (ports::free_tcp(), ports::free_tcp());
    let mut daemon = Started::start(
        BIN,
        &config(
            metrics,
            &format!(
                "[[listener]]\nname = \"web\"\nlisten = \"{lb}\"\nmode = \"tcp\"\nbackend = \"web\"\n\n\
                 [[backend]]\nname = \"web\"\nserver = [{{ address = \"{}\" }}]\n",
                backend.address
            ),
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let (mut download, file) = slow_download(lb, dir.path(), "big");
    wait_for("the download to start", Duration::from_secs(5), || {
        std::fs::metadata(&file)
            .map(|m| m.len() > 0)
            .unwrap_or(false)
    });
    daemon.process.signal(nix::sys::signal::Signal::SIGTERM);
    daemon
        .notify
        .expect(&["STOPPING=1"], Duration::from_secs(5));
    wait_for("the listener to close", Duration::from_secs(5), || {
        TcpStream::connect(lb).is_err()
    });
    let status = download.wait().unwrap();
    assert!(
        status.success(),
        "the download was cut by SIGTERM: {status:?}"
    );
    assert_eq!(std::fs::metadata(&file).unwrap().len() as usize, BIG_BYTES);
    assert!(daemon.process.wait_exit(Duration::from_secs(30)).success());
}
