//! The life of a daemon under systemd: start, `READY=1`, reload on SIGHUP, drain on SIGTERM.

use crate::config::{load_checked, ConfigError, ConfigFile, DaemonConfig, Issues};
use crate::logging::Logging;
use crate::metrics::{base_registry, MetricsServer, Pages, ReloadMetrics, StatusPage};
use crate::{exit, notify};
use prometheus_client::registry::Registry;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// What a daemon does; the lifecycle decides when.
pub trait Daemon: Sized + Send + 'static {
    /// The daemon's config file, as loaded and validated.
    type Config: DaemonConfig;
    /// Why the daemon could not start or apply a reload.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Binds what the daemon serves and registers its metrics in `metrics`, the root registry:
    /// the daemon's own go under [`DaemonConfig::METRICS_PREFIX`]
    /// (`metrics.sub_registry_with_prefix(..)`), names other tools expect as they are.
    /// `READY=1` is sent once this returns.
    fn start(
        config: Arc<Self::Config>,
        metrics: &mut Registry,
    ) -> impl Future<Output = Result<Self, Self::Error>> + Send;

    /// Applies a config that passed validation. On error the previous config must still be
    /// fully in effect; on success established connections and sessions are kept.
    fn reload(
        &mut self,
        config: Arc<Self::Config>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Stops accepting new work and lets established work finish. The lifecycle stops waiting
    /// after `timeout`.
    fn drain(self, timeout: Duration) -> impl Future<Output = ()> + Send;

    /// The checks of `config` that read the files it names (certificates, keys), which the
    /// schema's `validate` does not: run wherever the daemon loads its config (`check`, start,
    /// reload), so a bad file is refused there with its key and line. The default reads none.
    fn check_files(_config: &Self::Config, _issues: &mut Issues) {}

    /// Reads, parses and checks the config at `path` as `check`, start and reload do.
    fn load_config(path: &Path) -> Result<Self::Config, ConfigError> {
        load_checked(path, Self::check_files)
    }

    /// What `GET /status` on the metrics address shows, if the daemon has a status page. Asked
    /// once after start; the page must follow reloads itself.
    fn status_page(&self) -> Option<Arc<dyn StatusPage>> {
        None
    }

    /// Resolves, with what went wrong, when the daemon can no longer do its work (a task of its
    /// data path ended or panicked). The lifecycle then stops feeding the watchdog and exits
    /// with `EX_SOFTWARE`, so systemd restarts it rather than keep a process that only looks
    /// alive. Polled in every turn of the event loop and dropped between them: it must be
    /// cancel-safe. The default never resolves.
    fn failed(&mut self) -> impl Future<Output = String> + Send {
        std::future::pending()
    }
}

/// Runs daemon `D` with the config at `path` until SIGTERM or SIGINT; returns the exit status.
pub fn run<D: Daemon>(path: &Path) -> ExitCode {
    let config = match D::load_config(path) {
        Ok(config) => Arc::new(config),
        Err(e) => {
            for line in e.lines() {
                eprintln!("{}: {line}", D::Config::PROGRAM);
            }
            return exit::code(exit::CONFIG);
        }
    };
    let logging = Logging::init(config.log().level);
    // One thread means one event loop, without the work-stealing scheduler's hand-offs.
    let mut builder = match config.runtime().worker_threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(threads) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(threads.max(1));
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all().thread_name(D::Config::PROGRAM);
    let runtime = match builder.build() {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return exit::code(exit::OS_ERROR);
        }
    };
    runtime.block_on(serve::<D>(path.to_owned(), config, logging))
}

struct Signals {
    hangup: Signal,
    terminate: Signal,
    interrupt: Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        Ok(Self {
            hangup: signal(SignalKind::hangup())?,
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }
}

enum Event {
    Reload,
    Stop(&'static str),
    Watchdog,
    Failed(String),
}

/// Everything a reload may replace.
struct Running<D: Daemon> {
    path: PathBuf,
    config: Arc<D::Config>,
    daemon: D,
    pages: Pages,
    metrics_server: MetricsServer,
    reload_metrics: ReloadMetrics,
    logging: Logging,
    /// SIGHUPs handled so far, in every `STATUS=` after one: a reload leaves the status changed
    /// even when it says what it said before, so whoever sent the signal can tell its outcome
    /// from the status it replaced.
    reloads: u64,
}

async fn serve<D: Daemon>(path: PathBuf, config: Arc<D::Config>, logging: Logging) -> ExitCode {
    // Before anything else: SIGHUP's default action would kill a daemon that is still starting.
    let mut signals = match Signals::install() {
        Ok(signals) => signals,
        Err(e) => {
            tracing::error!(error = %e, "cannot install signal handlers");
            return exit::code(exit::OS_ERROR);
        }
    };
    let metrics_address = config.metrics().listen;
    let metrics_listener = match bind_metrics(metrics_address).await {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return exit::code(exit::OS_ERROR);
        }
    };
    let (mut registry, reload_metrics) =
        base_registry(D::Config::METRICS_PREFIX, env!("CARGO_PKG_VERSION"));
    let daemon = match D::start(config.clone(), &mut registry).await {
        Ok(daemon) => daemon,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return exit::code(exit::OS_ERROR);
        }
    };
    let pages = Pages {
        registry: Arc::new(registry),
        status: daemon.status_page(),
    };
    let metrics_server = match MetricsServer::serve(metrics_listener, pages.clone()) {
        Ok(server) => server,
        Err(e) => {
            tracing::error!(error = %e, "cannot serve metrics");
            return exit::code(exit::OS_ERROR);
        }
    };
    reload_metrics.loaded();
    let summary = config.summary();
    tracing::info!(
        config = %path.display(),
        metrics = %metrics_server.address(),
        %summary,
        "started"
    );
    notify::ready(&format!("serving: {summary}"));

