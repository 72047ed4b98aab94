//! `up --local`, `down --local`, `status --local`: the lab of a `lab.toml` on this machine, out
//! of network namespaces, with the real programs: the host's rendered nftables table and
//! dnsmasq configs, lab-lb and lab-vpn with the configs rendered for their containers, and
//! stand-ins where Talos nodes would run. Nothing is changed in the machine's own namespace.

pub mod build;
pub mod names;
pub mod report;
pub mod services;
pub mod shell;
pub mod stand_in;
pub mod state_dir;

use crate::model::{Lab, NetworkId, Role};
use crate::render;
use lab_schema::vpn::client_config::{ClientConfig, ClientPeer};
use lab_schema::vpn::key::PrivateKey;
use lab_schema::vpn::VpnConfig;
use names::LocalLab;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Why a local lab could not be brought up, taken down or shown.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The lab's name or its lab.toml cannot make a local lab (refused, or lacking what the
    /// local lab needs); holds why.
    #[error("{0}")]
    Usage(String),
    /// A system tool failed, or a program could not be started.
    #[error("{what}: {problem}")]
    Command {
        /// The command line, or what was being started.
        what: String,
        /// The tool's stderr, or why it could not run.
        problem: String,
    },
    /// Reading, writing or removing a file or directory failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, naming the path.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The configs rendered for the lab could not be made.
    #[error("{0}")]
    Render(#[from] render::RenderError),
    /// A machine's NIC did not get its reserved address from the host's dnsmasq.
    #[error("{machine} {interface}: DHCP gave {got:?}, the reservation is {expected}")]
    Dhcp {
        /// The machine.
        machine: String,
        /// Its interface, in its namespace.
        interface: String,
        /// The reserved address with its prefix: `10.10.1.11/24`.
        expected: String,
        /// What `ip address show` lists on the interface instead.
        got: String,
    },
    /// A system tool the local lab runs is not found; names it and its Debian package.
    #[error("{0} is not installed; it is needed for the local lab")]
    MissingTool(String),
    /// lab-lb or lab-vpn is not found; the message says where it was looked for.
    #[error("{0}")]
    MissingBinary(String),
    /// A started program did not accept connections, or make its socket, in time.
    #[error("{what} did not become ready within {seconds}s; its log: {log}")]
    NotReady {
        /// The program.
        what: String,
        /// How long it was given.
        seconds: u64,
        /// Its log file.
        log: String,
    },
    /// The Talos API stand-ins' cluster did not come up through lab-bootstrap's client, or its
    /// PKI could not be made; holds why.
    #[error("Talos API: {0}")]
    Talos(String),
    /// A Talos node's stand-in could not be set up; holds why.
    #[error("stand-in: {0}")]
    StandIn(String),
    /// No local lab of this name is up; holds the name.
    #[error("no local lab named `{0}` (none is up)")]
    NotUp(String),
}

/// What `up --local` is asked for.
pub struct UpOptions {
    /// The lab.toml to build the lab from.
    pub lab_file: PathBuf,
    /// The lab's name: prefix of its namespaces and interfaces, so labs never collide.
    pub name: String,
    /// Start a wireguard-go client with the admin peer's config in the outside namespace.
    pub connect: bool,
    /// Where lab-lb and lab-vpn are; next to this program, then `PATH`, when absent.
    pub binaries: Option<PathBuf>,
}

/// How long `up` waits for the stand-ins' cluster to bootstrap and be healthy.
const CLUSTER_WAIT: Duration = Duration::from_secs(60);

/// The tools the local lab runs, by the Debian package that has them.
const TOOLS: [(&str, &str); 5] = [
    ("ip", "iproute2"),
    ("nft", "nftables"),
    ("dnsmasq", "dnsmasq-base"),
    ("udhcpc", "udhcpc"),
    ("sysctl", "procps"),
];

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    })
}

