//! The balancer as the shared lifecycle runs it.
//!
//! The proxying data path (listeners, balancing, health checks) lands with its own issue; until
//! then the daemon loads, validates, reloads and reports its configuration.

use crate::config::LbConfig;
use crate::metrics::LbMetrics;
use lab_daemon::Daemon;
use prometheus_client::registry::Registry;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

pub struct LbDaemon {
    config: Arc<LbConfig>,
    metrics: LbMetrics,
}

impl LbDaemon {
    pub fn config(&self) -> &LbConfig {
        &self.config
    }
}

impl Daemon for LbDaemon {
    type Config = LbConfig;
    type Error = Infallible;

    async fn start(config: Arc<LbConfig>, registry: &mut Registry) -> Result<Self, Infallible> {
        let metrics = LbMetrics::register(registry);
        metrics.describe(&config);
        Ok(Self { config, metrics })
    }

    async fn reload(&mut self, config: Arc<LbConfig>) -> Result<(), Infallible> {
        self.metrics.describe(&config);
        self.config = config;
        Ok(())
    }

    async fn drain(self, _timeout: Duration) {}
}
