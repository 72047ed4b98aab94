//! The runtime API through `lab-lb ctl`, in front of real nginx servers: a drain under wrk load
//! fails no request and leaves the server untouched once drained; disable closes the idle
//! connections the server had from us and enable brings it back; a weight shows in the
//! distribution; reloads keep what was set for servers that stay and forget removed ones; the
//! socket is 0600 and refuses a user who is neither root nor the daemon's, or 0660 and open to
//! the members of `[runtime] socket_group` alone; a drained `tcp` server keeps its open
//! connections, gets no new one, and is reported drained when the last one closes.

mod support;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use support::web::EchoBackend;
use support::{wait_for, Setup, BIN};

/// A daemon with its runtime API on a socket of the test's own.
struct Lb {
    setup: Setup,
    dir: tempfile::TempDir,
}

impl Lb {
    fn new() -> Self {
        Self {
            setup: Setup::new(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("lab-lb.sock")
    }

    /// One `http` listener in front of backend `web` of `servers` (address, weight).
    fn config(&self, balance: &str, servers: &[(SocketAddr, u32)]) -> String {
        let servers: Vec<String> = servers
            .iter()
            .map(|(address, weight)| format!("{{ address = \"{address}\", weight = {weight} }}"))
            .collect();
        self.setup.config(&format!(
            "[runtime]\nsocket = \"{}\"\n\n\
             [[listener]]\nname = \"web\"\nlisten = \"{}\"\nmode = \"http\"\nbackend = \"web\"\n\n\
             [[backend]]\nname = \"web\"\nbalance = \"{balance}\"\nserver = [{}]\n",
            self.socket().display(),
            self.setup.lb,
            servers.join(", ")
        ))
    }

    fn ctl(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("ctl")
            .arg("--socket")
            .arg(self.socket())
            .args(args)
            .output()
            .unwrap()
    }

    /// `ctl` that must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.ctl(args);
        assert!(
            output.status.success(),
            "lab-lb ctl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The `ctl servers` row of `server`: (state, health, active, weight).
    fn row(&self, server: SocketAddr) -> (String, String, usize, u32) {
        let listing = self.ok(&["servers"]);
        let line = listing
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(&server.to_string()))
            .unwrap_or_else(|| panic!("no {server} in:\n{listing}"));
        let fields: Vec<&str> = line.split_whitespace().collect();
        (
            fields[2].to_owned(),
            fields[3].to_owned(),
            fields[4].parse().unwrap(),
            fields[5].parse().unwrap(),
        )
    }

    /// Bodies of `n` requests on one kept-alive client connection, counted by backend name.
    fn distribution(&self, n: usize, names: &[&str]) -> Vec<usize> {
        let url = format!("http://{}/", self.setup.lb);
        let output = Command::new("curl")
            .args(["--silent", "--max-time", "20"])
            .args(std::iter::repeat_n(&url, n))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        assert_eq!(text.lines().count(), n, "every request answered:\n{text}");
        names
            .iter()
            .map(|name| {
                text.lines()
                    .filter(|l| l.starts_with(&format!("{name} ")))
                    .count()
            })
            .collect()
    }
}

fn requests_seen(server: &EchoBackend) -> usize {
    server.seen().lines().count()
}

/// Connections established to `server` now, as the kernel counts them on its side.
fn connections_to(server: SocketAddr) -> usize {
    let output = Command::new("ss")
        .args(["-Htn", "state", "established"])
        .arg(format!("( sport = :{} )", server.port()))
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).lines().count()
}

#[test]
fn a_drain_under_load_fails_no_request_and_the_drained_server_gets_nothing_new() {
    let a = EchoBackend::start("a");
    let b = EchoBackend::start("b");
    let lb = Lb::new();
    let _daemon = lb
        .setup
        .start(&lb.config("round-robin", &[(a.address, 1), (b.address, 1)]));
    let drained = format!("web/{}", a.address);

    let mut wrk = Command::new("wrk")
        .args(["--threads", "2", "--connections", "16", "--duration", "12s"])
        .arg(format!("http://{}/", lb.setup.lb))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wrk");
    wait_for("load on server a", Duration::from_secs(5), || {
        requests_seen(&a) > 100
    });
    lb.ok(&["drain", &drained]);
    lb.ok(&["wait-drained", &drained, "--timeout", "10s"]);
    let (state, _, active, _) = lb.row(a.address);
    assert_eq!((state.as_str(), active), ("drained", 0));
    let status = lab_tests::http::get(lb.setup.metrics, "/status", &[]).body;
    assert!(status.contains("\"state\": \"drained\""), "{status}");
    assert_eq!(
        lb.setup.metric(&format!(
            "lab_lb_server_draining{{backend=\"web\",server=\"{}\"}}",
            a.address
        )),
        1.0
    );
    // Drained is not down: no server-down alert for a server taken out on purpose.
    assert_eq!(
        lb.setup.metric(&format!(
            "lab_lb_server_up{{backend=\"web\",server=\"{}\"}}",
            a.address
        )),
        1.0
    );

    let a_at_drain = requests_seen(&a);
    let b_at_drain = requests_seen(&b);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        wrk.try_wait().unwrap().is_none(),
        "wrk ended before the drained server was watched under load"
    );
    assert_eq!(
        requests_seen(&a),
        a_at_drain,
        "a drained server got requests"
    );
    assert!(
        requests_seen(&b) > b_at_drain + 100,
        "the load went on to b"
    );

