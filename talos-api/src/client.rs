//! A client of a Talos node's API (apid, port 50000): gRPC over mutual TLS, the client
//! certificate and key from the talosconfig, the node verified against the talosconfig's OS CA
//! and reached by address. Every call is bounded in time, and every error names the node and
//! the call.

use crate::archive::{self, ArchiveError};
use crate::proto::cluster::cluster_service_client::ClusterServiceClient;
use crate::proto::cluster::{ClusterInfo, HealthCheckRequest};
use crate::proto::machine::apply_configuration_request::Mode;
/// The modes `ApplyConfiguration` applies a config in (and a node reports it chose).
pub use crate::proto::machine::apply_configuration_request::Mode as ApplyMode;
use crate::proto::machine::machine_service_client::MachineServiceClient;
use crate::proto::machine::{
    ApplyConfigurationRequest, BootstrapRequest, EtcdLeaveClusterRequest, EtcdMemberListRequest,
    EtcdSnapshotRequest, ResetRequest, UpgradeRequest,
};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// The port apid listens on.
pub const PORT: u16 = 50000;

/// The most the gzipped kubeconfig archive may take on the wire.
pub const MAX_KUBECONFIG_ARCHIVE: usize = 1 << 20;

/// How long the client waits between two tries while a node is not ready.
const RETRY_PAUSE: Duration = Duration::from_secs(2);

/// What the client authenticates with and whom it trusts: a talosconfig context's `ca`, `crt`
/// and `key`, as PEM text.
#[derive(Clone)]
pub struct Credentials {
    ca: String,
    crt: String,
    key: String,
}

// The key is os:admin on every node: never in debug output.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("ca", &self.ca)
            .field("crt", &self.crt)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// The OS CA the nodes' certificates must chain to, and the client's certificate and key
    /// (Talos writes Ed25519 keys as `ED25519 PRIVATE KEY`, PKCS#8 inside).
    pub fn from_pem(ca: &str, crt: &str, key: &str) -> Result<Self, pem::PemError> {
        Ok(Self {
            ca: ca.to_owned(),
            crt: crt.to_owned(),
            key: pkcs8_pem(key)?,
        })
    }
}

/// A PKCS#8 key under the label rustls reads (`PRIVATE KEY`), whatever label Talos gave it.
pub fn pkcs8_pem(key: &str) -> Result<String, pem::PemError> {
    let block = pem::parse(key)?;
    let tag = match block.tag() {
        "ED25519 PRIVATE KEY" => "PRIVATE KEY",
        other => other,
    };
    Ok(pem::encode(&pem::Pem::new(tag, block.contents().to_vec())))
}

/// How long the client waits.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// For the TCP connection and the TLS handshake.
    pub connect: Duration,
    /// For one call's whole answer (a streamed answer included).
    pub call: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            call: Duration::from_secs(30),
        }
    }
}

/// What went wrong with a call.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// The node's address cannot be used.
    #[error("`{0}` is not an address (IP or IP:port)")]
    Address(String),
    /// No connection: refused, unreachable, or the TLS handshake failed (a certificate the
    /// other side does not trust).
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The node answered with an error.
    #[error("{code:?}: {message}")]
    Status {
        /// The gRPC status code.
        code: tonic::Code,
        /// The node's message.
        message: String,
    },
    /// No (complete) answer in time.
    #[error("no answer within {}s", .0.as_secs())]
    TimedOut(Duration),
    /// The kubeconfig archive is too large or not what Talos sends.
    #[error("the kubeconfig archive: {0}")]
    Archive(#[from] ArchiveError),
    /// The kubeconfig archive is larger than [`MAX_KUBECONFIG_ARCHIVE`].
    #[error("the kubeconfig archive is larger than {MAX_KUBECONFIG_ARCHIVE} bytes")]
    ArchiveTooLarge,
    /// The answer lacks what the call returns.
    #[error("the answer holds no {0}")]
    Empty(&'static str),
    /// The etcd snapshot went past the bound the caller set.
    #[error("the etcd snapshot is larger than {0} bytes")]
    SnapshotTooLarge(u64),
    /// The snapshot could not be written where the caller wanted it.
    #[error("writing the etcd snapshot: {0}")]
    Write(std::io::Error),
}

/// A failed call: which node, which call, what happened.
#[derive(Debug, thiserror::Error)]
#[error("Talos API of {node}, {call}: {problem}")]
pub struct Error {
    /// The node's address.
    pub node: String,
    /// The call (`Bootstrap`, `Kubeconfig`, ...), or `connect`.
    pub call: &'static str,
    /// What happened.
    pub problem: Problem,
}

impl Error {
    /// Whether the node may answer later: not reachable yet, not ready for the call
    /// (`FailedPrecondition`, `Unavailable`), or too slow.
    pub fn is_not_ready(&self) -> bool {
        match &self.problem {
            Problem::Connect(_) | Problem::TimedOut(_) => true,
            Problem::Status { code, .. } => matches!(
                code,
                tonic::Code::Unavailable
                    | tonic::Code::FailedPrecondition
                    | tonic::Code::DeadlineExceeded
            ),
            _ => false,
        }
    }
}

/// How `Bootstrap` went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bootstrapped {
    /// This call bootstrapped etcd.
    Now,
    /// etcd was there already (`AlreadyExists`): done all the same.
    Already,
}

