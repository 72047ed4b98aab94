//! `lab-bootstrap plan|apply|destroy`: the Proxmox node's resources first, then the host's
//! files and services, then etcd, then the Talos nodes' changed configs. The drivers below
//! know nothing of each other; the order and what is asked before anything changes are
//! decided here.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use lab_daemon::config::load;
use lab_daemon::exit;

use crate::host::plan::HostPlan;
use crate::model::Checksum;
use crate::node_configs::applied::{adopt_snippets, node_configs, NodeConfig};
use crate::node_configs::rollout::{self, Order};
use crate::proxmox::apply::apply;
use crate::proxmox::client::{ApiError, ProxmoxApi, Pvesh};
use crate::proxmox::datacenter::DcChange;
use crate::proxmox::desired::{desired, Sources};
use crate::proxmox::https::{read_secret, Https, Trust};
use crate::proxmox::images::Download;
use crate::proxmox::plan::{check_nodes_listed, destroy_plan, plan, read_live, ChangeKind, Plan};
use crate::proxmox::preflight::{self, Preflight};
use crate::state_dir::StateDir;
use crate::talos::cluster::Access;
use crate::Lab;

/// `plan` found changes (as `terraform plan -detailed-exitcode` does).
const CHANGES: u8 = 2;
/// The node or the API refused, or the lab conflicts with what is there.
const FAILED: u8 = 1;

/// How lab-bootstrap reaches the Proxmox API (`--api`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// `pvesh` on the Proxmox host, as root@pam (can do everything)
    Pvesh,
    /// The API over HTTPS with a token (cannot pass /dev/net/tun into the vpn container)
    Https,
}

/// Options shared by plan, apply and destroy.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// How to reach the Proxmox API
    #[arg(long, value_enum, default_value = "pvesh")]
    pub api: Transport,
    /// The pvesh program (for --api pvesh)
    #[arg(long, value_name = "PATH", default_value = "pvesh")]
    pub pvesh: PathBuf,
    /// https://HOST[:PORT] of the node (for --api https)
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// API token id, USER@REALM!TOKENID (for --api https)
    #[arg(long, value_name = "ID")]
    pub token_id: Option<String>,
    /// File holding the token secret; or set LAB_PROXMOX_TOKEN_SECRET
    #[arg(long, value_name = "FILE")]
    pub token_secret_file: Option<PathBuf>,
    /// SHA-256 fingerprint of the node's certificate, AA:BB:... (as the UI shows it)
    #[arg(long, value_name = "SHA256", conflicts_with = "ca_file")]
    pub fingerprint: Option<String>,
    /// CA certificate(s) that signed the node's certificate (PEM), e.g. pve-root-ca.pem
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Do not ask for confirmation
    #[arg(long)]
    pub yes: bool,
    /// apply: where `/` of the host is for the files it installs
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// apply: the state directory (secrets, keys); default ROOT/var/lib/lab-bootstrap
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// apply: the directory with lab-lb and lab-vpn; default lab-bootstrap's own
    #[arg(long, value_name = "DIR")]
    pub binaries: Option<PathBuf>,
    /// apply: only the Proxmox resources, not the host's files, containers or etcd
    #[arg(long)]
    pub proxmox_only: bool,
    /// apply: do not wait for the cluster (one try at bootstrapping etcd, no kubeconfig); a
    /// later apply without it waits and writes the kubeconfig
    #[arg(long)]
    pub no_wait: bool,
    /// apply: how long to wait, in all, for etcd and a healthy cluster
    #[arg(long, value_name = "SECONDS", default_value_t = 1200)]
    pub wait_timeout: u64,
    /// Send every Talos API call to ADDR:PORT instead of the nodes (tests' stand-in apid)
    #[arg(long, value_name = "ADDR", hide = true)]
    pub talos_endpoint: Option<String>,
    /// destroy: also delete the state directory (Talos secrets, WireGuard keys); a cluster or
    /// VPN made again then gets new ones, and everyone's access to the old is gone
    #[arg(long)]
    pub purge_state: bool,
    /// Run host commands as `PROGRAM command args…` (tests stand in for systemctl and pct)
    #[arg(long, value_name = "PROGRAM", hide = true)]
    pub run_via: Option<PathBuf>,
    /// The lab description
    #[arg(value_name = "FILE", default_value = "lab.toml")]
    pub file: PathBuf,
}

