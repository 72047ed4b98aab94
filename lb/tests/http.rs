//! `http` listeners with real nginx backends and curl: the routing table, forwarding headers,
//! the proxy's own error statuses and limits, request smuggling attempts, keep-alive reuse.

mod support;

use lab_tests::ports;
use std::net::SocketAddr;
use std::time::Duration;
use support::web::{curl, raw_exchange, EchoBackend};
use support::Setup;

fn backend(name: &str, servers: &[SocketAddr], extra: &str) -> String {
    let servers: Vec<String> = servers
        .iter()
        .map(|s| format!("{{ address = \"{s}\" }}"))
        .collect();
    format!(
        "[[backend]]\nname = \"{name}\"\nserver = [{}]\n{extra}\n",
        servers.join(", ")
    )
}

fn listener(setup: &Setup, mode: &str, http: &str) -> String {
    format!(
        "[[listener]]\nname = \"web\"\nlisten = \"{}\"\nmode = \"{mode}\"\nbackend = \"web\"\n\
         [listener.http]\n{http}\n",
        setup.lb
    )
}

fn url(setup: &Setup, path: &str) -> String {
    format!("http://{}{path}", setup.lb)
}

#[test]
fn routing_table_every_route_default_and_404() {
    let web = EchoBackend::start("web");
    let api = EchoBackend::start("api");
    let wild = EchoBackend::start("wild");
    let setup = Setup::new();
    let config = setup.config(&format!(
        "{}\
         [[listener.http.route]]\nhost = \"app.test\"\npath = \"/api\"\nbackend = \"api\"\n\
         add_request_headers = {{ x-added = \"yes\" }}\nremove_request_headers = [\"x-gone\"]\n\
         add_response_headers = {{ x-route = \"api\" }}\nremove_response_headers = [\"x-backend-only\"]\n\
         [[listener.http.route]]\nhost = \"*.wild.test\"\nbackend = \"wild\"\n\
         [[listener.http.route]]\nhost = \"app.test\"\npath = \"/login\"\nredirect_https = true\n\
         [[listener.http.route]]\npath = \"/missing\"\nstatus = 404\nbody = \"nothing here\"\n\
         {}{}{}",
        listener(&setup, "http", ""),
        backend("web", &[web.address], ""),
        backend("api", &[api.address], ""),
        backend("wild", &[wild.address], ""),
    ));
    let _lb = setup.start(&config);

    let (status, headers, body) = curl(
        &["-H", "Host: app.test", "-H", "X-Gone: 1"],
        &url(&setup, "/api/v1?q=1"),
    );
    assert_eq!(status, 200);
    assert!(body.starts_with("api uri=/api/v1?q=1"), "{body}");
    assert!(body.contains("added=yes gone="), "{body}");
    assert!(
        body.trim_end().ends_with("gone="),
        "request header not removed: {body}"
    );
    assert!(
        headers.to_ascii_lowercase().contains("x-route: api"),
        "{headers}"
    );
    assert!(
        !headers.to_ascii_lowercase().contains("x-backend-only"),
        "{headers}"
    );

    // Same path, other host: not the api route.
    let (_, _, body) = curl(&["-H", "Host: other.test"], &url(&setup, "/api/v1"));
    assert!(body.starts_with("web "), "{body}");

    let (_, _, body) = curl(&["-H", "Host: a.wild.test"], &url(&setup, "/x"));
    assert!(body.starts_with("wild "), "{body}");
    // `*.wild.test` does not cover `wild.test` itself: default.
    let (_, _, body) = curl(&["-H", "Host: wild.test"], &url(&setup, "/x"));
    assert!(body.starts_with("web "), "{body}");
    // Host matching ignores case and port.
    let (_, _, body) = curl(&["-H", "Host: B.Wild.Test:8080"], &url(&setup, "/"));
    assert!(body.starts_with("wild "), "{body}");

    let (status, headers, _) = curl(&["-H", "Host: app.test"], &url(&setup, "/login?next=/x"));
    assert_eq!(status, 308);
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("location: https://app.test/login?next=/x"),
        "{headers}"
    );

    let (status, _, body) = curl(&[], &url(&setup, "/missing/page"));
    assert_eq!((status, body.as_str()), (404, "nothing here"));

    let (status, _, body) = curl(&[], &url(&setup, "/anything"));
    assert_eq!(status, 200);
    assert!(body.starts_with("web uri=/anything"), "{body}");

    assert!(
        setup.metric(
            "lab_lb_http_requests_total{listener=\"web\",route=\"*/missing\",backend=\"-\",method=\"read\",status=\"4xx\"}"
        ) >= 1.0
    );
}