    let mut running = Running {
        path,
        config,
        daemon,
        pages,
        metrics_server,
        reload_metrics,
        logging,
        reloads: 0,
    };
    let mut watchdog = notify::watchdog_interval().map(tokio::time::interval);
    let reason = loop {
        let event = tokio::select! {
            _ = signals.hangup.recv() => Event::Reload,
            _ = signals.terminate.recv() => Event::Stop("SIGTERM"),
            _ = signals.interrupt.recv() => Event::Stop("SIGINT"),
            _ = tick(&mut watchdog) => Event::Watchdog,
            failure = running.daemon.failed() => Event::Failed(failure),
        };
        match event {
            Event::Reload => running.reload().await,
            Event::Watchdog => notify::watchdog(),
            Event::Stop(reason) => break reason,
            Event::Failed(failure) => {
                tracing::error!(
                    error = %failure,
                    "the daemon cannot work any more; exiting so that it is restarted"
                );
                notify::failed(&failure);
                // No drain: what would drain is what failed. Dropping releases what the daemon
                // holds (devices, sockets, its firewall rules) before the exit.
                drop(running);
                return exit::code(exit::SOFTWARE);
            }
        }
    };

    notify::stopping();
    let timeout = running.config.shutdown().drain_timeout;
    tracing::info!(signal = reason, timeout = ?timeout, "draining");
    if tokio::time::timeout(timeout, running.daemon.drain(timeout))
        .await
        .is_err()
    {
        tracing::warn!(timeout = ?timeout, "drain timeout reached; closing what is left");
    }
    drop(running.metrics_server);
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

async fn tick(watchdog: &mut Option<tokio::time::Interval>) {
    match watchdog {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[derive(Debug, thiserror::Error)]
enum ReloadError<E: std::error::Error + 'static> {
    #[error(transparent)]
    Config(ConfigError),
    #[error("cannot listen for metrics on {address}: {source}")]
    Metrics {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Daemon(E),
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen for metrics on {address}: {source}")]
struct MetricsBindError {
    address: SocketAddr,
    source: std::io::Error,
}

async fn bind_metrics(address: SocketAddr) -> Result<TcpListener, MetricsBindError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| MetricsBindError { address, source })
}

impl<D: Daemon> Running<D> {
    async fn reload(&mut self) {
        notify::reloading();
        self.reloads += 1;
        let reload = self.reloads;
        tracing::info!(config = %self.path.display(), "reloading configuration");
        match self.try_reload().await {
            Ok(()) => {
                self.reload_metrics.reload_succeeded();
                let summary = self.config.summary();
                tracing::info!(%summary, "configuration reloaded");
                notify::ready(&format!("serving: {summary} (reload {reload})"));
            }
            Err(e) => {
                self.reload_metrics.reload_failed();
                let lines = match &e {
                    ReloadError::Config(config) => config.lines(),
                    other => vec![other.to_string()],
                };
                for line in &lines {
                    tracing::error!(
                        error = %line,
                        "configuration reload refused; still running the previous configuration"
                    );
                }
                let first = lines.first().map(String::as_str).unwrap_or("");
                notify::ready(&format!(
                    "{} (reload {reload}): {first}",
                    notify::RELOAD_REFUSED
                ));
            }
        }
    }

    async fn try_reload(&mut self) -> Result<(), ReloadError<D::Error>> {
        let config = Arc::new(D::load_config(&self.path).map_err(ReloadError::Config)?);
        let address = config.metrics().listen;
        // Bind the new endpoint before touching the daemon, so a taken port refuses the reload
        // while everything still runs on the old config.
        let moved_metrics = if address != self.config.metrics().listen {
            let listener = bind_metrics(address)
                .await
                .map_err(|e| ReloadError::Metrics {
                    address: e.address,
                    source: e.source,
                })?;
            Some(listener)
        } else {
            None
        };
        self.daemon
            .reload(config.clone())
            .await
            .map_err(ReloadError::Daemon)?;
        if let Some(listener) = moved_metrics {
            match MetricsServer::serve(listener, self.pages.clone()) {
                Ok(server) => self.metrics_server = server,
                Err(e) => tracing::warn!(error = %e, "metrics endpoint kept on its old address"),
            }
        }
        self.logging.set_level(config.log().level);
        self.config = config;
        Ok(())
    }
}