/// The operation [`run`] carries out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Shows what apply would change, changing nothing; exits 2 when there is something.
    Plan,
    /// Shows the changes and, once confirmed, makes the node and the host match lab.toml.
    Apply,
    /// Shows what it would remove and, once confirmed, removes what apply made.
    Destroy,
}

/// Runs one operation; the exit code says what happened.
pub fn run(op: Op, args: &Args) -> ExitCode {
    let lab = match load::<Lab>(&args.file) {
        Ok(lab) => lab,
        Err(e) => {
            for line in e.lines() {
                eprintln!("lab-bootstrap: {line}");
            }
            return exit::code(exit::CONFIG);
        }
    };
    let api = match connect(args) {
        Ok(api) => api,
        Err(Failure(code, message)) => {
            eprintln!("lab-bootstrap: {message}");
            return exit::code(code);
        }
    };
    match execute(op, args, &lab, api.as_ref()) {
        Ok(code) => code,
        Err(message) => {
            for line in message.lines() {
                eprintln!("lab-bootstrap: {line}");
            }
            exit::code(FAILED)
        }
    }
}

struct Failure(u8, String);

fn connect(args: &Args) -> Result<Box<dyn ProxmoxApi>, Failure> {
    let usage = |m: &str| Failure(exit::USAGE, m.to_owned());
    match args.api {
        Transport::Pvesh => Ok(Box::new(Pvesh::new(&args.pvesh))),
        Transport::Https => {
            let url = args
                .url
                .as_deref()
                .ok_or_else(|| usage("--api https needs --url"))?;
            let id = args
                .token_id
                .as_deref()
                .ok_or_else(|| usage("--api https needs --token-id USER@REALM!TOKENID"))?;
            let secret = match &args.token_secret_file {
                Some(path) => read_secret(path).map_err(|e| {
                    Failure(
                        exit::CONFIG,
                        format!("{}: cannot read the token secret: {e}", path.display()),
                    )
                })?,
                None => std::env::var("LAB_PROXMOX_TOKEN_SECRET").map_err(|_| {
                    usage("--api https needs --token-secret-file or LAB_PROXMOX_TOKEN_SECRET")
                })?,
            };
            let trust = match (&args.fingerprint, &args.ca_file) {
                (Some(fp), _) => Trust::Fingerprint(fp.clone()),
                (None, Some(ca)) => Trust::CaFile(ca.clone()),
                (None, None) => {
                    return Err(usage(
                        "--api https needs --fingerprint or --ca-file: the node's certificate is always verified",
                    ));
                }
            };
            let https = Https::new(url, id, &secret, &trust)
                .map_err(|e| Failure(exit::CONFIG, e.to_string()))?;
            Ok(Box::new(https))
        }
    }
}

