//! The gateway as the shared lifecycle runs it.
//!
//! The WireGuard data path (TUN device, noise sessions, control socket) lands with its own issue;
//! until then the daemon loads, validates, reloads and reports its configuration.

use crate::config::VpnConfig;
use crate::metrics::VpnMetrics;
use lab_daemon::Daemon;
use prometheus_client::registry::Registry;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

pub struct VpnDaemon {
    config: Arc<VpnConfig>,
    metrics: VpnMetrics,
}

impl VpnDaemon {
    pub fn config(&self) -> &VpnConfig {
        &self.config
    }
}

impl Daemon for VpnDaemon {
    type Config = VpnConfig;
    type Error = Infallible;

    async fn start(config: Arc<VpnConfig>, registry: &mut Registry) -> Result<Self, Infallible> {
        let metrics = VpnMetrics::register(registry);
        metrics.describe(&config);
        Ok(Self { config, metrics })
    }

    async fn reload(&mut self, config: Arc<VpnConfig>) -> Result<(), Infallible> {
        self.metrics.describe(&config);
        self.config = config;
        Ok(())
    }

    async fn drain(self, _timeout: Duration) {}
}
