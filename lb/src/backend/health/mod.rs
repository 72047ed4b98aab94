//! Active health checks: one probe per kind behind [`Probe`], and a runner per server that turns
//! results into up/down with rise and fall counts.

mod http;
mod rise_fall;
mod tcp;
mod tls;

pub use rise_fall::RiseFall;

use crate::backend::pool::{Pool, ServerRef};
use crate::config::{HealthCheck, HealthCheckKind};
use async_trait::async_trait;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::task::JoinHandle;

/// One way of asking a server whether it is alive.
#[async_trait]
pub trait Probe: Send + Sync {
    /// `Err` says what was wrong, for the log.
    async fn probe(&self, server: SocketAddr) -> Result<(), String>;
}

pub fn probe_for(check: &HealthCheck) -> Arc<dyn Probe> {
    match check.kind {
        HealthCheckKind::Tcp => Arc::new(tcp::TcpProbe),
        HealthCheckKind::Tls => Arc::new(tls::TlsProbe::new(check.host.clone())),
        HealthCheckKind::Http => Arc::new(http::HttpProbe::new(check, false)),
        HealthCheckKind::Https => Arc::new(http::HttpProbe::new(check, true)),
    }
}

/// Starts checking every server of `pool` as `check` says; the tasks run until aborted.
pub fn spawn_checks(pool: &Arc<Pool>, check: &HealthCheck) -> Vec<JoinHandle<()>> {
    let probe = probe_for(check);
    pool.server_refs()
        .into_iter()
        .map(|server| {
            tokio::spawn(check_loop(
                pool.name.to_string(),
                server,
                probe.clone(),
                check.clone(),
            ))
        })
        .collect()
}

async fn check_loop(backend: String, server: ServerRef, probe: Arc<dyn Probe>, check: HealthCheck) {
    let mut state = RiseFall::new(check.rise, check.fall, server.state.is_healthy());
    let mut tick = tokio::time::interval(check.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let started = Instant::now();
        let result = match tokio::time::timeout(check.timeout, probe.probe(server.address)).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {:?}", check.timeout)),
        };
        server
            .metrics
            .check_duration
            .observe(started.elapsed().as_secs_f64());
        match &result {
            Ok(()) => server.metrics.checks_passed.inc(),
            Err(_) => server.metrics.checks_failed.inc(),
        };
        if let Some(healthy) = state.record(result.is_ok()) {
            server.state.set_healthy(healthy);
            server.refresh_up();
            match result {
                Ok(()) => {
                    tracing::info!(%backend, server = %server.address, "server is up (health check)")
                }
                Err(reason) => {
                    tracing::warn!(%backend, server = %server.address, %reason, "server is down (health check)")
                }
            }
        }
    }
}