fn execute(op: Op, args: &Args, lab: &Lab, api: &dyn ProxmoxApi) -> Result<ExitCode, String> {
    let node = &lab.proxmox.node;
    let live = read_live(api, lab).map_err(|e| e.to_string())?;
    if op != Op::Destroy {
        // Destroy deletes such a guest where it is, through the API alone.
        check_nodes_listed(lab, &live).map_err(|e| e.to_string())?;
    }
    // Where the guests are, read once: the host side acts on each there.
    let located = live.guest_nodes();
    let mut plan: Plan = match op {
        Op::Destroy => destroy_plan(node, lab.cluster.name.as_str(), &live),
        _ => {
            let mut wanted = Vec::new();
            if lab.is_cluster() {
                wanted.extend(crate::proxmox::sdn::desired(lab));
            }
            wanted.extend(desired(lab, &Sources::read(lab)?));
            if let Some(major) = live.pve_major {
                wanted.extend(crate::proxmox::ha::desired(lab, major, |vmid| {
                    live.guests.get(&vmid).is_some_and(|g| g.running)
                }));
            }
            plan(node, lab.cluster.name.as_str(), &wanted, &live).map_err(|e| e.to_string())?
        }
    };
    let datacenter = datacenter_plan(op, args, lab, api)?;
    if lab.is_cluster() {
        plan.nodes = lab.node_names();
    }
    let downloads = match op {
        Op::Destroy => Vec::new(),
        _ => crate::proxmox::images::missing(api, lab).map_err(|e| e.to_string())?,
    };
    if op != Op::Destroy {
        print!("{}", talos_image_lines(lab));
        print!("{}", manager_tools_lines(lab));
    }
    // Read before anything is written, so a node that cannot take the lab is left as it is.
    let preflight: Option<Preflight> = match op {
        Op::Destroy => None,
        _ => Some(preflight::check(api, lab, &plan, &downloads).map_err(|e| e.to_string())?),
    };
    let template = preflight
        .as_ref()
        .and_then(|p| p.template_download.as_ref());
    print!("{}", plan.render());
    print!(
        "{}",
        crate::proxmox::datacenter::render(&datacenter.changes)
    );
    if datacenter.manifests_due {
        println!(
            "  + the Proxmox CSI plugin's manifests in {} will be written",
            state_dir(args).storage_manifests().display()
        );
    }
    // Talos nodes deleted from lab.toml leave the cluster before their VMs go.
    let removals = match op {
        Op::Destroy => Vec::new(),
        _ => crate::node_removal::removals(&plan, &live, lab, &args.root),
    };
    print!("{}", crate::node_removal::render(&removals));
    for download in &downloads {
        println!(
            "  + image {} (download-url {}, {} checked)",
            download.volid,
            download.image.url,
            download.image.checksum().map_or("not", |(a, _)| a)
        );
    }
    if let Some(template) = template {
        println!(
            "  + template {}:vztmpl/{template} (from the node's appliance index)",
            lab.proxmox.file_storage
        );
    }
    let refused = match &preflight {
        Some(preflight) => {
            print!("{}", preflight.render());
            !preflight.ok()
        }
        None => false,
    };
    let on_host = !args.proxmox_only && args.api == Transport::Pvesh;
    if !args.proxmox_only && args.api == Transport::Https && op != Op::Apply {
        println!(
            "The host's files and services need the host itself: run this there with --api pvesh."
        );
    }
    if op == Op::Plan {
        let mut changes = !(plan.is_empty() && downloads.is_empty() && datacenter.is_empty());
        if on_host {
            let host_plan = host_plan(args, lab, &located)?;
            print!("{}", host_plan.render());
            changes |= !host_plan.is_empty();
            let state = state_dir(args);
            let nodes = node_configs(lab, &args.root, &state).map_err(|e| e.to_string())?;
            if nodes.iter().any(NodeConfig::is_pending) {
                let access = Access::new(lab, &state, args.talos_endpoint.as_deref())
                    .map_err(|e| e.to_string());
                print!("{}", rollout::preview(&nodes, &access));
                changes = true;
            }
            // Not counted: whether it can happen depends on the nodes answering.
            if !crate::host::etcd::is_done(&state) {
                println!("Note: etcd is not bootstrapped yet; apply bootstraps it through the first control plane's Talos API once it answers.");
            }
            if !state.kubeconfig().exists() {
                println!(
                    "Note: apply waits for the cluster to be healthy (up to {}s; --no-wait skips it) and writes {}.",
                    args.wait_timeout,
                    state.kubeconfig().display()
                );
            }
        }
        return Ok(if refused {
            exit::code(FAILED)
        } else if changes {
            exit::code(CHANGES)
        } else {
            ExitCode::SUCCESS
        });
    }
    if let Some(preflight) = preflight.as_ref().filter(|p| !p.ok()) {
        let mut message = preflight.problems.join("\n");
        message
            .push_str("\napply refused by preflight: nothing was changed on the node or the host");
        return Err(message);
    }
    let host_destroy = if op == Op::Destroy && on_host {
        crate::host::destroy::preview(&destroy_options(args)).map_err(|e| e.to_string())?
    } else {
        Vec::new()
    };
    if !host_destroy.is_empty() {
        println!("\nOn the host:\n");
        for line in &host_destroy {
            println!("{line}");
        }
    }
    let proxmox_changes = !(plan.is_empty() && downloads.is_empty() && datacenter.is_empty());
    if !proxmox_changes && host_destroy.is_empty() {
        return host_side(op, args, lab, &located);
    }
    if args.api == Transport::Https {
        let needs_root = root_only(&plan);
        if !needs_root.is_empty() {
            return Err(format!(
                "{} need root@pam, which an API token is not: run this on the Proxmox host with --api pvesh",
                needs_root.join(", ")
            ));
        }
    }
    if !args.yes && !confirm(op)? {
        println!("Nothing changed.");
        return Ok(exit::code(FAILED));
    }
    if proxmox_changes {
        // Guests are created from the images, so those come first.
        for download in &downloads {
            println!("Downloading {} ...", download.volid);
            crate::proxmox::images::download(api, lab, download)
                .map_err(|e| download_error(lab, download, &e))?;
        }
        if let Some(template) = template {
            println!("Downloading {template} from the appliance index ...");
            crate::proxmox::images::download_template(api, lab, template)
                .map_err(|e| e.to_string())?;
        }
        let mut stdout = std::io::stdout();
        if !removals.is_empty() {
            remove_nodes(args, lab, &located, &removals, &mut stdout)?;
        }
        let done = apply(api, &plan, &mut stdout).map_err(|e| e.to_string())?
            + downloads.len()
            + usize::from(template.is_some())
            + apply_datacenter(args, lab, api, &datacenter)?;
        println!(
            "{} complete: {done} changes.",
            if op == Op::Destroy {
                "Destroy"
            } else {
                "Apply"
            }
        );
    }
    host_side(op, args, lab, &located)
}

