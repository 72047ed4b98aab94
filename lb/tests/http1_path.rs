//! The HTTP/1.1 path of plain `http` listeners at its edges: one client connection moving from
//! our path to pingora's mid-stream, pipelined requests, chunked, bodiless and close-delimited
//! responses passed through intact with the server connection reused, and a kept-alive server
//! connection that the server closed being replaced without the client noticing; and a
//! connection that idles, giving its buffers back, serving on within its keep-alive timeout; and
//! idle connections holding no buffers.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::web::{curl, raw_exchange, EchoBackend};
use support::{rss_kib, Setup};

/// Reads one response (Content-Length framed, as nginx's `return` answers) off `stream`.
fn read_response(reader: &mut BufReader<&TcpStream>) -> (String, String) {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "closed: {head}");
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no length in {head}"));
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    (head, String::from_utf8(body).unwrap())
}

#[test]
fn one_connection_moves_from_our_path_to_pingoras_and_pipelined_requests_keep_their_order() {
    let web = EchoBackend::start("web");
    let (lb, stream) = debug_lb_and_client(web.address);
    let mut reader = BufReader::new(&stream);
    let mut writer = &stream;

    // Two bodiless requests in one write and one with a length (ours), then a chunked one
    // (pingora's from here on), then another bodiless one on the same connection.
    writer
        .write_all(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    for path in ["/one", "/two"] {
        let (head, body) = read_response(&mut reader);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(body.starts_with(&format!("web uri={path} ")), "{body}");
        assert!(body.contains("xff=127.0.0.1 proto=http fhost=a"), "{body}");
    }
    assert_eq!(handovers(&lb), 0, "the GETs are ours");
    // A body with a length is ours too; a chunked one is pingora's.
    writer
        .write_all(b"POST /body HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
        .unwrap();
    let (head, body) = read_response(&mut reader);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.starts_with("web uri=/body "), "{body}");
    assert_eq!(handovers(&lb), 0, "a POST with a length is ours");
    writer
        .write_all(b"POST /three HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        .unwrap();
    let (head, body) = read_response(&mut reader);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.starts_with("web uri=/three "), "{body}");
    writer
        .write_all(b"GET /four HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let (head, body) = read_response(&mut reader);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.starts_with("web uri=/four "), "{body}");
    let seen = web.seen();
    for request in [
        "GET /one",
        "GET /two",
        "POST /body HTTP/1.1 cl=5",
        "POST /three HTTP/1.1 cl=- te=chunked",
        "GET /four",
    ] {
        assert!(seen.contains(request), "{request} not in\n{seen}");
    }
    // Pingora's from the chunked POST on: one hand-over.
    assert_eq!(handovers(&lb), 1, "{:#?}", lb.process.stderr());
}

/// lab-lb at log level debug in front of `server` on an `http` listener, and a client
/// connection to it.
fn debug_lb_and_client(server: SocketAddr) -> (lab_tests::daemon_process::Started, TcpStream) {
    let setup = Setup::new();
    let lb = setup.start(&debug_log(setup.single("http", "", "", &[server])));
    let stream = TcpStream::connect(setup.lb).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    (lb, stream)
}

/// The config at log level debug, where hand-overs to pingora are logged.
fn debug_log(config: String) -> String {
    config.replacen("level = \"info\"", "level = \"debug\"", 1)
}

fn handovers(lb: &lab_tests::daemon_process::Started) -> usize {
    lb.process
        .stderr()
        .iter()
        .filter(|l| l.contains("request handed to pingora's session"))
        .count()
}

/// When a [`ScriptedServer`] closes a connection without saying so beforehand.
#[derive(Clone, Copy, PartialEq)]
enum Closing {
    Never,
    /// Right after its first response: a keep-alive timeout running out then.
    AfterFirstAnswer,
    /// When a second request arrives, unanswered: the timeout running out as it came.
    OnSecondRequest,
}

/// A server answering with scripted bytes by path, counting the connections it accepted.
struct ScriptedServer {
    address: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

fn scripted_answer(path: &str) -> &'static [u8] {
    match path {
        "/chunked" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-App: chunked\r\n\r\n5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n",
        "/empty" => b"HTTP/1.1 204 No Content\r\nX-App: empty\r\n\r\n",
        "/until-close" => b"HTTP/1.1 200 OK\r\nX-App: close\r\n\r\nall of it until the close",
        // As Apache answers: what its own hop allows, and one field of its own for that hop.
        "/hop" => b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: Upgrade, Keep-Alive, X-Hop\r\nUpgrade: h2,h2c\r\nKeep-Alive: timeout=5, max=100\r\nProxy-Connection: keep-alive\r\nX-Hop: 1\r\nX-App: hop\r\n\r\nhop",
        // A framing field named by `Connection`, to be dropped by a proxy that obeys.
        "/connection-length" => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: Content-Length\r\n\r\nhelloHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged",
        "/connection-chunked" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: transfer-encoding\r\n\r\n6\r\nforged\r\n0\r\n\r\n",
        _ => b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nX-App: length\r\n\r\nlength",
    }
}

impl ScriptedServer {
    fn start(closing: Closing) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (accepted, seen) = (connections.clone(), requests.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                accepted.fetch_add(1, Ordering::SeqCst);
                let seen = seen.clone();
                std::thread::spawn(move || Self::serve(stream, closing, &seen));
            }
        });
        Self {
            address,
            connections,
            requests,
        }
    }

    fn serve(stream: TcpStream, closing: Closing, requests: &AtomicUsize) {
        let mut reader = BufReader::new(&stream);
        let mut writer = &stream;
        for answered in 0.. {
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                return;
            }
            let mut line = String::new();
            let mut length = 0;
            while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                if let Some((name, value)) = line.split_once(':') {
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
                line.clear();
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            requests.fetch_add(1, Ordering::SeqCst);
            if answered == 1 && closing == Closing::OnSecondRequest {
                return;
            }
            let mut parts = request_line.split(' ');
            let method = parts.next().unwrap_or("");
            let path = parts.next().unwrap_or("/");
            let echo;
            let mut answer = if path == "/echo" {
                let mut text =
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n").into_bytes();
                text.extend_from_slice(&body);
                echo = text;
                &echo[..]
            } else {
                scripted_answer(path)
            };
            if method == "HEAD" {
                let end = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
                answer = &answer[..end + 4];
            }
            let close = closing == Closing::AfterFirstAnswer || path == "/until-close";
            if writer.write_all(answer).is_err() || close {
                return;
            }
        }
    }
}

