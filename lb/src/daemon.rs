//! The balancer as the shared lifecycle runs it: listeners bound from the config, rebuilt on
//! reload without dropping a connection, drained on stop.

use crate::backend::health;
use crate::backend::pool::{Pool, ServerStates};
use crate::config::{LbConfig, Listener, ListenerMode};
use crate::http::idle::IdleConnections;
use crate::http::listener::HttpApp;
use crate::http::metrics::HttpMetrics;
use crate::http::router::HttpRouter;
use crate::l4::proxy::{L4Proxy, Routing};
use crate::l4::sni::SniPattern;
use crate::listener::{self, App, BindError, ListenerSlot};
use crate::metrics::LbMetrics;
use crate::refusals::Refusals;
use crate::runtime_api::{RuntimeApi, Targets};
use crate::status::{LbStatus, Snapshot};
use crate::tls::certs::{CertError, CertStore};
use lab_daemon::metrics::StatusPage;
use lab_daemon::{Daemon, DaemonConfig, Name};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::task::TaskTracker;

/// How often certificate files are checked for renewal.
const CERT_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The running balancer: its listeners, pools, health checks and metrics, for one config at a
/// time.
pub struct LbDaemon {
    config: Arc<LbConfig>,
    metrics: LbMetrics,
    http_metrics: HttpMetrics,
    /// Certificates of the running `https` listeners, watched for renewal.
    cert_stores: Vec<Arc<CertStore>>,
    states: ServerStates,
    /// The first configuration is in effect: later ones are reloads.
    started: bool,
    pools: HashMap<Name, Arc<Pool>>,
    slots: Vec<ListenerSlot>,
    connections: TaskTracker,
    /// The `server_up` refresher and the active health checks of the running pools.
    background: Vec<tokio::task::JoinHandle<()>>,
    status: Arc<LbStatus>,
    /// What the runtime API acts on, and its socket while `[runtime] socket` is set.
    targets: Arc<Targets>,
    runtime_api: Option<RuntimeApi>,
}

/// An `http`/`https` listener as built: its app, its certificate store (for watching) when
/// `https`, and its idle server connections (for the runtime API's disable).
struct BuiltHttp {
    app: Arc<App>,
    store: Option<Arc<CertStore>>,
    idle: Arc<IdleConnections>,
}

/// Why a config could not be put into effect (at start, or on reload: then nothing changed).
#[derive(Debug, thiserror::Error)]
pub enum LbError {
    /// A listening address could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// A listener or route sends to a backend the config does not have.
    #[error("listener `{listener}` names backend `{backend}`, which is not configured")]
    UnknownBackend {
        /// The listener that names it.
        listener: Name,
        /// The missing backend.
        backend: Name,
    },
    /// A route's server name is not one a ClientHello could carry.
    #[error("listener `{listener}`: {problem}")]
    BadRoute {
        /// The listener of the route.
        listener: Name,
        /// What is wrong with the name.
        problem: String,
    },
    /// An `https` listener's certificate or key could not be read.
    #[error("listener `{listener}`: {source}")]
    Cert {
        /// The `https` listener.
        listener: Name,
        /// Which file, and why.
        source: CertError,
    },
    /// The CA bundle a route verifies its TLS upstreams with could not be read.
    #[error("listener `{listener}`: {source}")]
    Ca {
        /// The listener of the route.
        listener: Name,
        /// Which file, and why.
        source: crate::tls::upstream::CaError,
    },
    /// `[runtime] socket_group` names no group of this machine.
    #[error("runtime.socket_group: {0}")]
    RuntimeGroup(String),
    /// The runtime API's socket could not be served.
    #[error("runtime.socket: cannot serve the runtime API on {path}: {source}")]
    RuntimeApi {
        /// `[runtime] socket`.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// rustls refused the listener's certificates.
    #[error("listener `{listener}`: TLS setup: {source}")]
    Tls {
        /// The `https` listener.
        listener: Name,
        /// What rustls said.
        source: rustls::Error,
    },
}

impl LbDaemon {
    /// The config in effect: the last one started or reloaded successfully.
    pub fn config(&self) -> &LbConfig {
        &self.config
    }

    fn build_pools(
        config: &LbConfig,
        states: &mut ServerStates,
        metrics: &LbMetrics,
        reloading: bool,
    ) -> HashMap<Name, Arc<Pool>> {
        config
            .backends
            .iter()
            .map(|b| {
                let pool = Pool::new(b, states, metrics, reloading);
                (b.name.clone(), Arc::new(pool))
            })
            .collect()
    }

