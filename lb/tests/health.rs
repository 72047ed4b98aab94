//! Active health checks against real nginx servers that the test stops and starts; timing read
//! from metrics.

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
