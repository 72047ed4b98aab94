//! Prometheus metrics: the registry every daemon fills, the process and build metrics every
//! daemon exposes, the config-reload metrics the lifecycle keeps, and the `GET /metrics` server.

mod process;
mod reload;
mod server;

pub use process::ProcessCollector;
pub use reload::ReloadMetrics;
pub use server::{encode, MetricsServer, Pages, StatusPage};

use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// Builds the registry a daemon starts with: process metrics (`process_*`, unprefixed as
/// every exporter names them), `<prefix>_build_info`, and the reload metrics, which are returned.
pub fn base_registry(prefix: &str, version: &str) -> (Registry, ReloadMetrics) {
    let mut root = Registry::default();
    root.register_collector(Box::new(ProcessCollector));
    let own = root.sub_registry_with_prefix(prefix);
    own.register(
        "build",
        "Build information of the running binary",
        Info::new(vec![("version".to_owned(), version.to_owned())]),
    );
    let reload = ReloadMetrics::register(own);
    (root, reload)
}