/// A node's `Version` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeVersion {
    /// The hostname the node answered with.
    pub hostname: String,
    /// The Talos release, `v1.13.9`.
    pub tag: String,
}

/// What a node did, or for a dry run would do, with a machine config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The mode the node chose (`NoReboot`, `Staged`, `Reboot`); `None` when it named one
    /// this client does not know.
    pub mode: Option<Mode>,
    /// The node's own account (`mode_details`): for a dry run, the change it would make.
    pub details: String,
}

/// The nodes a health check waits for, by address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Nodes {
    /// The control planes: etcd's members must be exactly these.
    pub control_planes: Vec<String>,
    /// The workers.
    pub workers: Vec<String>,
}

/// A connection to one node's apid.
#[derive(Debug, Clone)]
pub struct Client {
    node: String,
    timeouts: Timeouts,
    machine: MachineServiceClient<Channel>,
    cluster: ClusterServiceClient<Channel>,
}

/// The text of an error and its causes (tonic's own says only "transport error"), each once.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

impl Client {
    /// Connects to `node` (`10.10.1.11`, port 50000; or `IP:port`) over mutual TLS, the
    /// node's certificate verified against the OS CA for that address.
    pub async fn connect(
        node: &str,
        credentials: &Credentials,
        timeouts: Timeouts,
    ) -> Result<Self, Error> {
        let failed = |problem| Error {
            node: node.to_owned(),
            call: "connect",
            problem,
        };
        let address = match (node.parse::<SocketAddr>(), node.parse::<IpAddr>()) {
            (Ok(address), _) => address,
            (_, Ok(ip)) => SocketAddr::new(ip, PORT),
            _ => return Err(failed(Problem::Address(node.to_owned()))),
        };
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&credentials.ca))
            .identity(Identity::from_pem(&credentials.crt, &credentials.key))
            .domain_name(address.ip().to_string());
        let endpoint = Endpoint::from_shared(format!("https://{address}"))
            .and_then(|e| e.tls_config(tls))
            .map_err(|e| failed(Problem::Connect(chain(&e))))?
            .connect_timeout(timeouts.connect)
            .timeout(timeouts.call);
        let channel = match tokio::time::timeout(timeouts.connect, endpoint.connect()).await {
            Err(_) => return Err(failed(Problem::TimedOut(timeouts.connect))),
            Ok(Err(e)) => return Err(failed(Problem::Connect(chain(&e)))),
            Ok(Ok(channel)) => channel,
        };
        Ok(Self {
            node: node.to_owned(),
            timeouts,
            machine: MachineServiceClient::new(channel.clone()),
            cluster: ClusterServiceClient::new(channel),
        })
    }

    /// The node's address, as given to [`Client::connect`].
    pub fn node(&self) -> &str {
        &self.node
    }

    fn error(&self, call: &'static str, problem: Problem) -> Error {
        Error {
            node: self.node.clone(),
            call,
            problem,
        }
    }

    fn status(&self, call: &'static str, status: &tonic::Status) -> Error {
        let mut message = status.message().to_owned();
        if let Some(cause) = std::error::Error::source(status) {
            message = format!("{message}: {}", chain(cause));
        }
        // Under TLS 1.3 the handshake is over for the client before the node has checked the
        // client's certificate: a node that refuses it closes the connection under the first
        // call, and only the broken connection is seen here.
        if matches!(status.code(), tonic::Code::Unknown | tonic::Code::Cancelled) {
            message.push_str(
                " (the node closed the connection: it does so when it does not trust the client certificate)",
            );
        }
        self.error(
            call,
            Problem::Status {
                code: status.code(),
                message,
            },
        )
    }

    /// Runs `call` within `limit`.
    async fn bounded<T>(
        &self,
        name: &'static str,
        limit: Duration,
        call: impl Future<Output = Result<T, tonic::Status>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(limit, call).await {
            Err(_) => Err(self.error(name, Problem::TimedOut(limit))),
            Ok(Err(status)) => Err(self.status(name, &status)),
            Ok(Ok(value)) => Ok(value),
        }
    }

    /// `Bootstrap`: starts etcd on this control plane; `AlreadyExists` counts as done.
    pub async fn bootstrap(&mut self) -> Result<Bootstrapped, Error> {
        let mut machine = self.machine.clone();
        let call = machine.bootstrap(BootstrapRequest::default());
        match self.bounded("Bootstrap", self.timeouts.call, call).await {
            Ok(_) => Ok(Bootstrapped::Now),
            Err(Error {
                problem:
                    Problem::Status {
                        code: tonic::Code::AlreadyExists,
                        ..
                    },
                ..
            }) => Ok(Bootstrapped::Already),
            Err(e) => Err(e),
        }
    }

    /// `Kubeconfig`: the admin kubeconfig, collected from the streamed gzipped tar.
    pub async fn kubeconfig(&mut self) -> Result<Vec<u8>, Error> {
        let mut machine = self.machine.clone();
        let collect = async move {
            let mut stream = machine.kubeconfig(()).await?.into_inner();
            let mut archive = Vec::new();
            while let Some(chunk) = stream.next().await {
                archive.extend_from_slice(&chunk?.bytes);
                if archive.len() > MAX_KUBECONFIG_ARCHIVE {
                    return Ok(None);
                }
            }
            Ok(Some(archive))
        };
        let archive = self
            .bounded("Kubeconfig", self.timeouts.call, collect)
            .await?
            .ok_or_else(|| self.error("Kubeconfig", Problem::ArchiveTooLarge))?;
        archive::unpack_kubeconfig(&archive).map_err(|e| self.error("Kubeconfig", e.into()))
    }

    /// `Version`: the node's hostname and Talos release.
    pub async fn version(&mut self) -> Result<NodeVersion, Error> {
        let mut machine = self.machine.clone();
        let answer = self
            .bounded("Version", self.timeouts.call, machine.version(()))
            .await?
            .into_inner();
        let first = answer
            .messages
            .into_iter()
            .next()
            .ok_or_else(|| self.error("Version", Problem::Empty("version")))?;
        Ok(NodeVersion {
            hostname: first.metadata.map(|m| m.hostname).unwrap_or_default(),
            tag: first
                .version
                .ok_or_else(|| self.error("Version", Problem::Empty("version")))?
                .tag,
        })
    }

    /// `ApplyConfiguration`: the whole multi-document machine config, applied in `mode`;
    /// returns the node's account of what it did.
    pub async fn apply_configuration(
        &mut self,
        config: &[u8],
        mode: Mode,
    ) -> Result<String, Error> {
        let answers = self.apply_request(config, mode, false).await?;
        Ok(answers
            .into_iter()
            .map(|applied| applied.details)
            .collect::<Vec<_>>()
            .join("; "))
    }

    /// `ApplyConfiguration` with `dry_run`: what the node would do with `config` in `mode`
    /// (no reboot, staged, reboot) and its account of it, changing nothing.
    pub async fn apply_configuration_dry_run(
        &mut self,
        config: &[u8],
        mode: Mode,
    ) -> Result<Applied, Error> {
        self.apply_request(config, mode, true)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| self.error("ApplyConfiguration", Problem::Empty("mode")))
    }

    async fn apply_request(
        &mut self,
        config: &[u8],
        mode: Mode,
        dry_run: bool,
    ) -> Result<Vec<Applied>, Error> {
        let mut machine = self.machine.clone();
        let request = ApplyConfigurationRequest {
            data: config.to_vec(),
            mode: mode.into(),
            dry_run,
            ..Default::default()
        };
        let answer = self
            .bounded(
                "ApplyConfiguration",
                self.timeouts.call,
                machine.apply_configuration(request),
            )
            .await?
            .into_inner();
        Ok(answer
            .messages
            .into_iter()
            .map(|m| Applied {
                // A mode this client does not know yet is shown as what the node said.
                mode: Mode::try_from(m.mode).ok(),
                details: m.mode_details,
            })
            .collect())
    }

    /// `EtcdSnapshot`: the node's etcd database, streamed into `out` chunk by chunk (never whole
    /// in memory) and refused past `max` bytes; returns how many bytes came. The whole stream
    /// must arrive within the call timeout.
    pub async fn etcd_snapshot(
        &mut self,
        out: &mut (impl std::io::Write + Send),
        max: u64,
    ) -> Result<u64, Error> {
        let mut machine = self.machine.clone();
        let follow = async move {
            let mut stream = machine
                .etcd_snapshot(EtcdSnapshotRequest {})
                .await?
                .into_inner();
            let mut size: u64 = 0;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                size += chunk.bytes.len() as u64;
                if size > max {
                    return Ok(Err(Problem::SnapshotTooLarge(max)));
                }
                if let Err(e) = out.write_all(&chunk.bytes) {
                    return Ok(Err(Problem::Write(e)));
                }
            }
            Ok(Ok(size))
        };
        match self
            .bounded("EtcdSnapshot", self.timeouts.call, follow)
            .await?
        {
            Ok(0) => Err(self.error("EtcdSnapshot", Problem::Empty("snapshot data"))),
            Ok(size) => Ok(size),
            Err(problem) => Err(self.error("EtcdSnapshot", problem)),
        }
    }

    /// `ClusterService.HealthCheck`: waits up to `wait` for etcd's members to be the control
    /// planes and every node to be ready, handing each progress message to `progress`. The
    /// error of a check that ran out of time says what never became ready.
    pub async fn health_check(
        &mut self,
        nodes: &Nodes,
        wait: Duration,
        mut progress: impl FnMut(&str),
    ) -> Result<(), Error> {
        let mut cluster = self.cluster.clone();
        let request = HealthCheckRequest {
            wait_timeout: Some(prost_types::Duration {
                seconds: i64::try_from(wait.as_secs()).unwrap_or(i64::MAX),
                nanos: 0,
            }),
            cluster_info: Some(ClusterInfo {
                control_plane_nodes: nodes.control_planes.clone(),
                worker_nodes: nodes.workers.clone(),
                force_endpoint: String::new(),
            }),
        };
        let follow = async move {
            let mut stream = cluster.health_check(request).await?.into_inner();
            while let Some(message) = stream.next().await {
                progress(&message?.message);
            }
            Ok(())
        };
        // The node's own limit first, so its message (what is not ready) is the one shown.
        self.bounded("HealthCheck", wait + self.timeouts.call, follow)
            .await
    }
}

