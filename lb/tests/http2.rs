//! lab-lb's own HTTP/2 path: gRPC-style trailers, the defences (rapid reset, CONTINUATION
//! flood, floods of frames that do no work, a client that reads nothing), GOAWAY on SIGTERM with the streams in flight finished, a server failing one stream
//! while the others complete, and h2c by prior knowledge only where it is on. Real clients
//! (curl, nghttp) where they can say what a user checks; a small raw-frame client written here
//! for what no well-behaved client sends.

mod support;

use nix::sys::signal::Signal;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};
use support::certs;
use support::{rss_kib, Setup};

/// The daemon's log at debug level: its lines say which path served a connection.
fn debug_log(config: String) -> String {
    config.replace("level = \"info\"", "level = \"debug\"")
}

/// An `http` listener (h2c by prior knowledge on when `h2c`) in front of `server`.
fn h2c_config(setup: &Setup, server: SocketAddr, h2c: bool) -> String {
    let listener = if h2c {
        "[listener.http]\nh2c = true"
    } else {
        ""
    };
    debug_log(setup.single("http", listener, "", &[server]))
}

/// An `https` listener for `a.test` (certificate made in `dir`) in front of `server`.
fn tls_config(setup: &Setup, server: SocketAddr, dir: &std::path::Path) -> String {
    let a = certs::make(dir, "a", "a.test", "first");
    let listener = format!(
        "[listener.http]\n[[listener.http.cert]]\ncert = \"{}\"\nkey = \"{}\"\nnames = [\"a.test\"]",
        a.cert.display(),
        a.key.display()
    );
    debug_log(setup.single("https", &listener, "", &[server]))
}

/// An HTTP/1.1 server on a thread: each request head it reads is answered by `answer` (given
/// the request line and the body it read), which says too whether the connection closes after.
fn backend(answer: fn(&str, &[u8]) -> (Vec<u8>, bool)) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut got = Vec::new();
                let mut buf = [0u8; 16384];
                loop {
                    let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match stream.read(&mut buf) {
                            Ok(n @ 1..) => got.extend_from_slice(&buf[..n]),
                            _ => return,
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&got[..end]).into_owned();
                    let mut rest = got.split_off(end + 4);
                    let body = read_body(&head, &mut rest, &mut stream);
                    got = rest;
                    let line = head.lines().next().unwrap_or("").to_owned();
                    let (bytes, close) = answer(&line, &body);
                    if stream.write_all(&bytes).is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    address
}

/// The request body after `head`: by its length, or its chunks (decoded).
fn read_body(head: &str, rest: &mut Vec<u8>, stream: &mut TcpStream) -> Vec<u8> {
    let lower = head.to_ascii_lowercase();
    let mut fill = |rest: &mut Vec<u8>| {
        let mut buf = [0u8; 16384];
        match stream.read(&mut buf) {
            Ok(n @ 1..) => {
                rest.extend_from_slice(&buf[..n]);
                true
            }
            _ => false,
        }
    };
    if let Some(length) = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        while rest.len() < length && fill(rest) {}
        let body: Vec<u8> = rest.drain(..length.min(rest.len())).collect();
        return body;
    }
    if !lower.contains("transfer-encoding: chunked") {
        return Vec::new();
    }
    let mut body = Vec::new();
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            if !fill(rest) {
                return body;
            }
            continue;
        };
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap_or("0"), 16)
            .unwrap_or(0);
        while rest.len() < eol + 2 + size + 2 && fill(rest) {}
        if size == 0 {
            // The last chunk and the empty trailer section.
            while !rest.windows(4).any(|w| w == b"\r\n\r\n") && fill(rest) {}
            let end = rest.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0);
            rest.drain(..end + 4);
            return body;
        }
        body.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
        rest.drain(..eol + 2 + size + 2);
    }
}

/// A gRPC-style echo: the body back, chunked, and the status in trailers.
fn grpc_echo(_line: &str, body: &[u8]) -> (Vec<u8>, bool) {
    let mut out = b"HTTP/1.1 200 OK\r\ncontent-type: application/grpc\r\n\
                    transfer-encoding: chunked\r\ntrailer: grpc-status, grpc-message\r\n\r\n"
        .to_vec();
    out.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(b"\r\n0\r\ngrpc-status: 0\r\ngrpc-message: echoed\r\n\r\n");
    (out, false)
}