/// The datacenter's side of the lab (`[storage]`'s CSI role, user, ACL and token; the vzdump
/// job), and whether the plugin's manifests in the state directory are due.
struct Datacenter {
    changes: Vec<DcChange>,
    manifests_due: bool,
}

impl Datacenter {
    fn is_empty(&self) -> bool {
        self.changes.is_empty() && !self.manifests_due
    }
}

fn datacenter_plan(
    op: Op,
    args: &Args,
    lab: &Lab,
    api: &dyn ProxmoxApi,
) -> Result<Datacenter, String> {
    use crate::proxmox::{csi, vzdump};
    use crate::storage::manifests;
    let text = |e: crate::proxmox::plan::PlanError| e.to_string();
    if op == Op::Destroy {
        let mut changes = vzdump::destroy_plan(api, lab).map_err(text)?;
        changes.extend(csi::destroy_plan(api, lab).map_err(text)?);
        return Ok(Datacenter {
            changes,
            manifests_due: false,
        });
    }
    let state = state_dir(args);
    let kept = match &lab.storage {
        Some(_) => manifests::kept_secret(&state).map_err(|e| e.to_string())?,
        None => None,
    };
    let mut changes = vzdump::plan(api, lab).map_err(text)?;
    let csi = csi::plan(api, lab, kept.is_some()).map_err(text)?;
    let new_token = csi
        .iter()
        .any(|c| c.calls.iter().any(|call| call.gives_token));
    changes.extend(csi);
    let manifests_due = match (&lab.storage, &kept) {
        (Some(storage), Some(secret)) if !new_token => {
            manifests::stale(lab, storage, &state, secret).map_err(|e| e.to_string())?
        }
        _ => false,
    };
    Ok(Datacenter {
        changes,
        manifests_due,
    })
}

