//! A daemon under a test-owned `NOTIFY_SOCKET`, taken through start, scrape, reload, refused
//! reload and stop, as systemd and Prometheus would drive it.

use crate::netns::Netns;
use crate::notify_socket::field;
use crate::{http, promtool, DaemonProcess, NotifySocket};
use nix::sys::signal::Signal;
use nix::time::{clock_gettime, ClockId};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use toml_edit::DocumentMut;

const NOTIFY_TIMEOUT: Duration = Duration::from_secs(20);
/// The shipped units' TimeoutStopSec.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A daemon, and what the check needs to know of it.
pub struct Lifecycle<'a> {
    /// The daemon's binary.
    pub bin: &'a str,
    /// Metric name prefix: `lab_lb`.
    pub prefix: &'a str,
    /// The example config made to run on loopback, given the directory it will live in (for
    /// files it refers to, such as keys).
    pub config: &'a dyn Fn(&Path) -> DocumentMut,
    /// Run the daemon (and every client) in a namespace of its own: for daemons that create
    /// interfaces.
    pub in_netns: bool,
    /// A valid edit whose effect shows in `/metrics`...
    pub change: &'a dyn Fn(&mut DocumentMut),
    /// ...as this line, absent before the change.
    pub changed_metric: &'a str,
}

fn write_atomically(path: &Path, text: &str) {
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, text).unwrap_or_else(|e| panic!("{e}"));
    std::fs::rename(&temp, path).unwrap_or_else(|e| panic!("{e}"));
}

fn scrape(netns: Option<&Netns>, address: SocketAddr) -> String {
    let response = http::get_in(netns, address, "/metrics", &[]);
    assert_eq!(response.status, 200, "{}", response.body);
    response.body
}

fn has_line(exposition: &str, line: &str) -> bool {
    exposition.lines().any(|l| l == line)
}

fn monotonic_usec_now() -> i64 {
    let now = clock_gettime(ClockId::CLOCK_MONOTONIC).unwrap_or_else(|e| panic!("{e}"));
    now.tv_sec() * 1_000_000 + now.tv_nsec() / 1_000
}

