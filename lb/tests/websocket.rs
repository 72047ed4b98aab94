//! WebSocket through an `http` listener: the upgrade passes, frames echo both ways, the stream
//! outlives the upstream response timeout and a reload.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;
use support::Setup;

/// Reads one HTTP header block.
fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "closed in header");
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Reads one frame; returns its payload, unmasked.
fn read_frame(stream: &mut TcpStream) -> Vec<u8> {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).unwrap();
    let masked = head[1] & 0x80 != 0;
    let len = (head[1] & 0x7f) as usize;
    assert!(len < 126, "test frames are short");
    let mut mask = [0u8; 4];
    if masked {
        stream.read_exact(&mut mask).unwrap();
    }
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).unwrap();
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    payload
}

/// A text frame; masked as a client must (RFC 6455 §5.3).
fn frame(payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut out = vec![
        0x81,
        payload.len() as u8 | if mask.is_some() { 0x80 } else { 0 },
    ];
    match mask {
        Some(mask) => {
            out.extend_from_slice(&mask);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// An echo server: answers the upgrade with 101, then sends every text frame back.
fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let head = read_head(&mut stream);
                assert!(
                    head.to_ascii_lowercase().contains("upgrade: websocket"),
                    "{head}"
                );
                // The proxy does not check the accept key; a fixed one is enough here.
                stream
                    .write_all(
                        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                          Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
                    )
                    .unwrap();
                loop {
                    let mut head = [0u8; 1];
                    if stream.peek(&mut head).map_or(true, |n| n == 0) {
                        break;
                    }
                    let payload = read_frame(&mut stream);
                    if stream.write_all(&frame(&payload, None)).is_err() {
                        break;
                    }
                }
            });
        }
    });
    address
}