/// Makes the datacenter changes; keeps a new token's secret and writes the manifests made with
/// it, or removes both once the lab's token is gone. Returns how many changes it made.
fn apply_datacenter(
    args: &Args,
    lab: &Lab,
    api: &dyn ProxmoxApi,
    datacenter: &Datacenter,
) -> Result<usize, String> {
    use crate::storage::manifests;
    let state = state_dir(args);
    let new_secret =
        crate::proxmox::datacenter::apply(api, &datacenter.changes, &mut std::io::stdout())
            .map_err(|e| e.to_string())?;
    let token_gone = datacenter
        .changes
        .iter()
        .any(|c| c.kind == "token" && c.action == ChangeKind::Delete);
    if token_gone {
        manifests::remove(&state).map_err(|e| e.to_string())?;
    }
    let secret = match new_secret {
        Some(secret) => Some(secret),
        None if datacenter.manifests_due => {
            manifests::kept_secret(&state).map_err(|e| e.to_string())?
        }
        None => None,
    };
    if let (Some(storage), Some(secret)) = (&lab.storage, secret) {
        let written = manifests::write(lab, storage, &state, &secret).map_err(|e| e.to_string())?;
        println!(
            "Proxmox CSI plugin: token secret and {} manifest file(s) written (0600) in {}",
            written.len() - 1,
            state.path().display()
        );
    }
    Ok(datacenter.changes.len() + usize::from(datacenter.manifests_due))
}

/// The Talos image `plan` and `apply` work with: the schematic, its extensions, the
/// installer and the disk image (the one `[images.talos] url` names when set).
fn talos_image_lines(lab: &Lab) -> String {
    let factory = lab.talos_factory();
    let extensions = &factory.schematic.official_extensions;
    let disk_image = lab
        .talos_image()
        .map_or(factory.disk_image_url, |image| image.url);
    format!(
        "Talos image (Image Factory):\n  schematic {} ({})\n  installer {}\n  disk image {} as {}\n\n",
        factory.schematic_id,
        if extensions.is_empty() {
            "no extensions".to_owned()
        } else {
            format!("extensions {}", extensions.join(", "))
        },
        factory.installer,
        disk_image,
        Sources::defaults(lab).talos_image,
    )
}

/// What the manager VM installs on first boot, each tool's release and how it is checked, and
/// the Flux bootstrap of `[gitops]`.
fn manager_tools_lines(lab: &Lab) -> String {
    let mut out =
        String::from("Manager tools (installed by the manager on first boot, linux-amd64):\n");
    match lab.manager_tools() {
        Ok(tools) => {
            for tool in tools {
                let checked = match &tool.checksum {
                    Checksum::Pinned(_) => "sha256 pinned in lab.toml".to_owned(),
                    Checksum::Published(url) => format!("not pinned: sha256 from {url}"),
                };
                out.push_str(&format!(
                    "  {} {} from {} ({checked})\n",
                    tool.name, tool.version, tool.url
                ));
            }
        }
        Err(e) => out.push_str(&format!("  {e}\n")),
    }
    if let (Some(gitops), Some(path)) = (&lab.gitops, lab.gitops_path()) {
        out.push_str(&format!(
            "  then flux bootstrap git {} (branch {}, path {}), once\n",
            gitops.url, gitops.branch, path
        ));
    }
    out.push('\n');
    out
}

/// A failed download, and for the Talos image why its checksum is the user's to fix.
fn download_error(lab: &Lab, download: &Download, error: &ApiError) -> String {
    let is_talos = lab.talos_image().as_ref() == Some(&download.image);
    match error {
        ApiError::TaskFailed { exitstatus, .. }
            if is_talos && exitstatus.contains("checksum mismatch") =>
        {
            format!(
                "{error}\nimages.talos: {} does not match the checksum pinned in lab.toml. The Image Factory publishes no checksum, so lab-bootstrap cannot tell a changed image from a corrupted one: check the image and pin its checksum (README: pinning the Talos image).",
                download.image.url
            )
        }
        _ => error.to_string(),
    }
}