fn find_binary(name: &str, dir: Option<&Path>) -> Result<PathBuf, LocalError> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(name)));
    dir.map(|d| d.join(name))
        .into_iter()
        .chain(beside)
        .find(|p| p.is_file())
        .or_else(|| on_path(name))
        .ok_or_else(|| {
            LocalError::MissingBinary(format!(
                "{name} not found (beside lab-bootstrap, in --binaries, or on PATH); build it with `cargo build --workspace`"
            ))
        })
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LocalError {
    let what = what.into();
    move |source| LocalError::Io { what, source }
}

fn write(path: &Path, contents: &str, mode: u32) -> Result<(), LocalError> {
    lab_daemon::files::write_atomic(path, contents.as_bytes(), mode)
        .map_err(io(format!("writing {}", path.display())))
}

/// Waits until `address` accepts TCP connections from inside `ns`.
fn wait_ready(
    ns: &str,
    address: SocketAddr,
    what: &str,
    log: &Path,
    timeout: Duration,
) -> Result<(), LocalError> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if shell::tcp_reachable(ns, address, Duration::from_millis(300)) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(LocalError::NotReady {
        what: what.to_owned(),
        seconds: timeout.as_secs(),
        log: log.display().to_string(),
    })
}

fn step(text: &str) {
    lab_daemon::cli::out(&format!("  ✓ {text}\n"));
}

pub(crate) fn load(path: &Path) -> Result<Lab, LocalError> {
    lab_daemon::config::load::<Lab>(path).map_err(|e| LocalError::Usage(e.lines().join("\n")))
}