#[test]
fn forwarding_headers_for_untrusted_and_trusted_clients() {
    let web = EchoBackend::start("web");
    let untrusted = Setup::new();
    let _a = untrusted.start(&untrusted.config(&format!(
        "{}{}",
        listener(&untrusted, "http", "trusted_proxies = [\"10.0.0.0/8\"]"),
        backend("web", &[web.address], "")
    )));
    let (_, _, body) = curl(
        &[
            "-H",
            "Host: site.test",
            "-H",
            "X-Forwarded-For: 6.6.6.6",
            "-H",
            "Forwarded: for=6.6.6.6",
        ],
        &url(&untrusted, "/"),
    );
    assert!(body.contains("xff=127.0.0.1 "), "{body}");
    assert!(body.contains("proto=http fhost=site.test"), "{body}");
    assert!(
        body.contains("fwd=for=127.0.0.1;proto=http;host=site.test "),
        "{body}"
    );

    let trusted = Setup::new();
    let _b = trusted.start(&trusted.config(&format!(
        "{}{}",
        listener(&trusted, "http", "trusted_proxies = [\"127.0.0.0/8\"]"),
        backend("web", &[web.address], "")
    )));
    let (_, _, body) = curl(
        &[
            "-H",
            "Host: site.test",
            "-H",
            "X-Forwarded-For: 198.51.100.7",
            "-H",
            "Forwarded: for=198.51.100.7",
        ],
        &url(&trusted, "/"),
    );
    assert!(body.contains("xff=198.51.100.7, 127.0.0.1 "), "{body}");
    assert!(
        body.contains("fwd=for=198.51.100.7, for=127.0.0.1;proto=http;host=site.test "),
        "{body}"
    );
}

#[test]
fn dead_upstream_502_all_unhealthy_503_slow_upstream_504() {
    let setup = Setup::new();
    let dead = ports::free_tcp();
    // Accepts and reads, never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_address = silent.local_addr().unwrap();
    let _holder = std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming() {
            held.push(stream);
        }
    });
    let config = setup.config(&format!(
        "{}[[listener.http.route]]\npath = \"/slow\"\nbackend = \"slow\"\n{}{}",
        listener(&setup, "http", "upstream_response_timeout = \"500ms\""),
        backend("web", &[dead], "retries = 0\nfailure_hold = \"30s\""),
        backend("slow", &[silent_address], ""),
    ));
    let _lb = setup.start(&config);
    let (status, _, _) = curl(&[], &url(&setup, "/"));
    assert_eq!(status, 502, "dead upstream");
    // Now held down: no server left to try.
    let (status, _, _) = curl(&[], &url(&setup, "/"));
    assert_eq!(status, 503, "no healthy server");
    let (status, _, _) = curl(&[], &url(&setup, "/slow"));
    assert_eq!(status, 504, "slow upstream");
    for kind in ["dead_upstream", "no_server", "timeout"] {
        assert_eq!(
            setup.metric(&format!(
                "lab_lb_http_errors_total{{listener=\"web\",kind=\"{kind}\"}}"
            )),
            1.0,
            "{kind}"
        );
    }
}

#[test]
fn limits_oversized_header_431_and_body_413() {
    let web = EchoBackend::start("web");
    let setup = Setup::new();
    let _lb = setup.start(&setup.config(&format!(
        "{}[[listener.http.route]]\npath = \"/upload\"\nbackend = \"web\"\nmax_body = 1000\n{}",
        listener(&setup, "http", ""),
        backend("web", &[web.address], "")
    )));
    let big = format!("X-Big: {}", "a".repeat(100_000));
    let (status, _, _) = curl(&["-H", &big], &url(&setup, "/"));
    assert_eq!(status, 431);

    let body = "b".repeat(5000);
    let (status, _, _) = curl(&["--data-binary", &body], &url(&setup, "/upload"));
    assert_eq!(status, 413, "declared length");
    let (status, _, _) = curl(
        &["-H", "Transfer-Encoding: chunked", "--data-binary", &body],
        &url(&setup, "/upload"),
    );
    assert_eq!(status, 413, "chunked");
    let (status, _, _) = curl(&["--data-binary", "small"], &url(&setup, "/upload"));
    assert_eq!(status, 200);
}