/// A server whose `/broken` breaks off inside its body (and its connection); the rest answer
/// `ok` after `/slow`'s second.
fn flaky(line: &str, _body: &[u8]) -> (Vec<u8>, bool) {
    if line.contains("/broken") {
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten..";
        return (head.to_vec(), true);
    }
    if line.contains("/empty") {
        return (
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec(),
            false,
        );
    }
    if line.contains("/slow") {
        std::thread::sleep(Duration::from_millis(1500));
    }
    (
        b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n".to_vec(),
        false,
    )
}

#[test]
fn grpc_style_trailers_and_te_reach_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let server = backend(grpc_echo);
    let setup = Setup::new();
    let lb = setup.start(&tls_config(&setup, server, dir.path()));
    let request = dir.path().join("request");
    std::fs::write(&request, b"\0\0\0\0\x05hello").unwrap();
    let out = Command::new("nghttp")
        .args([
            "-v",
            "-H",
            "te: trailers",
            "-H",
            "content-type: application/grpc",
            "-d",
        ])
        .arg(&request)
        .arg(format!(
            "https://127.0.0.1:{}/echo.Echo/Say",
            setup.lb.port()
        ))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(":status: 200"), "{text}");
    // The body came back whole; the trailers in a HEADERS frame after the data, ending the
    // stream.
    assert!(text.contains("\0\0\0\0\x05hello"), "{text}");
    let data = text.find("recv DATA frame").expect(&text);
    let after = &text[data..];
    let status = after.find(") grpc-status: 0").expect(&text);
    assert!(after[status..].contains("grpc-message: echoed"), "{text}");
    assert!(after[status..].contains("END_STREAM"), "{text}");
    assert!(lb
        .process
        .stderr()
        .iter()
        .any(|l| l.contains("h2 connection on our own path")));
}

/// A client speaking h2 frame by frame over TCP (h2c by prior knowledge).
struct RawH2 {
    stream: TcpStream,
    read: Vec<u8>,
}

/// A frame as read: type, flags, stream, payload.
type Frame = (u8, u8, u32, Vec<u8>);