/// Brings up the local lab of `options.lab_file`: an existing one is only reported, and what
/// an unfinished `up` left is removed first.
pub fn up(options: &UpOptions) -> Result<(), LocalError> {
    let names = LocalLab::new(&options.name)?;
    let lab = load(&options.lab_file)?;
    for (tool, package) in TOOLS {
        if on_path(tool).is_none() {
            return Err(LocalError::MissingTool(format!("{tool} ({package})")));
        }
    }
    let lb_binary = find_binary("lab-lb", options.binaries.as_deref())?;
    let vpn_binary = find_binary("lab-vpn", options.binaries.as_deref())?;
    let self_binary = std::env::current_exe().map_err(io("locating lab-bootstrap"))?;
    let state = names.state_dir();

    if !names.existing_namespaces().is_empty() {
        if state.up_complete().exists() {
            lab_daemon::cli::out(&format!("local lab `{}` is already up\n", names.prefix));
            report::print(&lab, &names, &state);
            return Ok(());
        }
        lab_daemon::cli::out(&format!(
            "local lab `{}`: a previous `up` did not finish; removing what it made\n",
            names.prefix
        ));
        down(&names.prefix)?;
    }
    lab_daemon::cli::out(&format!(
        "local lab `{}` from {}:\n",
        names.prefix,
        options.lab_file.display()
    ));
    let dir = state.path();
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .map_err(io(format!("securing {}", dir.display())))?;
    let lab_text = std::fs::read_to_string(&options.lab_file)
        .map_err(io(format!("reading {}", options.lab_file.display())))?;
    write(&state.lab_toml(), &lab_text, 0o644)?;
    let lab_dir = std::path::absolute(&options.lab_file)
        .map_err(io(format!("reading {}", options.lab_file.display())))?;
    let lab_dir = lab_dir.parent().unwrap_or(Path::new("/"));
    write(&state.lab_dir(), &format!("{}\n", lab_dir.display()), 0o644)?;
    // The cluster's PKI, as apply keeps it on the host: the stand-ins serve with it, the
    // client authenticates with the talosconfig made from it.
    let talos = state.talos();
    let talos_failed = |e: &dyn std::fmt::Display| LocalError::Talos(e.to_string());
    let secrets = crate::talos::Secrets::load_or_generate(&talos).map_err(|e| talos_failed(&e))?;
    let admin = crate::talos::AdminCredentials::load_or_generate(&talos, &secrets)
        .map_err(|e| talos_failed(&e))?;
    let talosconfig =
        crate::talos::talosconfig(&lab, &secrets, &admin).map_err(|e| talos_failed(&e))?;
    write(&talos.talosconfig(), &talosconfig, 0o600)?;

    // Namespaces and wiring. Each recorded once made: `down` removes exactly those. A pair's
    // two containers are two machines here.
    let guests = lab.guests();
    let namespaces = [names.host_ns(), names.outside_ns()]
        .into_iter()
        .chain(guests.iter().map(|m| names.machine_ns(&m.name.to_string())));
    for ns in namespaces {
        build::add_namespace(&ns)?;
        names.record_namespace(&ns).map_err(io(format!(
            "recording namespace {ns} in {}",
            state.namespaces().display()
        )))?;
    }
    build::bridges(&lab, &names)?;
    build::outside(&lab, &names)?;
    for machine in &guests {
        build::machine_links(&lab, &names, machine)?;
    }
    step(&format!(
        "namespaces: host with {} {} {}, outside, {} machines",
        lab.networks.net0.bridge,
        lab.networks.net1.bridge,
        lab.networks.net2.bridge,
        guests.len()
    ));

    // The host: forwarding, the rendered firewall, the route to the VPN tunnel.
    let host = names.host_ns();
    // The rendered sysctl drop-in's settings, as the host would apply them at boot.
    for (key, value) in render::sysctl::SETTINGS {
        shell::in_ns(&host, "sysctl", &["-q", "-w", &format!("{key}={value}")])?;
    }
    let ruleset = state.nftables();
    write(&ruleset, &render::nftables::ruleset(&lab)?, 0o644)?;
    shell::in_ns(&host, "nft", &["-f", &ruleset.display().to_string()])?;
    for route in render::routes(&lab)? {
        shell::run(
            "ip",
            &[
                "-n",
                &host,
                "route",
                "replace",
                &route.destination.to_string(),
                "via",
                &route.gateway.to_string(),
                "dev",
                &route.bridge,
            ],
        )?;
    }
    step("host: the rendered sysctls and table inet lab, the route to the VPN tunnel");

    // DHCP servers, then every machine's addresses from them.
    for id in render::DHCP_NETWORKS {
        let bridge = &lab.networks.get(id).bridge;
        let config = state.dnsmasq_config(bridge);
        let leases = state.dnsmasq_leases(bridge);
        write(&config, &render::dnsmasq::config(&lab, id, &leases), 0o644)?;
        std::fs::write(&leases, "").map_err(io(format!("creating {}", leases.display())))?;
        services::start(
            &state,
            &host,
            &format!("dnsmasq-{bridge}"),
            &[
                "dnsmasq".to_owned(),
                "--keep-in-foreground".to_owned(),
                "--pid-file=".to_owned(),
                "--log-facility=-".to_owned(),
                "--log-dhcp".to_owned(),
                format!("--conf-file={}", config.display()),
            ],
        )?;
    }
    // dnsmasq binds as the bridges are up already; give it a moment to open its sockets.
    std::thread::sleep(Duration::from_millis(300));
    let script = state.udhcpc_script();
    write(&script, build::DHCP_SCRIPT, 0o755)?;
    for machine in &guests {
        build::machine_addresses(&lab, &names, machine, &script)?;
    }
    step("dnsmasq on the lab bridges; every machine got its reserved address by DHCP");

    // Stand-ins where the VMs would run.
    for machine in &lab.machines {
        let (http, tls) = stand_in::ports(machine.role);
        let talos_api = stand_in::talos_api(machine.role);
        if http.is_empty() && tls.is_empty() && !talos_api {
            continue;
        }
        let name = machine.name.to_string();
        let ns = names.machine_ns(&name);
        let mut argv = vec![
            self_binary.display().to_string(),
            "stand-in".to_owned(),
            name.clone(),
        ];
        for port in &http {
            argv.extend(["--http".to_owned(), port.to_string()]);
        }
        for port in &tls {
            argv.extend(["--tls".to_owned(), port.to_string()]);
        }
        if talos_api {
            argv.extend(["--talos-api".to_owned(), dir.display().to_string()]);
        }
        let service = format!("stand-in-{name}");
        services::start(&state, &ns, &service, &argv)?;
        let apid = talos_api.then_some(stand_in::TALOS_API_PORT);
        for port in http.iter().chain(&tls).chain(apid.as_ref()) {
            wait_ready(
                &ns,
                SocketAddr::from(([127, 0, 0, 1], *port)),
                &service,
                &state.log(&service),
                Duration::from_secs(10),
            )?;
        }
    }
    step("stand-ins serving on the control planes, workers and manager; the Talos nodes' apid on 50000");

    // The balancer: lab-lb in each of its containers.
    let lbs = lab.instances(Role::Lb);
    let lb_pair = lab.replicas(Role::Lb).is_pair();
    // Beside the config, where lb.toml's relative names find them, as in the container.
    for (target, contents, mode) in render::containers::lb_cert_files(&lab)? {
        let path = state.path().join(render::containers::relative_to(
            render::containers::LB_CONFIG,
            &target,
        ));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        }
        write(&path, &contents, mode)?;
    }
    let mut listeners = 0;
    for lb in &lbs {
        let service = services::daemon_service("lab-lb", lb_pair, lb.name.as_str());
        let mut lb_config = render::containers::lb_instance_config(&lab, lb)?;
        // Each local lab's own socket: several labs (and the tests) run side by side.
        lb_config.runtime.socket = Some(state.path().join(format!("{service}.sock")));
        listeners = lb_config.listeners.len();
        start_daemon(
            &state,
            &names.machine_ns(lb.name.as_str()),
            &service,
            &lb_binary,
            &toml_text(&lb_config)?,
            lb_config.metrics.listen,
        )?;
    }
    step(&format!(
        "lab-lb in {} with the rendered lb.toml ({listeners} listeners)",
        containers(&lbs)
    ));

    // The gateway, with one admin peer whose client config is kept for the user; a pair's
    // containers share the gateway's key.
    let vpns = lab.instances(Role::Vpn);
    let vpn_pair = lab.replicas(Role::Vpn).is_pair();
    let (vpn_config, client) = vpn_setup(&lab, &names, &state)?;
    for (index, vpn) in vpns.iter().enumerate() {
        let vpn_ns = names.machine_ns(vpn.name.as_str());
        // The guard before forwarding is switched on, as the unit's ExecStartPre does: until
        // lab-vpn runs, nothing is forwarded from outside into net1.
        shell::in_ns(&vpn_ns, &vpn_binary.to_string_lossy(), &["guard"])?;
        build::forwarding(&vpn_ns)?;
        let mut config = vpn_config.clone();
        config.interface.name = names.vpn_interface_of(index);
        if let Some(own) = vpn.address_on(NetworkId::Net1) {
            config.metrics.listen.set_ip(std::net::IpAddr::V4(own));
        }
        start_daemon(
            &state,
            &vpn_ns,
            &services::daemon_service("lab-vpn", vpn_pair, vpn.name.as_str()),
            &vpn_binary,
            &toml_text(&config)?,
            config.metrics.listen,
        )?;
    }
    let client_file = state.admin_client();
    write(&client_file, &client.to_string(), 0o600)?;
    step(&format!(
        "lab-vpn in {} ({}); admin peer config: {}",
        containers(&vpns),
        vpn_config.interface.name,
        client_file.display()
    ));

    for (role, instances) in [(Role::Lb, &lbs), (Role::Vpn, &vpns)] {
        if lab.replicas(role).is_pair() {
            keepalived_pair(&lab, &names, &state, role, instances)?;
            step(&format!(
                "keepalived in {}: the {} addresses on `{}`",
                containers(instances),
                role.as_str(),
                holder(&lab, &names, role).unwrap_or_default()
            ));
        }
    }

    if options.connect {
        connect(&names, &state, &client_file)?;
        step("wireguard-go client in `outside` connected with the admin peer's config");
    }
    // The Talos client, from the host as apply runs it there, against the stand-ins.
    let options = crate::host::etcd::ClusterOptions {
        within: Some(CLUSTER_WAIT),
        endpoint: None,
    };
    let kubeconfig = shell::in_netns(&host, || {
        let mut out = std::io::stdout();
        crate::host::etcd::bootstrap(&lab, &talos, &options, &mut out)?;
        crate::host::cluster::kubeconfig(&lab, &talos, &options, options.within, &mut out)
    })?
    .map_err(|e| match e {
        crate::host::HostError::Cluster(e) => LocalError::Talos(e.to_string()),
        other => LocalError::Talos(other.to_string()),
    })?;
    if let crate::host::cluster::Outcome::Written(path) = kubeconfig {
        step(&format!(
            "Talos API client: etcd bootstrapped, cluster healthy, kubeconfig written to {}",
            path.display()
        ));
    }
    write(&state.up_complete(), "", 0o644)?;
    lab_daemon::cli::out("\n");
    report::print(&lab, &names, &state);
    Ok(())
}

