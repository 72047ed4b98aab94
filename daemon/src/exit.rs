//! Exit statuses, from sysexits.h, so that systemd units and scripts can tell causes apart.

use std::process::ExitCode;

/// The configuration file is missing, unreadable, malformed or invalid (`EX_CONFIG`).
pub const CONFIG: u8 = 78;
/// The command line was wrong (`EX_USAGE`).
pub const USAGE: u8 = 64;
/// The system refused something the daemon needs, e.g. binding a socket (`EX_OSERR`).
pub const OS_ERROR: u8 = 71;
/// An internal error the daemon could not recover from (`EX_SOFTWARE`).
pub const SOFTWARE: u8 = 70;

/// `status` as the process's exit code, for `main` to return.
pub fn code(status: u8) -> ExitCode {
    ExitCode::from(status)
}