#[test]
fn chunked_empty_headless_and_close_delimited_responses_pass_through_intact() {
    let server = ScriptedServer::start(Closing::Never);
    let setup = Setup::new();
    let _lb = setup.start(&setup.single("http", "", "", &[server.address]));
    let url = |path: &str| format!("http://{}{path}", setup.lb);

    let (status, headers, body) = curl(&["--raw"], &url("/chunked"));
    assert_eq!(status, 200);
    assert!(headers.contains("X-App: chunked"), "{headers}");
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{headers}"
    );
    // --raw: the chunks and the trailer exactly as the server sent them.
    assert_eq!(
        body,
        "5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n"
    );
    let (status, headers, body) = curl(&[], &url("/empty"));
    assert_eq!((status, body.as_str()), (204, ""));
    assert!(headers.contains("X-App: empty"), "{headers}");
    // A response to HEAD has no body whatever its length says: the next response follows
    // its head directly.
    let answer = raw_exchange(
        setup.lb,
        b"HEAD /length HTTP/1.1\r\nHost: a\r\n\r\nGET /length HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    let head = "HTTP/1.1 200 OK\r\nContent-Length: 6\r\nX-App: length\r\n";
    assert_eq!(
        answer,
        format!("{head}\r\n{head}connection: close\r\n\r\nlength")
    );
    let (status, headers, body) = curl(&[], &url("/until-close"));
    assert_eq!((status, body.as_str()), (200, "all of it until the close"));
    assert!(
        headers.to_ascii_lowercase().contains("connection: close"),
        "{headers}"
    );

    // Framed responses leave the server's connection reusable: five requests of one client
    // connection, each kind, over one more server connection at most.
    let before = server.connections.load(Ordering::SeqCst);
    let urls: Vec<String> = ["/chunked", "/empty", "/length", "/chunked", "/length"]
        .iter()
        .map(|p| url(p))
        .collect();
    let output = std::process::Command::new("curl")
        .args(["--silent", "--max-time", "10"])
        .args(&urls)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "hello, worldlengthhello, worldlength"
    );
    assert!(
        server.connections.load(Ordering::SeqCst) - before <= 1,
        "server connections: {} before, {} after",
        before,
        server.connections.load(Ordering::SeqCst)
    );
}

