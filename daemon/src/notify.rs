//! The systemd notify protocol (`sd_notify(3)`), through the `sd-notify` crate.
//!
//! Every call is a no-op when `NOTIFY_SOCKET` is unset, so the daemon runs the same outside
//! systemd. A failed send is logged, never fatal: the service itself is fine.

use sd_notify::NotifyState;
use std::time::Duration;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "could not notify systemd");
    }
}

/// How `STATUS=` begins after a refused reload (the daemon still serves the old config):
/// lab-bootstrap reads it back with `systemctl show` to tell a refused reload from a taken one.
pub const RELOAD_REFUSED: &str = "reload refused, still serving the previous configuration";

/// `READY=1`, with a human-readable `STATUS=`.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `RELOADING=1` with `MONOTONIC_USEC`, as `Type=notify-reload` requires.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[
            NotifyState::Reloading,
            now,
            NotifyState::Status("reloading configuration"),
        ]),
        Err(e) => {
            tracing::warn!(error = %e, "could not read CLOCK_MONOTONIC");
            send(&[NotifyState::Reloading]);
        }
    }
}

/// `STOPPING=1`.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("draining")]);
}

/// `STOPPING=1` with why, for `systemctl status`, when the daemon gives up on its own.
pub fn failed(reason: &str) {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status(&format!("failed: {reason}")),
    ]);
}

/// `WATCHDOG=1`.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// How often to send `WATCHDOG=1`: half the `WATCHDOG_USEC` systemd asked for, if it asked us.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|timeout| timeout / 2)
}
