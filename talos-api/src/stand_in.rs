//! A stand-in apid, where Talos cannot run (the local lab, the tests): the calls lab-bootstrap
//! makes, over the same protos and mutual TLS as a real node, with the lab's own PKI. It
//! refuses clients whose certificate is not from the OS CA, bootstraps once (then
//! `AlreadyExists`), streams the kubeconfig it was given as Talos does, applies configs as
//! Talos decides (dry run or not; a changed `machine.install` needs a reboot) and keeps the
//! last one of each node, streams a deterministic etcd snapshot once etcd is bootstrapped,
//! and checks health by asking `Readiness` about each node.

use crate::archive;
use crate::client::pkcs8_pem;
use crate::proto::cluster::cluster_service_server::{ClusterService, ClusterServiceServer};
use crate::proto::cluster::{HealthCheckProgress, HealthCheckRequest};
use crate::proto::common::{Data, Metadata};
use crate::proto::machine::apply_configuration_request::Mode;
use crate::proto::machine::machine_service_server::{MachineService, MachineServiceServer};
use crate::proto::machine::{
    ApplyConfiguration, ApplyConfigurationRequest, ApplyConfigurationResponse, Bootstrap,
    BootstrapRequest, BootstrapResponse, EtcdSnapshotRequest, PlatformInfo, Version, VersionInfo,
    VersionResponse,
};
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

/// Whether the node at an address is ready (a kubelet would say so); may block briefly.
pub type Readiness = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Size of the chunks the kubeconfig archive is streamed in (Talos streams it in pieces too).
const CHUNK: usize = 512;

/// How often the health check looks again.
const POLL: Duration = Duration::from_millis(200);

/// A health check without `wait_timeout` waits this long.
const DEFAULT_WAIT: Duration = Duration::from_secs(60);

/// What the stand-in was asked, for `status` and the tests.
#[derive(Debug, Default, Clone)]
pub struct Record {
    /// Whether etcd was bootstrapped.
    pub bootstrapped: bool,
    /// How many `Bootstrap` calls came, the refused included.
    pub bootstrap_calls: usize,
    /// The configs `ApplyConfiguration` was given, in order.
    pub applied: Vec<Vec<u8>>,
    /// How many `EtcdSnapshot` calls came.
    pub snapshot_calls: usize,
    /// The last config applied to each node, by the hostname its `HostnameConfig` names
    /// (this node's own when it names none): one stand-in answers for every node of a test.
    pub configs: BTreeMap<String, Vec<u8>>,
    /// `ApplyConfiguration` (`ApplyConfiguration <node>`, `… dry-run <node>`) and
    /// `HealthCheck` calls in the order they came, for the order of a rollout.
    pub calls: Vec<String>,
}

/// The etcd snapshot the stand-in of node `hostname` streams: bbolt's page size of bytes per
/// page, as many pages as a freshly bootstrapped etcd has, the same bytes on every call, so a
/// test can check what arrived against it.
pub fn etcd_snapshot_of(hostname: &str) -> Vec<u8> {
    const PAGE: usize = 4096;
    const PAGES: usize = 24;
    let mut snapshot = Vec::with_capacity(PAGE * PAGES);
    for page in 0..PAGES {
        let header = format!("stand-in etcd snapshot of {hostname}, page {page}\n");
        let start = snapshot.len();
        snapshot.extend_from_slice(header.as_bytes());
        // Deterministic but not constant, so a flipped or dropped byte shows.
        let mut state = u32::try_from(page).unwrap_or(0).wrapping_mul(2_654_435_761) | 1;
        while snapshot.len() < start + PAGE {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            snapshot.push(state.to_le_bytes()[0]);
        }
    }
    snapshot
}

/// The node's TLS identity: its certificate (for its addresses, from the OS CA) and key, and
/// the CA client certificates must come from; PEM text.
#[derive(Clone)]
pub struct Tls {
    /// The node's certificate.
    pub crt: String,
    /// Its private key.
    pub key: String,
    /// The OS CA.
    pub client_ca: String,
}

