//! The cross-platform WireGuard userspace API on `/var/run/wireguard/<interface>.sock`, so
//! `wg show`, `wg showconf` and `wg set` work against lab-vpn unchanged. Changes made here last
//! until the next reload, as with `wg` against a wg-quick interface.

use crate::device::{Device, PeerSettings, SessionKeys};
use crate::key::PublicKey;
use ipnet::IpNet;
use lab_daemon::control::{self, LineError};
use lab_daemon::Name;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};
use tokio::io::{AsyncBufRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::task::JoinHandle;

/// Where `wg` looks for `<interface>.sock`.
pub const SOCKET_DIR: &str = "/var/run/wireguard";

/// Errno values `wg` understands.
const EINVAL: i32 = 22;
const EPROTO: i32 = 71;
const EMSGSIZE: i32 = 90;
const ENOTSUP: i32 = 95;

/// Longest line of a request, newline included. `wg`'s longest is an endpoint or a key (under
/// 100 bytes); anything near this is not a WireGuard client.
pub const MAX_LINE: usize = 4096;
/// Most bytes in one request: room for thousands of peers and allowed IPs, and a bound on what
/// one connection makes the daemon hold.
pub const MAX_REQUEST: usize = 1 << 20;
/// A request must arrive, and its answer be taken, within this from the moment the daemon starts
/// waiting for it: a client that stalls (or opens the socket and sends nothing) gives its slot
/// back instead of holding it for ever.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more are closed at accept. Well inside the unit's LimitNOFILE.
pub const MAX_CONNECTIONS: usize = 64;

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

pub(crate) fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    // from_str_radix alone would take a sign ("+f").
    if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The answer to `get=1`.
pub fn get(device: &Device) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "private_key={}",
        hex(&device.private_key().secret().to_bytes())
    );
    let _ = writeln!(out, "listen_port={}", device.listen_port());
    let peers = device.peers();
    for settings in device.peer_settings() {
        let Some(peer) = peers.by_key.get(&settings.keys.public_key) else {
            continue;
        };
        let _ = writeln!(out, "public_key={}", hex(peer.keys.public_key.as_bytes()));
        if let Some(psk) = &peer.keys.preshared_key {
            let _ = writeln!(out, "preshared_key={}", hex(psk));
        }
        let _ = writeln!(out, "protocol_version=1");
        if let Some(endpoint) = peer.endpoint() {
            let _ = writeln!(out, "endpoint={}", endpoint.address);
        }
        let (seconds, nanos) = peer
            .last_handshake()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or((0, 0), |d| (d.as_secs(), d.subsec_nanos()));
        let _ = writeln!(out, "last_handshake_time_sec={seconds}");
        let _ = writeln!(out, "last_handshake_time_nsec={nanos}");
        let (received, sent) = peer.transfer();
        let _ = writeln!(out, "tx_bytes={sent}");
        let _ = writeln!(out, "rx_bytes={received}");
        let _ = writeln!(
            out,
            "persistent_keepalive_interval={}",
            peer.keys.keepalive.unwrap_or(0)
        );
        for net in peer.allowed_ips() {
            let _ = writeln!(out, "allowed_ip={net}");
        }
    }
    out.push_str("errno=0\n\n");
    out
}

/// A peer's name when `wg set` adds it: `wg-` and the start of its key, hex.
fn name_for(key: &PublicKey) -> Option<Name> {
    format!("wg-{}", &hex(key.as_bytes())[..12]).parse().ok()
}

/// Applies a `set=1` request's lines; `Err` is the errno to answer.
pub fn set(device: &Device, lines: &[String]) -> Result<(), i32> {
    let own_key = device.private_key().secret().to_bytes();
    let port = device.listen_port();
    device.edit_peers(|peers| apply(&own_key, port, peers, lines))
}