#[test]
fn smuggling_attempts_are_refused_and_never_forwarded() {
    let web = EchoBackend::start("web");
    let setup = Setup::new();
    let _lb = setup.start(&setup.config(&format!(
        "{}{}",
        listener(&setup, "http", ""),
        backend("web", &[web.address], "")
    )));
    let cl_te = b"POST /cl-te HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let answer = raw_exchange(setup.lb, cl_te);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let dup_cl = b"POST /dup-cl HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 30\r\n\r\nhelloGET /smuggled2 HTTP/1.1\r\nHost: x\r\n\r\n";
    let answer = raw_exchange(setup.lb, dup_cl);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    // One field, a list of lengths: read as 3 by some parsers and refused by others.
    let cl_list = b"POST /cl-list HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc";
    let answer = raw_exchange(setup.lb, cl_list);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    // HTTP/1.1 without Host (RFC 9112 §3.2); HTTP/1.0 may leave it out, and goes on as
    // HTTP/1.1 with the server's address for a Host.
    let answer = raw_exchange(setup.lb, b"GET /no-host HTTP/1.1\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let answer = raw_exchange(setup.lb, b"GET /old-client HTTP/1.0\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    std::thread::sleep(Duration::from_millis(200));
    let seen = web.seen();
    assert!(!seen.contains("cl-te"), "{seen}");
    assert!(!seen.contains("dup-cl"), "{seen}");
    assert!(!seen.contains("cl-list"), "{seen}");
    assert!(!seen.contains("no-host"), "{seen}");
    assert!(seen.contains("GET /old-client HTTP/1.1"), "{seen}");
    assert!(!seen.contains("smuggled"), "{seen}");
}

#[test]
fn upstream_keep_alive_reuse_in_metrics() {
    let web = EchoBackend::start("web");
    let setup = Setup::new();
    let _lb = setup.start(&setup.config(&format!(
        "{}{}",
        listener(&setup, "http", ""),
        backend("web", &[web.address], "")
    )));
    for _ in 0..10 {
        let (status, _, _) = curl(&[], &url(&setup, "/"));
        assert_eq!(status, 200);
    }
    let reused =
        setup.metric("lab_lb_http_upstream_connections_total{backend=\"web\",reused=\"true\"}");
    let fresh =
        setup.metric("lab_lb_http_upstream_connections_total{backend=\"web\",reused=\"false\"}");
    assert_eq!(reused + fresh, 10.0);
    assert!(reused >= 8.0, "reused {reused}, new {fresh}");
    let exposition = lab_tests::http::get(setup.metrics, "/metrics", &[]).body;
    lab_tests::promtool::check_metrics(&exposition).unwrap();
    assert!(exposition.contains("lab_lb_http_request_duration_seconds_bucket"));
    assert!(exposition.contains("lab_lb_http_upstream_duration_seconds_bucket"));
}

#[test]
fn concurrent_request_limit_503_with_retry_after() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_address = silent.local_addr().unwrap();
    let _holder = std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming() {
            held.push(stream);
        }
    });
    let setup = Setup::new();
    let _lb = setup.start(&setup.config(&format!(
        "{}{}",
        listener(
            &setup,
            "http",
            "max_requests = 1\nupstream_response_timeout = \"3s\""
        ),
        backend("web", &[silent_address], "")
    )));
    let lb = setup.lb;
    let hanging = std::thread::spawn(move || curl(&[], &format!("http://{lb}/")));
    std::thread::sleep(Duration::from_millis(500));
    let (status, headers, _) = curl(&[], &url(&setup, "/"));
    assert_eq!(status, 503);
    assert!(
        headers.to_ascii_lowercase().contains("retry-after: 1"),
        "{headers}"
    );
    assert_eq!(hanging.join().unwrap().0, 504);
}

#[test]
fn idempotent_requests_retry_on_another_server_after_a_connect_failure() {
    let web = EchoBackend::start("web");
    let dead = ports::free_tcp();
    let setup = Setup::new();
    let _lb = setup.start(&setup.config(&format!(
        "{}{}",
        listener(&setup, "http", ""),
        backend(
            "web",
            &[dead, web.address],
            "balance = \"round-robin\"\nretries = 1\nfailure_hold = \"30s\""
        )
    )));
    for _ in 0..4 {
        let (status, _, body) = curl(&[], &url(&setup, "/"));
        assert_eq!(status, 200, "{body}");
    }
}

