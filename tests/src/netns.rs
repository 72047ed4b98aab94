//! Network namespaces made by a test, named uniquely, with loopback up, removed when dropped.
//! Nothing is changed in the machine's own namespace.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A network namespace, deleted when dropped.
pub struct Netns {
    /// Its name, for `ip netns exec` and `ip link ... netns`.
    pub name: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

impl Netns {
    /// A new namespace `labt-<pid>-<n>-<role>`.
    pub fn new(role: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("labt-{}-{n}-{role}", std::process::id());
        ip(&["netns", "add", &name]).unwrap_or_else(|e| panic!("{e}"));
        let netns = Self { name };
        netns.run(&["ip", "link", "set", "lo", "up"]);
        netns
    }

    /// `program args…` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    /// Runs `work` on a thread inside the namespace: sockets it makes belong to the namespace,
    /// whichever thread uses them later.
    pub fn enter<T: Send>(&self, work: impl FnOnce() -> T + Send) -> T {
        enter(&self.name, work)
    }

    /// Runs a command inside the namespace and panics if it fails.
    pub fn run(&self, argv: &[&str]) {
        let output = self
            .command(argv[0])
            .args(&argv[1..])
            .output()
            .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        assert!(
            output.status.success(),
            "in {}: {argv:?}: {}",
            self.name,
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Runs `work` on a thread inside the namespace `name` (one made by `ip netns add`, this
/// test's or a program's under test): sockets it makes belong to that namespace.
pub fn enter<T: Send>(name: &str, work: impl FnOnce() -> T + Send) -> T {
    use std::os::fd::AsFd;
    let path = format!("/run/netns/{name}");
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let namespace =
                    std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
                nix::sched::setns(namespace.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("setns {path}: {e}"));
                work()
            })
            .join()
            .unwrap_or_else(|_| panic!("a thread in {name} panicked"))
    })
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Processes still inside keep it alive until they exit; the name goes now.
        let _ = ip(&["netns", "del", &self.name]);
    }
}