/// Bootstraps etcd on `node`, trying again while the node is not ready for it (booting,
/// unreachable, `FailedPrecondition`), for up to `within`; `waiting` hears of each failed try.
pub async fn bootstrap_within(
    node: &str,
    credentials: &Credentials,
    timeouts: Timeouts,
    within: Duration,
    mut waiting: impl FnMut(&Error),
) -> Result<Bootstrapped, Error> {
    let deadline = Instant::now() + within;
    loop {
        let attempt = match Client::connect(node, credentials, timeouts).await {
            Ok(mut client) => client.bootstrap().await,
            Err(e) => Err(e),
        };
        match attempt {
            Err(e) if e.is_not_ready() && Instant::now() + RETRY_PAUSE < deadline => {
                waiting(&e);
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            other => return other,
        }
    }
}

/// One member of etcd, as `EtcdMemberList` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdMember {
    /// The member's ID.
    pub id: u64,
    /// The control plane's hostname.
    pub hostname: String,
}

impl Client {
    /// `Upgrade`: installs `image` (the installer) and reboots into it. Talos answers once the
    /// upgrade is under way; the node then goes away and comes back at the new release.
    // Deprecated for LifecycleService.Upgrade, whose proto reference/talos does not hold; the
    // MachineService call is served until Talos v1.18.
    #[allow(deprecated)]
    pub async fn upgrade(&mut self, image: &str) -> Result<(), Error> {
        let mut machine = self.machine.clone();
        let request = UpgradeRequest {
            image: image.to_owned(),
            // Talos's default since 1.8: the node's data (etcd, kubelet state) is kept.
            preserve: true,
            ..Default::default()
        };
        self.bounded("Upgrade", self.timeouts.call, machine.upgrade(request))
            .await?;
        Ok(())
    }