/// Fields that describe the server's hop (RFC 9110 §7.6.1) stay there, on either path: those
/// its `Connection` names, `Keep-Alive` (the server's idle timeout, not the proxy's),
/// `Proxy-Connection`, and `Upgrade` offered outside a 101.
#[test]
fn hop_by_hop_response_fields_stay_with_the_servers_hop() {
    let server = ScriptedServer::start(Closing::Never);
    let setup = Setup::new();
    let _lb = setup.start(&setup.single("http", "", "", &[server.address]));
    let requests: [(&str, &[u8]); 2] = [
        (
            "ours",
            b"GET /hop HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        ),
        // HTTP/1.0 is pingora's.
        ("pingora's", b"GET /hop HTTP/1.0\r\nHost: a\r\n\r\n"),
    ];
    for (path, request) in requests {
        let answer = raw_exchange(setup.lb, request).to_ascii_lowercase();
        assert!(
            answer.starts_with("http/1.1 200 ok\r\n"),
            "{path}:\n{answer}"
        );
        assert!(answer.contains("\r\nx-app: hop\r\n"), "{path}:\n{answer}");
        assert!(answer.ends_with("\r\n\r\nhop"), "{path}:\n{answer}");
        for field in ["x-hop", "keep-alive:", "proxy-connection", "upgrade", "h2c"] {
            assert!(
                !answer.contains(field),
                "{path} passed on {field}:\n{answer}"
            );
        }
    }
}

/// An HTTP/1.0 client (pingora's path) knows no chunked coding: a chunked response reaches it
/// as the plain body, ended by the close, even when it asked to keep the connection.
#[test]
fn a_chunked_response_reaches_an_http10_client_as_a_plain_body() {
    let server = ScriptedServer::start(Closing::Never);
    let setup = Setup::new();
    let _lb = setup.start(&setup.single("http", "", "", &[server.address]));
    let answer = raw_exchange(
        setup.lb,
        b"GET /chunked HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
    );
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(head.contains("X-App: chunked"), "{answer}");
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "{answer}"
    );
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert_eq!(body, "hello, world");

    // A body ended by the server's close: ended by the close for the client too, not turned
    // into chunks on a connection kept open.
    let started = std::time::Instant::now();
    let answer = raw_exchange(
        setup.lb,
        b"GET /until-close HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
    );
    assert!(started.elapsed() < Duration::from_secs(2), "{answer}");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "{answer}"
    );
    assert_eq!(body, "all of it until the close");
}