/// Applies a `set=1` request's lines to `peers` for a device of `own_key` listening on
/// `port`: what [`set`] does, without a device (the fuzz targets drive it).
#[doc(hidden)]
pub fn apply(
    own_key: &[u8; 32],
    port: u16,
    peers: &mut Vec<PeerSettings>,
    lines: &[String],
) -> Result<(), i32> {
    // Index into `peers` of the peer being edited; None before the first public_key=, or when
    // the current one is being removed / was update_only and absent.
    let mut current: Option<usize> = None;
    // The current peer was added by this request's public_key= line.
    let mut current_is_new = false;
    let mut skipping = false;
    // Set by the first public_key=: from there on every line belongs to a peer, as in
    // wireguard-go. An interface key there (replace_peers=true clearing the list under the
    // current peer's index) is refused, never applied.
    let mut in_peers = false;
    for line in lines {
        let (key, value) = line.split_once('=').ok_or(EPROTO)?;
        if in_peers
            && matches!(
                key,
                "private_key" | "listen_port" | "fwmark" | "replace_peers"
            )
        {
            return Err(EINVAL);
        }
        match key {
            "private_key" => {
                let bytes = unhex(value).ok_or(EINVAL)?;
                if bytes != *own_key {
                    return Err(ENOTSUP);
                }
            }
            "listen_port" => {
                let listen_port: u16 = value.parse().map_err(|_| EINVAL)?;
                if listen_port != port {
                    return Err(ENOTSUP);
                }
            }
            "fwmark" => {}
            "replace_peers" => {
                if value != "true" {
                    return Err(EINVAL);
                }
                peers.clear();
            }
            "public_key" => {
                let key = PublicKey::from_bytes(unhex(value).ok_or(EINVAL)?);
                in_peers = true;
                skipping = false;
                current_is_new = false;
                current = match peers.iter().position(|p| p.keys.public_key == key) {
                    Some(index) => Some(index),
                    None => {
                        current_is_new = true;
                        peers.push(PeerSettings {
                            name: name_for(&key).ok_or(EINVAL)?,
                            keys: SessionKeys {
                                public_key: key,
                                preshared_key: None,
                                keepalive: None,
                            },
                            allowed_ips: Vec::new(),
                            endpoint: None,
                        });
                        Some(peers.len() - 1)
                    }
                };
            }
            _ if skipping => {}
            "update_only" => {
                // Only change a peer that exists: one this request just added is dropped again.
                if let (Some(index), true) = (current, current_is_new) {
                    if index >= peers.len() {
                        return Err(EPROTO);
                    }
                    peers.remove(index);
                    current = None;
                    skipping = true;
                }
            }
            "remove" => {
                let index = current.ok_or(EPROTO)?;
                if value == "true" {
                    if index >= peers.len() {
                        return Err(EPROTO);
                    }
                    peers.remove(index);
                    current = None;
                    skipping = true;
                }
            }
            "preshared_key" => {
                let psk = unhex(value).ok_or(EINVAL)?;
                peer(peers, current)?.keys.preshared_key = (psk != [0u8; 32]).then_some(psk);
            }
            "endpoint" => {
                let address: SocketAddr = value
                    .trim_matches(['[', ']'])
                    .parse()
                    .or_else(|_| value.parse())
                    .map_err(|_| EINVAL)?;
                peer(peers, current)?.endpoint = Some(address);
            }
            "persistent_keepalive_interval" => {
                let seconds: u16 = value.parse().map_err(|_| EINVAL)?;
                peer(peers, current)?.keys.keepalive = (seconds > 0).then_some(seconds);
            }
            "replace_allowed_ips" => {
                let peer = peer(peers, current)?;
                if value == "true" {
                    peer.allowed_ips.clear();
                }
            }
            "allowed_ip" => {
                peer(peers, current)?;
                let net: IpNet = value.parse().map_err(|_| EINVAL)?;
                let net = net.trunc();
                // A prefix moves to the peer that claims it last, as in WireGuard.
                for other in peers.iter_mut() {
                    other.allowed_ips.retain(|n| *n != net);
                }
                peer(peers, current)?.allowed_ips.push(net);
            }
            "protocol_version" => {
                if value != "1" {
                    return Err(EINVAL);
                }
            }
            _ => return Err(EINVAL),
        }
    }
    Ok(())
}

/// The peer a line applies to: `EPROTO` before any public_key= (or after its removal), never a
/// panic on an index the request made stale.
fn peer(peers: &mut [PeerSettings], current: Option<usize>) -> Result<&mut PeerSettings, i32> {
    current.and_then(|i| peers.get_mut(i)).ok_or(EPROTO)
}

