//! The lab's processes: dnsmasq, lab-lb, lab-vpn, the stand-ins. Each runs detached (its own
//! session, output to a log file in the state directory) inside its namespace, with its pid
//! recorded; `down` stops whatever runs in the lab's namespaces, recorded or not.

use super::state_dir::LocalStateDir;
use super::LocalError;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The service name of daemon `program` in container `container`: the program's own name
/// without a pair, `<program>-<container>` in one.
pub fn daemon_service(program: &str, pair: bool, container: &str) -> String {
    match pair {
        true => format!("{program}-{container}"),
        false => program.to_owned(),
    }
}

/// Starts `argv` in `ns` as service `name`; returns its pid.
pub fn start(
    state: &LocalStateDir,
    ns: &str,
    name: &str,
    argv: &[String],
) -> Result<u32, LocalError> {
    for dir in [state.logs(), state.pids()] {
        std::fs::create_dir_all(&dir).map_err(|e| LocalError::Io {
            what: format!("creating {}", dir.display()),
            source: e,
        })?;
    }
    let log_file = state.log(name);
    let log = std::fs::File::create(&log_file).map_err(|e| LocalError::Io {
        what: format!("creating {}", log_file.display()),
        source: e,
    })?;
    let err_log = log.try_clone().map_err(|e| LocalError::Io {
        what: format!("opening {}", log_file.display()),
        source: e,
    })?;
    // `ip netns exec` and `setsid` both exec in place (a child is no group leader, so setsid
    // does not fork): the pid is the service's own.
    let child = Command::new("ip")
        .args(["netns", "exec", ns, "setsid"])
        .args(argv)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err_log)
        .spawn()
        .map_err(|e| LocalError::Command {
            what: format!("starting {name}"),
            problem: e.to_string(),
        })?;
    let pid = child.id();
    // The child outlives this process; it is reaped by init once we exit.
    drop(child);
    let path = state.pid(name);
    std::fs::write(&path, format!("{pid}\n")).map_err(|e| LocalError::Io {
        what: format!("writing {}", path.display()),
        source: e,
    })?;
    Ok(pid)
}

/// The recorded pid of service `name`, if it still runs.
pub fn running(state: &LocalStateDir, name: &str) -> Option<u32> {
    let pid: i32 = std::fs::read_to_string(state.pid(name))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let alive = kill(Pid::from_raw(pid), None).is_ok()
        // A zombie is not running: it only waits for its parent.
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')));
    alive.then_some(pid as u32)
}

/// Stops every process inside namespace `ns`: SIGTERM, then SIGKILL after a grace period.
pub fn stop_namespace(ns: &str) {
    let pids = |_: ()| -> Vec<Pid> {
        Command::new("ip")
            .args(["netns", "pids", ns])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .map(Pid::from_raw)
                    .collect()
            })
            .unwrap_or_default()
    };
    for pid in pids(()) {
        let _ = kill(pid, Signal::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pids(()).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    for pid in pids(()) {
        let _ = kill(pid, Signal::SIGKILL);
    }
}