#[test]
fn a_kept_alive_server_connection_the_server_closed_is_replaced_unseen() {
    // Closed after each answer: five requests seen. Closed on the next request: each request
    // after the first goes out on the kept connection first, fails, and goes again on a new one.
    for (closing, requests) in [
        (Closing::AfterFirstAnswer, 5),
        (Closing::OnSecondRequest, 9),
    ] {
        let server = ScriptedServer::start(closing);
        let setup = Setup::new();
        let _lb = setup.start(&setup.single("http", "", "", &[server.address]));
        for i in 0..5 {
            let (status, _, body) = curl(&[], &format!("http://{}/length", setup.lb));
            assert_eq!((status, body.as_str()), (200, "length"), "request {i}");
            // Let the server's FIN reach the pool, or not: both must work.
            if i % 2 == 0 {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        assert_eq!(server.connections.load(Ordering::SeqCst), 5);
        assert_eq!(server.requests.load(Ordering::SeqCst), requests);
        let metrics = lab_tests::http::get(setup.metrics, "/metrics", &[]).body;
        assert!(
            !metrics.contains("lab_lb_http_errors_total{"),
            "no error of the proxy's own:\n{metrics}"
        );
    }
}

#[test]
fn a_head_trickling_in_is_cut_off_at_the_body_timeout() {
    let web = EchoBackend::start("web");
    let setup = Setup::new();
    let _lb = setup.start(&setup.single(
        "http",
        "[listener.http]\nclient_body_timeout = \"1s\"",
        "",
        &[web.address],
    ));
    let mut stream = TcpStream::connect(setup.lb).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    let started = std::time::Instant::now();
    // One header byte every 200 ms: each read is quick, the head never ends.
    let closed = loop {
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "still open after {:?}",
            started.elapsed()
        );
        if stream.write_all(b"X").is_err() {
            break started.elapsed();
        }
        let mut byte = [0u8; 1];
        match stream.read(&mut byte) {
            Ok(0) => break started.elapsed(),
            Ok(_) => panic!("an answer to half a head"),
            Err(_) => {}
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(closed >= Duration::from_millis(900), "{closed:?}");
    assert!(!web.seen().contains("GET"), "{}", web.seen());
}

#[test]
fn an_https_connection_speaking_http11_moves_to_pingora_mid_stream_too() {
    let dir = tempfile::tempdir().unwrap();
    let pair = support::certs::make(dir.path(), "a", "a.test", "first");
    let web = EchoBackend::start("web");
    let setup = Setup::new();
    let lb = setup.start(&debug_log(setup.config(&format!(
        "[[listener]]\nname = \"tls\"\nlisten = \"{}\"\nmode = \"https\"\nbackend = \"web\"\n\
         [listener.http]\n[[listener.http.cert]]\ncert = \"{}\"\nkey = \"{}\"\n\
         [[backend]]\nname = \"web\"\nserver = [{{ address = \"{}\" }}]\n",
        setup.lb,
        pair.cert.display(),
        pair.key.display(),
        web.address
    ))));
    let url = |path: &str| format!("https://a.test:{}{path}", setup.lb.port());
    let resolve = format!("a.test:{}:127.0.0.1", setup.lb.port());
    // One curl, one TLS connection (HTTP/1.1 by ALPN): GET (ours), POST with a chunked body
    // (pingora's), GET (pingora's, the connection is its now).
    let mut command = std::process::Command::new("curl");
    command.args(["--silent", "--max-time", "10"]);
    // The first transfer alone first: ours, no hand-over.
    let first = std::process::Command::new("curl")
        .args(["--silent", "--http1.1", "--insecure", "--resolve", &resolve])
        .arg(url("/zero"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&first.stdout).starts_with("web uri=/zero "));
    assert_eq!(handovers(&lb), 0, "{:#?}", lb.process.stderr());
    for (i, (method_args, path)) in [
        (&[][..], "/first"),
        (
            &["--data", "hello", "--header", "Transfer-Encoding: chunked"][..],
            "/second",
        ),
        (&[][..], "/third"),
    ]
    .into_iter()
    .enumerate()
    {
        if i > 0 {
            command.arg("--next");
        }
        command
            .args(["--http1.1", "--insecure", "--resolve", &resolve])
            .args([
                "--write-out",
                "connects=%{num_connects} http=%{http_version}\n",
            ])
            .args(method_args)
            .arg(url(path));
    }
    let output = command.output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    // Each body line, then curl's line for that transfer. One TLS connection for all three:
    // only the first transfer connected.
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    for (i, path) in ["/first", "/second", "/third"].into_iter().enumerate() {
        let (answer, transfer) = (lines[2 * i], lines[2 * i + 1]);
        assert!(answer.starts_with(&format!("web uri={path} ")), "{text}");
        assert!(answer.contains("proto=https fhost=a.test"), "{text}");
        let connects = if i == 0 { 1 } else { 0 };
        assert_eq!(transfer, format!("connects={connects} http=1.1"), "{text}");
    }
    let seen = web.seen();
    for request in ["GET /first", "POST /second", "GET /third"] {
        assert!(seen.contains(request), "{request} not in\n{seen}");
    }
    assert_eq!(handovers(&lb), 1, "{:#?}", lb.process.stderr());
}

#[test]
fn request_bodies_stream_through_whole_and_the_next_request_follows() {
    let server = ScriptedServer::start(Closing::Never);
    let (lb, stream) = debug_lb_and_client(server.address);
    let mut reader = BufReader::new(&stream);
    let mut writer = &stream;

    // The body after the head, in two pieces a moment apart.
    writer
        .write_all(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhello")
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    writer.write_all(b"world").unwrap();
    assert_eq!(read_response(&mut reader).1, "helloworld");

    // A body and the next request in one write: the body ends where its length says.
    writer
        .write_all(
            b"PUT /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /length HTTP/1.1\r\nHost: a\r\n\r\n",
        )
        .unwrap();
    assert_eq!(read_response(&mut reader).1, "abc");
    assert_eq!(read_response(&mut reader).1, "length");

    // Larger than any buffer on the way.
    let big: String = (0..200_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let head = format!(
        "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
        big.len()
    );
    writer.write_all(head.as_bytes()).unwrap();
    writer.write_all(big.as_bytes()).unwrap();
    assert!(
        read_response(&mut reader).1 == big,
        "the large body came back changed"
    );

    assert_eq!(handovers(&lb), 0, "{:#?}", lb.process.stderr());
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
    assert_eq!(server.requests.load(Ordering::SeqCst), 4);
}

/// A server answering `/flood` with a body far bigger than any socket buffers (written until
/// the proxy stops taking it, at most for 30 s) and anything else with `ok`.
fn flood_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                loop {
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut line = String::new();
                    while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                        line.clear();
                    }
                    if !request_line.contains(" /flood ") {
                        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n";
                        if stream.write_all(ok).is_err() {
                            return;
                        }
                        continue;
                    }
                    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n";
                    let _ = stream.write_all(head);
                    let chunk = vec![b'x'; 64 * 1024];
                    let started = std::time::Instant::now();
                    while started.elapsed() < Duration::from_secs(30) {
                        if stream.write_all(&chunk).is_err() {
                            return;
                        }
                    }
                    return;
                }
            });
        }
    });
    address
}