/// A client connection to `lb` that asked for a WebSocket, and the response head it got.
fn upgraded(lb: SocketAddr) -> (TcpStream, String) {
    let mut client = TcpStream::connect(lb).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client
        .write_all(
            b"GET /chat HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .unwrap();
    let head = read_head(&mut client);
    (client, head)
}

#[test]
fn websocket_echo_outlives_response_timeout_and_reload() {
    let server = echo_server();
    let setup = Setup::new();
    let config = |extra: &str| {
        setup.config(&format!(
            "[[listener]]\nname = \"web\"\nlisten = \"{}\"\nmode = \"http\"\nbackend = \"ws\"\n\
             [listener.http]\nupstream_response_timeout = \"1s\"\n{extra}\n\
             [[backend]]\nname = \"ws\"\nserver = [{{ address = \"{server}\" }}]\n",
            setup.lb
        ))
    };
    let mut lb = setup.start(&config(""));
    let (mut client, head) = upgraded(setup.lb);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");

    let mut echo = |text: &str| {
        client
            .write_all(&frame(text.as_bytes(), Some([1, 2, 3, 4])))
            .unwrap();
        String::from_utf8(read_frame(&mut client)).unwrap()
    };
    assert_eq!(echo("hello"), "hello");
    // Quiet for longer than the upstream response timeout: an open stream, not a slow answer.
    std::thread::sleep(Duration::from_millis(1600));
    assert_eq!(echo("still here"), "still here");
    let status = lb.reload(&config(
        "[[listener.http.route]]\npath = \"/other\"\nstatus = 404\n",
    ));
    assert!(!status.contains("refused"), "{status}");
    assert_eq!(echo("after reload"), "after reload");
}

/// Upgrades to a server that answers at once, each followed straight away by a frame: the
/// tunnel must be up for every one (pingora's own HTTP/1 proxy tears an upgrade down when the
/// server's 101 is read before the request's end, cloudflare/pingora#946).
#[test]
fn every_upgrade_to_a_fast_server_stays_up() {
    let server = echo_server();
    let setup = Setup::new();
    let _lb = setup.start(&setup.config(&format!(
        "[[listener]]\nname = \"web\"\nlisten = \"{}\"\nmode = \"http\"\nbackend = \"ws\"\n\
         [[backend]]\nname = \"ws\"\nserver = [{{ address = \"{server}\" }}]\n",
        setup.lb
    )));
    for i in 0..400 {
        let (mut client, head) = upgraded(setup.lb);
        assert!(head.starts_with("HTTP/1.1 101"), "upgrade {i}: {head}");
        let lower = head.to_ascii_lowercase();
        assert!(lower.contains("upgrade: websocket"), "upgrade {i}: {head}");
        assert!(lower.contains("connection: upgrade"), "upgrade {i}: {head}");
        let text = format!("frame {i}");
        client
            .write_all(&frame(text.as_bytes(), Some([9, 8, 7, 6])))
            .unwrap();
        let mut head = [0u8; 2];
        if let Err(e) = client.read_exact(&mut head) {
            panic!("upgrade {i}: the tunnel closed before the echo: {e}");
        }
        assert_eq!(head[0], 0x81, "upgrade {i}");
        let mut payload = vec![0u8; (head[1] & 0x7f) as usize];
        client.read_exact(&mut payload).unwrap();
        assert_eq!(payload, text.as_bytes(), "upgrade {i}");
    }
}

/// WebSockets open and quiet (a dashboard's live view, a `kubectl` watch): each costs the
/// tunnel's state, not copy buffers nor the request path's, so many thousands fit in the lb
/// container's memory (HAProxy holds ~4.6 KB for one; this path held 3.8-5.8 KiB here while
/// it kept the request's state for the tunnel's life). Warmed first: the allocator's per-thread pages make the
/// first connections pay for more than their own state.
#[test]
fn an_idle_websocket_costs_its_state_not_buffers() {
    const WARM: usize = 500;
    const IDLE: usize = 1500;
    let server = echo_server();
    let setup = Setup::new();
    let lb = setup.start(&setup.single("http", "max_connections_per_client = 4000", "", &[server]));
    let open = |count: usize| -> Vec<TcpStream> {
        (0..count)
            .map(|i| {
                let (client, head) = upgraded(setup.lb);
                assert!(head.starts_with("HTTP/1.1 101"), "upgrade {i}: {head}");
                client
            })
            .collect()
    };
    let active = "lab_lb_connections_active{listener=\"web\"}";
    let mut idle = open(WARM);
    setup.until_metric(active, WARM as f64, Duration::from_secs(20));
    let before = support::rss_kib(lb.process.pid());
    idle.extend(open(IDLE));
    setup.until_metric(active, (WARM + IDLE) as f64, Duration::from_secs(20));
    let per_connection =
        (support::rss_kib(lb.process.pid()).saturating_sub(before)) as f64 / IDLE as f64;
    eprintln!("{per_connection:.2} KiB per idle WebSocket");
    assert!(
        per_connection < 3.5,
        "{per_connection:.1} KiB per idle WebSocket"
    );

    // Quiet, not forgotten: each still echoes.
    for (i, client) in idle.iter_mut().enumerate().step_by(100) {
        let text = format!("late {i}");
        client
            .write_all(&frame(text.as_bytes(), Some([4, 3, 2, 1])))
            .unwrap();
        assert_eq!(read_frame(client), text.as_bytes(), "websocket {i}");
    }
}

/// An open WebSocket is a request to its server for its whole life: counted active on the
/// server (a drain waits for it), and logged, status 101, when it closes.
#[test]
fn an_open_websocket_stays_active_on_its_server_and_is_logged_when_it_closes() {
    let server = echo_server();
    let setup = Setup::new();
    let lb = setup.start(&setup.single("http", "", "", &[server]));
    let active = format!("lab_lb_server_active_connections{{backend=\"web\",server=\"{server}\"}}");
    let logged = || -> Vec<String> {
        lb.process
            .stderr()
            .into_iter()
            .filter(|l| l.contains("status=101"))
            .collect()
    };
    let (mut client, head) = upgraded(setup.lb);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    client
        .write_all(&frame(b"still here", Some([1, 2, 3, 4])))
        .unwrap();
    assert_eq!(read_frame(&mut client), b"still here");
    assert_eq!(setup.metric(&active), 1.0);
    assert!(logged().is_empty(), "logged while open: {:?}", logged());

    drop(client);
    setup.until_metric(&active, 0.0, Duration::from_secs(5));
    support::wait_for("the WebSocket's log line", Duration::from_secs(5), || {
        !logged().is_empty()
    });
    let lines = logged();
    assert_eq!(lines.len(), 1, "{lines:?}");
    for field in ["path=/chat", "host=ws.test", &format!("server={server}")] {
        assert!(lines[0].contains(field), "{field} not in {}", lines[0]);
    }
}