    let output = wrk.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{report}");
    assert!(report.contains("requests in"), "{report}");
    assert!(!report.contains("Socket errors"), "{report}");
    assert!(!report.contains("Non-2xx"), "{report}");

    lb.ok(&["enable", &drained]);
    assert_eq!(lb.row(a.address).0, "ready");
    assert_eq!(lb.distribution(10, &["a", "b"]), [5, 5]);
}

#[test]
fn disable_closes_our_idle_connections_to_the_server_and_enable_brings_it_back() {
    let a = EchoBackend::start("a");
    let b = EchoBackend::start("b");
    let lb = Lb::new();
    let _daemon = lb
        .setup
        .start(&lb.config("round-robin", &[(a.address, 1), (b.address, 1)]));
    let server = format!("web/{}", a.address);

    assert_eq!(lb.distribution(10, &["a", "b"]), [5, 5]);
    assert!(
        connections_to(a.address) > 0,
        "kept alive for the next request"
    );

    lb.ok(&["disable", &server]);
    assert_eq!(lb.row(a.address).0, "disabled");
    wait_for(
        "a's idle connections to close",
        Duration::from_secs(5),
        || connections_to(a.address) == 0,
    );
    assert_eq!(lb.distribution(10, &["a", "b"]), [0, 10]);
    assert_eq!(connections_to(a.address), 0);
    assert_eq!(
        lb.setup.metric(&format!(
            "lab_lb_server_disabled{{backend=\"web\",server=\"{}\"}}",
            a.address
        )),
        1.0
    );
    // A disabled server without active requests is as good as drained for a script.
    lb.ok(&["wait-drained", &server, "--timeout", "1s"]);

    lb.ok(&["enable", &server]);
    assert_eq!(lb.row(a.address).0, "ready");
    assert_eq!(lb.distribution(10, &["a", "b"]), [5, 5]);
}

#[test]
fn a_weight_set_shows_in_the_distribution_and_bad_names_are_refused_by_name() {
    let a = EchoBackend::start("a");
    let b = EchoBackend::start("b");
    let lb = Lb::new();
    let _daemon = lb
        .setup
        .start(&lb.config("weighted-round-robin", &[(a.address, 1), (b.address, 1)]));
    assert_eq!(lb.distribution(40, &["a", "b"]), [20, 20]);

    lb.ok(&["weight", &format!("web/{}", b.address), "3"]);
    assert_eq!(lb.row(b.address).3, 3);
    assert_eq!(lb.distribution(40, &["a", "b"]), [10, 30]);
    assert_eq!(
        lb.setup.metric(&format!(
            "lab_lb_server_weight{{backend=\"web\",server=\"{}\"}}",
            b.address
        )),
        3.0
    );

    let refused = |args: &[&str], words: &str| {
        let output = lb.ctl(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} accepted");
        assert!(stderr.contains(words), "{args:?}: {stderr}");
    };
    refused(
        &["drain", "nope/127.0.0.1:1"],
        "no backend `nope` in the running configuration (backends: web)",
    );
    refused(
        &["drain", "web/127.0.0.1:1"],
        &format!(
            "backend `web` has no server `127.0.0.1:1` (servers: {}, {})",
            a.address, b.address
        ),
    );
    refused(&["drain", "web"], "`web` is not BACKEND/SERVER");
    refused(
        &["weight", &format!("web/{}", a.address), "257"],
        "weight `257` is not a whole number from 0 to 256",
    );
    refused(
        &["wait-drained", &format!("web/{}", a.address)],
        "is ready, not drained",
    );
    assert_eq!(
        lb.distribution(40, &["a", "b"]),
        [10, 30],
        "nothing changed"
    );
}

