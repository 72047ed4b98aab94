//! Running the system's network tools (`ip`, `nft`, `sysctl`, `udhcpc`), inside a namespace or
//! not, with their complaints turned into errors that say what was attempted.

use super::LocalError;
use std::process::Command;

/// Runs `program args…` here; its stdout, or an error with its stderr when it fails.
pub fn run(program: &str, args: &[&str]) -> Result<String, LocalError> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| LocalError::Command {
            what: format!("{program} {}", args.join(" ")),
            problem: format!("cannot run {program}: {e}"),
        })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(LocalError::Command {
            what: format!("{program} {}", args.join(" ")),
            problem: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// `program args…` inside namespace `ns`.
pub fn in_ns(ns: &str, program: &str, args: &[&str]) -> Result<String, LocalError> {
    let mut full = vec!["netns", "exec", ns, program];
    full.extend_from_slice(args);
    run("ip", &full)
}

/// Whether a TCP connection to `address` from inside `ns` succeeds within `timeout`: the
/// socket is made in a thread that entered the namespace.
pub fn tcp_reachable(
    ns: &str,
    address: std::net::SocketAddr,
    timeout: std::time::Duration,
) -> bool {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let Ok(namespace) = std::fs::File::open(&path) else {
            return false;
        };
        if nix::sched::setns(&namespace, nix::sched::CloneFlags::CLONE_NEWNET).is_err() {
            return false;
        }
        std::net::TcpStream::connect_timeout(&address, timeout).is_ok()
    })
    .join()
    .unwrap_or(false)
}