    /// An `http`/`https` listener's app, and what the daemon watches of it.
    fn build_http(
        &self,
        listener: &Listener,
        pools: &HashMap<Name, Arc<Pool>>,
    ) -> Result<BuiltHttp, LbError> {
        let default =
            pools
                .get(&listener.backend)
                .cloned()
                .ok_or_else(|| LbError::UnknownBackend {
                    listener: listener.name.clone(),
                    backend: listener.backend.clone(),
                })?;
        let http = listener.http.clone().unwrap_or_default();
        let https = listener.mode == ListenerMode::Https;
        let (tls, store) = if https {
            let store = CertStore::load(&http.certs).map_err(|source| LbError::Cert {
                listener: listener.name.clone(),
                source,
            })?;
            let config =
                crate::tls::certs::server_config(store.clone()).map_err(|source| LbError::Tls {
                    listener: listener.name.clone(),
                    source,
                })?;
            (Some(config), Some(store))
        } else {
            (None, None)
        };
        let router = HttpRouter::new(
            listener.name.clone(),
            https,
            &http,
            default,
            pools,
            self.http_metrics.clone(),
        )
        .map_err(|source| LbError::Ca {
            listener: listener.name.clone(),
            source,
        })?;
        let idle = router.idle.clone();
        let app = HttpApp::new(
            router,
            tls,
            listener.hello_timeout,
            self.metrics.listener(listener.name.as_str()),
            self.http_metrics.clone(),
            crate::config::admission_limits(listener),
        );
        Ok(BuiltHttp {
            app: Arc::new(App::Http(Arc::new(app))),
            store,
            idle,
        })
    }

    fn build_proxy(
        &self,
        listener: &Listener,
        pools: &HashMap<Name, Arc<Pool>>,
    ) -> Result<Arc<L4Proxy>, LbError> {
        let pool = |backend: &Name| {
            pools
                .get(backend)
                .cloned()
                .ok_or_else(|| LbError::UnknownBackend {
                    listener: listener.name.clone(),
                    backend: backend.clone(),
                })
        };
        let mut by_sni = Vec::new();
        for route in &listener.routes {
            let target = pool(&route.backend)?;
            for name in &route.sni {
                let pattern = SniPattern::parse(name).map_err(|problem| LbError::BadRoute {
                    listener: listener.name.clone(),
                    problem,
                })?;
                by_sni.push((pattern, target.clone()));
            }
        }
        let metrics = self.metrics.listener(listener.name.as_str());
        Ok(Arc::new(L4Proxy {
            listener: listener.name.clone(),
            routing: Routing {
                default: pool(&listener.backend)?,
                by_sni,
                passthrough: listener.mode == ListenerMode::TlsPassthrough,
                idle_timeout: listener.idle_timeout,
                hello_timeout: listener.hello_timeout,
                accept_proxy_from: listener.accept_proxy_from.clone(),
            },
            refusals: Refusals::new(listener.name.clone(), metrics.clone()),
            metrics,
            limits: crate::config::admission_limits(listener),
        }))
    }

    /// Makes the running listeners those of `config`: sockets whose address stays are kept and
    /// get the new proxy; new addresses are bound first, so a taken port changes nothing.
    async fn apply(&mut self, config: Arc<LbConfig>) -> Result<(), LbError> {
        let mut states = self.states.clone();
        let pools = Self::build_pools(&config, &mut states, &self.metrics, self.started);
        let mut proxies = Vec::with_capacity(config.listeners.len());
        let mut status_listeners = Vec::with_capacity(config.listeners.len());
        let mut cert_stores = Vec::new();
        let mut idle = Vec::new();
        for listener in &config.listeners {
            let proxy = match listener.mode {
                ListenerMode::Http | ListenerMode::Https => {
                    let built = self.build_http(listener, &pools)?;
                    cert_stores.extend(built.store);
                    idle.push(built.idle);
                    built.app
                }
                ListenerMode::Tcp | ListenerMode::TlsPassthrough => {
                    Arc::new(App::L4(self.build_proxy(listener, &pools)?))
                }
            };
            status_listeners.push((listener.clone(), proxy.metrics().clone()));
            proxies.push((listener.listen, proxy));
        }
        let mut new_sockets = HashMap::new();
        for (address, _) in &proxies {
            if !self.slots.iter().any(|s| s.address == *address) {
                new_sockets.insert(*address, listener::bind(*address).await?);
            }
        }
        let socket = config.runtime.socket.as_deref();
        let group = config
            .runtime
            .socket_group
            .as_deref()
            .map(lab_daemon::control::group_named)
            .transpose()
            .map_err(LbError::RuntimeGroup)?;
        let serving = self.runtime_api.as_ref().map(|api| api.path.as_path());
        let new_runtime_api = match socket {
            Some(path) if serving != Some(path) => Some(
                RuntimeApi::start(path, group, self.targets.clone()).map_err(|source| {
                    LbError::RuntimeApi {
                        path: path.to_owned(),
                        source,
                    }
                })?,
            ),
            Some(path) => {
                // The same socket: only its group may have changed, set on the file in place
                // so connected clients and the path stay.
                if let Some(api) = &self.runtime_api {
                    api.set_group(group).map_err(|source| LbError::RuntimeApi {
                        path: path.to_owned(),
                        source,
                    })?;
                }
                None
            }
            None => None,
        };
        // Nothing below fails: the new configuration takes over.
        if socket.is_none() {
            self.runtime_api = None;
        }
        if let Some(api) = new_runtime_api {
            tracing::info!(socket = %api.path.display(), "runtime API listening");
            self.runtime_api = Some(api);
        }
        let mut kept = Vec::new();
        for slot in std::mem::take(&mut self.slots) {
            match proxies.iter().find(|(address, _)| *address == slot.address) {
                Some((_, proxy)) => {
                    slot.replace_app(proxy.clone());
                    kept.push(slot);
                }
                None => {
                    tracing::info!(address = %slot.address, "listener removed; its connections drain");
                    slot.stop_accepting().await;
                }
            }
        }
        for (address, proxy) in proxies {
            if let Some(socket) = new_sockets.remove(&address) {
                tracing::info!(listener = %proxy.name(), %address, "listening");
                kept.push(ListenerSlot::start(
                    socket,
                    address,
                    proxy,
                    self.connections.clone(),
                ));
            }
        }
        self.slots = kept;
        self.metrics.forget_removed_servers(&self.config, &config);
        self.metrics.describe(&config);
        states.retain(|(backend, address), _| {
            config
                .backends
                .iter()
                .any(|b| &b.name == backend && b.servers.iter().any(|s| &s.address == address))
        });
        self.states = states;
        self.status.update(Snapshot {
            listeners: status_listeners,
            pools: config
                .backends
                .iter()
                .filter_map(|b| pools.get(&b.name).cloned())
                .collect(),
        });
        self.targets.update(
            config
                .backends
                .iter()
                .filter_map(|b| pools.get(&b.name).cloned())
                .collect(),
            idle,
        );
        self.pools = pools;
        self.cert_stores = cert_stores;
        self.config = config;
        Ok(())
    }

