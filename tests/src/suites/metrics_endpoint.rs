//! The metrics endpoint under attack: a slowloris from one address and from many. The daemon's
//! descriptors stay bounded, another address is still served while one floods, and the held
//! connections are closed once their head is overdue.

use super::systemd_env::{prepare, start_ready, Setup};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The daemon's bounds (lab_daemon::metrics::server), with room for the process's own.
const PER_CLIENT: usize = 8;
const TOTAL: usize = 64;
const SLACK: usize = 6;
/// The daemon's head timeout, with room for a loaded machine.
const HEAD_OVERDUE: Duration = Duration::from_secs(10 + 10);

fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| entries.count())
        .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}"))
}

/// Connections from `source` to `target` that each send half a request head and stop (those
/// the daemon refuses are closed by it).
fn slowloris(source: IpAddr, target: SocketAddr, count: usize) -> Vec<TcpStream> {
    use socket2::{Domain, Socket, Type};
    (0..count)
        .filter_map(|_| {
            let socket = Socket::new(Domain::for_address(target), Type::STREAM, None).ok()?;
            socket.bind(&SocketAddr::new(source, 0).into()).ok()?;
            socket.connect(&target.into()).ok()?;
            let mut stream = TcpStream::from(socket);
            let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\n");
            Some(stream)
        })
        .collect()
}

/// `GET /metrics` from `source`; the status, or 0 when the connection was refused or closed.
fn scrape_from(source: IpAddr, target: SocketAddr) -> u16 {
    let mut stream = slowloris(source, target, 1)
        .pop()
        .unwrap_or_else(|| panic!("cannot connect from {source} to {target}"));
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream.write_all(b"Connection: close\r\n\r\n").is_err() {
        return 0;
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3)?.parse().ok())
        .unwrap_or(0)
}

/// Whether the daemon has closed `stream` (a read ends or fails rather than timing out).
fn closed_by_daemon(stream: &mut TcpStream, within: Duration) -> bool {
    let _ = stream.set_read_timeout(Some(within));
    let mut buffer = [0u8; 256];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                )
            }
        }
    }
}

/// Starts the daemon of `setup` and floods its metrics endpoint with slow connections, from
/// one address and from many; panics if its descriptors grow past the endpoint's limits, if
/// another address is not served meanwhile, or if held connections outlive their head timeout.
pub fn slow_clients_are_bounded(setup: &Setup<'_>) {
    let prepared = prepare(setup);
    // As written: the config function may pick new ports each call.
    let config: toml_edit::DocumentMut = std::fs::read_to_string(&prepared.path)
        .unwrap_or_else(|e| panic!("{e}"))
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let metrics: SocketAddr = config["metrics"]["listen"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("test config has no [metrics] listen"));
    let (daemon, _notify) = start_ready(setup, &prepared, &[]);
    let pid = daemon.pid();
    let in_namespace = |work: &(dyn Fn() -> Vec<TcpStream> + Sync)| match &prepared.netns {
        Some(netns) => netns.enter(work),
        None => work(),
    };
    let loopback = |last: u8| IpAddr::from([127, 0, 0, last]);
    assert_eq!(
        in_namespace(&|| {
            let status = scrape_from(loopback(1), metrics);
            assert_eq!(status, 200);
            Vec::new()
        })
        .len(),
        0
    );
    let before = open_descriptors(pid);

    // One address holds a few connections, however many it opens; another is served.
    let mut held = in_namespace(&|| slowloris(loopback(1), metrics, 200));
    std::thread::sleep(Duration::from_millis(300));
    let after_one = open_descriptors(pid);
    assert!(
        after_one <= before + PER_CLIENT + SLACK,
        "200 slow connections from one address: {before} descriptors before, {after_one} after"
    );
    in_namespace(&|| {
        assert_eq!(
            scrape_from(loopback(2), metrics),
            200,
            "another address was refused"
        );
        Vec::new()
    });

    // Many addresses together are held to the total.
    let many: Vec<TcpStream> = in_namespace(&|| {
        (3..=60)
            .flat_map(|last| slowloris(loopback(last), metrics, 4))
            .collect()
    });
    held.extend(many);
    std::thread::sleep(Duration::from_millis(300));
    let after_many = open_descriptors(pid);
    assert!(
        after_many <= before + TOTAL + SLACK,
        "slow connections from 58 addresses: {before} descriptors before, {after_many} after"
    );

    // Their heads overdue, the daemon lets them go, and serves again.
    let started = Instant::now();
    let still_open = held
        .iter_mut()
        .map(|stream| {
            let left = HEAD_OVERDUE.saturating_sub(started.elapsed());
            closed_by_daemon(stream, left.max(Duration::from_millis(100)))
        })
        .filter(|closed| !closed)
        .count();
    assert_eq!(
        still_open, 0,
        "slow connections still held after {HEAD_OVERDUE:?}"
    );
    in_namespace(&|| {
        assert_eq!(
            scrape_from(loopback(1), metrics),
            200,
            "not served after the flood"
        );
        Vec::new()
    });
    drop(daemon);
}
