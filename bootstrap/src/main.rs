// Root on the Proxmox host, holding the lab's secrets: nothing here needs `unsafe`.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use lab_bootstrap::state_dir::StateDir;
use lab_bootstrap::talos::cluster::Access;
use lab_bootstrap::{
    backup, balancer, commands, host, local, node_configs, peers, proxmox, render, talos_upgrade,
    Lab,
};
use lab_daemon::config::load;
use lab_daemon::{cli, exit};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// From one lab.toml to a running lab on a Proxmox host.
#[derive(Parser)]
#[command(name = "lab-bootstrap", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a lab.toml without touching anything
    Validate {
        /// The lab description
        #[arg(value_name = "FILE", default_value = "lab.toml")]
        file: PathBuf,
    },
    /// Write the host's files (dnsmasq, nftables, sysctl, units, Talos snippets) under DIR as
    /// they go on the host, and the talosconfig and VPN client configs in the state directory
    Render {
        /// Where `/` of the host is: `/` to install, any directory to look first
        #[arg(long, value_name = "DIR", default_value = "/")]
        root: PathBuf,
        /// Secrets and generated client configs (0700); default DIR/var/lib/lab-bootstrap
        #[arg(long, value_name = "STATE")]
        state: Option<PathBuf>,
        /// The lab description
        #[arg(value_name = "FILE", default_value = "lab.toml")]
        file: PathBuf,
    },
    /// Show what apply would change on the Proxmox node and host (exit 0: nothing, 2: changes)
    Plan(commands::Args),
    /// Create, update and replace what the plan shows, waiting on every Proxmox task
    Apply(commands::Args),
    /// Remove every bridge, container, VM and host file lab-bootstrap created, and nothing else
    Destroy(commands::Args),
    /// Archive an etcd snapshot (through the Talos API) and the state directory, keeping the
    /// `[backup] keep` newest archives
    Backup(BackupArgs),
    /// Check an archive against the lab (checksums, snapshot, same cluster) and print the
    /// recovery steps; only --dry-run is implemented
    Restore {
        /// Check and print the steps, change nothing
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        state: StateArgs,
        /// The archive `backup` wrote
        #[arg(value_name = "ARCHIVE")]
        archive: PathBuf,
        /// The lab description
        #[arg(value_name = "FILE", default_value = "lab.toml")]
        file: PathBuf,
    },
    /// Upgrade a running lab, node by node (Talos: each drained at the balancer first)
    Upgrade {
        #[command(subcommand)]
        command: UpgradeCommand,
    },
    /// Build the lab in network namespaces on this machine (`--local`), with the real programs
    Up {
        #[command(flatten)]
        local: LocalArgs,
        /// Also connect a wireguard-go client with the admin peer's config from `outside`
        #[arg(long)]
        connect: bool,
        /// Where lab-lb and lab-vpn are [default: beside lab-bootstrap, then PATH]
        #[arg(long, value_name = "DIR")]
        binaries: Option<PathBuf>,
        /// The lab description
        #[arg(value_name = "FILE", default_value = "lab.toml")]
        file: PathBuf,
    },
    /// Remove a local lab: every namespace, process and file it made
    Down {
        #[command(flatten)]
        local: LocalArgs,
    },
    /// Show a local lab: machines, addresses, what runs there, healthy or not
    Status {
        #[command(flatten)]
        local: LocalArgs,
    },
    /// The VPN peers of lab.toml: add, remove, list (then `apply` pushes them)
    Peer {
        #[command(subcommand)]
        command: PeerCommand,
    },
    /// A stand-in for a VM's services in a local lab (run by `up --local`)
    #[command(hide = true)]
    StandIn {
        name: String,
        #[arg(long = "http", value_name = "PORT")]
        http: Vec<u16>,
        #[arg(long = "tls", value_name = "PORT")]
        tls: Vec<u16>,
        /// Serve the Talos API on 50000 with the PKI of the local lab in DIR
        #[arg(long = "talos-api", value_name = "DIR")]
        talos_api: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PeerCommand {
    /// Add a peer to lab.toml; without a key, make a key pair and write the client config
    /// (with its private key) to the state directory
    Add {
        /// The peer's name
        name: String,
        /// The peer's public key, as `wg pubkey` prints it
        #[arg(long, value_name = "KEY", conflicts_with = "public_key_file")]
        public_key: Option<lab_schema::vpn::key::PublicKey>,
        /// A file holding the peer's public key (lab.toml names it relative to itself)
        #[arg(long, value_name = "FILE")]
        public_key_file: Option<PathBuf>,
        /// The peer's tunnel address [default: the next free one in vpn.tunnel]
        #[arg(long, value_name = "IP")]
        address: Option<std::net::Ipv4Addr>,
        #[command(flatten)]
        files: PeerFiles,
    },
    /// Remove a peer from lab.toml, and its client config from the state directory
    Remove {
        /// The peer's name
        name: String,
        #[command(flatten)]
        files: PeerFiles,
    },
    /// List lab.toml's peers (`plan` also lists those added with `lab-vpn peer add`)
    List {
        /// The lab description
        #[arg(value_name = "FILE", default_value = "lab.toml")]
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum UpgradeCommand {
    /// Every Talos node to VERSION (the Image Factory installer of the lab's schematic):
    /// workers, then control planes, one at a time while the cluster is healthy; nodes at
    /// VERSION are skipped, so an interrupted upgrade is run again; lab.toml's
    /// `[cluster] talos_version` is set after the last node
    Talos(UpgradeTalosArgs),
    /// Kubernetes to VERSION: one minor version at a time, never down, at most the minor the
    /// lab's Talos release ships; sets `[cluster] kubernetes_version` in lab.toml (comments
    /// kept), then applies each node's config with the new images, control planes first, one
    /// at a time with the cluster healthy in between
    Kubernetes(KubernetesArgs),
}

#[derive(clap::Args)]
struct UpgradeTalosArgs {
    /// The Talos release, as v1.13.10
    #[arg(value_name = "VERSION")]
    version: String,
    /// Print the sequence (with each node's release now), change nothing
    #[arg(long)]
    dry_run: bool,
    /// How long a node's servers at the balancer may take to finish what runs through them
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    drain_timeout: u64,
    /// How long a node may take to come back at VERSION with the cluster healthy (and an
    /// unhealthy cluster is waited for before a node is taken down)
    #[arg(long, value_name = "SECONDS", default_value_t = 900)]
    node_timeout: u64,
    #[command(flatten)]
    state: StateArgs,
    /// Run host commands as `PROGRAM command args…` (tests stand in for pct)
    #[arg(long, value_name = "PROGRAM", hide = true)]
    run_via: Option<PathBuf>,
    /// The pvesh program, which says on a cluster where the lb container is now
    #[arg(long, value_name = "PATH", default_value = "pvesh", hide = true)]
    pvesh: PathBuf,
    /// The lab description
    #[arg(value_name = "FILE", default_value = "lab.toml")]
    file: PathBuf,
}

#[derive(clap::Args)]
struct KubernetesArgs {
    /// The Kubernetes release, `v1.36.3`
    #[arg(value_name = "VERSION")]
    version: String,
    /// Check and print the sequence (and each node's change), change nothing
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    state: StateArgs,
    /// How long to wait for a healthy cluster before and after each control plane
    #[arg(long, value_name = "SECONDS", default_value_t = 1200)]
    wait_timeout: u64,
    /// Send every Talos API call to ADDR:PORT instead of the nodes (tests' stand-in apid)
    #[arg(long, value_name = "ADDR", hide = true)]
    talos_endpoint: Option<String>,
    /// The lab description
    #[arg(value_name = "FILE", default_value = "lab.toml")]
    file: PathBuf,
}

#[derive(clap::Args)]
struct PeerFiles {
    /// The state directory (client configs) [default: ROOT/var/lib/lab-bootstrap]
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
    /// Where `/` of the host is, for the default state directory
    #[arg(long, value_name = "DIR", default_value = "/")]
    root: PathBuf,
    /// The lab description
    #[arg(value_name = "FILE", default_value = "lab.toml")]
    file: PathBuf,
}

impl PeerFiles {
    fn state(&self) -> StateDir {
        match &self.state {
            Some(dir) => StateDir::new(dir),
            None => StateDir::default_under(&self.root),
        }
    }
}

#[derive(clap::Args)]
struct StateArgs {
    /// The state directory [default: ROOT/var/lib/lab-bootstrap]
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
    /// Where `/` of the host is, for the default state directory
    #[arg(long, value_name = "DIR", default_value = "/")]
    root: PathBuf,
}

impl StateArgs {
    fn state(&self) -> StateDir {
        match &self.state {
            Some(dir) => StateDir::new(dir),
            None => StateDir::default_under(&self.root),
        }
    }
}

#[derive(clap::Args)]
struct BackupArgs {
    /// Where the archive goes [default: `[backup] dir` of lab.toml]
    #[arg(long, value_name = "DIR")]
    output: Option<PathBuf>,
    #[command(flatten)]
    state: StateArgs,
    /// Send every Talos API call to ADDR:PORT instead of the nodes (tests' stand-in apid)
    #[arg(long, value_name = "ADDR", hide = true)]
    talos_endpoint: Option<String>,
    /// The lab description
    #[arg(value_name = "FILE", default_value = "lab.toml")]
    file: PathBuf,
}

#[derive(clap::Args)]
struct LocalArgs {
    /// In network namespaces on this machine (the only place up/down/status work; on Proxmox
    /// it is apply/destroy/plan)
    #[arg(long, required = true)]
    local: bool,
    /// The lab's name: prefix of its namespaces and interfaces, so labs never collide
    #[arg(long, value_name = "NAME", default_value = "lab")]
    name: String,
}

fn main() -> ExitCode {
    let cli = match cli::parse::<Cli>() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    match cli.command {
        Command::Validate { file } => cli::check_file::<Lab>("lab-bootstrap", &file),
        Command::Render { root, state, file } => {
            let state = match state {
                Some(dir) => StateDir::new(dir),
                None => StateDir::default_under(&root),
            };
            render(&root, &state, &file)
        }
        Command::Plan(args) => commands::run(commands::Op::Plan, &args),
        Command::Apply(args) => commands::run(commands::Op::Apply, &args),
        Command::Destroy(args) => commands::run(commands::Op::Destroy, &args),
        Command::Backup(args) => backup(&args),
        Command::Restore {
            dry_run,
            state,
            archive,
            file,
        } => restore(dry_run, &state.state(), &archive, &file),
        Command::Upgrade {
            command: UpgradeCommand::Talos(args),
        } => upgrade_talos(&args),
        Command::Upgrade {
            command: UpgradeCommand::Kubernetes(args),
        } => upgrade_kubernetes(&args),
        Command::Up {
            local,
            connect,
            binaries,
            file,
        } => local_result(local::up(&local::UpOptions {
            lab_file: file,
            name: local.name,
            connect,
            binaries,
        })),
        Command::Down { local } => local_result(local::down(&local.name)),
        Command::Status { local } => local_result(local::status(&local.name)),
        Command::Peer { command } => peer(command),
        Command::StandIn {
            name,
            http,
            tls,
            talos_api,
        } => local_result(local::stand_in::serve(
            &name,
            &http,
            &tls,
            talos_api.as_deref(),
        )),
    }
}

fn local_result(result: Result<(), local::LocalError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            for line in e.to_string().lines() {
                eprintln!("lab-bootstrap: {line}");
            }
            match e {
                local::LocalError::Usage(_) => exit::code(exit::CONFIG),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

fn peer(command: PeerCommand) -> ExitCode {
    let result = match command {
        PeerCommand::Add {
            name,
            public_key,
            public_key_file,
            address,
            files,
        } => {
            let key = match (public_key, public_key_file) {
                (Some(key), _) => peers::KeySource::Key(key),
                (None, Some(file)) => peers::KeySource::File(file),
                (None, None) => peers::KeySource::Generate,
            };
            peers::add(&files.file, &files.state(), &name, &key, address).map(|added| {
                println!(
                    "added peer `{name}` at {} to {}",
                    added.address,
                    files.file.display()
                );
                if let Some(config) = added.client_config {
                    println!(
                        "its client config, private key included: {} (0600; apply keeps it)",
                        config.display()
                    );
                }
                println!(
                    "next: `lab-bootstrap plan {0}`, then `lab-bootstrap apply {0}` puts it on the gateway",
                    files.file.display()
                );
            })
        }
        PeerCommand::Remove { name, files } => {
            peers::remove(&files.file, &files.state(), &name).map(|()| {
                println!(
                    "removed peer `{name}` from {}; next: `lab-bootstrap apply {}` takes it off the gateway",
                    files.file.display(),
                    files.file.display()
                );
            })
        }
        PeerCommand::List { file } => peers::list(&file).map(|peers| {
            for peer in peers {
                let key = match (&peer.public_key, &peer.public_key_file) {
                    (Some(key), _) => key.to_string(),
                    (None, Some(file)) => file.display().to_string(),
                    (None, None) => String::new(),
                };
                println!("{}\t{}/32\t{key}", peer.name, peer.address);
            }
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            for line in e.to_string().lines() {
                eprintln!("lab-bootstrap: {line}");
            }
            if e.is_config() {
                exit::code(exit::CONFIG)
            } else {
                exit::code(exit::OS_ERROR)
            }
        }
    }
}

fn render(root: &Path, state: &StateDir, file: &Path) -> ExitCode {
    let lab = match load::<Lab>(file) {
        Ok(lab) => lab,
        Err(e) => {
            for line in e.lines() {
                eprintln!("lab-bootstrap: {line}");
            }
            return exit::code(exit::CONFIG);
        }
    };
    match render::state::render_all(&lab, root, state) {
        Ok(written) => {
            for (path, outcome) in written {
                println!("{outcome:>9} {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) if e.is_config() => {
            eprintln!("lab-bootstrap: {}: {e}", file.display());
            exit::code(exit::CONFIG)
        }
        Err(e) => {
            eprintln!("lab-bootstrap: cannot write: {e}");
            exit::code(exit::OS_ERROR)
        }
    }
}

fn load_lab(file: &Path) -> Result<Lab, ExitCode> {
    load::<Lab>(file).map_err(|e| {
        for line in e.lines() {
            eprintln!("lab-bootstrap: {line}");
        }
        exit::code(exit::CONFIG)
    })
}

fn backup(args: &BackupArgs) -> ExitCode {
    let lab = match load_lab(&args.file) {
        Ok(lab) => lab,
        Err(code) => return code,
    };
    let state = args.state.state();
    let dir = args
        .output
        .clone()
        .unwrap_or_else(|| lab.backup.dir.clone());
    let taken = Access::new(&lab, &state, args.talos_endpoint.as_deref())
        .map_err(backup::BackupError::from)
        .and_then(|access| backup::take(&lab, &state, &access, &dir, lab.backup.keep));
    match taken {
        Ok(taken) => {
            println!(
                "backup {} (0600): etcd snapshot from {} ({} bytes, sha256 {}), {} state files",
                taken.archive.display(),
                taken.manifest.snapshot.node,
                taken.manifest.snapshot.size,
                taken.manifest.snapshot.sha256,
                taken.manifest.files.len()
            );
            for old in taken.removed {
                println!("removed {} (keeping {})", old.display(), lab.backup.keep);
            }
            ExitCode::SUCCESS
        }
        Err(e @ backup::BackupError::Prune { .. }) => {
            eprintln!("lab-bootstrap: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("lab-bootstrap: backup failed, no archive written or removed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn restore(dry_run: bool, state: &StateDir, archive: &Path, file: &Path) -> ExitCode {
    if !dry_run {
        eprintln!(
            "lab-bootstrap: restore without --dry-run is not implemented: run `lab-bootstrap restore --dry-run {} {}` and follow the steps it prints",
            archive.display(),
            file.display()
        );
        return exit::code(exit::USAGE);
    }
    let lab = match load_lab(file) {
        Ok(lab) => lab,
        Err(code) => return code,
    };
    match backup::restore::check(archive, &lab, state) {
        Ok(checked) => {
            print!(
                "{}",
                backup::restore::steps(&checked, archive, &lab, file, state)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("lab-bootstrap: refused: {e}");
            ExitCode::FAILURE
        }
    }
}

fn upgrade_talos(args: &UpgradeTalosArgs) -> ExitCode {
    if let Err(e) = talos_upgrade::check_version(&args.version) {
        eprintln!("lab-bootstrap: {e}");
        return exit::code(exit::USAGE);
    }
    let lab = match load_lab(&args.file) {
        Ok(lab) => lab,
        Err(code) => return code,
    };
    let access = match Access::new(&lab, &args.state.state(), None) {
        Ok(access) => access,
        Err(e) => {
            eprintln!("lab-bootstrap: {e}");
            return ExitCode::FAILURE;
        }
    };
    let system = host::System {
        via: args.run_via.clone(),
    };
    // HA or an admin may have moved the lb container off its placed node.
    let located = match proxmox::plan::guest_nodes(&proxmox::client::Pvesh::new(&args.pvesh), &lab)
    {
        Ok(located) => located,
        Err(e) => {
            eprintln!("lab-bootstrap: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut runner = match host::node_router::NodeRouter::new(&lab, &located, system) {
        Ok(runner) => runner,
        Err(e) => {
            eprintln!("lab-bootstrap: {e}");
            return ExitCode::FAILURE;
        }
    };
    let options = talos_upgrade::Options {
        version: args.version.clone(),
        dry_run: args.dry_run,
        drain_timeout: std::time::Duration::from_secs(args.drain_timeout),
        node_timeout: std::time::Duration::from_secs(args.node_timeout),
    };
    let result = balancer::Balancer::of(&lab, &mut runner)
        .map_err(talos_upgrade::UpgradeError::from)
        .and_then(|mut balancer| {
            talos_upgrade::run(
                &lab,
                &args.file,
                &access,
                &mut balancer,
                &options,
                &mut std::io::stdout(),
            )
        });
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            for line in e.to_string().lines() {
                eprintln!("lab-bootstrap: {line}");
            }
            ExitCode::FAILURE
        }
    }
}

fn upgrade_kubernetes(args: &KubernetesArgs) -> ExitCode {
    let state = args.state.state();
    let upgrade = node_configs::kubernetes::Upgrade {
        lab_file: &args.file,
        version: &args.version,
        root: &args.state.root,
        state: &state,
        endpoint: args.talos_endpoint.as_deref(),
        within: std::time::Duration::from_secs(args.wait_timeout),
        dry_run: args.dry_run,
    };
    match node_configs::kubernetes::upgrade(&upgrade, &mut std::io::stdout()) {
        Ok(_) if args.dry_run => ExitCode::SUCCESS,
        Ok(done) => {
            println!(
                "Kubernetes {}: {done} nodes given their new config; `lab-bootstrap plan {}` agrees (lab.toml says it now)",
                args.version,
                args.file.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            for line in e.to_string().lines() {
                eprintln!("lab-bootstrap: {line}");
            }
            if e.is_config() {
                exit::code(exit::CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
