//! Active health checks against real nginx servers that the test stops and starts; timing read
//! from metrics; a server a reload adds is in only once its checks pass.

mod support;

use lab_tests::nginx::Nginx;
use lab_tests::ports;
use std::time::{Duration, Instant};
use support::{fetch, Setup};

fn both_served(setup: &Setup) -> Vec<String> {
    let mut answers: Vec<String> = (0..4)
        .map(|_| fetch(setup.lb, None).unwrap_or_default())
        .collect();
    answers.sort();
    answers
}

#[test]
fn a_stopped_server_is_taken_out_within_interval_times_fall_and_comes_back_after_rise() {
    let a = Nginx::http("a");
    let mut b = Nginx::http("b");
    let setup = Setup::new();
    let interval = Duration::from_millis(200);
    let _daemon = setup.start(&setup.single(
        "tcp",
        "",
        "balance = \"round-robin\"\n\
         health_check = { kind = \"http\", path = \"/\", interval = \"200ms\", timeout = \"100ms\", rise = 2, fall = 3 }",
        &[a.address, b.address],
    ));
    let b_series = format!("{{backend=\"web\",server=\"{}\"}}", b.address);
    let b_up = format!("lab_lb_server_up{b_series}");
    setup.until_metric(&b_up, 1.0, Duration::from_secs(5));
    assert_eq!(both_served(&setup), ["a", "a", "b", "b"]);

    b.stop();
    let took = setup.until_metric(&b_up, 0.0, Duration::from_secs(10));
    // interval × fall, plus one interval for the phase of the first failing check, plus
    // scheduling slack on a busy two-core CI machine.
    let slack = Duration::from_millis(500);
    assert!(took <= interval * 4 + slack, "down after {took:?}");
    let failures = format!("lab_lb_server_connect_failures_total{b_series}");
    let failed_connects = setup.metric(&failures);
    for _ in 0..6 {
        assert_eq!(fetch(setup.lb, None).as_deref(), Some("a"));
    }
    assert_eq!(
        setup.metric(&failures),
        failed_connects,
        "a new connection was sent to the down server"
    );
    let failed_checks = format!(
        "lab_lb_health_checks_total{{backend=\"web\",server=\"{}\",result=\"failed\"}}",
        b.address
    );
    assert!(setup.metric(&failed_checks) >= 3.0);

    b.restart();
    let took = setup.until_metric(&b_up, 1.0, Duration::from_secs(10));
    assert!(took <= interval * 3 + slack, "up after {took:?}");
    assert_eq!(both_served(&setup), ["a", "a", "b", "b"]);
}

#[test]
fn https_readyz_check_counts_expected_statuses_only() {
    let apiserver = Nginx::https("apiserver");
    let setup = Setup::new();
    let config = |expect: &str| {
        setup.single(
            "tcp",
            "",
            &format!(
                "health_check = {{ kind = \"https\", path = \"/readyz\", expect_status = {expect}, interval = \"100ms\", timeout = \"100ms\", rise = 1, fall = 1 }}"
            ),
            &[apiserver.address],
        )
    };
    let up = format!(
        "lab_lb_server_up{{backend=\"web\",server=\"{}\"}}",
        apiserver.address
    );
    let passed = format!(
        "lab_lb_health_checks_total{{backend=\"web\",server=\"{}\",result=\"passed\"}}",
        apiserver.address
    );
    let mut daemon = setup.start(&config("[200, 401]"));
    let started = Instant::now();
    while setup.metric(&passed) < 3.0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "401 not counted as alive"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    assert_eq!(setup.metric(&up), 1.0);
    let ready = daemon.reload(&config("[200]"));
    assert!(!ready.contains("refused"), "{ready}");
    setup.until_metric(&up, 0.0, Duration::from_secs(5));
}

#[test]
fn tls_check_sees_a_live_server_and_a_dead_one() {
    let server = Nginx::https("talos");
    let dead = ports::free_tcp();
    let setup = Setup::new();
    let _daemon = setup.start(&setup.single(
        "tcp",
        "",
        "health_check = { kind = \"tls\", interval = \"100ms\", timeout = \"100ms\", rise = 1, fall = 1 }",
        &[server.address, dead],
    ));
    let up = |address| format!("lab_lb_server_up{{backend=\"web\",server=\"{address}\"}}");
    setup.until_metric(&up(dead), 0.0, Duration::from_secs(5));
    setup.until_metric(&up(server.address), 1.0, Duration::from_secs(5));
    let passed = format!(
        "lab_lb_health_checks_total{{backend=\"web\",server=\"{}\",result=\"passed\"}}",
        server.address
    );
    assert!(setup.metric(&passed) >= 1.0);
}

#[test]
fn a_server_a_reload_adds_takes_traffic_after_its_checks_pass_not_before() {
    let a = Nginx::http("a");
    let b = Nginx::http("b");
    let not_yet_listening = ports::free_tcp();
    let setup = Setup::new();
    let checked = "balance = \"round-robin\"\n\
         health_check = { kind = \"http\", path = \"/\", interval = \"300ms\", timeout = \"100ms\", rise = 2, fall = 2 }";
    let mut daemon = setup.start(&setup.single("tcp", "", checked, &[a.address]));
    setup.until_metric(
        &format!(
            "lab_lb_server_up{{backend=\"web\",server=\"{}\"}}",
            a.address
        ),
        1.0,
        Duration::from_secs(5),
    );

    // A node lb.toml names before it answers (a VM still booting): down from the reload on,
    // so no client is sent to it.
    let status = daemon.reload(&setup.single("tcp", "", checked, &[a.address, not_yet_listening]));
    assert!(!status.contains("refused"), "{status}");
    let series = format!("{{backend=\"web\",server=\"{not_yet_listening}\"}}");
    assert_eq!(setup.metric(&format!("lab_lb_server_up{series}")), 0.0);
    for _ in 0..6 {
        assert_eq!(fetch(setup.lb, None).as_deref(), Some("a"));
    }
    assert_eq!(
        setup.metric(&format!("lab_lb_server_connect_failures_total{series}")),
        0.0,
        "a connection was sent to a server whose checks never passed"
    );

    // A healthy one: in once `rise` checks passed.
    let started = Instant::now();
    let status = daemon.reload(&setup.single("tcp", "", checked, &[a.address, b.address]));
    assert!(!status.contains("refused"), "{status}");
    let b_up = format!(
        "lab_lb_server_up{{backend=\"web\",server=\"{}\"}}",
        b.address
    );
    setup.until_metric(&b_up, 1.0, Duration::from_secs(5));
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "up before two checks"
    );
    assert_eq!(both_served(&setup), ["a", "a", "b", "b"]);

    // Without health checks there is nothing to wait for: a server is in from its reload.
    let unchecked = "balance = \"round-robin\"";
    let status = daemon.reload(&setup.single("tcp", "", unchecked, &[a.address]));
    assert!(!status.contains("refused"), "{status}");
    let status = daemon.reload(&setup.single("tcp", "", unchecked, &[a.address, b.address]));
    assert!(!status.contains("refused"), "{status}");
    assert_eq!(both_served(&setup), ["a", "a", "b", "b"]);
}
