//! The client side of the control socket, for the `peer` commands: is the daemon running
//! (and which process it is), and what `get` says about its peers.

use crate::key::PublicKey;
use crate::uapi::{unhex, SOCKET_DIR};
use ipnet::IpNet;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const TIMEOUT: Duration = Duration::from_secs(5);

/// The control socket of `interface`: `/var/run/wireguard/<interface>.sock`.
pub fn socket_path(interface: &str) -> PathBuf {
    PathBuf::from(SOCKET_DIR).join(format!("{interface}.sock"))
}

/// What `get` reports of one peer.
#[derive(Debug, Clone, Default)]
pub struct PeerStatus {
    /// The peer's key; `None` only if the daemon's answer lacked it.
    pub public_key: Option<PublicKey>,
    /// Where the peer was last seen, `address:port` as the daemon wrote it.
    pub endpoint: Option<String>,
    /// Wall-clock time of its last completed handshake; `None` before the first.
    pub last_handshake: Option<SystemTime>,
    /// WireGuard bytes received from the peer (`rx_bytes`).
    pub received: u64,
    /// WireGuard bytes sent to the peer (`tx_bytes`).
    pub sent: u64,
    /// The source addresses the peer may use and the destinations routed to it.
    pub allowed_ips: Vec<IpNet>,
}

/// A connection to a running daemon's control socket.
pub struct Control {
    stream: UnixStream,
}

impl Control {
    /// `None` when nothing serves the interface's socket: the daemon is not running.
    pub fn connect(interface: &str) -> io::Result<Option<Self>> {
        match UnixStream::connect(socket_path(interface)) {
            Ok(stream) => {
                stream.set_read_timeout(Some(TIMEOUT))?;
                stream.set_write_timeout(Some(TIMEOUT))?;
                Ok(Some(Self { stream }))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The process serving the socket, as the kernel vouches for it.
    pub fn server_pid(&self) -> io::Result<nix::unistd::Pid> {
        let credentials =
            nix::sys::socket::getsockopt(&self.stream, nix::sys::socket::sockopt::PeerCredentials)
                .map_err(io::Error::from)?;
        Ok(nix::unistd::Pid::from_raw(credentials.pid()))
    }

    /// The peers the daemon has now.
    pub fn peers(&mut self) -> io::Result<Vec<PeerStatus>> {
        self.stream.write_all(b"get=1\n\n")?;
        let mut peers: Vec<PeerStatus> = Vec::new();
        let mut handshake_sec = 0u64;
        let mut reader = BufReader::new(&self.stream);
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the daemon closed the control socket mid-answer",
                ));
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            if key == "errno" {
                if value != "0" {
                    return Err(io::Error::other(format!(
                        "the daemon answered errno {value}"
                    )));
                }
                continue;
            }
            if key == "public_key" {
                peers.push(PeerStatus {
                    public_key: unhex(value).map(PublicKey::from_bytes),
                    ..PeerStatus::default()
                });
                continue;
            }
            let Some(peer) = peers.last_mut() else {
                continue; // interface lines (private_key, listen_port): not ours to show
            };
            match key {
                "endpoint" => peer.endpoint = Some(value.to_owned()),
                "rx_bytes" => peer.received = value.parse().unwrap_or(0),
                "tx_bytes" => peer.sent = value.parse().unwrap_or(0),
                "allowed_ip" => peer.allowed_ips.extend(value.parse::<IpNet>().ok()),
                "last_handshake_time_sec" => handshake_sec = value.parse().unwrap_or(0),
                "last_handshake_time_nsec" => {
                    let nanos = value.parse().unwrap_or(0);
                    peer.last_handshake = (handshake_sec > 0)
                        .then(|| UNIX_EPOCH + Duration::new(handshake_sec, nanos));
                }
                _ => {}
            }
        }
        Ok(peers)
    }
}