    /// `EtcdMemberList`: etcd's members as this control plane sees them.
    pub async fn etcd_member_list(&mut self) -> Result<Vec<EtcdMember>, Error> {
        let mut machine = self.machine.clone();
        let request = EtcdMemberListRequest { query_local: false };
        let answer = self
            .bounded(
                "EtcdMemberList",
                self.timeouts.call,
                machine.etcd_member_list(request),
            )
            .await?
            .into_inner();
        Ok(answer
            .messages
            .into_iter()
            .flat_map(|m| m.members)
            .map(|m| EtcdMember {
                id: m.id,
                hostname: m.hostname,
            })
            .collect())
    }

    /// `EtcdLeaveCluster`: this control plane leaves etcd (etcd refuses when the members
    /// left would lose quorum).
    pub async fn etcd_leave_cluster(&mut self) -> Result<(), Error> {
        let mut machine = self.machine.clone();
        self.bounded(
            "EtcdLeaveCluster",
            self.timeouts.call,
            machine.etcd_leave_cluster(EtcdLeaveClusterRequest {}),
        )
        .await?;
        Ok(())
    }

    /// `Reset`, graceful: the node leaves the cluster, wipes its disks and halts (the VM is
    /// destroyed after).
    pub async fn reset(&mut self) -> Result<(), Error> {
        let mut machine = self.machine.clone();
        let request = ResetRequest {
            graceful: true,
            reboot: false,
            ..Default::default()
        };
        self.bounded("Reset", self.timeouts.call, machine.reset(request))
            .await?;
        Ok(())
    }
}