#[test]
fn a_reload_keeps_what_was_set_for_servers_that_stay_and_forgets_removed_ones() {
    let a = EchoBackend::start("a");
    let b = EchoBackend::start("b");
    let c = EchoBackend::start("c");
    let lb = Lb::new();
    let all = [(a.address, 1), (b.address, 1), (c.address, 1)];
    let mut daemon = lb.setup.start(&lb.config("weighted-round-robin", &all));
    lb.ok(&["drain", &format!("web/{}", a.address)]);
    lb.ok(&["weight", &format!("web/{}", b.address), "0"]);
    assert_eq!(lb.distribution(30, &["a", "b", "c"]), [0, 0, 30]);

    // Another balancer: a new pool, the same servers.
    let status = daemon.reload(&lb.config("round-robin", &all));
    assert!(!status.contains("refused"), "{status}");
    assert_eq!(lb.row(a.address).0, "drained");
    assert_eq!(lb.row(b.address).3, 0);
    assert_eq!(lb.distribution(30, &["a", "b", "c"]), [0, 0, 30]);

    // a and b removed, then back: as lb.toml has them.
    let status = daemon.reload(&lb.config("weighted-round-robin", &[(c.address, 1)]));
    assert!(!status.contains("refused"), "{status}");
    assert!(!lb.ok(&["servers"]).contains(&a.address.to_string()));
    let status = daemon.reload(&lb.config("weighted-round-robin", &all));
    assert!(!status.contains("refused"), "{status}");
    assert_eq!(lb.row(a.address).0, "ready");
    assert_eq!(lb.row(b.address).3, 1);
    assert_eq!(lb.distribution(30, &["a", "b", "c"]), [10, 10, 10]);
}

/// The binary where `nobody` may run it (the build's directory need not be open to it).
fn binary_for_nobody(dir: &Path) -> PathBuf {
    let bin = dir.join("lab-lb");
    std::fs::copy(BIN, &bin).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

fn ctl_as_nobody(bin: &Path, socket: &Path) -> Output {
    ctl_as(
        bin,
        socket,
        &["--reuid=nobody", "--regid=nogroup", "--clear-groups"],
    )
}

/// `lab-lb ctl servers` run with `setpriv`'s `credentials`.
fn ctl_as(bin: &Path, socket: &Path, credentials: &[&str]) -> Output {
    Command::new("setpriv")
        .args(credentials)
        .arg(bin)
        .args(["ctl", "--socket"])
        .arg(socket)
        .arg("servers")
        .output()
        .expect("setpriv")
}

#[test]
fn the_socket_is_0600_refuses_other_users_and_bounds_requests() {
    let a = EchoBackend::start("a");
    let lb = Lb::new();
    let _daemon = lb.setup.start(&lb.config("round-robin", &[(a.address, 1)]));
    let socket = lb.socket();
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    assert!(lb.ok(&["servers"]).contains(&a.address.to_string()));

    let bin_dir = tempfile::tempdir().unwrap();
    let bin = binary_for_nobody(bin_dir.path());
    std::fs::set_permissions(lb.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let output = ctl_as_nobody(&bin, &socket);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "nobody listed servers");
    assert!(stderr.contains("Permission denied"), "{stderr}");

    // With the file's mode opened up, the daemon's own check (SO_PEERCRED) still refuses.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let output = ctl_as_nobody(&bin, &socket);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "nobody listed servers");
    assert!(
        stderr.contains("permission denied: uid 65534 is neither root nor the daemon's user"),
        "{stderr}"
    );
    assert!(!String::from_utf8_lossy(&output.stdout).contains(&a.address.to_string()));

    // A request over the size bound is refused, and the socket goes on serving.
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    stream.write_all(&vec![b'x'; 4096]).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, "error: request longer than 1024 bytes\n");
    // A client that sends nothing is closed after the request timeout.
    let mut silent = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    let started = std::time::Instant::now();
    let mut byte = [0u8; 1];
    assert_eq!(silent.read(&mut byte).unwrap(), 0);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert!(lb.ok(&["servers"]).contains(&a.address.to_string()));
}