/// Why the stand-in could not serve.
#[derive(Debug, thiserror::Error)]
pub enum StandInError {
    /// The key is not PEM.
    #[error("the node's key: {0}")]
    Key(#[from] pem::PemError),
    /// The TLS setup or the server failed.
    #[error("serving the Talos API: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// One node's stand-in apid.
#[derive(Clone)]
pub struct StandIn {
    hostname: String,
    talos_version: String,
    kubeconfig: Vec<u8>,
    readiness: Readiness,
    record: Arc<Mutex<Record>>,
}

impl StandIn {
    /// The stand-in of node `hostname` running Talos `talos_version`, serving `kubeconfig`
    /// and judging nodes with `readiness`.
    pub fn new(
        hostname: &str,
        talos_version: &str,
        kubeconfig: Vec<u8>,
        readiness: Readiness,
    ) -> Self {
        Self {
            hostname: hostname.to_owned(),
            talos_version: talos_version.to_owned(),
            kubeconfig,
            readiness,
            record: Arc::default(),
        }
    }

    /// What it was asked so far.
    pub fn record(&self) -> Record {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn metadata(&self) -> Option<Metadata> {
        Some(Metadata {
            hostname: self.hostname.clone(),
            ..Default::default()
        })
    }

    /// `bytes` as Talos streams a file: `common.Data` chunks of `chunk` bytes, each naming
    /// this node.
    fn stream_of(&self, bytes: &[u8], chunk: usize) -> Response<Stream<Data>> {
        let chunks: Vec<Result<Data, Status>> = bytes
            .chunks(chunk)
            .map(|part| {
                Ok(Data {
                    metadata: self.metadata(),
                    bytes: part.to_vec(),
                })
            })
            .collect();
        Response::new(Box::pin(tokio_stream::iter(chunks)))
    }

    /// Serves on `listener` until the task is dropped, requiring client certificates from
    /// `tls.client_ca`.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        tls: &Tls,
    ) -> Result<(), StandInError> {
        let config = ServerTlsConfig::new()
            .identity(Identity::from_pem(&tls.crt, pkcs8_pem(&tls.key)?))
            .client_ca_root(Certificate::from_pem(&tls.client_ca));
        Server::builder()
            .tls_config(config)?
            .add_service(MachineServiceServer::new(self.clone()))
            .add_service(ClusterServiceServer::new(self))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await?;
        Ok(())
    }

    /// The nodes of `nodes` that are not ready, asked without blocking the server.
    async fn not_ready(&self, nodes: &[String]) -> Vec<String> {
        let (readiness, nodes) = (self.readiness.clone(), nodes.to_vec());
        tokio::task::spawn_blocking(move || {
            nodes
                .into_iter()
                .filter(|node| !readiness(node))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default()
    }
}

type Stream<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl MachineService for StandIn {
    async fn bootstrap(
        &self,
        _request: Request<BootstrapRequest>,
    ) -> Result<Response<BootstrapResponse>, Status> {
        let mut record = self.lock();
        record.bootstrap_calls += 1;
        if record.bootstrapped {
            // What Talos answers once etcd has data.
            return Err(Status::already_exists("etcd data directory is not empty"));
        }
        record.bootstrapped = true;
        Ok(Response::new(BootstrapResponse {
            messages: vec![Bootstrap {
                metadata: self.metadata(),
            }],
        }))
    }

    async fn kubeconfig(&self, _request: Request<()>) -> Result<Response<Stream<Data>>, Status> {
        let archive = archive::pack_kubeconfig(&self.kubeconfig)
            .map_err(|e| Status::internal(format!("packing the kubeconfig: {e}")))?;
        Ok(self.stream_of(&archive, CHUNK))
    }

    async fn etcd_snapshot(
        &self,
        _request: Request<EtcdSnapshotRequest>,
    ) -> Result<Response<Stream<Data>>, Status> {
        let bootstrapped = {
            let mut record = self.lock();
            record.snapshot_calls += 1;
            record.bootstrapped
        };
        if !bootstrapped {
            // What Talos answers on a control plane whose etcd is not running.
            return Err(Status::failed_precondition("etcd is not running"));
        }
        Ok(self.stream_of(&etcd_snapshot_of(&self.hostname), CHUNK * 8))
    }

    async fn version(&self, _request: Request<()>) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(VersionResponse {
            messages: vec![Version {
                metadata: self.metadata(),
                version: Some(VersionInfo {
                    tag: self.talos_version.clone(),
                    os: "linux".to_owned(),
                    arch: "amd64".to_owned(),
                    ..Default::default()
                }),
                platform: Some(PlatformInfo {
                    name: "stand-in".to_owned(),
                    mode: "container".to_owned(),
                }),
                features: None,
            }],
        }))
    }

    async fn apply_configuration(
        &self,
        request: Request<ApplyConfigurationRequest>,
    ) -> Result<Response<ApplyConfigurationResponse>, Status> {
        let request = request.into_inner();
        if request.data.is_empty() {
            return Err(Status::invalid_argument("the configuration is empty"));
        }
        let node = hostname_in(&request.data).unwrap_or_else(|| self.hostname.clone());
        let mut record = self.lock();
        record.calls.push(if request.dry_run {
            format!("ApplyConfiguration dry-run {node}")
        } else {
            format!("ApplyConfiguration {node}")
        });
        let reboot = record
            .configs
            .get(&node)
            .and_then(|running| reboot_reason(running, &request.data));
        let requested = Mode::try_from(request.mode).unwrap_or(Mode::Auto);
        let (mode, what) = match (requested, reboot) {
            (Mode::Staged, _) => (
                Mode::Staged,
                "Staged configuration to be applied after the next reboot".to_owned(),
            ),
            (Mode::NoReboot, Some(reason)) => {
                // What Talos answers when the change cannot be applied in place.
                return Err(Status::invalid_argument(format!(
                    "apply configuration without reboot is not supported: {reason} changed"
                )));
            }
            (Mode::Reboot, _) => (
                Mode::Reboot,
                "Applied configuration with a reboot".to_owned(),
            ),
            (_, Some(reason)) => (
                Mode::Reboot,
                format!("Applied configuration with a reboot: {reason} changed"),
            ),
            (_, None) => (
                Mode::NoReboot,
                "Applied configuration without a reboot".to_owned(),
            ),
        };
        let mode_details = if request.dry_run {
            format!("Dry run summary:\n{what} (skipped in dry-run).")
        } else {
            record.applied.push(request.data.clone());
            record.configs.insert(node, request.data);
            what
        };
        Ok(Response::new(ApplyConfigurationResponse {
            messages: vec![ApplyConfiguration {
                metadata: self.metadata(),
                warnings: Vec::new(),
                mode: mode.into(),
                mode_details,
            }],
        }))
    }
}

/// The hostname a machine config's `HostnameConfig` document names.
fn hostname_in(config: &[u8]) -> Option<String> {
    documents(config).into_iter().find_map(|document| {
        if document.get("kind")?.as_str()? != "HostnameConfig" {
            return None;
        }
        document.get("hostname")?.as_str().map(str::to_owned)
    })
}

/// What, between the config a node runs and a new one, makes Talos reboot to apply it: the
/// install section (the installer image, the kernel's arguments), which only takes effect at
/// boot; `None` when the new one can be applied in place.
fn reboot_reason(running: &[u8], new: &[u8]) -> Option<&'static str> {
    let install = |config: &[u8]| {
        documents(config)
            .into_iter()
            .find(|document| document.get("version").is_some() && document.get("kind").is_none())
            .and_then(|document| document.get("machine")?.get("install").cloned())
    };
    (install(running) != install(new)).then_some("machine.install")
}

/// The YAML documents of a machine config; none when it is not YAML.
fn documents(config: &[u8]) -> Vec<serde_norway::Value> {
    let Ok(text) = std::str::from_utf8(config) else {
        return Vec::new();
    };
    serde_norway::Deserializer::from_str(text)
        .map_while(|document| serde::Deserialize::deserialize(document).ok())
        .collect()
}

#[tonic::async_trait]
impl ClusterService for StandIn {
    async fn health_check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Stream<HealthCheckProgress>>, Status> {
        self.lock().calls.push("HealthCheck".to_owned());
        let request = request.into_inner();
        let wait = request
            .wait_timeout
            .and_then(|d| u64::try_from(d.seconds).ok())
            .map_or(DEFAULT_WAIT, Duration::from_secs);
        let info = request.cluster_info.unwrap_or_default();
        let (sender, receiver) = mpsc::channel(16);
        let this = self.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + wait;
            let all: Vec<String> = info
                .control_plane_nodes
                .iter()
                .chain(&info.worker_nodes)
                .cloned()
                .collect();
            let stages: [(&str, &[String]); 3] = [
                ("etcd to be bootstrapped", &[]),
                (
                    "etcd members to be the control plane nodes",
                    &info.control_plane_nodes,
                ),
                ("all nodes to report ready", &all),
            ];
            for (what, nodes) in stages {
                let mut shown: Option<Vec<String>> = None;
                loop {
                    let missing = if nodes.is_empty() {
                        if this.lock().bootstrapped {
                            Vec::new()
                        } else {
                            vec![this.hostname.clone()]
                        }
                    } else {
                        this.not_ready(nodes).await
                    };
                    let message = |text: String| {
                        Ok(HealthCheckProgress {
                            metadata: this.metadata(),
                            message: text,
                        })
                    };
                    if missing.is_empty() {
                        let _ = sender
                            .send(message(format!("waiting for {what}: OK")))
                            .await;
                        break;
                    }
                    let text = format!("waiting for {what}: not yet: {}", missing.join(", "));
                    if Instant::now() >= deadline {
                        let _ = sender
                            .send(Err(Status::deadline_exceeded(format!(
                                "{text} (after {}s)",
                                wait.as_secs()
                            ))))
                            .await;
                        return;
                    }
                    if shown.as_ref() != Some(&missing) {
                        if sender.send(message(text)).await.is_err() {
                            return;
                        }
                        shown = Some(missing);
                    }
                    tokio::time::sleep(POLL).await;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}