/// Runs daemon `program` (lab-lb, lab-vpn) in `ns` on `config` (kept in the state directory),
/// ready once its metrics address answers.
fn start_daemon(
    state: &state_dir::LocalStateDir,
    ns: &str,
    program: &str,
    binary: &Path,
    config: &str,
    metrics: SocketAddr,
) -> Result<(), LocalError> {
    let file = state.daemon_config(program);
    write(&file, config, 0o644)?;
    services::start(
        state,
        ns,
        program,
        &[
            binary.display().to_string(),
            "run".to_owned(),
            "--config".to_owned(),
            file.display().to_string(),
        ],
    )?;
    wait_ready(
        ns,
        metrics,
        program,
        &state.log(program),
        Duration::from_secs(20),
    )
}

/// `` `lb` `` or `` `lb`, `lb-2` ``: the containers, for the steps.
fn containers(instances: &[crate::model::Machine]) -> String {
    instances
        .iter()
        .map(|m| format!("`{}`", m.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// keepalived in both containers of `role`'s pair, with the rendered keepalived.conf and only
/// the capabilities its unit keeps in the container; back once one of them holds the
/// published addresses.
fn keepalived_pair(
    lab: &Lab,
    names: &LocalLab,
    state: &state_dir::LocalStateDir,
    role: Role,
    instances: &[crate::model::Machine],
) -> Result<(), LocalError> {
    if on_path("keepalived").is_none() {
        return Err(LocalError::MissingTool("keepalived (keepalived)".into()));
    }
    let bounding = render::keepalived::CAPABILITIES
        .iter()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect::<Vec<_>>()
        .join(",");
    for (index, instance) in instances.iter().enumerate() {
        let service = format!("keepalived-{}", instance.name);
        let config = state.path().join(format!("{service}.conf"));
        write(
            &config,
            &render::keepalived::config(lab, role, index)?,
            0o644,
        )?;
        let pid = |what: &str| {
            state
                .pids()
                .join(format!("{service}.{what}"))
                .display()
                .to_string()
        };
        services::start(
            state,
            &names.machine_ns(instance.name.as_str()),
            &service,
            &[
                "setpriv".to_owned(),
                format!("--bounding-set=-all,{bounding}"),
                "--inh-caps=-all".to_owned(),
                "--".to_owned(),
                "keepalived".to_owned(),
                "--dont-fork".to_owned(),
                "--log-console".to_owned(),
                "--log-detail".to_owned(),
                "--no-syslog".to_owned(),
                "--vrrp".to_owned(),
                format!("--use-file={}", config.display()),
                format!("--pid={}", pid("main")),
                format!("--vrrp_pid={}", pid("vrrp")),
                format!("--checkers_pid={}", pid("checkers")),
            ],
        )?;
    }
    let deadline = Instant::now() + KEEPALIVED_WAIT;
    while holder(lab, names, role).is_none() {
        if Instant::now() > deadline {
            return Err(LocalError::NotReady {
                what: format!("keepalived ({} pair)", role.as_str()),
                seconds: KEEPALIVED_WAIT.as_secs(),
                log: state.logs().display().to_string(),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// How long a pair's keepalived may take to elect a holder: a few advert intervals.
const KEEPALIVED_WAIT: Duration = Duration::from_secs(15);

/// The container of `role` holding its published net0 address now, if one does.
pub fn holder(lab: &Lab, names: &LocalLab, role: Role) -> Option<String> {
    let published = render::role_address(lab, role, NetworkId::Net0).ok()?;
    lab.instances(role).into_iter().find_map(|m| {
        let ns = names.machine_ns(m.name.as_str());
        let shown = shell::run("ip", &["-n", &ns, "-4", "-o", "address", "show"]).ok()?;
        let held = shown
            .split_whitespace()
            .any(|word| word.split('/').next() == Some(published.to_string().as_str()));
        held.then(|| m.name.to_string())
    })
}

fn toml_text<T: serde::Serialize>(value: &T) -> Result<String, LocalError> {
    toml::to_string(value).map_err(|e| LocalError::Usage(format!("cannot write a config: {e}")))
}

/// The rendered vpn.toml made local: an interface name of this lab's, the key in the state
/// directory, and an admin peer with a key pair of its own.
fn vpn_setup(
    lab: &Lab,
    names: &LocalLab,
    state: &state_dir::LocalStateDir,
) -> Result<(VpnConfig, ClientConfig), LocalError> {
    let mut config = render::containers::vpn_config(lab)?;
    let lan_endpoint = std::net::SocketAddr::new(
        std::net::IpAddr::V4(render::role_address(lab, Role::Vpn, NetworkId::Net0)?),
        render::containers::VPN_PORT,
    );
    let gateway_key = PrivateKey::generate();
    let key_file = state.vpn_key();
    write(
        &key_file,
        &format!("{}\n", gateway_key.expose_base64()),
        0o600,
    )?;
    config.interface.name = names.vpn_interface();
    config.interface.private_key_file = key_file;
    let admin_key = PrivateKey::generate();
    let address = lab_schema::vpn::next_free_address(&config)
        .ok_or_else(|| LocalError::Usage("the VPN tunnel network has no free address".into()))?;
    config.peers.push(lab_schema::vpn::Peer {
        name: "local-admin"
            .parse()
            .map_err(|e| LocalError::Usage(format!("peer name: {e}")))?,
        public_key: admin_key.public_key(),
        preshared_key_file: None,
        allowed_ips: vec![address],
        endpoint: None,
        persistent_keepalive: None,
    });
    let client = ClientConfig::for_peer(
        &config,
        gateway_key.public_key(),
        ClientPeer {
            name: "local-admin".to_owned(),
            address,
            private_key: Some(admin_key),
            preshared_key: None,
        },
        // The local admin sits on the lab's net0: it dials the vpn there, whatever name
        // `vpn.public_endpoint` gives clients outside.
        Some(lan_endpoint.to_string()),
        Some(ClientConfig::DEFAULT_KEEPALIVE),
    )
    .map_err(|e| LocalError::Usage(e.to_string()))?;
    Ok((config, client))
}

/// wireguard-go in the outside namespace with the admin peer's wg-quick config, applied as
/// wg-quick would: `wg-quick strip` for `wg setconf`, then address and routes.
fn connect(
    names: &LocalLab,
    state: &state_dir::LocalStateDir,
    client_file: &Path,
) -> Result<(), LocalError> {
    for (tool, package) in [
        ("wireguard-go", "wireguard-go"),
        ("wg-quick", "wireguard-tools"),
    ] {
        if on_path(tool).is_none() {
            return Err(LocalError::MissingTool(format!("{tool} ({package})")));
        }
    }
    let ns = names.outside_ns();
    let interface = names.client_interface();
    // wg-quick names the interface after the file.
    let named = state.client_interface_config(&interface);
    std::fs::copy(client_file, &named).map_err(io(format!("writing {}", named.display())))?;
    let stripped = shell::run("wg-quick", &["strip", &named.display().to_string()])?;
    let stripped_file = state.admin_client_stripped();
    write(&stripped_file, &stripped, 0o600)?;
    let client_text = std::fs::read_to_string(client_file)
        .map_err(io(format!("reading {}", client_file.display())))?;
    services::start(
        state,
        &ns,
        "wireguard-go",
        &[
            "env".to_owned(),
            "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1".to_owned(),
            "wireguard-go".to_owned(),
            "-f".to_owned(),
            interface.clone(),
        ],
    )?;
    let socket = PathBuf::from(format!("/var/run/wireguard/{interface}.sock"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        if Instant::now() > deadline {
            return Err(LocalError::NotReady {
                what: "wireguard-go".into(),
                seconds: 10,
                log: state.log("wireguard-go").display().to_string(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    shell::in_ns(
        &ns,
        "wg",
        &["setconf", &interface, &stripped_file.display().to_string()],
    )?;
    let setting = |key: &str| -> Vec<String> {
        client_text
            .lines()
            .filter_map(|l| l.split_once('='))
            .filter(|(k, _)| k.trim() == key)
            .flat_map(|(_, v)| {
                v.split(',')
                    .map(|s| s.trim().to_owned())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    for address in setting("Address") {
        shell::run(
            "ip",
            &["-n", &ns, "address", "add", &address, "dev", &interface],
        )?;
    }
    shell::run(
        "ip",
        &["-n", &ns, "link", "set", &interface, "mtu", "1420", "up"],
    )?;
    for net in setting("AllowedIPs") {
        shell::run(
            "ip",
            &["-n", &ns, "route", "replace", &net, "dev", &interface],
        )?;
    }
    Ok(())
}

/// Removes every namespace, process and file of the lab `name`, whatever state it is in.
pub fn down(name: &str) -> Result<(), LocalError> {
    let names = LocalLab::new(name)?;
    let namespaces = names.existing_namespaces();
    let state = names.state_dir();
    if namespaces.is_empty() && !state.path().exists() {
        lab_daemon::cli::out(&format!("local lab `{name}`: nothing to remove\n"));
        return Ok(());
    }
    for ns in &namespaces {
        services::stop_namespace(ns);
    }
    for ns in &namespaces {
        // Deleting a namespace deletes its links, and with them the veths' other ends.
        shell::run("ip", &["netns", "del", ns])?;
    }
    for interface in [
        names.vpn_interface(),
        names.vpn_interface_of(1),
        names.client_interface(),
    ] {
        let _ = std::fs::remove_file(format!("/var/run/wireguard/{interface}.sock"));
    }
    let dir = state.path();
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(io(format!("removing {}", dir.display())))?;
    }
    lab_daemon::cli::out(&format!(
        "local lab `{name}`: removed {} namespaces and their processes, and {}\n",
        namespaces.len(),
        dir.display()
    ));
    Ok(())
}

/// The local lab's copy of its lab.toml, its relative paths (certificates, keys) taken from
/// where the original was.
fn load_copy(state: &state_dir::LocalStateDir) -> Result<Lab, LocalError> {
    let lab_file = state.lab_toml();
    match std::fs::read_to_string(state.lab_dir()) {
        Ok(dir) => {
            let text = std::fs::read_to_string(&lab_file)
                .map_err(io(format!("reading {}", lab_file.display())))?;
            lab_daemon::config::parse::<Lab>(&Path::new(dir.trim_end()).join("lab.toml"), &text)
                .map_err(|e| LocalError::Usage(e.lines().join("\n")))
        }
        Err(_) => load(&lab_file),
    }
}

/// Prints the machines of local lab `name`, and whether its `up` finished.
pub fn status(name: &str) -> Result<(), LocalError> {
    let names = LocalLab::new(name)?;
    let state = names.state_dir();
    let lab_file = state.lab_toml();
    if names.existing_namespaces().is_empty() || !lab_file.exists() {
        return Err(LocalError::NotUp(name.to_owned()));
    }
    let lab = load_copy(&state)?;
    if !state.up_complete().exists() {
        lab_daemon::cli::out(&format!(
            "local lab `{name}`: `up` did not finish; `down --local` cleans up\n"
        ));
    }
    report::print(&lab, &names, &state);
    Ok(())
}

/// The networks a machine is on, as `net1 10.10.1.11`.
pub fn addresses(machine: &crate::model::Machine) -> Vec<(NetworkId, std::net::Ipv4Addr)> {
    machine
        .nics
        .iter()
        .map(|n| (n.network, n.address))
        .collect()
}