/// A client that stops reading a big response: after client_send_timeout the proxy closes its
/// connection and gives back its request slot (max_requests 1) and the server's connection.
fn a_client_not_reading_is_let_go_after_the_send_timeout(request: &[u8], path: &str) {
    let server = flood_server();
    let setup = Setup::new();
    let lb = setup.start(&debug_log(setup.single(
        "http",
        "[listener.http]\nclient_send_timeout = \"1s\"\nmax_requests = 1",
        "",
        &[server],
    )));
    let stalled = TcpStream::connect(setup.lb).unwrap();
    (&stalled).write_all(request).unwrap();
    // Its answer has begun (so it holds the one slot); from here on it reads nothing.
    stalled
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut begun = [0u8; 12];
    (&stalled).read_exact(&mut begun).unwrap();
    assert_eq!(&begun, b"HTTP/1.1 200");
    let status = |answer: String| answer.get(9..12).unwrap_or("").to_owned();
    let next = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    assert_eq!(
        status(raw_exchange(setup.lb, next)),
        "503",
        "the stalled request holds the one slot"
    );
    let started = std::time::Instant::now();
    loop {
        let answer = raw_exchange(setup.lb, next);
        if status(answer.clone()) == "200" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "slot still held after {:?}: {answer}",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // What the stalled client has not read yet is there to read, then the end.
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0usize;
    loop {
        match (&stalled).read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the stalled connection was not closed ({got} bytes read): {e}"),
        }
    }
    assert!(got < 1 << 30, "the whole body went through");
    assert_eq!(
        handovers(&lb) > 0,
        path == "pingora",
        "served on {path}'s path"
    );
}

#[test]
fn a_client_not_reading_is_let_go_after_the_send_timeout_on_our_path() {
    a_client_not_reading_is_let_go_after_the_send_timeout(
        b"GET /flood HTTP/1.1\r\nHost: a\r\n\r\n",
        "our",
    );
}

#[test]
fn a_client_not_reading_is_let_go_after_the_send_timeout_on_pingoras_path() {
    // HTTP/1.0 is pingora's to serve.
    a_client_not_reading_is_let_go_after_the_send_timeout(
        b"GET /flood HTTP/1.0\r\nHost: a\r\n\r\n",
        "pingora",
    );
}

