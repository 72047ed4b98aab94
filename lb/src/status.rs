//! `GET /status` on the metrics address: listeners, backends, servers, health and counts, as
//! JSON, always describing the running configuration.

use crate::backend::pool::Pool;
use crate::clock;
use crate::config::Listener;
use crate::metrics::ListenerMetrics;
use arc_swap::ArcSwap;
use lab_daemon::metrics::StatusPage;
use serde::Serialize;
use std::sync::Arc;

/// What the page describes; replaced on every reload.
pub struct Snapshot {
    pub listeners: Vec<(Listener, ListenerMetrics)>,
    pub pools: Vec<Arc<Pool>>,
}

#[derive(Default)]
pub struct LbStatus {
    current: ArcSwap<Option<Snapshot>>,
}

impl LbStatus {
    pub fn update(&self, snapshot: Snapshot) {
        self.current.store(Arc::new(Some(snapshot)));
    }
}

#[derive(Serialize)]
struct Page {
    listeners: Vec<ListenerView>,
    backends: Vec<BackendView>,
}

#[derive(Serialize)]
struct ListenerView {
    name: String,
    address: String,
    mode: &'static str,
    backend: String,
    routes: Vec<RouteView>,
    connections_accepted: u64,
    connections_active: i64,
}

#[derive(Serialize)]
struct RouteView {
    sni: Vec<String>,
    backend: String,
}

#[derive(Serialize)]
struct BackendView {
    name: String,
    balance: &'static str,
    servers_up: usize,
    servers: Vec<ServerView>,
}

#[derive(Serialize)]
struct ServerView {
    address: String,
    weight: u32,
    /// Set through the runtime API: ready, draining, drained (no longer active), disabled.
    state: &'static str,
    /// Healthy and not held down (new connections also need `state` ready).
    up: bool,
    healthy: bool,
    held_after_failed_connect: bool,
    active_connections: usize,
    connect_failures: u64,
    health_checks_passed: u64,
    health_checks_failed: u64,
}

impl StatusPage for LbStatus {
    fn json(&self) -> String {
        let current = self.current.load();
        let Some(snapshot) = current.as_ref() else {
            return "{}".to_owned();
        };
        let now = clock::now_ms();
        let page = Page {
            listeners: snapshot
                .listeners
                .iter()
                .map(|(listener, metrics)| ListenerView {
                    name: listener.name.to_string(),
                    address: listener.listen.to_string(),
                    mode: listener.mode.as_str(),
                    backend: listener.backend.to_string(),
                    routes: listener
                        .routes
                        .iter()
                        .map(|r| RouteView {
                            sni: r.sni.clone(),
                            backend: r.backend.to_string(),
                        })
                        .collect(),
                    connections_accepted: metrics.accepted.get(),
                    connections_active: metrics.active.get(),
                })
                .collect(),
            backends: snapshot
                .pools
                .iter()
                .map(|pool| {
                    let servers: Vec<ServerView> = pool
                        .server_refs()
                        .into_iter()
                        .map(|s| ServerView {
                            address: s.address.to_string(),
                            weight: s.weight,
                            state: crate::runtime_api::shown_state(
                                s.state.admin(),
                                s.state.active(),
                            ),
                            up: s.state.is_up(now),
                            healthy: s.state.is_healthy(),
                            held_after_failed_connect: s.state.is_held(now),
                            active_connections: s
                                .state
                                .active
                                .load(std::sync::atomic::Ordering::Relaxed),
                            connect_failures: s.metrics.connect_failures.get(),
                            health_checks_passed: s.metrics.checks_passed.get(),
                            health_checks_failed: s.metrics.checks_failed.get(),
                        })
                        .collect();
                    BackendView {
                        name: pool.name.to_string(),
                        balance: pool.algorithm.as_str(),
                        servers_up: servers.iter().filter(|s| s.up).count(),
                        servers,
                    }
                })
                .collect(),
        };
        serde_json::to_string_pretty(&page).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}