/// The control socket: created 0600 (root only: it hands out the private key), removed on drop.
pub struct ControlSocket {
    path: PathBuf,
    task: JoinHandle<()>,
}

impl ControlSocket {
    /// Serves `device` on `<SOCKET_DIR>/<interface>.sock`.
    pub fn start(device: Arc<Device>) -> std::io::Result<Self> {
        Self::start_at(Path::new(SOCKET_DIR), device)
    }

    /// Serves `device` on `<dir>/<interface>.sock`; refuses when another process serves it.
    pub fn start_at(dir: &Path, device: Arc<Device>) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        let path = dir.join(format!("{}.sock", device.interface));
        let listener = control::bind(&path, None)?;
        let task = tokio::spawn(control::serve(listener, MAX_CONNECTIONS, move |stream| {
            let device = device.clone();
            async move { connection(stream, &device).await }
        }));
        Ok(Self { path, task })
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What ended a request early.
#[derive(Debug, PartialEq, Eq)]
enum ReadError {
    /// The client closed (or the socket failed): nothing to answer.
    Closed,
    /// A line over [`MAX_LINE`], the request over [`MAX_REQUEST`], or not UTF-8: answered with
    /// an errno, then the connection is closed (the rest of the stream cannot be trusted).
    Refused(i32),
}

/// One line without its newline, reading at most [`MAX_LINE`] bytes of it and no more than
/// `budget` (what is left of the request's [`MAX_REQUEST`]).
async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    budget: &mut usize,
) -> Result<String, ReadError> {
    control::read_line(reader, MAX_LINE, budget)
        .await
        .map_err(|e| match e {
            LineError::Closed => ReadError::Closed,
            LineError::TooLong => ReadError::Refused(EMSGSIZE),
            LineError::NotUtf8 => ReadError::Refused(EPROTO),
        })
}

/// Reads one request and answers it. `Ok(())` when the connection may carry another.
async fn exchange<R, W>(device: &Device, reader: &mut R, write: &mut W) -> Result<(), ReadError>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut budget = MAX_REQUEST;
    let (text, result) = match answer(device, reader, &mut budget).await {
        Ok(text) => (text, Ok(())),
        Err(ReadError::Refused(errno)) => {
            (format!("errno={errno}\n\n"), Err(ReadError::Refused(errno)))
        }
        Err(ReadError::Closed) => return Err(ReadError::Closed),
    };
    write
        .write_all(text.as_bytes())
        .await
        .map_err(|_| ReadError::Closed)?;
    result
}

async fn answer<R: AsyncBufRead + Unpin>(
    device: &Device,
    reader: &mut R,
    budget: &mut usize,
) -> Result<String, ReadError> {
    let mut command = String::new();
    // Blank lines between requests are skipped (each still counts against the budget).
    while command.is_empty() {
        command = read_line(reader, budget).await?;
    }
    Ok(match command.as_str() {
        "get=1" => {
            // The request ends with an empty line.
            while !read_line(reader, budget).await?.is_empty() {}
            get(device)
        }
        "set=1" => {
            let mut body = Vec::new();
            loop {
                let line = read_line(reader, budget).await?;
                if line.is_empty() {
                    break;
                }
                body.push(line);
            }
            match set(device, &body) {
                Ok(()) => "errno=0\n\n".to_owned(),
                Err(errno) => format!("errno={errno}\n\n"),
            }
        }
        _ => format!("errno={EPROTO}\n\n"),
    })
}

async fn connection(stream: UnixStream, device: &Device) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    // One request per connection is what `wg` sends; serve more while they keep coming in time.
    loop {
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange(device, &mut reader, &mut write)).await
        {
            Ok(Ok(())) => {}
            Ok(Err(ReadError::Refused(errno))) => {
                tracing::debug!(errno, "control socket: request refused, connection closed");
                return;
            }
            Ok(Err(ReadError::Closed)) => return,
            Err(_) => {
                tracing::debug!("control socket: request not complete in time, connection closed");
                return;
            }
        }
    }
}