fn state_dir(args: &Args) -> StateDir {
    match &args.state {
        Some(dir) => StateDir::new(dir),
        None => StateDir::default_under(&args.root),
    }
}

/// What apply does on the host, as things are now (`located`: the node of each guest there is).
fn host_plan(args: &Args, lab: &Lab, located: &Located) -> Result<HostPlan, String> {
    crate::host::plan::plan(
        &mut guests_runner(args, lab, located)?,
        lab,
        &args.root,
        &state_dir(args),
        &binaries(args)?,
        &backup_job(args)?,
    )
    .map_err(|e| e.to_string())
}

/// What the daily backup runs: this lab-bootstrap, with this lab.toml and state directory.
fn backup_job(args: &Args) -> Result<crate::render::backup::BackupJob, String> {
    let program = std::env::current_exe()
        .map_err(|e| format!("cannot tell where lab-bootstrap is, for the backup timer: {e}"))?;
    let absolute = |path: &std::path::Path| {
        std::path::absolute(path)
            .map_err(|e| format!("{}: cannot make it absolute: {e}", path.display()))
    };
    Ok(crate::render::backup::BackupJob {
        program,
        lab_file: absolute(&args.file)?,
        state: absolute(state_dir(args).path())?,
    })
}

fn binaries(args: &Args) -> Result<PathBuf, String> {
    match &args.binaries {
        Some(dir) => Ok(dir.clone()),
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(std::path::Path::to_path_buf))
            .ok_or_else(|| {
                "cannot tell where lab-bootstrap is; name the binaries' directory with --binaries"
                    .to_owned()
            }),
    }
}

/// Takes the nodes deleted from lab.toml out of the cluster (balancer, etcd, Reset).
fn remove_nodes(
    args: &Args,
    lab: &Lab,
    located: &Located,
    removals: &[crate::node_removal::Removal],
    out: &mut dyn Write,
) -> Result<(), String> {
    println!("Taking the deleted nodes out of the cluster ...");
    let access =
        crate::talos::cluster::Access::new(lab, &state_dir(args), args.talos_endpoint.as_deref())
            .map_err(|e| e.to_string())?;
    let mut runner = guests_runner(args, lab, located)?;
    let mut balancer =
        crate::balancer::Balancer::of(lab, &mut runner).map_err(|e| e.to_string())?;
    crate::node_removal::run(lab, &args.root, removals, &access, &mut balancer, out)
        .map_err(|e| e.to_string())
}

fn system(args: &Args) -> crate::host::System {
    crate::host::System {
        via: args.run_via.clone(),
    }
}

/// The node each existing guest is on, by VMID, as the plan read it.
type Located = std::collections::BTreeMap<u32, String>;

/// The host's commands, with those for a guest on another node run on that node.
fn guests_runner(
    args: &Args,
    lab: &Lab,
    located: &Located,
) -> Result<crate::host::node_router::NodeRouter<crate::host::System>, String> {
    crate::host::node_router::NodeRouter::new(lab, located, system(args)).map_err(|e| e.to_string())
}

fn destroy_options(args: &Args) -> crate::host::destroy::Options {
    crate::host::destroy::Options {
        root: args.root.clone(),
        state: state_dir(args),
        purge_state: args.purge_state,
    }
}

