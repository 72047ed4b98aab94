//! PROXY protocol: lab-lb tells real nginx servers who the client is, and believes a PROXY
//! header only from the upstreams it trusts.

mod support;

use lab_tests::nginx::Nginx;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;
use support::Setup;

/// `curl` from `source`; whether it succeeded, and the body.
fn curl(lb: SocketAddr, source: &str, extra: &[&str]) -> (bool, String) {
    let output = Command::new("curl")
        .args(["--silent", "--max-time", "5", "--interface", source])
        .args(extra)
        .arg(format!("http://{lb}/"))
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
    )
}

/// Sends `header` then a request, as an upstream proxy would; the response body.
fn request_after(lb: SocketAddr, header: &[u8]) -> String {
    let mut stream = TcpStream::connect(lb).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(header).unwrap();
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .rsplit("\r\n\r\n")
        .next()
        .unwrap_or("")
        .trim()
        .to_owned()
}

#[test]
fn backends_receive_the_real_client_in_v1_and_v2_headers() {
    for version in ["v1", "v2"] {
        let backend = Nginx::http_behind_proxy_protocol("pp");
        let setup = Setup::new();
        let _daemon = setup.start(&setup.single(
            "tcp",
            "",
            &format!("proxy_protocol = \"{version}\""),
            &[backend.address],
        ));
        for source in ["127.0.0.7", "127.0.0.9"] {
            let (ok, body) = curl(setup.lb, source, &[]);
            assert!(ok, "{version} from {source}");
            let (ip, port) = body.split_once(' ').unwrap_or_default();
            assert_eq!(ip, source, "{version}: backend saw {body:?}");
            assert!(
                port.parse::<u16>().is_ok_and(|p| p > 0),
                "{version}: {body:?}"
            );
        }
    }
}

#[test]
fn a_trusted_upstreams_header_is_believed_and_anyone_elses_refused() {
    let backend = Nginx::http_behind_proxy_protocol("pp");
    let setup = Setup::new();
    let _daemon = setup.start(&setup.single(
        "tcp",
        "accept_proxy_from = [\"127.0.0.1/32\"]\nhello_timeout = \"1s\"",
        "proxy_protocol = \"v2\"",
        &[backend.address],
    ));
    let lb = setup.lb;
    // From the trusted upstream (127.0.0.1), v1 and v2 headers name the real client.
    assert_eq!(
        request_after(lb, b"PROXY TCP4 203.0.113.7 10.10.2.2 40001 80\r\n"),
        "203.0.113.7 40001"
    );
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    v2.extend_from_slice(&[198, 51, 100, 9, 10, 10, 2, 2]);
    v2.extend_from_slice(&40002u16.to_be_bytes());
    v2.extend_from_slice(&80u16.to_be_bytes());
    assert_eq!(request_after(lb, &v2), "198.51.100.9 40002");
    // The trusted upstream must send a header.
    assert_eq!(request_after(lb, b""), "");
    assert_eq!(
        setup.metric(
            "lab_lb_connections_refused_total{listener=\"web\",reason=\"bad_proxy_header\"}"
        ),
        1.0
    );
    // Anyone else: a header is refused, plain requests pass with their own address.
    let (ok, _) = curl(lb, "127.0.0.2", &["--haproxy-protocol"]);
    assert!(!ok, "a PROXY header from an untrusted source was accepted");
    assert_eq!(
        setup.metric(
            "lab_lb_connections_refused_total{listener=\"web\",reason=\"untrusted_proxy_header\"}"
        ),
        1.0
    );
    let (ok, body) = curl(lb, "127.0.0.2", &[]);
    assert!(ok);
    assert!(body.starts_with("127.0.0.2 "), "{body}");
}
