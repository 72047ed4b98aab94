//! `https` listeners: certificates chosen by SNI, renewed on disk under a live keep-alive
//! connection, broken pairs refused; ALPN, HTTP/2 with curl and h2load.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use support::certs::{self, Pair};
use support::web::{curl, EchoBackend};
use support::{fetch_tls, Setup};

fn https_config(setup: &Setup, server: SocketAddr, pairs: &[(&Pair, &str)]) -> String {
    let certs: String = pairs
        .iter()
        .map(|(p, names)| {
            format!(
                "[[listener.http.cert]]\ncert = \"{}\"\nkey = \"{}\"\nnames = [{names}]\n",
                p.cert.display(),
                p.key.display()
            )
        })
        .collect();
    setup.config(&format!(
        "[[listener]]\nname = \"tls\"\nlisten = \"{}\"\nmode = \"https\"\nbackend = \"web\"\n\
         [listener.http]\n{certs}\n\
         [[backend]]\nname = \"web\"\nserver = [{{ address = \"{}\" }}]\n",
        setup.lb, server
    ))
}

/// `https_config` for the one name `a.test`, with a certificate made in `dir`.
fn a_test_config(setup: &Setup, server: SocketAddr, dir: &Path) -> String {
    let a = certs::make(dir, "a", "a.test", "first");
    https_config(setup, server, &[(&a, "\"a.test\"")])
}

/// curl's `--resolve` sending `a.test` to the listener.
fn a_test_resolve(setup: &Setup) -> String {
    format!("a.test:{}:127.0.0.1", setup.lb.port())
}

