//! Active health checks against real nginx servers that the test stops and starts; timing read
//! from metrics.

use lab_tests::daemon_process::Started;
use lab_tests::nginx::Nginx;
use lab_tests::{http, ports, workspace};
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_lab-lb");

fn config(metrics: SocketAddr, body: &str) -> String {
    let mut doc = workspace::config_document("lb.toml");
    doc.remove("listener");
    doc.remove("backend");
    doc["metrics"]["listen"] = toml_edit::value(metrics.to_string());
    format!("{doc}\n{body}")
}

fn fetch(lb: SocketAddr) -> String {
    let output = Command::new("curl")
        .args(["--silent", "--max-time", "5"])
        .arg(format!("http://{lb}/"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn metric(metrics: SocketAddr, series: &str) -> f64 {
    let body = http::get(metrics, "/metrics", &[]).body;
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{body}"))
}

/// Waits until `series` reads `value`; returns how long that took.
fn until_metric(metrics: SocketAddr, series: &str, value: f64, timeout: Duration) -> Duration {
    let started = Instant::now();
    while metric(metrics, series) != value {
        assert!(
            started.elapsed() < timeout,
            "{series} did not become {value} within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    started.elapsed()
}

#[test]
fn a_stopped_server_is_taken_out_within_interval_times_fall_and_comes_back_after_rise() {
    let a = Nginx::http("a");
    let mut b = Nginx::http("b");
    let (lb, metrics) = (ports::free_tcp(), ports::free_tcp());
    let interval = Duration::from_millis(200);
    let _daemon = Started::start(
        BIN,
        &config(
            metrics,
            &format!(
                "[[listener]]\nname = \"web\"\nlisten = \"{lb}\"\nmode = \"tcp\"\nbackend = \"web\"\n\n\
                 [[backend]]\nname = \"web\"\nbalance = \"round-robin\"\n\
                 server = [{{ address = \"{}\" }}, {{ address = \"{}\" }}]\n\
                 health_check = {{ kind = \"http\", path = \"/\", interval = \"200ms\", timeout = \"100ms\", rise = 2, fall = 3 }}\n",
                a.address, b.address
            ),
        ),
    );
    let b_series = format!("{{backend=\"web\",server=\"{}\"}}", b.address);
    until_metric(
        metrics,
        &format!("lab_lb_server_up{b_series}"),
        1.0,
        Duration::from_secs(5),
    );
    let mut both: Vec<String> = (0..4).map(|_| fetch(lb)).collect();
    both.sort();
    assert_eq!(both, ["a", "a", "b", "b"]);

    b.stop();
    let took = until_metric(
        metrics,
        &format!("lab_lb_server_up{b_series}"),
        0.0,
        Duration::from_secs(10),
    );
    // interval × fall, plus one interval for the phase of the first failing check, plus
    // scheduling slack on a busy two-core CI machine.
    let slack = Duration::from_millis(500);
    assert!(took <= interval * 4 + slack, "down after {took:?}");
    let failed_connects = metric(
        metrics,
        &format!("lab_lb_server_connect_failures_total{b_series}"),
    );
    for _ in 0..6 {
        assert_eq!(fetch(lb), "a");
    }
    assert_eq!(
        metric(
            metrics,
            &format!("lab_lb_server_connect_failures_total{b_series}")
        ),
        failed_connects,
        "a new connection was sent to the down server"
    );
    assert!(
        metric(
            metrics,
            &format!(
                "lab_lb_health_checks_total{{backend=\"web\",server=\"{}\",result=\"failed\"}}",
                b.address
            )
        ) >= 3.0
    );

    b.restart();
    let took = until_metric(
        metrics,
        &format!("lab_lb_server_up{b_series}"),
        1.0,
        Duration::from_secs(10),
    );
    assert!(took <= interval * 3 + slack, "up after {took:?}");
    let mut both: Vec<String> = (0..4).map(|_| fetch(lb)).collect();
    both.sort();
    assert_eq!(both, ["a", "a", "b", "b"]);
}

#[test]
fn https_readyz_check_counts_expected_statuses_only() {
    let apiserver = Nginx::https("apiserver");
    let (lb, metrics) = (ports::free_tcp(), ports::free_tcp());
    let body = |expect: &str| {
        config(
            metrics,
            &format!(
                "[[listener]]\nname = \"api\"\nlisten = \"{lb}\"\nmode = \"tcp\"\nbackend = \"api\"\n\n\
                 [[backend]]\nname = \"api\"\nserver = [{{ address = \"{}\" }}]\n\
                 health_check = {{ kind = \"https\", path = \"/readyz\", expect_status = {expect}, interval = \"100ms\", timeout = \"100ms\", rise = 1, fall = 1 }}\n",
                apiserver.address
            ),
        )
    };
    let series = format!(
        "lab_lb_server_up{{backend=\"api\",server=\"{}\"}}",
        apiserver.address
    );
    let passed = format!(
        "lab_lb_health_checks_total{{backend=\"api\",server=\"{}\",result=\"passed\"}}",
        apiserver.address
    );
    let mut daemon = Started::start(BIN, &body("[200, 401]"));
    let started = Instant::now();
    while metric(metrics, &passed) < 3.0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "401 not counted as alive"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    assert_eq!(metric(metrics, &series), 1.0);
    let ready = daemon.reload(&body("[200]"));
    assert!(!ready.contains("refused"), "{ready}");
    until_metric(metrics, &series, 0.0, Duration::from_secs(5));
}

#[test]
fn tls_and_tcp_checks_see_a_live_server() {
    let server = Nginx::https("talos");
    let (lb, metrics) = (ports::free_tcp(), ports::free_tcp());
    let dead = ports::free_tcp();
    let _daemon = Started::start(
        BIN,
        &config(
            metrics,
            &format!(
                "[[listener]]\nname = \"talos\"\nlisten = \"{lb}\"\nmode = \"tcp\"\nbackend = \"talos\"\n\n\
                 [[backend]]\nname = \"talos\"\nserver = [{{ address = \"{}\" }}, {{ address = \"{dead}\" }}]\n\
                 health_check = {{ kind = \"tls\", interval = \"100ms\", timeout = \"100ms\", rise = 1, fall = 1 }}\n",
                server.address
            ),
        ),
    );
    let up =
        |address: SocketAddr| format!("lab_lb_server_up{{backend=\"talos\",server=\"{address}\"}}");
    until_metric(metrics, &up(dead), 0.0, Duration::from_secs(5));
    let passed = format!(
        "lab_lb_health_checks_total{{backend=\"talos\",server=\"{}\",result=\"passed\"}}",
        server.address
    );
    until_metric(metrics, &up(server.address), 1.0, Duration::from_secs(5));
    assert!(metric(metrics, &passed) >= 1.0);
}