/// A frame as it goes on the wire.
fn encode(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut frame = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const PRIORITY: u8 = 2;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const WINDOW_UPDATE: u8 = 8;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 1;
const END_HEADERS: u8 = 4;

impl RawH2 {
    fn connect(address: SocketAddr) -> Self {
        let stream = TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut raw = Self {
            stream,
            read: Vec::new(),
        };
        raw.stream
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .unwrap();
        raw.frame(SETTINGS, 0, 0, &[]).unwrap();
        raw
    }

    fn frame(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(&encode(kind, flags, stream, payload))
    }

    /// A GET of `path` on `stream`, its header block in one HEADERS frame (HPACK literals
    /// without indexing: no table kept).
    fn get(&mut self, stream: u32, path: &str) -> std::io::Result<()> {
        let mut block = vec![0x82, 0x86]; // :method GET, :scheme http
        block.push(0x04); // :path, literal
        block.push(path.len() as u8);
        block.extend_from_slice(path.as_bytes());
        block.extend_from_slice(&[0x01, 6]); // :authority, literal
        block.extend_from_slice(b"a.test");
        self.frame(HEADERS, END_STREAM | END_HEADERS, stream, &block)
    }

    /// The next frame the server sent (its SETTINGS acknowledged); None at the end of the
    /// connection.
    fn next(&mut self) -> Option<Frame> {
        let frame = self.read_frame()?;
        if frame.0 == SETTINGS && frame.1 & 1 == 0 {
            let _ = self.frame(SETTINGS, 1, 0, &[]);
        }
        Some(frame)
    }

    /// The next frame the server sent, unanswered; None at the end of the connection.
    fn read_frame(&mut self) -> Option<Frame> {
        loop {
            if self.read.len() >= 9 {
                let len = (self.read[0] as usize) << 16
                    | (self.read[1] as usize) << 8
                    | self.read[2] as usize;
                if self.read.len() >= 9 + len {
                    let head: Vec<u8> = self.read.drain(..9).collect();
                    let payload: Vec<u8> = self.read.drain(..len).collect();
                    let stream =
                        u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & !(1 << 31);
                    return Some((head[3], head[4], stream, payload));
                }
            }
            let mut buf = [0u8; 65536];
            match self.stream.read(&mut buf) {
                Ok(n @ 1..) => self.read.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                _ => return None,
            }
        }
    }

    /// Every frame until the server closes the connection.
    fn until_closed(&mut self) -> Vec<Frame> {
        std::iter::from_fn(|| self.next()).collect()
    }
}

/// The error code of the GOAWAY among `frames`.
fn goaway_code(frames: &[Frame]) -> Option<u32> {
    frames
        .iter()
        .rev()
        .find(|f| f.0 == GOAWAY)
        .map(|f| u32::from_be_bytes([f.3[4], f.3[5], f.3[6], f.3[7]]))
}

/// The daemon's CPU time so far (user and system) and its resident memory in KiB.
fn cpu_and_rss(pid: u32) -> (Duration, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    (Duration::from_millis(ticks * 10), rss_kib(pid))
}

/// CVE-2023-44487: a client opening streams and resetting each at once (10,000 of them) is
/// disconnected with ENHANCE_YOUR_CALM long before, at little cost to the daemon; others are
/// served meanwhile and after.
#[test]
fn rapid_reset_clients_are_disconnected() {
    let server = backend(flaky);
    let setup = Setup::new();
    let lb = setup.start(&h2c_config(&setup, server, true));
    let pid = lb.process.pid();
    let (cpu_before, rss_before) = cpu_and_rss(pid);
    let mut attacker = RawH2::connect(setup.lb);
    let mut sent = 0;
    for i in 0..10_000u32 {
        let stream = 2 * i + 1;
        let reset = attacker
            .get(stream, "/slow")
            .and_then(|()| attacker.frame(RST_STREAM, 0, stream, &8u32.to_be_bytes()));
        if reset.is_err() {
            break;
        }
        sent += 1;
    }
    let frames = attacker.until_closed();
    let (cpu_after, rss_after) = cpu_and_rss(pid);
    assert_eq!(
        goaway_code(&frames),
        Some(11),
        "ENHANCE_YOUR_CALM after {sent} resets"
    );
    let answered = frames.iter().filter(|f| f.0 == HEADERS).count();
    assert!(answered < 200, "{answered} streams answered");
    let cpu = cpu_after - cpu_before;
    assert!(cpu < Duration::from_secs(2), "{cpu:?} of CPU");
    assert!(
        rss_after < rss_before + 50 * 1024,
        "RSS {rss_before} KiB -> {rss_after} KiB"
    );
    // The daemon serves on.
    let mut client = RawH2::connect(setup.lb);
    client.get(1, "/after").unwrap();
    let served = std::iter::from_fn(|| client.next())
        .find(|f| f.0 == DATA && f.2 == 1)
        .expect("no answer after the attack");
    assert_eq!(served.3, b"ok\n");
}

/// CONTINUATION flood: a header block that never ends is refused once it is over the header
/// list limit, the connection closed, the daemon's memory bounded.
#[test]
fn continuation_floods_are_cut_off() {
    let server = backend(flaky);
    let setup = Setup::new();
    let lb = setup.start(&h2c_config(&setup, server, true));
    let (_, rss_before) = cpu_and_rss(lb.process.pid());
    let mut attacker = RawH2::connect(setup.lb);
    // Literal fields without indexing, 1 KiB values: 16 per 16 KiB frame.
    let mut field = vec![0x00, 5];
    field.extend_from_slice(b"x-pad");
    field.extend_from_slice(&[0x7f, (1024 - 127) as u8 | 0x80, 7]);
    field.extend_from_slice(&[b'a'; 1024]);
    let frame: Vec<u8> = field.repeat(15);
    let mut block = vec![0x82, 0x86, 0x84, 0x01, 6];
    block.extend_from_slice(b"a.test");
    attacker.frame(HEADERS, END_STREAM, 1, &block).unwrap();
    let mut sent = 0usize;
    // 64 MiB of header block, if the daemon let it come.
    for _ in 0..4096 {
        if attacker.frame(CONTINUATION, 0, 1, &frame).is_err() {
            break;
        }
        sent += frame.len();
    }
    let frames = attacker.until_closed();
    let (_, rss_after) = cpu_and_rss(lb.process.pid());
    assert!(
        goaway_code(&frames).is_some_and(|code| code != 0),
        "{:?} after {sent} bytes",
        goaway_code(&frames)
    );
    assert!(sent < 16 << 20, "{sent} bytes of header block taken");
    assert!(
        rss_after < rss_before + 50 * 1024,
        "RSS {rss_before} KiB -> {rss_after} KiB"
    );
}

/// SIGTERM: the connection is told to go away (GOAWAY) and its streams in flight are answered
/// whole before it closes.
#[test]
fn goaway_on_sigterm_finishes_the_streams_in_flight() {
    let server = backend(flaky);
    let setup = Setup::new();
    let mut lb = setup.start(&h2c_config(&setup, server, true));
    let mut client = RawH2::connect(setup.lb);
    for stream in [1, 3, 5] {
        client.get(stream, "/slow").unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    lb.process.signal(Signal::SIGTERM);
    let frames = client.until_closed();
    assert_eq!(goaway_code(&frames), Some(0), "{frames:?}");
    for stream in [1, 3, 5] {
        let ended = frames
            .iter()
            .any(|f| f.0 == DATA && f.2 == stream && f.1 & END_STREAM != 0 && f.3 == b"ok\n");
        assert!(ended, "stream {stream} not answered: {frames:?}");
    }
    assert!(lb.process.wait_exit(Duration::from_secs(10)).success());
}

/// A server breaking off inside one response resets that stream (INTERNAL_ERROR, the head
/// being out); the connection's other streams are answered (an empty body's with its head).
#[test]
fn a_server_failing_one_stream_resets_it_and_the_others_complete() {
    let server = backend(flaky);
    let setup = Setup::new();
    let _lb = setup.start(&h2c_config(&setup, server, true));
    let mut client = RawH2::connect(setup.lb);
    client.get(1, "/ok").unwrap();
    client.get(3, "/broken").unwrap();
    client.get(5, "/ok").unwrap();
    client.get(7, "/empty").unwrap();
    let mut reset = None;
    let mut done = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while (reset.is_none() || done.len() < 3) && Instant::now() < deadline {
        let Some(frame) = client.next() else { break };
        match frame {
            (RST_STREAM, _, stream, payload) => {
                reset = Some((
                    stream,
                    u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]),
                ));
            }
            (DATA, flags, stream, payload) if flags & END_STREAM != 0 && payload == b"ok\n" => {
                done.push(stream)
            }
            (HEADERS, flags, stream, _) if flags & END_STREAM != 0 => done.push(stream),
            _ => {}
        }
    }
    assert_eq!(
        reset,
        Some((3, 2)),
        "RST_STREAM INTERNAL_ERROR on the broken stream"
    );
    done.sort();
    assert_eq!(done, [1, 5, 7]);
}