#[test]
fn certificate_by_sni_default_for_unknown_alpn_and_http2() {
    let dir = tempfile::tempdir().unwrap();
    let a = certs::make(dir.path(), "a", "a.test", "first");
    let b = certs::make(dir.path(), "b", "b.test", "second");
    let web = EchoBackend::start("web");
    let setup = Setup::new();
    let _lb = setup.start(&https_config(
        &setup,
        web.address,
        &[(&a, "\"a.test\""), (&b, "\"b.test\", \"*.b.test\"")],
    ));

    let (body, subject) = fetch_tls(setup.lb, "a.test");
    assert!(subject.contains("CN=a.test"), "{subject}");
    assert!(body.contains("proto=https fhost=a.test"), "{body}");
    let (_, subject) = fetch_tls(setup.lb, "b.test");
    assert!(subject.contains("CN=b.test"), "{subject}");
    let (_, subject) = fetch_tls(setup.lb, "x.b.test");
    assert!(subject.contains("CN=b.test"), "{subject}");
    let (_, subject) = fetch_tls(setup.lb, "unknown.test");
    assert!(subject.contains("CN=a.test"), "default: {subject}");

    // ALPN: h2 preferred, http/1.1 offered; nothing older than TLS 1.2.
    let s_client = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(["s_client", "-connect", &setup.lb.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let out = s_client(&["-servername", "b.test", "-alpn", "h2,http/1.1"]);
    assert!(out.contains("ALPN protocol: h2"), "{out}");
    let out = s_client(&["-servername", "b.test", "-alpn", "http/1.1"]);
    assert!(out.contains("ALPN protocol: http/1.1"), "{out}");
    let out = s_client(&["-servername", "b.test", "-tls1_1"]);
    assert!(out.contains("Cipher is (NONE)"), "TLS 1.1 must fail: {out}");
    // The server's order of cipher suites, not the client's: AES-128-GCM over the AES-256-GCM
    // OpenSSL lists first; a client offering only others still gets one of them.
    let out = s_client(&["-servername", "b.test"]);
    assert!(out.contains("Cipher is TLS_AES_128_GCM_SHA256"), "{out}");
    let out = s_client(&["-servername", "b.test", "-tls1_2"]);
    assert!(
        out.contains("Cipher is ECDHE-ECDSA-AES128-GCM-SHA256")
            || out.contains("Cipher is ECDHE-RSA-AES128-GCM-SHA256"),
        "{out}"
    );
    for suite in ["TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"] {
        let out = s_client(&["-servername", "b.test", "-ciphersuites", suite]);
        assert!(out.contains(&format!("Cipher is {suite}")), "{out}");
    }

    let (status, headers, body) = curl(
        &[
            "--http2",
            "--insecure",
            "--resolve",
            &format!("a.test:{}:127.0.0.1", setup.lb.port()),
        ],
        &format!("https://a.test:{}/h2", setup.lb.port()),
    );
    assert_eq!(status, 200);
    assert!(headers.starts_with("HTTP/2 200"), "{headers}");
    assert!(body.contains("uri=/h2"), "{body}");

    let output = Command::new("h2load")
        .args(["-n", "400", "-c", "4", "-m", "8"])
        .arg(format!("https://127.0.0.1:{}/", setup.lb.port()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("400 succeeded, 0 failed"), "h2load:\n{text}");
    assert!(text.contains("h2"), "{text}");
    assert!(
        setup.metric(
            "lab_lb_tls_handshakes_total{listener=\"tls\",version=\"TLSv1.3\",result=\"ok\"}"
        ) >= 8.0
    );
}

/// An h2 client with more requests in flight than pingora's default upstream pool holds (128)
/// still has them carried on kept-alive server connections: about one new server connection
/// per request in flight, not one for many of the requests past the pool's size.
#[test]
fn many_http2_requests_in_flight_reuse_server_connections() {
    let dir = tempfile::tempdir().unwrap();
    let web = EchoBackend::start("web");
    let setup = Setup::new();
    let _lb = setup.start(&a_test_config(&setup, web.address, dir.path()));

    // Two connections of 100 streams each: 200 in flight, past pingora's default pool (128)
    // and within the idle connections lab-lb keeps per server (256). (With 400 in flight, up
    // to 144 connections freed at once in a burst were closed past those 256 and opened again:
    // 440 to 725 new ones here, as the run's timing fell.)
    let (requests, in_flight) = (8000, 200.0);
    let output = Command::new("h2load")
        .args(["-n", &requests.to_string(), "-c", "2", "-m", "100"])
        .arg(format!("https://127.0.0.1:{}/", setup.lb.port()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains(&format!("{requests} succeeded, 0 failed")),
        "h2load:\n{text}"
    );
    let series = |reused: bool| {
        setup.metric(&format!(
            "lab_lb_http_upstream_connections_total{{backend=\"web\",reused=\"{reused}\"}}"
        ))
    };
    let (reused, fresh) = (series(true), series(false));
    assert_eq!(reused + fresh, f64::from(requests));
    eprintln!("{fresh} new server connections for {requests} requests");
    // 1300 with pingora's default pool (for 400 in flight).
    assert!(
        fresh <= 1.5 * in_flight,
        "{fresh} new server connections for {requests} requests, {in_flight} in flight at most"
    );
}

/// Uploads of unknown length (`curl -T -`, over HTTP/2 and HTTP/1.1) reach the server as one
/// chunked request each and nothing more. An HTTP/2 client ends such a body with an empty DATA
/// frame carrying END_STREAM, which pingora wrote upstream as a chunked body's end before
/// writing the real end after it (cloudflare/pingora#935): the server read the second as a
/// malformed request, and its "400" waited on the kept-alive connection for whichever request
/// came next.
#[test]
fn uploads_of_unknown_length_reach_the_server_as_one_request_each() {
    let dir = tempfile::tempdir().unwrap();
    let web = EchoBackend::start("web");
    let setup = Setup::new();
    let _lb = setup.start(&a_test_config(&setup, web.address, dir.path()));
    let resolve = a_test_resolve(&setup);
    let url = |path: &str| format!("https://a.test:{}{path}", setup.lb.port());

    let uploads = [("--http2", "2"), ("--http1.1", "1.1"), ("--http2", "2")];
    for (i, (protocol, version)) in uploads.iter().enumerate() {
        let mut upload = Command::new("curl")
            .args(["--silent", protocol, "--insecure", "--resolve", &resolve])
            .args([
                "--max-time",
                "10",
                "--write-out",
                "\n%{http_code} %{http_version}",
            ])
            .args(["--upload-file", "-"])
            .arg(url(&format!("/upload{i}")))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = upload.stdin.take().unwrap();
        stdin.write_all(&[b'u'; 20_000]).unwrap();
        drop(stdin);
        let output = upload.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains(&format!("uri=/upload{i} ")), "{text}");
        assert!(text.ends_with(&format!("\n200 {version}")), "{text}");
    }
    let (status, _, body) = curl(
        &["--http2", "--insecure", "--resolve", &resolve],
        &url("/next"),
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("uri=/next "), "{body}");

    // Every line nginx logged is one of ours: no stray request made of a second body end.
    let seen = web.seen();
    let lines: Vec<&str> = seen.lines().collect();
    assert_eq!(lines.len(), uploads.len() + 1, "{seen}");
    for (i, line) in lines[..uploads.len()].iter().enumerate() {
        assert_eq!(
            *line,
            format!("PUT /upload{i} HTTP/1.1 cl=- te=chunked"),
            "{seen}"
        );
    }
    assert!(
        lines[uploads.len()].starts_with("GET /next HTTP/1.1"),
        "{seen}"
    );
}

/// An HTTP/2 connection with no stream open is idle, as an HTTP/1.1 one between requests is:
/// `keepalive_timeout` closes it (as nginx's does), rather than it being held forever.
#[test]
fn idle_http2_connections_are_closed_after_the_keepalive_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let web = EchoBackend::start("web");
    let setup = Setup::new();
    // The listener's own `[listener.http]` (the example's comments mention it too).
    let config = a_test_config(&setup, web.address, dir.path()).replace(
        "backend = \"web\"\n[listener.http]\n",
        "backend = \"web\"\n[listener.http]\nkeepalive_timeout = \"1s\"\n",
    );
    let _lb = setup.start(&config);

    let mut client = Command::new("openssl")
        .args(["s_client", "-quiet", "-connect", &setup.lb.to_string()])
        .args(["-servername", "a.test", "-alpn", "h2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = client.stdout.take().unwrap();
    let (closed, ended) = mpsc::channel();
    std::thread::spawn(move || {
        let mut got = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut got);
        let _ = closed.send(got);
    });
    // The client preface and an empty SETTINGS frame; then nothing.
    let mut stdin = client.stdin.take().unwrap();
    stdin
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .unwrap();
    stdin.flush().unwrap();
    let idle = Instant::now();
    let got = ended.recv_timeout(Duration::from_secs(10));
    let waited = idle.elapsed();
    let _ = client.kill();
    let _ = client.wait();
    let got = got.expect("the idle h2 connection is still open after 10s");
    // The server's SETTINGS frame (type 4) came first: this was an h2 connection.
    assert!(got.len() >= 9 && got[3] == 4, "{got:?}");
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    drop(stdin);
}

/// `max_header_bytes` holds for HTTP/2 as for HTTP/1.1: a request over it gets a counted 431
/// on its stream, and the connection goes on serving. (The h2 layer itself refuses header
/// lists over 64 KiB whatever the setting; nghttp2-based clients, curl among them, send none
/// that large.)
#[test]
fn max_header_bytes_holds_over_http2() {
    let dir = tempfile::tempdir().unwrap();
    let web = EchoBackend::start_with("web", "", "large_client_header_buffers 4 64k;");
    let setup = Setup::new();
    let config = a_test_config(&setup, web.address, dir.path()).replace(
        "backend = \"web\"\n[listener.http]\n",
        "backend = \"web\"\n[listener.http]\nmax_header_bytes = 8000\n",
    );
    let _lb = setup.start(&config);
    let resolve = a_test_resolve(&setup);
    let url = |path: &str| format!("https://a.test:{}{path}", setup.lb.port());
    let under = format!("x-big: {}", "a".repeat(6_000));
    let over = format!("x-big: {}", "a".repeat(20_000));
    // One connection: the refused request, then one under the limit after it.
    let output = Command::new("curl")
        .args(["--silent", "--http2", "--insecure", "--resolve", &resolve])
        .args([
            "--max-time",
            "10",
            "--write-out",
            "%{http_code} %{num_connects}\n",
        ])
        .args(["-H", &over, "-o", "/dev/null", &url("/over")])
        .args(["--next", "--http2", "--insecure", "--resolve", &resolve])
        .args(["--write-out", "%{http_code} %{num_connects}\n"])
        .args(["-H", &under, "-o", "/dev/null", &url("/under")])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "431 1\n200 0\n");
    assert!(setup.metric("lab_lb_http_errors_total{listener=\"tls\",kind=\"too_large\"}") >= 1.0);
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n";

/// A server that answers every request with `answer` and sends each request head it read on
/// the channel.
fn head_recorder(answer: &'static [u8]) -> (SocketAddr, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let (heads, received) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let heads = heads.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = stream.read(&mut buf) {
                    got.extend_from_slice(&buf[..n]);
                    while let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head: Vec<u8> = got.drain(..end + 4).collect();
                        let _ = heads.send(String::from_utf8_lossy(&head).into_owned());
                        if stream.write_all(answer).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (address, received)
}

/// An h2 client may send its cookies as several `cookie` fields (browsers do, for header
/// compression); HTTP/1.1 has one `Cookie`, the crumbs joined with "; " (RFC 9113 §8.2.3).
/// Passed on as several, a server reads them as one list joined with ", ": one cookie whose
/// value swallows the rest.
#[test]
fn cookies_sent_over_http2_as_several_fields_reach_the_server_as_one() {
    let dir = tempfile::tempdir().unwrap();
    let (server, heads) = head_recorder(OK);
    let setup = Setup::new();
    let _lb = setup.start(&a_test_config(&setup, server, dir.path()));
    let resolve = a_test_resolve(&setup);
    let mut args = vec!["--http2", "--insecure", "--resolve", resolve.as_str()];
    args.extend([
        "-H",
        "cookie: session=abc",
        "-H",
        "cookie: lang=en; theme=dark",
    ]);
    let (status, headers, _) = curl(&args, &format!("https://a.test:{}/c", setup.lb.port()));
    assert_eq!(status, 200, "{headers}");
    assert!(headers.starts_with("HTTP/2 200"), "{headers}");
    let head = heads.recv_timeout(Duration::from_secs(5)).unwrap();
    let cookies: Vec<&str> = head
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("cookie:"))
        .collect();
    assert_eq!(
        cookies,
        ["cookie: session=abc; lang=en; theme=dark"],
        "{head}"
    );
}

/// A 204 whose server declares a length anyway (a body it does not send) reaches an h2 client
/// as a 204: a `content-length` on it would have the client reset the stream.
#[test]
fn a_204_declaring_a_length_reaches_an_http2_client_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _heads) =
        head_recorder(b"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\nX-App: nc\r\n\r\n");
    let setup = Setup::new();
    let _lb = setup.start(&a_test_config(&setup, server, dir.path()));
    let resolve = a_test_resolve(&setup);
    let (status, headers, body) = curl(
        &["--http2", "--insecure", "--resolve", &resolve],
        &format!("https://a.test:{}/nc", setup.lb.port()),
    );
    assert_eq!((status, body.as_str()), (204, ""), "{headers}");
    assert!(headers.contains("x-app: nc"), "{headers}");
    assert!(!headers.contains("content-length"), "{headers}");
}

