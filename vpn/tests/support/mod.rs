//! The namespaces of the kernel's WireGuard netns selftest, for lab-vpn: a client (wireguard-go
//! configured with `wg`, or another lab-vpn), the gateway running lab-vpn, and a server on net1
//! behind it. Addresses are the namespaces' own; nothing leaves them.

#![allow(dead_code)] // each test file uses its own part

use lab_tests::daemon_process::Started;
use lab_tests::netns::Netns;
use lab_tests::{http, workspace};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_lab-vpn");

/// The underlay between client and gateway (net0 in the lab).
pub const CLIENT_UNDERLAY: &str = "198.51.100.2";
pub const GATEWAY_UNDERLAY: &str = "198.51.100.1";
/// net1: the gateway's leg and the server behind it.
pub const GATEWAY_NET1: &str = "10.10.1.2";
pub const SERVER: &str = "10.10.1.5";
/// The tunnel.
pub const GATEWAY_TUNNEL: &str = "10.10.100.1";
pub const CLIENT_TUNNEL: &str = "10.10.100.2";
pub const PORT: u16 = 51820;
pub const METRICS: &str = "127.0.0.1:9586";

/// An interface name no other test uses (`wg` finds interfaces by name in a directory every
/// namespace shares), at most 15 characters.
pub fn unique_interface(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}x{}",
        std::process::id() % 100000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// `wg genkey` / `wg pubkey` / `wg genpsk`, the real tools.
pub fn wg(args: &[&str], input: Option<&str>) -> String {
    use std::io::Write;
    let mut child = Command::new("wg")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run wg (wireguard-tools): {e}"));
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(text.as_bytes()).unwrap();
    }
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "wg {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

pub struct KeyPair {
    pub private: String,
    pub public: String,
}

pub fn key_pair() -> KeyPair {
    let private = wg(&["genkey"], None);
    let public = wg(&["pubkey"], Some(&private));
    KeyPair { private, public }
}

/// Writes `text` to `dir/name` with mode 0600.
pub fn secret_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// Three namespaces wired as the lab wires them.
pub struct Topology {
    pub client: Netns,
    pub gateway: Netns,
    pub server: Netns,
    pub dir: tempfile::TempDir,
    /// lab-vpn's interface in the gateway namespace.
    pub interface: String,
    /// The client's end of the underlay link.
    pub client_link: String,
    /// `[interface] offload` of every lab-vpn this topology starts.
    pub offload: bool,
}

/// Turns `fn name(offload: bool)` into two tests, `name::offload_on` and `name::offload_off`,
/// which run it with TUN offloads on (the default) and forced off (`offload = false`).
#[allow(unused_macros)] // used by the interop tests only
macro_rules! in_both_offload_modes {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn offload_on() {
                super::$name(true)
            }
            #[test]
            fn offload_off() {
                super::$name(false)
            }
        }
    )*};
}
#[allow(unused_imports)]
pub(crate) use in_both_offload_modes;

/// A veth pair between `a` and `b` with an address on each end; returns `a`'s end's name.
fn link(a: &Netns, a_address: &str, b: &Netns, b_address: &str, prefix: u8) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let (a_name, b_name) = (
        format!("va{}x{n}", std::process::id() % 10000),
        format!("vb{}x{n}", std::process::id() % 10000),
    );
    // Created inside `a`, then one end moved into `b`: the root namespace never sees them.
    a.run(&[
        "ip", "link", "add", &a_name, "type", "veth", "peer", "name", &b_name,
    ]);
    a.run(&["ip", "link", "set", &b_name, "netns", &b.name]);
    a.run(&[
        "ip",
        "address",
        "add",
        &format!("{a_address}/{prefix}"),
        "dev",
        &a_name,
    ]);
    b.run(&[
        "ip",
        "address",
        "add",
        &format!("{b_address}/{prefix}"),
        "dev",
        &b_name,
    ]);
    a.run(&["ip", "link", "set", &a_name, "up"]);
    b.run(&["ip", "link", "set", &b_name, "up"]);
    a_name
}

impl Topology {
    pub fn new() -> Self {
        Self::with_offload(true)
    }