    /// The addresses being listened on now.
    pub fn listening(&self) -> Vec<SocketAddr> {
        self.slots.iter().map(|s| s.address).collect()
    }
}

impl Daemon for LbDaemon {
    type Config = LbConfig;
    type Error = LbError;

    async fn start(config: Arc<LbConfig>, registry: &mut Registry) -> Result<Self, LbError> {
        let metrics =
            LbMetrics::register(registry.sub_registry_with_prefix(LbConfig::METRICS_PREFIX));
        let http_metrics =
            HttpMetrics::register(registry.sub_registry_with_prefix(LbConfig::METRICS_PREFIX));
        let empty = Arc::new(LbConfig {
            listeners: Vec::new(),
            backends: Vec::new(),
            ..(*config).clone()
        });
        let mut daemon = Self {
            config: empty,
            metrics,
            http_metrics,
            cert_stores: Vec::new(),
            states: ServerStates::new(),
            pools: HashMap::new(),
            slots: Vec::new(),
            connections: TaskTracker::new(),
            background: Vec::new(),
            status: Arc::new(LbStatus::default()),
            targets: Arc::default(),
            runtime_api: None,
            started: false,
        };
        daemon.apply(config).await?;
        daemon.started = true;
        daemon.restart_background();
        Ok(daemon)
    }

    fn check_files(config: &LbConfig, issues: &mut lab_daemon::Issues) {
        crate::tls::check_files(config, issues);
    }

    async fn reload(&mut self, config: Arc<LbConfig>) -> Result<(), LbError> {
        self.apply(config).await?;
        self.restart_background();
        Ok(())
    }

    fn status_page(&self) -> Option<Arc<dyn StatusPage>> {
        Some(self.status.clone())
    }

    async fn drain(self, _timeout: Duration) {
        for task in &self.background {
            task.abort();
        }
        for slot in self.slots {
            slot.stop_accepting().await;
        }
        self.connections.close();
        // The lifecycle bounds this wait by the drain timeout.
        self.connections.wait().await;
    }
}

impl LbDaemon {
    /// (Re)starts the tasks that watch the running pools: health checks and `server_up`.
    fn restart_background(&mut self) {
        for task in self.background.drain(..) {
            task.abort();
        }
        let pools: Vec<Arc<Pool>> = self.pools.values().cloned().collect();
        for backend in &self.config.backends {
            if let (Some(check), Some(pool)) =
                (&backend.health_check, self.pools.get(&backend.name))
            {
                self.background.extend(health::spawn_checks(pool, check));
            }
        }
        self.background.push(tokio::spawn(refresh_server_up(pools)));
        for store in &self.cert_stores {
            self.background
                .push(tokio::spawn(store.clone().watch(CERT_POLL_INTERVAL)));
        }
    }
}

/// Held-down servers come back on their own once their hold runs out; keep `server_up` true to
/// that without waiting for the next connection.
async fn refresh_server_up(pools: Vec<Arc<Pool>>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        for pool in &pools {
            pool.refresh_health_metrics();
        }
    }
}
