//! The gateway as the shared lifecycle runs it: keys read, TUN device created and configured,
//! UDP socket bound, the device's loops running; peers follow reloads without dropping the
//! sessions of unchanged ones.

use crate::config::VpnConfig;
use crate::conn::Conn;
use crate::device::{Device, PeerSettings};
use crate::forwarding::{ForwardingError, ForwardingPolicy};
use crate::key::{read_key_file, KeyFileError, PrivateKey};
use crate::metrics::{PeerCollector, VpnMetrics};
use crate::netlink::{self, NetlinkError};
use crate::tun::Tun;
use crate::uapi::ControlSocket;
use ipnet::IpNet;
use lab_daemon::{Daemon, DaemonConfig};
use prometheus_client::registry::Registry;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// The running gateway: its device and the loops that move its packets, its control socket and
/// its part of the forwarding policy.
pub struct VpnDaemon {
    config: Arc<VpnConfig>,
    metrics: VpnMetrics,
    device: Arc<Device>,
    /// The data path's tasks, by name; [`Daemon::failed`] watches them.
    loops: Vec<(&'static str, JoinHandle<()>)>,
    /// Removed (socket file and all) when the daemon stops.
    _control: ControlSocket,
    /// Removed (the nftables table) when the daemon stops.
    forwarding: ForwardingPolicy,
}

/// Why the gateway could not start, or a reload was refused (the running config then stays).
#[derive(Debug, thiserror::Error)]
pub enum VpnError {
    /// The interface's private key file could not be read.
    #[error("private key: {0}")]
    Key(KeyFileError),
    /// A peer's preshared key file could not be read.
    #[error("peer `{peer}`: preshared key: {source}")]
    PresharedKey {
        /// The peer's name.
        peer: String,
        /// Why its file could not be read.
        source: KeyFileError,
    },
    /// The TUN device could not be created.
    #[error("cannot create TUN device {name}: {source} (needs CAP_NET_ADMIN and /dev/net/tun)")]
    Tun {
        /// The interface name asked for.
        name: String,
        /// What the kernel said.
        source: std::io::Error,
    },
    /// The interface's addresses, MTU, state or routes could not be set.
    #[error("cannot configure {name}: {source}")]
    Netlink {
        /// The interface.
        name: String,
        /// The netlink request that failed.
        source: NetlinkError,
    },
    /// The UDP socket could not be bound.
    #[error("cannot listen on UDP port {port}: {source}")]
    Bind {
        /// The configured `listen_port`.
        port: u16,
        /// What the kernel said.
        source: std::io::Error,
    },
    /// The forwarding policy could not be installed or updated.
    #[error("{0}")]
    Forwarding(ForwardingError),
    /// The control socket (`wg`'s UAPI) could not be created.
    #[error("cannot serve the control socket: {0}")]
    Control(std::io::Error),
    /// A reload changed what only a restart applies: which setting.
    #[error("{0} changed; the [interface] section takes effect on restart, not reload")]
    InterfaceChanged(&'static str),
}

fn peer_settings(config: &VpnConfig) -> Result<Vec<PeerSettings>, VpnError> {
    config
        .peers
        .iter()
        .map(|peer| {
            PeerSettings::from_config(peer).map_err(|source| VpnError::PresharedKey {
                peer: peer.name.to_string(),
                source,
            })
        })
        .collect()
}

/// Routes the kernel needs towards the tunnel: every allowed IP outside the interface's own
/// networks (those are routed by their address already).
fn tunnel_routes(config: &VpnConfig) -> Vec<IpNet> {
    let own: Vec<IpNet> = config.interface.address.iter().map(IpNet::trunc).collect();
    let mut routes: Vec<IpNet> = config
        .peers
        .iter()
        .flat_map(|p| p.allowed_ips.iter().copied())
        .filter(|net| !own.iter().any(|o| o.contains(net)))
        .collect();
    routes.sort();
    routes.dedup();
    routes
}

/// Waits for the first of `loops` to end, takes it out, and says how it ended; never resolves
/// when there is none. Cancel-safe: the handles are polled by reference, so one that has not
/// finished is polled again by the next call.
async fn first_to_stop(loops: &mut Vec<(&'static str, JoinHandle<()>)>) -> String {
    if loops.is_empty() {
        return std::future::pending().await;
    }
    let (result, index, _) =
        futures_util::future::select_all(loops.iter_mut().map(|(_, task)| task)).await;
    // A finished handle must not be polled again.
    let (name, _) = loops.remove(index);
    match result {
        Ok(()) => format!("the {name} loop of the data path ended"),
        Err(e) if e.is_panic() => format!("the {name} loop of the data path panicked"),
        Err(e) => format!("the {name} loop of the data path stopped: {e}"),
    }
}

impl VpnDaemon {
    /// The config in effect: the last one started or reloaded successfully.
    pub fn config(&self) -> &VpnConfig {
        &self.config
    }

    /// The device the data path runs on.
    pub fn device(&self) -> &Arc<Device> {
        &self.device
    }
}

/// Asks for `bytes` of receive buffer on the device's UDP socket and says in the log what the
/// kernel granted. Never fatal: the buffer's size is a trade of drops for latency, and the
/// tunnel works with any.
fn apply_receive_buffer(device: &Device, bytes: usize) {
    match device.set_receive_buffer(bytes) {
        Ok(granted) if granted < bytes => tracing::warn!(
            asked = bytes,
            granted,
            "UDP receive buffer limited by net.core.rmem_max (going past it needs CAP_NET_ADMIN in the host's namespace)"
        ),
        Ok(granted) => tracing::info!(bytes = granted, "UDP receive buffer set"),
        Err(error) => tracing::warn!(asked = bytes, %error, "cannot set the UDP receive buffer"),
    }
}

impl Daemon for VpnDaemon {
    type Config = VpnConfig;
    type Error = VpnError;

    /// vpn.toml and the peers of its `peers_file`.
    fn load_config(path: &std::path::Path) -> Result<VpnConfig, lab_daemon::config::ConfigError> {
        crate::config::load(path)
    }

    async fn start(config: Arc<VpnConfig>, registry: &mut Registry) -> Result<Self, VpnError> {
        let interface = &config.interface;
        let key = PrivateKey::from_bytes(
            read_key_file(&interface.private_key_file).map_err(VpnError::Key)?,
        );
        let peers = peer_settings(&config)?;
        let tun =
            Tun::create(&interface.name, interface.mtu, interface.offload).map_err(|source| {
                VpnError::Tun {
                    name: interface.name.clone(),
                    source,
                }
            })?;
        netlink::configure(
            &interface.name,
            &interface.address,
            interface.mtu,
            &tunnel_routes(&config),
        )
        .await
        .map_err(|source| VpnError::Netlink {
            name: interface.name.clone(),
            source,
        })?;
        let forwarding =
            ForwardingPolicy::install(&interface.name, &interface.reach, interface.masquerade)
                .map_err(VpnError::Forwarding)?;
        let conn = Conn::bind(SocketAddr::from((
            Ipv4Addr::UNSPECIFIED,
            interface.listen_port,
        )))
        .map_err(|source| VpnError::Bind {
            port: interface.listen_port,
            source,
        })?;
        let metrics =
            VpnMetrics::register(registry.sub_registry_with_prefix(VpnConfig::METRICS_PREFIX));
        metrics.describe(&config);
        let device = Arc::new(Device::new(
            interface.name.clone(),
            key,
            conn,
            tun,
            metrics.device.clone(),
        ));
        if let Some(bytes) = interface.udp_receive_buffer {
            apply_receive_buffer(&device, bytes as usize);
        }
        device.set_peers(&peers);
        registry.register_collector(Box::new(PeerCollector {
            device: device.clone(),
        }));
        let control = ControlSocket::start(device.clone()).map_err(VpnError::Control)?;
        let loops = device.spawn();
        tracing::info!(
            interface = %interface.name,
            public_key = %device.public_key(),
            port = device.listen_port(),
            peers = peers.len(),
            "WireGuard interface up"
        );
        Ok(Self {
            config,
            metrics,
            device,
            loops,
            _control: control,
            forwarding,
        })
    }

    async fn reload(&mut self, config: Arc<VpnConfig>) -> Result<(), VpnError> {
        let (old, new) = (&self.config.interface, &config.interface);
        if old.name != new.name {
            return Err(VpnError::InterfaceChanged("interface.name"));
        }
        if old.listen_port != new.listen_port {
            return Err(VpnError::InterfaceChanged("interface.listen_port"));
        }
        if old.address != new.address || old.mtu != new.mtu {
            return Err(VpnError::InterfaceChanged(
                "interface.address or interface.mtu",
            ));
        }
        if old.offload != new.offload {
            return Err(VpnError::InterfaceChanged("interface.offload"));
        }
        let key = read_key_file(&new.private_key_file).map_err(VpnError::Key)?;
        if PrivateKey::from_bytes(key).public_key() != self.device.public_key() {
            return Err(VpnError::InterfaceChanged("the private key"));
        }
        let peers = peer_settings(&config)?;
        if (&old.reach, old.masquerade) != (&new.reach, new.masquerade) {
            self.forwarding
                .update(&new.name, &new.reach, new.masquerade)
                .map_err(VpnError::Forwarding)?;
        }
        netlink::configure(&new.name, &new.address, new.mtu, &tunnel_routes(&config))
            .await
            .map_err(|source| VpnError::Netlink {
                name: new.name.clone(),
                source,
            })?;
        if old.udp_receive_buffer != new.udp_receive_buffer {
            match new.udp_receive_buffer {
                Some(bytes) => apply_receive_buffer(&self.device, bytes as usize),
                None => match self.device.restore_default_receive_buffer() {
                    Ok(()) => tracing::info!("UDP receive buffer back to the system's default"),
                    Err(error) => {
                        tracing::warn!(%error, "cannot restore the UDP receive buffer's default")
                    }
                },
            }
        }
        self.device.set_peers(&peers);
        self.metrics.describe(&config);
        self.config = config;
        Ok(())
    }

    async fn drain(self, _timeout: Duration) {
        // Nothing to finish: stopping the loops and dropping the device removes the interface.
        for (_, task) in self.loops {
            task.abort();
        }
    }

    async fn failed(&mut self) -> String {
        first_to_stop(&mut self.loops).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forever() -> JoinHandle<()> {
        tokio::spawn(std::future::pending())
    }

    #[tokio::test]
    async fn a_loop_that_panics_or_ends_is_reported_and_the_others_keep_being_watched() {
        let mut loops = vec![
            ("inbound", forever()),
            (
                "outbound",
                tokio::spawn(async { panic!("test: a bug in the loop") }),
            ),
            ("timers", forever()),
        ];
        assert_eq!(
            first_to_stop(&mut loops).await,
            "the outbound loop of the data path panicked"
        );
        assert_eq!(loops.len(), 2);
        // Dropped unfinished between turns of the event loop, as the lifecycle's select does.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), first_to_stop(&mut loops))
                .await
                .is_err()
        );
        loops.push(("extra", tokio::spawn(async {})));
        assert_eq!(
            first_to_stop(&mut loops).await,
            "the extra loop of the data path ended"
        );
        for (_, task) in &loops {
            task.abort();
        }
        assert!(first_to_stop(&mut loops)
            .await
            .contains("of the data path stopped"));
    }
}