    /// A topology whose lab-vpn daemons run with `offload` as their `[interface] offload`.
    pub fn with_offload(offload: bool) -> Self {
        let (client, gateway) = (Netns::new("client"), Netns::new("gw"));
        let client_link = link(&client, CLIENT_UNDERLAY, &gateway, GATEWAY_UNDERLAY, 24);
        let topology = Self {
            client,
            gateway,
            server: Netns::new("srv"),
            dir: tempfile::tempdir().unwrap(),
            interface: unique_interface("wgg"),
            client_link,
            offload,
        };
        link(
            &topology.gateway,
            GATEWAY_NET1,
            &topology.server,
            SERVER,
            24,
        );
        topology
            .gateway
            .run(&["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
        topology
            .server
            .run(&["ip", "route", "add", "10.10.100.0/24", "via", GATEWAY_NET1]);
        topology
    }

    /// The example vpn.toml for the gateway: its own key, `peers` (TOML `[[peer]]` text) in
    /// place of the example's.
    pub fn gateway_config(&self, gateway_key: &KeyPair, peers: &str) -> String {
        let key = secret_file(self.dir.path(), "gateway.key", &gateway_key.private);
        let mut doc = workspace::config_document("vpn.toml");
        doc.remove("peer");
        doc["metrics"]["listen"] = toml_edit::value(METRICS);
        doc["interface"]["name"] = toml_edit::value(&self.interface);
        doc["interface"]["private_key_file"] = toml_edit::value(key.display().to_string());
        doc["interface"]["offload"] = toml_edit::value(self.offload);
        format!("{doc}\n{peers}")
    }

    /// lab-vpn started in the gateway namespace.
    pub fn start_gateway(&self, config: &str) -> Started {
        Started::start_in(Some(&self.gateway), BIN, config)
    }

    /// A server on net1 answering HTTP with "behind the gateway", stopped when dropped.
    pub fn start_server(&self) -> Server {
        let root = self.dir.path().join("www");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("index.html"), "behind the gateway\n").unwrap();
        let child = self
            .server
            .command("python3")
            .args(["-m", "http.server", "80", "--bind", SERVER, "--directory"])
            .arg(&root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self
            .server
            .command("curl")
            .args(["-s", "-o", "/dev/null", &format!("http://{SERVER}/")])
            .status()
            .is_ok_and(|s| s.success())
        {
            assert!(Instant::now() < deadline, "the net1 server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Server(child)
    }

    /// A metric of the gateway, read from inside its namespace.
    pub fn gateway_metric(&self, series: &str) -> Option<f64> {
        let address: SocketAddr = METRICS.parse().unwrap();
        let body = http::get_in(Some(&self.gateway), address, "/metrics", &[]).body;
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    pub fn gateway_metrics(&self) -> String {
        let address: SocketAddr = METRICS.parse().unwrap();
        http::get_in(Some(&self.gateway), address, "/metrics", &[]).body
    }
}

/// The net1 server process.
pub struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A wireguard-go client in the client namespace, configured with `wg`.
pub struct WireguardGo {
    pub interface: String,
    child: Child,
}

impl WireguardGo {
    /// Starts `wireguard-go` with a unique interface name (the UAPI socket directory is shared
    /// between namespaces) and gives it `address`.
    pub fn start(netns: &Netns, address: &str) -> Self {
        Self::start_named(netns, &unique_interface("wgc"), address)
    }

    /// [`start`](Self::start) with an interface name the test chose (from
    /// [`unique_interface`]).
    pub fn start_named(netns: &Netns, interface: &str, address: &str) -> Self {
        let interface = interface.to_owned();
        let child = netns
            .command("wireguard-go")
            .args(["-f", &interface])
            .env("WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run wireguard-go: {e}"));
        let socket = PathBuf::from(format!("/var/run/wireguard/{interface}.sock"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(
                Instant::now() < deadline,
                "wireguard-go did not create {}",
                socket.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        netns.run(&[
            "ip",
            "address",
            "add",
            &format!("{address}/32"),
            "dev",
            &interface,
        ]);
        netns.run(&["ip", "link", "set", &interface, "up"]);
        Self { interface, child }
    }

    /// `wg <args>` against this interface, from the client namespace.
    pub fn wg(&self, netns: &Netns, args: &[&str]) {
        netns.run(&[&["wg"], args].concat());
    }

    pub fn route(&self, netns: &Netns, net: &str) {
        netns.run(&["ip", "route", "add", net, "dev", &self.interface]);
    }
}

impl Drop for WireguardGo {
    fn drop(&mut self) {
        // SIGTERM lets wireguard-go remove its UAPI socket; the socket directory is the
        // machine's, shared by every namespace.
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(format!("/var/run/wireguard/{}.sock", self.interface));
    }
}

/// wireguard-go in the client namespace, pointed at the gateway, routing the tunnel and net1.
pub fn wireguard_go_client(
    topology: &Topology,
    client: &KeyPair,
    gateway: &KeyPair,
    psk: Option<&str>,
) -> WireguardGo {
    let go = WireguardGo::start(&topology.client, CLIENT_TUNNEL);
    let key = secret_file(topology.dir.path(), "client.key", &client.private);
    let mut args = vec![
        "set".to_owned(),
        go.interface.clone(),
        "private-key".to_owned(),
        key.display().to_string(),
        "peer".to_owned(),
        gateway.public.clone(),
        "endpoint".to_owned(),
        format!("{GATEWAY_UNDERLAY}:{PORT}"),
        "allowed-ips".to_owned(),
        "10.10.100.0/24,10.10.1.0/24".to_owned(),
    ];
    if let Some(psk) = psk {
        let path = secret_file(topology.dir.path(), "client.psk", psk);
        args.extend(["preshared-key".to_owned(), path.display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    go.wg(&topology.client, &args);
    go.route(&topology.client, "10.10.100.0/24");
    go.route(&topology.client, "10.10.1.0/24");
    go
}

/// `ping -c <count>` from `netns`; whether every reply came.
pub fn ping(netns: &Netns, target: &str, extra: &[&str]) -> bool {
    netns
        .command("ping")
        .args(["-c", "3", "-i", "0.2", "-W", "2", "-q"])
        .args(extra)
        .arg(target)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `curl http://<target>/` from `netns`.
pub fn fetch(netns: &Netns, target: &str) -> Option<String> {
    let output = netns
        .command("curl")
        .args(["-s", "--max-time", "5"])
        .arg(format!("http://{target}/"))
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// `wg show <interface> dump` from `netns`: the interface line and one line per peer, split
/// at tabs.
pub fn wg_dump(netns: &Netns, interface: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let output = netns
        .command("wg")
        .args(["show", interface, "dump"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "wg show dump: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut lines = text
        .lines()
        .map(|l| l.split('\t').map(str::to_owned).collect::<Vec<_>>());
    let interface_line = lines.next().unwrap_or_default();
    (interface_line, lines.collect())
}

/// An nftables counter in `netns` of the UDP datagrams that match `selector` (nft syntax, e.g.
/// `udp sport 51820 udp length 40`) arriving there: packets seen on the wire, not as any
/// WireGuard implementation reports them.
pub struct WireCounter<'n> {
    netns: &'n Netns,
    table: String,
}

impl<'n> WireCounter<'n> {
    pub fn new(netns: &'n Netns, selector: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let table = format!("wire{}", N.fetch_add(1, Ordering::Relaxed));
        let ruleset = format!(
            "table inet {table} {{\n counter seen {{}}\n chain input {{\n  type filter hook input priority -300; policy accept;\n  {selector} counter name seen\n }}\n}}\n"
        );
        let path = std::env::temp_dir().join(format!("{}-{table}.nft", netns.name));
        std::fs::write(&path, ruleset).unwrap();
        netns.run(&["nft", "-f", path.to_str().unwrap()]);
        let _ = std::fs::remove_file(&path);
        Self { netns, table }
    }

    pub fn packets(&self) -> u64 {
        let output = self
            .netns
            .command("nft")
            .args(["list", "counter", "inet", &self.table, "seen"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        text.split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no counter in: {text}"))
    }
}

impl Topology {
    /// lab-vpn as a client in the client namespace ([`client_config`]), with the gateway as
    /// its peer; returns the daemon and its interface name.
    pub fn start_lab_vpn_client(
        &self,
        client_key: &KeyPair,
        gateway_key: &KeyPair,
    ) -> (Started, String) {
        let interface = unique_interface("wgl");
        let config = client_config(
            self.dir.path(),
            &interface,
            client_key,
            gateway_key,
            "",
            self.offload,
        );
        (
            Started::start_in(Some(&self.client), BIN, &config),
            interface,
        )
    }
}

/// A lab-vpn config for a client of the gateway: its own tunnel address, the gateway as its one
/// peer with `endpoint`, routing the gateway's tunnel address and net1 through it.
pub fn client_config(
    dir: &Path,
    interface: &str,
    client_key: &KeyPair,
    gateway_key: &KeyPair,
    extra_peer: &str,
    offload: bool,
) -> String {
    let key = secret_file(dir, "client-lab-vpn.key", &client_key.private);
    format!(
        r#"[metrics]
listen = "127.0.0.1:9586"
[interface]
name = "{interface}"
private_key_file = "{key}"
listen_port = {PORT}
address = ["{CLIENT_TUNNEL}/32"]
reach = ["10.10.1.0/24"]
offload = {offload}
[[peer]]
name = "gateway"
public_key = "{gateway}"
allowed_ips = ["{GATEWAY_TUNNEL}/32", "10.10.1.0/24"]
endpoint = "{GATEWAY_UNDERLAY}:{PORT}"
{extra_peer}
"#,
        key = key.display(),
        gateway = gateway_key.public,
    )
}
