//! Local control sockets (lab-vpn's `wg` socket, lab-lb's runtime API): a Unix socket only its
//! owner (and, where configured, one group) may open, a bounded number of clients at a time, and
//! requests read as bounded lines.

use nix::unistd::Gid;
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

/// Binds a Unix socket at `path`, readable and writable by its owner only (0600), or by its owner
/// and `group` (0660, as HAProxy's `stats socket ... mode 660 group`); refuses when another
/// process serves it, and replaces one a crashed run left behind.
pub fn bind(path: &Path, group: Option<Gid>) -> std::io::Result<UnixListener> {
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("{} is served by another process", path.display()),
        ));
    }
    // A socket left by a crashed run would make bind fail.
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    // Between bind and here the socket has the umask's mode: the peer checks of the servers
    // stand for that instant.
    set_access(path, group)?;
    Ok(listener)
}

/// Makes the socket at `path` its owner's alone (0600), or its owner's and `group`'s (0660).
pub fn set_access(path: &Path, group: Option<Gid>) -> std::io::Result<()> {
    // Narrowed first, so a group change never leaves the old group a moment of access.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    if let Some(gid) = group {
        nix::unistd::chown(path, None, Some(gid))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    }
    Ok(())
}

/// Accepts on `listener` for ever, running `connection` for each client, at most
/// `max_connections` at once: more are closed at accept, so a flood of clients holds a bounded
/// number of tasks and descriptors.
pub async fn serve<F, Fut>(listener: UnixListener, max_connections: usize, connection: F)
where
    F: Fn(UnixStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors, most likely: give the others time to close some.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(
                limit = max_connections,
                "control socket: too many connections, one closed"
            );
            continue;
        };
        let served = connection(stream);
        tokio::spawn(async move {
            served.await;
            drop(slot);
        });
    }
}

/// The client on the other end of `stream` is root or the daemon's own user (SO_PEERCRED: the
/// kernel's word, not the client's).
pub fn peer_is_root_or_owner(stream: &UnixStream) -> bool {
    peer_is_allowed(stream, None)
}

/// The client on the other end of `stream` is root, the daemon's own user, or a member of
/// `group` (its primary group from SO_PEERCRED, or a supplementary one the kernel lists for its
/// process). The socket file's mode is the first gate; this is the second, so a mode opened by
/// hand does not open the API.
pub fn peer_is_allowed(stream: &UnixStream, group: Option<Gid>) -> bool {
    let owner = nix::unistd::geteuid().as_raw();
    let Ok(cred) = stream.peer_cred() else {
        return false;
    };
    if cred.uid() == 0 || cred.uid() == owner {
        return true;
    }
    let Some(group) = group else {
        return false;
    };
    cred.gid() == group.as_raw()
        || cred
            .pid()
            .is_some_and(|pid| supplementary_groups(pid).contains(&group.as_raw()))
}

/// The supplementary groups of process `pid` (`Groups:` in /proc/PID/status); none when the
/// process is gone or the line is unreadable, which refuses rather than guesses.
fn supplementary_groups(pid: i32) -> Vec<u32> {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Vec::new();
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("Groups:"))
        .map(|groups| {
            groups
                .split_whitespace()
                .filter_map(|g| g.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The group named `name` (or numbered, as `chgrp` takes either) on this machine.
pub fn group_named(name: &str) -> Result<Gid, String> {
    if let Ok(number) = name.parse::<u32>() {
        return Ok(Gid::from_raw(number));
    }
    match nix::unistd::Group::from_name(name) {
        Ok(Some(group)) => Ok(group.gid),
        Ok(None) => Err(format!("no group `{name}` on this machine")),
        Err(e) => Err(format!("cannot look up group `{name}`: {e}")),
    }
}

/// What ended a request line early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineError {
    /// The client closed (or the socket failed): nothing to answer.
    Closed,
    /// The line is over the line limit or the request's budget.
    TooLong,
    /// The line is not UTF-8.
    NotUtf8,
}

/// One line without its newline, reading at most `max_line` bytes of it and no more than
/// `budget` (what is left of the request's size limit, reduced by what is read).
pub async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    max_line: usize,
    budget: &mut usize,
) -> Result<String, LineError> {
    let mut line = Vec::new();
    loop {
        let available = reader.fill_buf().await.map_err(|_| LineError::Closed)?;
        if available.is_empty() {
            return Err(LineError::Closed);
        }
        let (taken, done) = match available.iter().position(|&b| b == b'\n') {
            Some(end) => (end + 1, true),
            None => (available.len(), false),
        };
        if line.len() + taken > max_line || taken > *budget {
            return Err(LineError::TooLong);
        }
        *budget -= taken;
        line.extend_from_slice(&available[..taken]);
        reader.consume(taken);
        if done {
            line.pop();
            return String::from_utf8(line).map_err(|_| LineError::NotUtf8);
        }
    }
}