/// h2c by prior knowledge: served on our path where `h2c` is on, refused where it is off.
#[test]
fn h2c_prior_knowledge_only_where_it_is_on() {
    let server = backend(flaky);
    for on in [true, false] {
        let setup = Setup::new();
        let lb = setup.start(&h2c_config(&setup, server, on));
        let out = Command::new("curl")
            .args(["--silent", "--http2-prior-knowledge", "--max-time", "5"])
            .args(["--write-out", "%{http_code} %{http_version}"])
            .arg(format!("http://127.0.0.1:{}/ok", setup.lb.port()))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let ours = lb
            .process
            .stderr()
            .iter()
            .any(|l| l.contains("h2 connection on our own path"));
        if on {
            assert_eq!(text, "ok\n200 2", "h2c on");
            assert!(ours);
        } else {
            assert!(!text.ends_with("200 2"), "h2c off: {text}");
            assert!(!ours);
        }
    }
}

/// Frames in each flood: far more than a connection's allowance, sent in well under a second.
const FLOOD: u32 = 100_000;

/// `path` fetched over h2c by curl on a connection of its own: the body, then the status.
fn h2c_get(lb: SocketAddr, path: &str) -> String {
    let out = Command::new("curl")
        .args(["--silent", "--http2-prior-knowledge", "--max-time", "5"])
        .args(["--write-out", "%{http_code}"])
        .arg(format!("http://127.0.0.1:{}{path}", lb.port()))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Who closes a flood: lab-lb's count of frames that do no work, or the h2 layer's own limits.
#[derive(PartialEq)]
enum Calmer {
    Ours,
    H2,
}

/// A client sending `flood` (after its preface and SETTINGS) as fast as the daemon reads it is
/// closed with ENHANCE_YOUR_CALM (by `calmer`, counted by kind) at little cost to
/// the daemon's CPU and memory; another client on its own connection is served meanwhile and
/// after.
fn assert_flood_is_calmed(flood: Vec<u8>, calmer: Calmer) {
    let server = backend(flaky);
    let setup = Setup::new();
    let lb = setup.start(&h2c_config(&setup, server, true));
    let pid = lb.process.pid();
    let (cpu_before, rss_before) = cpu_and_rss(pid);
    let mut attacker = RawH2::connect(setup.lb);
    let mut reader = RawH2 {
        stream: attacker.stream.try_clone().unwrap(),
        read: Vec::new(),
    };
    let frames = std::thread::spawn(move || std::iter::from_fn(|| reader.read_frame()).collect());
    let flooding = std::thread::spawn(move || {
        let mut sent = 0;
        for part in flood.chunks(16 * 1024) {
            if attacker.stream.write_all(part).is_err() {
                break;
            }
            sent += part.len();
        }
        sent
    });
    assert_eq!(h2c_get(setup.lb, "/meanwhile"), "ok\n200");
    let sent = flooding.join().unwrap();
    let frames: Vec<Frame> = frames.join().unwrap();
    let (cpu_after, rss_after) = cpu_and_rss(pid);
    assert_eq!(
        goaway_code(&frames),
        Some(11),
        "ENHANCE_YOUR_CALM after {sent} bytes of flood"
    );
    let cpu = cpu_after - cpu_before;
    assert!(cpu < Duration::from_secs(1), "{cpu:?} of CPU");
    assert!(
        rss_after < rss_before + 20 * 1024,
        "RSS {rss_before} KiB -> {rss_after} KiB"
    );
    let kind = match calmer {
        Calmer::Ours => "flood",
        Calmer::H2 => "h2",
    };
    let calmed =
        format!("lab_lb_http_h2_calmed_connections_total{{listener=\"web\",kind=\"{kind}\"}}");
    assert_eq!(setup.metric(&calmed), 1.0);
    assert_eq!(h2c_get(setup.lb, "/after"), "ok\n200");
}

/// `FLOOD` copies of one frame.
fn repeated(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    encode(kind, flags, stream, payload).repeat(FLOOD as usize)
}

/// CVE-2019-9512: PINGs, each asking for a PONG.
#[test]
fn ping_floods_are_calmed() {
    assert_flood_is_calmed(repeated(PING, 0, 0, b"12345678"), Calmer::Ours);
}

/// CVE-2019-9515: SETTINGS frames, each to be applied and acknowledged.
#[test]
fn settings_floods_are_calmed() {
    // SETTINGS_INITIAL_WINDOW_SIZE = 65536, applied to every stream each time.
    assert_flood_is_calmed(repeated(SETTINGS, 0, 0, &[0, 4, 0, 1, 0, 0]), Calmer::Ours);
}

/// CVE-2019-9518: empty DATA frames on a request whose body never comes.
#[test]
fn empty_data_floods_are_calmed() {
    let mut block = vec![0x83, 0x86, 0x04, 5]; // :method POST, :scheme http, :path
    block.extend_from_slice(b"/slow");
    block.extend_from_slice(&[0x01, 6]);
    block.extend_from_slice(b"a.test");
    let mut flood = encode(HEADERS, END_HEADERS, 1, &block);
    flood.extend(repeated(DATA, 0, 1, &[]));
    // The h2 crate allows 100 empty DATA frames a connection.
    assert_flood_is_calmed(flood, Calmer::H2);
}

/// CVE-2019-9518: HEADERS frames with empty header blocks, each a stream refused.
#[test]
fn empty_headers_floods_are_calmed() {
    let flood = (0..FLOOD)
        .flat_map(|i| encode(HEADERS, END_STREAM | END_HEADERS, 2 * i + 1, &[]))
        .collect();
    assert_flood_is_calmed(flood, Calmer::Ours);
}

/// CVE-2019-9513: PRIORITY frames making each idle stream depend on the one before.
#[test]
fn priority_floods_are_calmed() {
    let flood = (0..FLOOD)
        .flat_map(|i| {
            let mut payload = (2 * i + 1).to_be_bytes().to_vec();
            payload.push(255);
            encode(PRIORITY, 0, 2 * i + 3, &payload)
        })
        .collect();
    assert_flood_is_calmed(flood, Calmer::Ours);
}

/// WINDOW_UPDATEs of one byte on the connection, each to be applied to its window.
#[test]
fn window_update_floods_are_calmed() {
    assert_flood_is_calmed(
        repeated(WINDOW_UPDATE, 0, 0, &1u32.to_be_bytes()),
        Calmer::Ours,
    );
}

/// A server answering every request with 1 MiB.
fn big(_line: &str, _body: &[u8]) -> (Vec<u8>, bool) {
    let mut out = b"HTTP/1.1 200 OK\r\ncontent-length: 1048576\r\n\r\n".to_vec();
    out.resize(out.len() + (1 << 20), b'x');
    (out, false)
}

/// CVE-2019-9517: a client that asks for 64 responses of 1 MiB with its windows wide open and
/// reads none of them holds no more of the daemon's memory than its streams' send buffers; the
/// send timeout ends its streams (logged) and the idle timeout then closes the connection,
/// while another client is served.
#[test]
fn a_client_that_reads_nothing_holds_bounded_memory_and_is_closed() {
    const STREAMS: u32 = 64;
    let server = backend(big);
    let setup = Setup::new();
    let listener = "[listener.http]\nh2c = true\nclient_send_timeout = \"1s\"\n\
                    keepalive_timeout = \"1s\"";
    let lb = setup.start(&debug_log(setup.single("http", listener, "", &[server])));
    let pid = lb.process.pid();
    let (_, rss_before) = cpu_and_rss(pid);
    let mut client = RawH2::connect(setup.lb);
    // SETTINGS_INITIAL_WINDOW_SIZE and the connection's window as wide as h2 allows.
    client
        .frame(SETTINGS, 0, 0, &[0, 4, 0x7f, 0xff, 0xff, 0xff])
        .unwrap();
    let widen = 0x7fff_ffff_u32 - 65_535;
    client
        .frame(WINDOW_UPDATE, 0, 0, &widen.to_be_bytes())
        .unwrap();
    for i in 0..STREAMS {
        client.get(2 * i + 1, "/big").unwrap();
    }
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(800));
    let (_, rss_stalled) = cpu_and_rss(pid);
    assert!(
        rss_stalled < rss_before + 16 * 1024,
        "RSS {rss_before} KiB -> {rss_stalled} KiB with {STREAMS} streams unread"
    );
    let out = Command::new("curl")
        .args(["--silent", "--http2-prior-knowledge", "--max-time", "5"])
        .args([
            "--output",
            "/dev/null",
            "--write-out",
            "%{http_code} %{size_download}",
        ])
        .arg(format!("http://127.0.0.1:{}/meanwhile", setup.lb.port()))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200 1048576");
    // Past the send timeout, then read what the daemon could not send.
    std::thread::sleep(Duration::from_millis(2500).saturating_sub(started.elapsed()));
    let frames = client.until_closed();
    let closed = started.elapsed();
    // A response whose every byte the kernel's socket buffers took (the daemon's send buffer
    // and the client's receive buffer, which grow to megabytes) completes unread: the daemon
    // sends streams' data as their responses arrive, so one that arrives well before the rest
    // can go whole. A stream the daemon handed all of its response is logged complete even if
    // the last of it was still in h2's send buffer when the idle connection closed. Every other
    // stream must be ended by the send timeout, and logged so.
    let complete = frames
        .iter()
        .filter(|f| f.0 == DATA && f.1 & END_STREAM != 0)
        .count();
    assert!(
        complete <= STREAMS as usize / 2,
        "{complete} of {STREAMS} responses completed unread: the daemon buffered them"
    );
    assert!(closed < Duration::from_secs(9), "closed after {closed:?}");
    let logged = |error: &str| {
        lb.process
            .stderr()
            .iter()
            .filter(|l| l.contains("path=/big") && l.ends_with(&format!("error={error}")))
            .count()
    };
    let timed_out = || logged("client: not reading for 1s");
    // The log lines of the last streams may still be on their way when the socket closes.
    let deadline = Instant::now() + Duration::from_secs(5);
    while timed_out() + logged("") < STREAMS as usize && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let handed_whole = logged("");
    assert!(
        handed_whole >= complete,
        "{complete} responses completed, {handed_whole} logged so"
    );
    assert_eq!(
        timed_out(),
        STREAMS as usize - handed_whole,
        "streams ended by the send timeout"
    );
    assert!(
        timed_out() >= STREAMS as usize / 2,
        "{handed_whole} of {STREAMS} responses handed whole to a client that reads nothing"
    );
}