#[test]
fn socket_group_opens_the_api_to_that_group_alone_and_a_reload_takes_it_back() {
    let a = EchoBackend::start("a");
    let lb = Lb::new();
    // `nogroup` (65534) is the group under test; `users` (100) is any other group.
    let grouped = lb.config("round-robin", &[(a.address, 1)]).replacen(
        "[runtime]\n",
        "[runtime]\nsocket_group = \"nogroup\"\n",
        1,
    );
    let mut daemon = lb.setup.start(&grouped);
    let socket = lb.socket();
    let metadata = std::fs::metadata(&socket).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(metadata.permissions().mode() & 0o777, 0o660);
    assert_eq!(metadata.gid(), 65534);

    let bin_dir = tempfile::tempdir().unwrap();
    let bin = binary_for_nobody(bin_dir.path());
    std::fs::set_permissions(lb.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let listed =
        |output: &Output| String::from_utf8_lossy(&output.stdout).contains(&a.address.to_string());

    // A member by its primary group, and one by a supplementary group.
    let primary = ctl_as(
        &bin,
        &socket,
        &["--reuid=nobody", "--regid=nogroup", "--clear-groups"],
    );
    assert!(primary.status.success() && listed(&primary), "{primary:?}");
    let supplementary = ctl_as(
        &bin,
        &socket,
        &["--reuid=nobody", "--regid=users", "--groups=65534"],
    );
    assert!(
        supplementary.status.success() && listed(&supplementary),
        "{supplementary:?}"
    );

    // Not a member: the file's mode refuses, and with the mode opened by hand the daemon does.
    let outsider = ["--reuid=nobody", "--regid=users", "--clear-groups"];
    let output = ctl_as(&bin, &socket, &outsider);
    assert!(!output.status.success() && !listed(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("Permission denied"),
        "{output:?}"
    );
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let output = ctl_as(&bin, &socket, &outsider);
    assert!(!output.status.success() && !listed(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("nor in group 65534"),
        "{output:?}"
    );

    // The group removed by a reload: the socket is root's again, for the group's members too.
    let status = daemon.reload(&lb.config("round-robin", &[(a.address, 1)]));
    assert!(!status.contains("refused"), "{status}");
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let output = ctl_as_nobody(&bin, &socket);
    assert!(!output.status.success() && !listed(&output), "{output:?}");

    // A group this machine does not have: the reload is refused, the API goes on as it was.
    let unknown = lb.config("round-robin", &[(a.address, 1)]).replacen(
        "[runtime]\n",
        "[runtime]\nsocket_group = \"no-such-group\"\n",
        1,
    );
    let status = daemon.reload(&unknown);
    assert!(
        status.contains("refused")
            && status.contains("runtime.socket_group: no group `no-such-group`"),
        "{status}"
    );
    assert!(lb.ok(&["servers"]).contains(&a.address.to_string()));
}

/// A kept-alive connection through a `tcp` listener: which server answered its first request.
fn held_connection(lb: SocketAddr) -> (std::net::TcpStream, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(lb).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: lab\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    while !answer.ends_with(b"\n") || !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "closed before an answer");
        answer.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&answer);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    (
        stream,
        body.split(' ').next().unwrap_or_default().to_owned(),
    )
}

#[test]
fn a_drained_tcp_server_keeps_its_open_connection_and_gets_no_new_one() {
    let a = EchoBackend::start("a");
    let b = EchoBackend::start("b");
    let lb = Lb::new();
    let config = lb
        .config("round-robin", &[(a.address, 1), (b.address, 1)])
        .replace("mode = \"http\"", "mode = \"tcp\"");
    let _daemon = lb.setup.start(&config);
    let drained = format!("web/{}", a.address);

    // Round robin: one of the first two connections is a's; the other is closed.
    let (first, first_server) = held_connection(lb.setup.lb);
    let (second, second_server) = held_connection(lb.setup.lb);
    let (mut held, other) = if first_server == "a" {
        (first, second)
    } else {
        (second, first)
    };
    assert_eq!(
        [first_server.as_str(), second_server.as_str()]
            .iter()
            .filter(|s| **s == "a")
            .count(),
        1
    );
    drop(other);

    lb.ok(&["drain", &drained]);
    wait_for(
        "the other connection to end",
        Duration::from_secs(5),
        || lb.row(b.address).2 == 0,
    );
    assert_eq!(lb.row(a.address), ("draining".into(), "up".into(), 1, 1));
    // Each curl is a new connection: all of them go to b.
    let url = format!("http://{}/", lb.setup.lb);
    for _ in 0..6 {
        let (status, _, body) = support::web::curl(&[], &url);
        assert_eq!(status, 200);
        assert!(body.starts_with("b "), "{body}");
    }
    // The open connection goes on being served by a, and holds the drain open.
    use std::io::{Read, Write};
    held.write_all(b"GET /again HTTP/1.1\r\nHost: lab\r\n\r\n")
        .unwrap();
    let mut chunk = [0u8; 4096];
    let n = held.read(&mut chunk).unwrap();
    assert!(String::from_utf8_lossy(&chunk[..n]).contains("a uri=/again"));
    let waiting = lb.ctl(&["wait-drained", &drained, "--timeout", "1s"]);
    assert!(!waiting.status.success(), "drained with a connection open");

    drop(held);
    lb.ok(&["wait-drained", &drained, "--timeout", "5s"]);
    assert_eq!(lb.row(a.address).0, "drained");
}