/// An `openssl s_client` holding one TLS connection, requests written to it by hand.
struct HeldConnection {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl HeldConnection {
    fn open(setup: &Setup, name: &str) -> Self {
        let mut child = Command::new("openssl")
            .args(["s_client", "-quiet", "-connect", &setup.lb.to_string()])
            .args(["-servername", name, "-alpn", "http/1.1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// Sends a GET and returns the body line (the backend's one-line answer).
    fn get(&mut self, path: &str) -> String {
        let stdin = self.child.stdin.as_mut().unwrap();
        write!(stdin, "GET {path} HTTP/1.1\r\nHost: a.test\r\n\r\n").unwrap();
        stdin.flush().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .expect("no answer on the held connection");
            if line.starts_with("web ") {
                return line;
            }
        }
    }
}

impl Drop for HeldConnection {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_subject(setup: &Setup, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, subject) = fetch_tls(setup.lb, "a.test");
        if subject.contains(want) || Instant::now() > deadline {
            return subject;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn renewal_on_disk_under_a_held_connection_and_broken_pair_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let live = certs::make(dir.path(), "live", "a.test", "v1");
    let web = EchoBackend::start("web");
    let setup = Setup::new();
    let _lb = setup.start(&https_config(&setup, web.address, &[(&live, "\"a.test\"")]));
    assert!(wait_subject(&setup, "O=v1").contains("O=v1"));

    let mut held = HeldConnection::open(&setup, "a.test");
    assert!(held.get("/before").contains("uri=/before"));

    let renewed = certs::make(dir.path(), "renewed", "a.test", "v2");
    certs::install(&renewed, &live);
    let subject = wait_subject(&setup, "O=v2");
    assert!(subject.contains("O=v2"), "new handshakes: {subject}");
    assert!(held.get("/after").contains("uri=/after"), "held connection");

    // A certificate with someone else's key: refused, v2 stays.
    let other = certs::make(dir.path(), "other", "a.test", "v3");
    let broken = certs::make(dir.path(), "broken", "a.test", "v3");
    let mismatched = Pair {
        cert: other.cert.clone(),
        key: broken.key.clone(),
    };
    certs::install(&mismatched, &live);
    std::thread::sleep(Duration::from_millis(2500));
    let (_, subject) = fetch_tls(setup.lb, "a.test");
    assert!(subject.contains("O=v2"), "after a broken pair: {subject}");
    assert!(held.get("/still").contains("uri=/still"));

    // A SIGHUP with the broken pair on disk is refused whole; the v2 certificate is served on.
    let mut lb = _lb;
    let config = std::fs::read_to_string(&lb.config_path).unwrap();
    let status = lb.reload(&config);
    assert!(
        status.contains("refused") || status.contains("kept"),
        "{status}"
    );
    let (_, subject) = fetch_tls(setup.lb, "a.test");
    assert!(subject.contains("O=v2"), "after refused reload: {subject}");
}

#[test]
fn bad_certificates_are_a_clear_error_at_check_and_start() {
    let dir = tempfile::tempdir().unwrap();
    let a = certs::make(dir.path(), "a", "a.test", "x");
    let b = certs::make(dir.path(), "b", "b.test", "x");
    let mismatched = Pair {
        cert: a.cert.clone(),
        key: b.key.clone(),
    };
    let missing = Pair {
        cert: dir.path().join("nope.crt"),
        key: a.key.clone(),
    };
    let garbage = dir.path().join("garbage.key");
    std::fs::write(&garbage, "not a key").unwrap();
    let not_a_key = Pair {
        cert: a.cert.clone(),
        key: garbage,
    };
    let expired = certs::expired(dir.path(), "a.test");
    let web = EchoBackend::start("web");
    for (pair, expect) in [
        (&expired, "expired at"),
        (&mismatched, "do not belong together"),
        (&missing, "cannot read certificates"),
        (&not_a_key, "cannot read a private key"),
    ] {
        let setup = Setup::new();
        let file = dir.path().join("lb.toml");
        std::fs::write(
            &file,
            https_config(&setup, web.address, &[(pair, "\"a.test\"")]),
        )
        .unwrap();
        for command in ["check", "run"] {
            let mut invocation = Command::new(support::BIN);
            match command {
                "check" => invocation.arg("check").arg(&file),
                _ => invocation.arg("run").arg("--config").arg(&file),
            };
            let output = invocation.output().unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(78), "{command}: {stderr}");
            assert!(
                stderr.contains("listener[0].http.cert[0]"),
                "{command}: {stderr}"
            );
            assert!(stderr.contains(expect), "{command}: {stderr}");
            assert!(!stderr.contains("PRIVATE KEY"), "{stderr}");
        }
    }
}

#[test]
fn http_sections_are_checked_with_key_paths() {
    let setup = Setup::new();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lb.toml");
    let config = setup.config(&format!(
        "[[listener]]\nname = \"tls\"\nlisten = \"{}\"\nmode = \"https\"\nbackend = \"web\"\n\
         [listener.http]\nmax_requests = 0\nkeepalive_timeout = \"0s\"\n\
         h2c = true\nh2_max_concurrent_streams = 0\n\
         [[listener.http.route]]\nhost = \"*bad\"\npath = \"nope\"\n\
         [[listener.http.route]]\nbackend = \"missing\"\nadd_request_headers = {{ \"bad name\" = \"x\" }}\n\
         [[listener.http.upstream]]\nbackend = \"web\"\ntls = true\n\
         [[listener]]\nname = \"plain\"\nlisten = \"127.0.0.1:1\"\nmode = \"tcp\"\nbackend = \"web\"\n\
         [listener.http]\n\
         [[backend]]\nname = \"web\"\nserver = [{{ address = \"127.0.0.1:2\" }}]\n",
        setup.lb
    ));
    std::fs::write(&file, config).unwrap();
    let output = Command::new(support::BIN)
        .arg("check")
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    for key in [
        "listener[0].http.cert",
        "listener[0].http.max_requests",
        "listener[0].http.keepalive_timeout",
        "listener[0].http.h2c",
        "listener[0].http.h2_max_concurrent_streams",
        "listener[0].http.route[0].host",
        "listener[0].http.route[0].path",
        "listener[0].http.route[0]`",
        "listener[0].http.route[1].backend",
        "listener[0].http.route[1].add_*_headers.bad name",
        "listener[0].http.upstream[0].server_name",
        "listener[1].http",
    ] {
        assert!(
            stderr.contains(&format!("key `{key}")),
            "{key} in:\n{stderr}"
        );
    }
}

/// Takes whatever certificate the server shows: what these clients test is the server's memory,
/// not the certificate.
#[derive(Debug)]
struct AnyCertificate;

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS 1.3 client connection to `address` (ALPN http/1.1), its handshake done: its Finished
/// sent and the server's session tickets read.
fn tls13_connect(
    address: SocketAddr,
    config: &std::sync::Arc<rustls::ClientConfig>,
) -> (std::net::TcpStream, rustls::ClientConnection) {
    let mut tcp = std::net::TcpStream::connect(address).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let name = rustls::pki_types::ServerName::try_from("a.test").unwrap();
    let mut tls = rustls::ClientConnection::new(config.clone(), name).unwrap();
    while tls.is_handshaking() {
        tls.complete_io(&mut tcp).unwrap();
    }
    while tls.wants_write() {
        tls.write_tls(&mut tcp).unwrap();
    }
    (tcp, tls)
}

#[test]
fn an_idle_tls_connection_costs_its_state_not_buffers() {
    // Clients that finished the TLS 1.3 handshake and sent nothing yet (for longer than a
    // minute on a loaded machine, within the keep-alive timeout): a connection holds no
    // buffer of TLS bytes, ours or rustls's, until bytes come, so a few thousand idle https
    // clients fit in the lb container's memory (target: 8 KiB each; nginx's cost ~1 KiB).
    // As for plain connections (http1_path.rs), a first batch warms the allocator's pages on
    // both workers and the cost is read from the growth over the next, larger one.
    const WARM: usize = 1000;
    const IDLE: usize = 2000;
    let dir = tempfile::tempdir().unwrap();
    let a = certs::make(dir.path(), "a", "a.test", "first");
    let web = EchoBackend::start("web");
    let setup = Setup::new();
    let lb = setup.start(&setup.single(
        "https",
        &format!(
            "max_connections_per_client = 4000\n[listener.http]\nkeepalive_timeout = \"600s\"\n\
             [[listener.http.cert]]\ncert = \"{}\"\nkey = \"{}\"\n",
            a.cert.display(),
            a.key.display()
        ),
        "",
        &[web.address],
    ));
    assert_eq!(
        fetch_tls(setup.lb, "a.test").0.split(' ').next(),
        Some("web")
    );
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(std::sync::Arc::new(AnyCertificate))
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let config = std::sync::Arc::new(config);
    let handshakes =
        "lab_lb_tls_handshakes_total{listener=\"web\",version=\"TLSv1.3\",result=\"ok\"}";
    let mut idle: Vec<_> = (0..WARM)
        .map(|_| tls13_connect(setup.lb, &config))
        .collect();
    setup.until_metric(handshakes, (WARM + 1) as f64, Duration::from_secs(60));
    let before = support::rss_kib(lb.process.pid());
    idle.extend((0..IDLE).map(|_| tls13_connect(setup.lb, &config)));
    setup.until_metric(
        handshakes,
        (WARM + IDLE + 1) as f64,
        Duration::from_secs(60),
    );
    let per_connection =
        (support::rss_kib(lb.process.pid()).saturating_sub(before)) as f64 / IDLE as f64;
    eprintln!("{per_connection:.2} KiB per idle TLS connection");
    // Measured in this (debug) build: 14.3 KiB with rustls's buffered connection under
    // tokio-rustls (its 4 KiB read buffer kept for good) in a future of its own beside the
    // task's; 7.2 KiB unbuffered, served in the task's own future.
    assert!(
        per_connection <= 8.0,
        "{per_connection:.1} KiB per idle TLS connection"
    );

    // Idle, not forgotten: each still serves.
    for (tcp, tls) in idle.iter_mut().step_by(100) {
        let mut stream = rustls::Stream::new(tls, tcp);
        stream
            .write_all(b"GET /late HTTP/1.1\r\nHost: a.test\r\n\r\n")
            .unwrap();
        let mut response = Vec::new();
        let mut chunk = [0; 4096];
        while !String::from_utf8_lossy(&response).contains("web uri=/late ") {
            let n = stream.read(&mut chunk).unwrap();
            assert!(n > 0, "{}", String::from_utf8_lossy(&response));
            response.extend_from_slice(&chunk[..n]);
        }
        assert!(response.starts_with(b"HTTP/1.1 200"));
    }
}

/// Plain HTTP where a ClientHello should be, from connection after connection: each answered
/// with a TLS alert (the daemon once asked rustls for more after its alert, which read the bad
/// bytes again and failed twice: a panic in a debug build, a second alert queued in a release
/// one) and counted as a failed handshake; their log lines held to the listener's budget for
/// refusals.
#[test]
fn a_flood_of_failed_handshakes_is_answered_counted_whole_and_logged_within_a_budget() {
    const FLOOD: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let setup = Setup::new();
    let lb = setup.start(&a_test_config(
        &setup,
        server.local_addr().unwrap(),
        dir.path(),
    ));
    for i in 0..FLOOD {
        let mut client = std::net::TcpStream::connect(setup.lb).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap();
        let mut answer = Vec::new();
        let _ = client.read_to_end(&mut answer);
        // An alert record (content type 21), fatal (level 2), nothing after it.
        assert!(
            answer.len() == 7 && answer[0] == 21 && answer[5] == 2,
            "connection {i}: {answer:?}"
        );
    }
    let failed =
        "lab_lb_tls_handshakes_total{listener=\"tls\",version=\"other\",result=\"failed\"}";
    setup.until_metric(failed, FLOOD as f64, Duration::from_secs(5));
    let stderr = lb.process.stderr();
    assert!(
        !stderr.iter().any(|l| l.contains("panicked")),
        "{stderr:#?}"
    );
    let lines = stderr
        .iter()
        .filter(|l| l.contains("TLS handshake failed"))
        .count();
    assert!(
        (1..=40).contains(&lines),
        "{lines} lines for {FLOOD} failed handshakes"
    );
}