/// A request whose `Connection` names a framing field would reach the server without it while
/// its body still followed: the body, a request of the attacker's, would read as the next
/// request on the pooled server connection, past routing and the forwarding fields (request
/// smuggling). Framing fields are never hop-by-hop (RFC 9110 §7.6.1): such a request is a 400
/// on either path, nothing reaches the server, and the pooled connection serves the next client
/// its own answer.
#[test]
fn a_connection_field_naming_the_framing_is_refused_and_nothing_is_smuggled() {
    let server = ScriptedServer::start(Closing::Never);
    let setup = Setup::new();
    let _lb = setup.start(&setup.single("http", "", "", &[server.address]));
    let next_client = || {
        raw_exchange(
            setup.lb,
            b"GET /length HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
    };
    // A server connection in the pool first, for the smuggled request to land on.
    assert!(next_client().ends_with("\r\n\r\nlength"));
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);

    // The smuggled request asks for another answer than the next client's.
    let smuggled = "GET /chunked HTTP/1.1\r\nHost: a\r\n\r\n";
    let chunked = format!("{:x}\r\n{smuggled}\r\n0\r\n\r\n", smuggled.len());
    let attacks = [
        // Our path's (HTTP/1.1 with a length).
        ("ours", "HTTP/1.1", "Content-Length", smuggled.to_owned()),
        (
            "ours, in a list",
            "HTTP/1.1",
            "keep-alive, content-length",
            smuggled.to_owned(),
        ),
        // Pingora's (HTTP/1.0, or a chunked body).
        (
            "pingora's",
            "HTTP/1.0",
            "Content-Length",
            smuggled.to_owned(),
        ),
        (
            "pingora's, chunked",
            "HTTP/1.1",
            "Transfer-Encoding",
            chunked,
        ),
    ];
    for (path, version, connection, body) in attacks {
        let framing = if body.starts_with("GET") {
            format!("Content-Length: {}", body.len())
        } else {
            "Transfer-Encoding: chunked".to_owned()
        };
        let request = format!(
            "POST /echo {version}\r\nHost: a\r\nConnection: {connection}\r\n{framing}\r\n\r\n{body}"
        );
        let answer = raw_exchange(setup.lb, request.as_bytes());
        assert!(answer.starts_with("HTTP/1.1 400 "), "{path}:\n{answer}");
        assert_eq!(
            server.requests.load(Ordering::SeqCst),
            1,
            "{path}: the server saw a request"
        );
        let answer = next_client();
        assert!(
            answer.ends_with("\r\n\r\nlength"),
            "{path}: the next client got\n{answer}"
        );
        assert_eq!(
            server.requests.load(Ordering::SeqCst),
            2,
            "{path}: the server saw more than the next client's request"
        );
        server.requests.store(1, Ordering::SeqCst);
    }
}

