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

/// Runs `work` in a thread that entered network namespace `ns`, so every socket it makes is
/// made there; the machine's own namespace is never changed.
pub fn in_netns<T: Send>(ns: &str, work: impl FnOnce() -> T + Send) -> Result<T, LocalError> {
    let path = format!("/run/netns/{ns}");
    let failed = |problem: String| LocalError::Command {
        what: format!("entering namespace {ns}"),
        problem,
    };
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let namespace = std::fs::File::open(&path).map_err(|e| failed(e.to_string()))?;
                nix::sched::setns(&namespace, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| failed(e.to_string()))?;
                Ok(work())
            })
            .join()
            .unwrap_or_else(|_| Err(failed("the thread panicked".to_owned())))
    })
}

/// Whether a TCP connection to `address` from inside `ns` succeeds within `timeout`.
pub fn tcp_reachable(
    ns: &str,
    address: std::net::SocketAddr,
    timeout: std::time::Duration,
) -> bool {
    in_netns(ns, || {
        std::net::TcpStream::connect_timeout(&address, timeout).is_ok()
    })
    .unwrap_or(false)
}
