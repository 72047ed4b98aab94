use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// Whether the running config is the one on disk, named as Prometheus names its own
/// (`config_last_reload_successful`), so the usual "config reload failed" alert applies.
#[derive(Clone)]
pub struct ReloadMetrics {
    last_successful: Gauge,
    last_success_time: Gauge<f64, AtomicU64>,
    reloads: Family<ResultLabel, Counter>,
}

impl ReloadMetrics {
    /// Registers the reload metrics in `registry` (the daemon's prefixed one), all at zero.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            last_successful: Gauge::default(),
            last_success_time: Gauge::default(),
            reloads: Family::default(),
        };
        registry.register(
            "config_last_reload_successful",
            "Whether the last configuration load or reload succeeded (1) or was refused (0)",
            metrics.last_successful.clone(),
        );
        registry.register(
            "config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration load or reload",
            metrics.last_success_time.clone(),
        );
        registry.register(
            "config_reloads",
            "Configuration reloads attempted, by result",
            metrics.reloads.clone(),
        );
        for result in ["success", "failure"] {
            drop(metrics.reloads.get_or_create(&ResultLabel { result }));
        }
        metrics
    }

    /// The config read at start-up is in effect.
    pub fn loaded(&self) {
        self.last_successful.set(1);
        self.last_success_time.set(unix_now());
    }

    /// A reload (SIGHUP) applied the config on disk.
    pub fn reload_succeeded(&self) {
        self.reloads
            .get_or_create(&ResultLabel { result: "success" })
            .inc();
        self.loaded();
    }

    /// A reload was refused; the previous config is still in effect.
    pub fn reload_failed(&self) {
        self.reloads
            .get_or_create(&ResultLabel { result: "failure" })
            .inc();
        self.last_successful.set(0);
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