/// A response whose `Connection` names a framing field would reach the client without it, and
/// the client would take what follows for the body, or the body for the next response: the
/// server is broken, a 502, on either path.
#[test]
fn a_response_whose_connection_names_the_framing_is_a_502() {
    let server = ScriptedServer::start(Closing::Never);
    let setup = Setup::new();
    let _lb = setup.start(&setup.single("http", "", "", &[server.address]));
    let requests: [(&str, &[u8]); 3] = [
        (
            "ours",
            b"GET /connection-length HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        ),
        (
            "ours, chunked",
            b"GET /connection-chunked HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        ),
        (
            "pingora's",
            b"GET /connection-length HTTP/1.0\r\nHost: a\r\n\r\n",
        ),
    ];
    for (path, request) in requests {
        let answer = raw_exchange(setup.lb, request);
        assert!(answer.starts_with("HTTP/1.1 502 "), "{path}:\n{answer}");
        assert!(!answer.contains("forged"), "{path}:\n{answer}");
    }
}

#[test]
fn a_connection_idle_past_its_buffers_serves_on_and_its_keepalive_timeout_still_holds() {
    let web = EchoBackend::start("web");
    let setup = Setup::new();
    let _lb = setup.start(&setup.single(
        "http",
        "http = { keepalive_timeout = \"5s\" }",
        "",
        &[web.address],
    ));
    let stream = TcpStream::connect(setup.lb).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(&stream);
    let mut writer = &stream;

    // Idle past the moment its buffers are given back (2 s), then a request on the same
    // connection, bigger than the first read's room (1 KiB).
    writer
        .write_all(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    assert!(read_response(&mut reader).1.starts_with("web uri=/one "));
    std::thread::sleep(Duration::from_millis(3000));
    let long_path = format!("/{}", "x".repeat(3000));
    writer
        .write_all(format!("GET {long_path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
        .unwrap();
    let (head, body) = read_response(&mut reader);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.starts_with(&format!("web uri={long_path} ")), "{body}");

    // The keep-alive timeout counts from the end of the last response, the release of the
    // buffers included: closed at 5 s, not 2 s + 5 s.
    let started = std::time::Instant::now();
    let mut byte = [0u8; 1];
    assert_eq!(reader.read(&mut byte).unwrap(), 0, "closed when idle");
    let idle = started.elapsed();
    assert!(
        idle > Duration::from_millis(4500) && idle < Duration::from_millis(6500),
        "closed after {idle:?}"
    );
}

#[test]
fn an_idle_client_connection_costs_its_state_not_buffers() {
    // Clients connected that have sent nothing yet (or nothing for a while): a connection takes
    // read buffers when bytes come, so a few thousand idle clients fit in the lb container's
    // memory (nginx's idle connection costs ~0.5 KiB, HAProxy's ~1 KiB).
    // The allocator takes memory from the system in pages and segments per worker thread, so
    // the first connections on each thread pay for more than their own state: a first batch
    // warms both workers, and the cost is read from the growth over the next, larger one.
    const WARM: usize = 1000;
    const IDLE: usize = 2000;
    let web = EchoBackend::start("web");
    let setup = Setup::new();
    let lb = setup.start(&setup.single(
        "http",
        "max_connections_per_client = 4000\nhttp = { keepalive_timeout = \"60s\" }",
        "",
        &[web.address],
    ));
    let url = format!("http://{}/", setup.lb);
    assert_eq!(curl(&[], &url).0, 200);
    let active = "lab_lb_connections_active{listener=\"web\"}";
    let connect = |count: usize| -> Vec<TcpStream> {
        (0..count)
            .map(|_| TcpStream::connect(setup.lb).unwrap())
            .collect()
    };
    let mut idle = connect(WARM);
    setup.until_metric(active, WARM as f64, Duration::from_secs(20));
    let before = rss_kib(lb.process.pid());
    idle.extend(connect(IDLE));
    setup.until_metric(active, (WARM + IDLE) as f64, Duration::from_secs(20));
    let per_connection = (rss_kib(lb.process.pid()).saturating_sub(before)) as f64 / IDLE as f64;
    eprintln!("{per_connection:.2} KiB per idle connection");
    // Measured in this (debug) build: 10.5 KiB when each connection's task carried the TLS
    // handshake's and a request's state and a 1 KiB read buffer, 2.3-4.3 KiB without; 2.05
    // once a new connection's first read went to stack room (tokio takes an accepted socket
    // for readable: a wait on readiness alone took a 1 KiB buffer at once) and the request
    // path's state is boxed when bytes come.
    assert!(
        per_connection < 3.0,
        "{per_connection:.1} KiB per idle connection"
    );

    // Idle, not forgotten: each still serves.
    for stream in idle.iter().step_by(100) {
        get_from_echo(stream, "/late");
    }
}

/// A GET of `path` on `stream`, answered 200 by an [`EchoBackend`] named "web".
fn get_from_echo(stream: &TcpStream, path: &str) {
    let mut writer = stream;
    writer
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
        .unwrap();
    let (head, body) = read_response(&mut BufReader::new(stream));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.starts_with(&format!("web uri={path} ")), "{body}");
}

#[test]
fn a_keepalive_connection_idle_past_its_buffers_gives_back_what_its_requests_took() {
    // Clients that made a request and then went quiet (a browser's spare connections, a
    // monitoring agent's between scrapes): past the moment a connection gives its buffers back
    // (2 s), what it held for requests (buffers, the request path's state, its timer) goes back
    // to the allocator, and the next batch of busy connections is served from it. A batch
    // makes its requests and idles; a second as large does the same: the memory the second
    // adds is what its idle connections keep, not what their requests took (~20 KiB each).
    // One worker thread: the allocator keeps what a thread frees for that thread, so with
    // two the second batch's requests may be served from memory the first's did not free.
    const BATCH: usize = 1500;
    let web = EchoBackend::start("web");
    let setup = Setup::new();
    let lb = setup.start(&setup.single(
        "http",
        "max_connections_per_client = 4000\nhttp = { keepalive_timeout = \"60s\" }",
        "[runtime]\nworker_threads = 1",
        &[web.address],
    ));
    let active = "lab_lb_connections_active{listener=\"web\"}";
    let connect = |count: usize| -> Vec<TcpStream> {
        (0..count)
            .map(|_| {
                let stream = TcpStream::connect(setup.lb).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                get_from_echo(&stream, "/first");
                stream
            })
            .collect()
    };
    let mut idle = connect(BATCH);
    std::thread::sleep(Duration::from_secs(3));
    let before = rss_kib(lb.process.pid());
    idle.extend(connect(BATCH));
    setup.until_metric(active, (2 * BATCH) as f64, Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(3));
    let per_connection = (rss_kib(lb.process.pid()).saturating_sub(before)) as f64 / BATCH as f64;
    eprintln!("{per_connection:.2} KiB per connection idle after a request");
    assert!(
        per_connection < 6.0,
        "{per_connection:.1} KiB per connection idle after a request"
    );

    // Idle, not forgotten: each still serves.
    for stream in idle.iter().step_by(100) {
        get_from_echo(stream, "/late");
    }
}