#[test]
fn non_idempotent_requests_are_not_retried() {
    let web = EchoBackend::start("web");
    let dead = ports::free_tcp();
    let setup = Setup::new();
    let _lb = setup.start(&setup.config(&format!(
        "{}{}",
        listener(&setup, "http", ""),
        backend(
            "web",
            &[dead, web.address],
            "balance = \"round-robin\"\nretries = 1\nfailure_hold = \"30s\""
        )
    )));
    let statuses: Vec<u16> = (0..2)
        .map(|_| curl(&["--data", "x"], &url(&setup, "/")).0)
        .collect();
    assert!(statuses.contains(&502), "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
}

#[test]
fn idle_keep_alive_and_idle_body_are_closed() {
    use std::io::{Read, Write};
    let web = EchoBackend::start("web");
    let setup = Setup::new();
    let _lb = setup.start(&setup.config(&format!(
        "{}{}",
        listener(
            &setup,
            "http",
            "keepalive_timeout = \"1s\"\nclient_body_timeout = \"1s\""
        ),
        backend("web", &[web.address], "")
    )));
    let mut client = std::net::TcpStream::connect(setup.lb).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 4096];
    let mut answer = Vec::new();
    // The whole response: the backend's line ends with `gone=` and a newline.
    while !String::from_utf8_lossy(&answer).ends_with("gone=\n") {
        let n = client.read(&mut buf).unwrap();
        assert!(n > 0, "closed early");
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200"));
    let idle = std::time::Instant::now();
    assert_eq!(client.read(&mut buf).unwrap(), 0, "closed when idle");
    let waited = idle.elapsed();
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(3),
        "{waited:?}"
    );

    // A body that stops coming: the request ends instead of holding a slot forever.
    let mut client = std::net::TcpStream::connect(setup.lb).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client
        .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly some")
        .unwrap();
    let started = std::time::Instant::now();
    let mut got = Vec::new();
    while let Ok(n) = client.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let _ = got;
}

/// Routes decide on the request as the servers behind will read it: a path spelled another way
/// (escaped letters, `//`, dot-segments) or a host in other case or with the root's dot takes
/// the same route, on our HTTP/1.1 path and on pingora's (HTTP/1.0) alike; the server still
/// gets the path as the client sent it.
#[test]
fn routes_match_normalised_paths_and_hosts_and_the_path_goes_on_unchanged() {
    let web = EchoBackend::start("web");
    let api = EchoBackend::start("api");
    let setup = Setup::new();
    let _lb = setup.start(&setup.config(&format!(
        "{}[[listener.http.route]]\npath = \"/admin\"\nstatus = 403\nbody = \"not from here\"\n\
         [[listener.http.route]]\nhost = \"app.test\"\nbackend = \"api\"\n{}{}",
        listener(&setup, "http", ""),
        backend("web", &[web.address], ""),
        backend("api", &[api.address], ""),
    )));
    for version in ["HTTP/1.1", "HTTP/1.0"] {
        for path in [
            "/admin",
            "/%61dmin",
            "/%61%64min/x",
            "//admin",
            "/./admin",
            "/x/../admin",
            "/x/%2E%2e/admin",
        ] {
            let answer = raw_exchange(
                setup.lb,
                format!("GET {path} {version}\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes(),
            );
            assert!(
                answer.starts_with("HTTP/1.1 403 ") && answer.ends_with("not from here"),
                "{version} {path}:\n{answer}"
            );
        }
        for host in ["APP.TEST", "app.test.", "App.Test.:80"] {
            let answer = raw_exchange(
                setup.lb,
                format!("GET /x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
            );
            assert!(answer.contains("\r\n\r\napi uri=/x "), "{host}:\n{answer}");
        }
        let answer = raw_exchange(
            setup.lb,
            format!("GET /x/%7Eu/../y {version}\r\nHost: a\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        assert!(
            answer.contains("\r\n\r\nweb uri=/x/%7Eu/../y "),
            "{version}: the path did not go on as sent:\n{answer}"
        );
    }
}
