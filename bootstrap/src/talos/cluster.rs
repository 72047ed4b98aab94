//! The cluster through its Talos API, with lab-talos-api's client: bootstrapping etcd on the
//! first control plane, waiting until the cluster is healthy, fetching the admin kubeconfig.
//! The credentials are the talosconfig's (the state directory's OS CA and admin certificate);
//! apply on the host and `up --local` both come through here.

use super::secrets::{decode_pem, Secrets, SecretsError};
use super::talosconfig::AdminCredentials;
use crate::model::{Lab, NetworkId, Role};
use crate::progress::Stage;
use crate::state_dir::StateDir;
use lab_talos_api::client::{
    self, Bootstrapped, Client, Credentials, EtcdMember, NodeVersion, Nodes, Timeouts,
};
use std::future::Future;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Why talking to the cluster failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The secrets bundle or the admin credentials could not be read.
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// The talosconfig's certificates or key are not usable.
    #[error("the talosconfig credentials: {0}")]
    Credentials(String),
    /// lab.toml has no control plane with a net1 address to bootstrap.
    #[error("lab.toml has no control plane with a net1 address: nothing to bootstrap")]
    NoControlPlane,
    /// A call failed for good.
    #[error(transparent)]
    Api(#[from] client::Error),
    /// Something never became ready within the wait.
    #[error("{what} not done after {seconds}s: {last}")]
    NotReady {
        /// What was waited for, naming the node.
        what: String,
        /// How long it was waited for.
        seconds: u64,
        /// The last answer: what is not ready.
        last: String,
    },
    /// No control plane gave an etcd snapshot.
    #[error("no control plane gave an etcd snapshot: {0}")]
    NoSnapshot(String),
    /// The client's runtime could not be started.
    #[error("starting the Talos API client: {0}")]
    Runtime(std::io::Error),
    /// The kubeconfig could not be written.
    #[error("writing {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Who to ask and with what: the talosconfig's credentials, the first control plane by its
/// net1 address (etcd is bootstrapped there) and every node by its kubelet's (net2) address.
#[derive(Debug, Clone)]
pub struct Access {
    credentials: Credentials,
    first: String,
    first_name: String,
    control_planes: Vec<(String, String)>,
    nodes: Nodes,
    endpoint: Option<String>,
    timeouts: Timeouts,
}

impl Access {
    /// The cluster of `lab`, reached with the credentials in `state`; with `endpoint`, every
    /// call goes to that address instead of the nodes (the tests' stand-in).
    pub fn new(lab: &Lab, state: &StateDir, endpoint: Option<&str>) -> Result<Self, ClusterError> {
        let secrets = Secrets::load(&state.talos_secrets())?;
        let admin = AdminCredentials::load(&state.talos_admin())?;
        let pem =
            |key: &str, value: &str| decode_pem(key, value).map_err(ClusterError::Credentials);
        let credentials = Credentials::from_pem(
            &pem("certs.os.crt", &secrets.certs.os.crt)?,
            &pem("crt", &admin.crt)?,
            &pem("key", &admin.key)?,
        )
        .map_err(|e| ClusterError::Credentials(e.to_string()))?;
        let on = |network: NetworkId, role: Role| -> Vec<(String, String)> {
            lab.machines
                .iter()
                .filter(|m| m.role == role)
                .filter_map(|m| Some((m.name.to_string(), m.address_on(network)?.to_string())))
                .collect()
        };
        let control_planes = on(NetworkId::Net1, Role::ControlPlane);
        let (first_name, first) = control_planes
            .first()
            .cloned()
            .ok_or(ClusterError::NoControlPlane)?;
        // Talos's health check matches each node it is given with a Kubernetes node's
        // InternalIP, which is the kubelet's net2 address (machine configs' nodeIP): net1
        // addresses would never match. The nodes reach each other's apid there too.
        let kubelet_addresses = |role: Role| -> Vec<String> {
            lab.addresses_of(role, NetworkId::Net2)
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        Ok(Self {
            credentials,
            first,
            first_name,
            control_planes,
            nodes: Nodes {
                control_planes: kubelet_addresses(Role::ControlPlane),
                workers: kubelet_addresses(Role::Worker),
            },
            endpoint: endpoint.map(str::to_owned),
            timeouts: Timeouts::default(),
        })
    }

    /// The first control plane, as `cp1 (10.10.1.11)`.
    pub fn first_node(&self) -> String {
        format!("{} ({})", self.first_name, self.first)
    }

    fn target(&self) -> &str {
        self.endpoint.as_deref().unwrap_or(&self.first)
    }

    /// Bootstraps etcd on the first control plane, trying again while it is not ready, for
    /// up to `within` (one try when zero).
    pub fn bootstrap(
        &self,
        within: Duration,
        stage: &mut Stage,
    ) -> Result<Bootstrapped, ClusterError> {
        let started = Instant::now();
        let result = block_on(client::bootstrap_within(
            self.target(),
            &self.credentials,
            self.timeouts,
            within,
            |e| {
                stage.waiting_for(&format!(
                    "{} to take Bootstrap: {}",
                    self.first_node(),
                    e.problem
                ));
            },
        ))?;
        match result {
            Ok(outcome) => Ok(outcome),
            Err(e) if e.is_not_ready() && !within.is_zero() => Err(ClusterError::NotReady {
                what: format!("etcd bootstrap on {}", self.first_node()),
                seconds: started.elapsed().as_secs(),
                last: e.to_string(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Waits up to `within` for etcd's members to be the control planes and every node to
    /// be ready, showing each message of the first control plane's health check.
    pub fn wait_healthy(&self, within: Duration, stage: &mut Stage) -> Result<(), ClusterError> {
        let started = Instant::now();
        let mut last = String::new();
        let result = block_on(async {
            let mut client =
                Client::connect(self.target(), &self.credentials, self.timeouts).await?;
            client
                .health_check(&self.nodes, within, |message| {
                    message.clone_into(&mut last);
                    stage.waiting_for(message);
                })
                .await
        })?;
        result.map_err(|e| match &e.problem {
            client::Problem::Status {
                code: lab_talos_api::Code::DeadlineExceeded,
                message,
            } => ClusterError::NotReady {
                what: "cluster health".to_owned(),
                seconds: started.elapsed().as_secs(),
                last: message.clone(),
            },
            client::Problem::TimedOut(_) => ClusterError::NotReady {
                what: "cluster health".to_owned(),
                seconds: started.elapsed().as_secs(),
                last: if last.is_empty() {
                    e.to_string()
                } else {
                    last.clone()
                },
            },
            _ => e.into(),
        })
    }

    /// The admin kubeconfig, from the first control plane.
    pub fn kubeconfig(&self) -> Result<Vec<u8>, ClusterError> {
        block_on(async {
            let mut client =
                Client::connect(self.target(), &self.credentials, self.timeouts).await?;
            client.kubeconfig().await
        })?
        .map_err(ClusterError::from)
    }

    /// The first control plane's `Version`: its hostname and Talos release.
    pub fn version(&self) -> Result<client::NodeVersion, ClusterError> {
        block_on(async {
            let mut client =
                Client::connect(self.target(), &self.credentials, self.timeouts).await?;
            client.version().await
        })?
        .map_err(ClusterError::from)
    }
}

impl Access {
    /// `ApplyConfiguration` of `config` on the node at `address` (its Talos API address), in
    /// the mode Talos picks (`AUTO`: in place when it can, else with a reboot); returns the
    /// node's account of what it did.
    pub fn apply_config(&self, address: &str, config: &[u8]) -> Result<String, ClusterError> {
        let target = self.endpoint.as_deref().unwrap_or(address);
        block_on(async {
            let mut client = Client::connect(target, &self.credentials, self.timeouts).await?;
            client
                .apply_configuration(config, client::ApplyMode::Auto)
                .await
        })?
        .map_err(ClusterError::from)
    }

    /// What the node at `address` would do with `config` (Talos's dry run, changing nothing):
    /// the mode it would apply it in, and its account.
    pub fn dry_run_config(
        &self,
        address: &str,
        config: &[u8],
    ) -> Result<client::Applied, ClusterError> {
        let target = self.endpoint.as_deref().unwrap_or(address);
        block_on(async {
            let mut client = Client::connect(target, &self.credentials, self.timeouts).await?;
            client
                .apply_configuration_dry_run(config, client::ApplyMode::Auto)
                .await
        })?
        .map_err(ClusterError::from)
    }
}

/// How long one control plane has to stream the whole etcd snapshot.
pub const SNAPSHOT_WAIT: Duration = Duration::from_secs(600);

/// Where an etcd snapshot came from and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenSnapshot {
    /// The control plane that answered, as `cp1 (10.10.1.11)`.
    pub node: String,
    /// Its Talos release, `v1.13.9`.
    pub talos_version: String,
    /// The snapshot's size in bytes.
    pub size: u64,
}

impl Access {
    /// An etcd snapshot into `path` (created 0600, or emptied), from the first control plane
    /// that gives one whole: any one holds all of etcd, so one that is down or fails midway
    /// is passed over for the next. Refused past `max` bytes. The error of the last failure
    /// names every node tried.
    pub fn etcd_snapshot(&self, path: &Path, max: u64) -> Result<TakenSnapshot, ClusterError> {
        let mut failures = Vec::new();
        for (name, address) in &self.control_planes {
            let node = format!("{name} ({address})");
            let target = self.endpoint.as_deref().unwrap_or(address);
            let taken = block_on(async {
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|source| ClusterError::Write {
                        path: path.to_owned(),
                        source,
                    })?;
                // A snapshot of gigabytes takes longer than any other call.
                let timeouts = Timeouts {
                    call: SNAPSHOT_WAIT,
                    ..self.timeouts
                };
                let mut client = Client::connect(target, &self.credentials, timeouts).await?;
                let version = client.version().await?;
                let size = client.etcd_snapshot(&mut file, max).await?;
                file.sync_all().map_err(|source| ClusterError::Write {
                    path: path.to_owned(),
                    source,
                })?;
                Ok::<_, ClusterError>(TakenSnapshot {
                    node: node.clone(),
                    talos_version: version.tag,
                    size,
                })
            })?;
            match taken {
                Ok(taken) => return Ok(taken),
                Err(e @ ClusterError::Write { .. }) => return Err(e),
                Err(e) => failures.push(format!("{node}: {e}")),
            }
        }
        Err(ClusterError::NoSnapshot(failures.join("; ")))
    }
}

/// Writes `kubeconfig` into `state` (0600, atomically: never half a file) and returns where.
pub fn write_kubeconfig(state: &StateDir, kubeconfig: &[u8]) -> Result<PathBuf, ClusterError> {
    let path = state.kubeconfig();
    lab_daemon::files::write_atomic(&path, kubeconfig, 0o600).map_err(|source| {
        ClusterError::Write {
            path: path.clone(),
            source,
        }
    })?;
    Ok(path)
}

/// Runs `work` on a runtime of its own, on this thread: its sockets are made in this thread's
/// network namespace (the local lab enters one first).
fn block_on<F: Future>(work: F) -> Result<F::Output, ClusterError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ClusterError::Runtime)?;
    Ok(runtime.block_on(work))
}

/// How often a node that is away is asked again.
const NODE_POLL: Duration = Duration::from_secs(1);

impl Access {
    /// The node at `address` (its net1 address), or the tests' endpoint.
    fn at<'a>(&'a self, address: &'a str) -> &'a str {
        self.endpoint.as_deref().unwrap_or(address)
    }

    /// One call to the node at `address`.
    fn call<T>(
        &self,
        address: &str,
        work: impl AsyncFnOnce(&mut Client) -> Result<T, client::Error>,
    ) -> Result<T, ClusterError> {
        block_on(async {
            let mut client =
                Client::connect(self.at(address), &self.credentials, self.timeouts).await?;
            work(&mut client).await
        })?
        .map_err(ClusterError::from)
    }

    /// The `Version` of the node at `address`.
    pub fn node_version(&self, address: &str) -> Result<NodeVersion, ClusterError> {
        self.call(address, async |client| client.version().await)
    }

    /// `Upgrade` of the node at `address` to the installer `image`.
    pub fn upgrade_node(&self, address: &str, image: &str) -> Result<(), ClusterError> {
        self.call(address, async |client| client.upgrade(image).await)
    }

    /// etcd's members, as the first control plane sees them.
    pub fn etcd_members(&self) -> Result<Vec<EtcdMember>, ClusterError> {
        self.call(&self.first, async |client| client.etcd_member_list().await)
    }

    /// `EtcdLeaveCluster` on the control plane at `address`.
    pub fn leave_etcd(&self, address: &str) -> Result<(), ClusterError> {
        self.call(address, async |client| client.etcd_leave_cluster().await)
    }

    /// A graceful `Reset` of the node at `address`.
    pub fn reset_node(&self, address: &str) -> Result<(), ClusterError> {
        self.call(address, async |client| client.reset().await)
    }

    /// Waits up to `within` for node `name` at `address` to answer `Version` with `tag`
    /// (it is away meanwhile, rebooting), telling `stage` what it last answered.
    pub fn wait_version(
        &self,
        name: &str,
        address: &str,
        tag: &str,
        within: Duration,
        stage: &mut Stage,
    ) -> Result<(), ClusterError> {
        let started = Instant::now();
        loop {
            let last = match self.node_version(address) {
                Ok(version) if version.tag == tag => return Ok(()),
                Ok(version) => format!("it runs {}", version.tag),
                Err(e) => format!("away: {e}"),
            };
            stage.waiting_for(&format!("{name} to come back at {tag}: {last}"));
            if started.elapsed() + NODE_POLL > within {
                return Err(ClusterError::NotReady {
                    what: format!("{name} ({address}) back at {tag}"),
                    seconds: started.elapsed().as_secs(),
                    last,
                });
            }
            std::thread::sleep(NODE_POLL);
        }
    }
}