/// apply's second half, on the host itself: files, services, containers, etcd; destroy's:
/// services stopped, files removed.
fn host_side(op: Op, args: &Args, lab: &Lab, located: &Located) -> Result<ExitCode, String> {
    if op == Op::Plan || args.proxmox_only {
        return Ok(ExitCode::SUCCESS);
    }
    if args.api == Transport::Https {
        if op == Op::Apply {
            println!("The host's files, the containers' programs and etcd need the host itself: run apply there with --api pvesh.");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if op == Op::Destroy {
        println!("Host:");
        let done = crate::host::destroy::destroy(
            &mut system(args),
            lab,
            &destroy_options(args),
            &mut std::io::stdout(),
        )
        .map_err(|e| e.to_string())?;
        println!("Host complete: {done} changes.");
        return Ok(ExitCode::SUCCESS);
    }
    let options = crate::host::apply::Options {
        state: state_dir(args),
        root: args.root.clone(),
        cluster: crate::host::etcd::ClusterOptions {
            within: (!args.no_wait).then(|| std::time::Duration::from_secs(args.wait_timeout)),
            endpoint: args.talos_endpoint.clone(),
        },
        backup: backup_job(args)?,
    };
    // Planned after the Proxmox changes: a container made or replaced just now is empty.
    let plan = host_plan(args, lab, located)?;
    print!("{}", plan.render());
    // Before the snippets are rewritten: a node without a record runs its old snippet.
    let state = state_dir(args);
    crate::render::state::create(&state).map_err(|e| e.to_string())?;
    adopt_snippets(lab, &args.root, &state).map_err(|e| e.to_string())?;
    println!("Host:");
    let summary = crate::host::apply::apply(
        &mut guests_runner(args, lab, located)?,
        lab,
        &plan,
        &options,
        &mut std::io::stdout(),
    )
    .map_err(|e| e.to_string())?;
    println!(
        "Host complete: {} files written, {} pushed into containers, {} services reloaded or restarted, {} VMs started.",
        summary.files_written,
        summary.files_pushed,
        summary.actions.len(),
        summary.vms_started
    );
    // New nodes boot with the snippets just written: that is what they were given.
    adopt_snippets(lab, &args.root, &state).map_err(|e| e.to_string())?;
    let nodes = node_configs(lab, &args.root, &state).map_err(|e| e.to_string())?;
    let pending = nodes.iter().filter(|n| n.is_pending()).count();
    if pending == 0 {
        return Ok(ExitCode::SUCCESS);
    }
    match summary.kubeconfig {
        Some(crate::host::cluster::Outcome::Written(_) | crate::host::cluster::Outcome::AlreadyThere(_)) => {
            println!("Talos machine configs:");
            let access = Access::new(lab, &state, args.talos_endpoint.as_deref())
                .map_err(|e| e.to_string())?;
            let done = rollout::roll(
                &nodes,
                Order::WorkersFirst,
                &access,
                &state,
                std::time::Duration::from_secs(args.wait_timeout),
                &mut std::io::stdout(),
            )
            .map_err(|e| e.to_string())?;
            println!("Talos machine configs complete: {done} nodes given their changed config.");
        }
        _ => println!(
            "  the changed configs of {pending} Talos nodes are in their snippets but not applied: they need the cluster waited for; `lab-bootstrap apply` without --no-wait applies them"
        ),
    }
    Ok(ExitCode::SUCCESS)
}

fn confirm(op: Op) -> Result<bool, String> {
    let what = if op == Op::Destroy {
        "destroy everything above"
    } else {
        "make these changes"
    };
    print!("\nDo you want to {what}? Only 'yes' will be accepted: ");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the answer: {e}"))?;
    Ok(line.trim() == "yes")
}

/// Changes only `root@pam` may make: passing a device node into a container (`dev0`).
fn root_only(plan: &Plan) -> Vec<String> {
    plan.changes
        .iter()
        .filter(|c| c.action != ChangeKind::Delete)
        .filter(|c| {
            let keys: Vec<&str> = match c.action {
                ChangeKind::Update => c.diffs.iter().map(|d| d.key.as_str()).collect(),
                _ => c.resource.create.keys().map(String::as_str).collect(),
            };
            keys.iter().any(|k| k.starts_with("dev"))
        })
        .map(|c| {
            format!(
                "{} {} ({}): dev0",
                c.resource.kind.as_str(),
                c.resource.id,
                c.resource.name
            )
        })
        .collect()
}