/// Takes the daemon of `test` through start, scrape, reload, refused reload and stop; panics at
/// the first step where it does not behave as systemd and Prometheus expect.
pub fn run(test: Lifecycle<'_>) {
    let Lifecycle {
        bin,
        prefix,
        config,
        in_netns,
        change,
        changed_metric,
    } = test;
    let netns = in_netns.then(|| Netns::new("daemon"));
    let netns = netns.as_ref();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = config(dir.path());
    let metrics: SocketAddr = config["metrics"]["listen"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("test config has no [metrics] listen"));
    let config_path = dir.path().join("daemon.toml");
    write_atomically(&config_path, &config.to_string());
    let mut notify = NotifySocket::new();
    let mut daemon = DaemonProcess::spawn(DaemonProcess::command_in(
        netns,
        bin,
        &config_path,
        notify.path(),
    ));

    // Start: READY=1 only once listening, so the scrape right after must succeed.
    notify.expect(&["READY=1"], NOTIFY_TIMEOUT);
    let exposition = scrape(netns, metrics);
    if let Err(complaint) = promtool::check_metrics(&exposition) {
        panic!("promtool check metrics refused /metrics: {complaint}\n{exposition}");
    }
    for family in [
        "process_start_time_seconds",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_cpu_seconds_total",
    ] {
        assert!(
            exposition
                .lines()
                .any(|l| l.starts_with(&format!("{family} "))),
            "no {family} in:\n{exposition}"
        );
    }
    assert!(
        exposition.contains(&format!("{prefix}_build_info{{version=\"")),
        "no build info in:\n{exposition}"
    );
    assert!(has_line(
        &exposition,
        &format!("{prefix}_config_last_reload_successful 1")
    ));
    assert!(
        !has_line(&exposition, changed_metric),
        "{changed_metric} before the change"
    );

    let openmetrics = http::get_in(
        netns,
        metrics,
        "/metrics",
        &["Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"],
    );
    assert!(
        openmetrics
            .content_type
            .starts_with("application/openmetrics-text"),
        "{}",
        openmetrics.content_type
    );
    assert!(
        openmetrics.body.trim_end().ends_with("# EOF"),
        "{}",
        openmetrics.body
    );

    // Reload with a valid, changed config: RELOADING=1 with MONOTONIC_USEC, then READY=1, and
    // the change is in effect.
    let mut changed = config.clone();
    change(&mut changed);
    write_atomically(&config_path, &changed.to_string());
    let before = monotonic_usec_now();
    daemon.signal(Signal::SIGHUP);
    let reloading = notify.expect(&["RELOADING=1"], NOTIFY_TIMEOUT);
    let usec: i64 = field(&reloading, "MONOTONIC_USEC")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("RELOADING=1 without a numeric MONOTONIC_USEC: {reloading:?}"));
    assert!(
        usec >= before && usec <= monotonic_usec_now(),
        "MONOTONIC_USEC={usec} is not the time of the reload"
    );
    let ready = notify.expect(&["READY=1"], NOTIFY_TIMEOUT);
    // Counted, so a reload changes the status even when the summary stays: how lab-bootstrap
    // tells the reload's outcome from the status before it.
    assert!(
        field(&ready, "STATUS")
            .is_some_and(|s| s.starts_with("serving: ") && s.ends_with(" (reload 1)")),
        "STATUS does not count the reload: {ready:?}"
    );
    let exposition = scrape(netns, metrics);
    assert!(
        has_line(&exposition, changed_metric),
        "reload did not apply {changed_metric}:\n{exposition}"
    );
    assert!(has_line(
        &exposition,
        &format!("{prefix}_config_reloads_total{{result=\"success\"}} 1")
    ));

    // Reload with a broken config: refused, logged with the key, the old config still serves.
    let broken = changed.to_string().replacen("level =", "levle =", 1);
    assert_ne!(
        broken,
        changed.to_string(),
        "example has no `level =` to break"
    );
    write_atomically(&config_path, &broken);
    daemon.signal(Signal::SIGHUP);
    notify.expect(&["RELOADING=1"], NOTIFY_TIMEOUT);
    let ready = notify.expect(&["READY=1"], NOTIFY_TIMEOUT);
    assert!(
        field(&ready, "STATUS").is_some_and(|s| s
            .starts_with("reload refused, still serving the previous configuration (reload 2): ")),
        "STATUS does not say the reload was refused: {ready:?}"
    );
    let logged = daemon.expect_log(
        |l| l.contains("ERROR") && l.contains("levle") && l.contains("refused"),
        "naming the refused key",
        NOTIFY_TIMEOUT,
    );
    assert!(
        logged.contains("daemon.toml:"),
        "error does not name the file: {logged}"
    );
    let exposition = scrape(netns, metrics);
    assert!(
        has_line(&exposition, changed_metric),
        "the running config was lost:\n{exposition}"
    );
    assert!(has_line(
        &exposition,
        &format!("{prefix}_config_last_reload_successful 0")
    ));
    assert!(has_line(
        &exposition,
        &format!("{prefix}_config_reloads_total{{result=\"failure\"}} 1")
    ));

    // Stop: STOPPING=1, drain, exit 0 within the unit's stop timeout.
    daemon.signal(Signal::SIGTERM);
    notify.expect(&["STOPPING=1"], NOTIFY_TIMEOUT);
    let status = daemon.wait_exit(STOP_TIMEOUT);
    assert!(
        status.success(),
        "exit status {status:?}; stderr:\n{}",
        daemon.stderr().join("\n")
    );
    let log = daemon.stderr().join("\n");
    assert!(!log.contains("panicked"), "{log}");
}
