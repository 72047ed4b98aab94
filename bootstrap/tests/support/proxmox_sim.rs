//! A Proxmox VE API simulator for tests: an HTTP/1.1 server on loopback that checks every call
//! against the real schema (apidata.json), refuses bad ones with 400 and records them, and keeps
//! enough state (bridges with pending changes, containers, VMs, storage content, tasks) for
//! plan/apply/destroy to run end to end. A `pvesh` shim (curl underneath) reaches it too.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::proxmox_schema::Schema;
use serde_json::{json, Value};

/// One call the simulator saw.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub params: Vec<(String, String)>,
    /// When it came: tests order it against other programs' calls.
    pub at: std::time::SystemTime,
}

impl Call {
    pub fn is_write(&self) -> bool {
        self.method != "GET"
    }
}

/// One storage as `pvesm status` shows it.
#[derive(Debug, Clone)]
pub struct Storage {
    pub kind: String,
    /// The allowed content types, comma-separated as storage.cfg has them.
    pub content: String,
    pub avail: u64,
    pub total: u64,
}

pub const GIB: u64 = 1 << 30;

/// A fresh Proxmox VE 8 install: `local` (a directory, with snippets and import added as the
/// lab's README says) and `local-lvm` (thin LVM) with room for the example lab; the appliance
/// index offers Debian 12's standard template.
fn fresh_node() -> State {
    let storage = |kind: &str, content: &str, avail: u64| Storage {
        kind: kind.to_owned(),
        content: content.to_owned(),
        avail: avail * GIB,
        total: 2 * avail * GIB,
    };
    State {
        storages: BTreeMap::from([
            (
                "local".to_owned(),
                storage("dir", "iso,vztmpl,backup,snippets,import", 100),
            ),
            (
                "local-lvm".to_owned(),
                storage("lvmthin", "images,rootdir", 400),
            ),
        ]),
        appliances: vec!["debian-12-standard_12.12-1_amd64.tar.zst".to_owned()],
        nodes: vec![("pve".to_owned(), "192.168.1.10".to_owned())],
        version: "8.4.14".to_owned(),
        ..State::default()
    }
}

/// Config objects by id, each as its properties in wire form.
pub type Objects = BTreeMap<String, BTreeMap<String, String>>;

/// The SDN configuration: what is written (`/etc/pve/sdn/*.cfg`), or what is running.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sdn {
    pub zones: Objects,
    pub vnets: Objects,
    /// By `vnet/subnet-id`.
    pub subnets: Objects,
}

#[derive(Debug, Default)]
pub struct State {
    /// node → iface → properties (what is running).
    pub network: BTreeMap<String, BTreeMap<String, BTreeMap<String, String>>>,
    /// node → iface → properties written but not applied yet.
    pub pending: BTreeMap<String, BTreeMap<String, BTreeMap<String, String>>>,
    /// vmid → (node, config) for containers and VMs.
    pub lxc: BTreeMap<u32, (String, BTreeMap<String, String>)>,
    pub qemu: BTreeMap<u32, (String, BTreeMap<String, String>)>,
    /// node/storage → volume ids.
    pub content: BTreeMap<String, Vec<String>>,
    /// storage.cfg: storage id → what it allows and has free (on every node).
    pub storages: BTreeMap<String, Storage>,
    /// The appliance index (`pveam available`): template file names.
    pub appliances: Vec<String>,
    /// VMIDs of guests that are running.
    pub running: std::collections::BTreeSet<u32>,
    pub calls: Vec<Call>,
    pub rejected: Vec<(Call, String)>,
    tasks: u32,
    /// URL → the checksum (hex) of what it serves; a `download-url` pinning another one fails
    /// its task as Proxmox's does, and stores nothing.
    pub served: BTreeMap<String, String>,
    /// UPID → exit status of the tasks that failed.
    failed_tasks: BTreeMap<String, String>,
    /// `/access/roles`: role id → privileges.
    pub roles: BTreeMap<String, std::collections::BTreeSet<String>>,
    /// `/access/users`: user id → its properties (comment, …).
    pub users: BTreeMap<String, BTreeMap<String, String>>,
    /// `/access/acl`: (path, type, ugid, roleid) → propagate.
    pub acl: BTreeMap<(String, String, String, String), bool>,
    /// API tokens: (user id, token id) → (privsep, secret).
    pub tokens: BTreeMap<(String, String), (bool, String)>,
    /// `/cluster/backup`: job id → its properties.
    pub backup_jobs: BTreeMap<String, BTreeMap<String, String>>,
    /// The cluster's nodes and their management addresses (`/nodes`, `/cluster/status`);
    /// with more than one, guests are only made on them, their NICs on a bridge the node has.
    pub nodes: Vec<(String, String)>,
    /// The pve-manager version `/version` reports: `8.4.14`, `9.0.10`. HA rules exist from 9
    /// on, HA groups until 9 (which migrated them to rules).
    pub version: String,
    /// The SDN configuration as written, and as `PUT /cluster/sdn` last put it into effect.
    pub sdn: Sdn,
    pub sdn_running: Sdn,
    /// HA resources (by sid), rules and groups (by id).
    pub ha_resources: Objects,
    pub ha_rules: Objects,
    pub ha_groups: Objects,
}

impl State {
    /// Makes this a cluster of `nodes` (name, management address) running Proxmox `version`,
    /// each with the uplink bridge, and a shared (NFS) storage `labshare` for images and snippets.
    pub fn make_cluster(&mut self, nodes: &[(&str, &str)], version: &str) {
        self.nodes = nodes
            .iter()
            .map(|(n, a)| ((*n).to_owned(), (*a).to_owned()))
            .collect();
        self.version = version.to_owned();
        for (node, address) in nodes {
            let cidr = format!("{address}/24");
            let vmbr0: BTreeMap<String, String> = [
                ("type", "bridge"),
                ("cidr", cidr.as_str()),
                ("autostart", "1"),
                ("bridge_ports", "eno1"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
            self.network
                .entry((*node).to_owned())
                .or_default()
                .insert("vmbr0".to_owned(), vmbr0);
        }
        self.storages.insert(
            "labshare".to_owned(),
            Storage {
                kind: "nfs".to_owned(),
                content: "snippets,import,vztmpl,iso".to_owned(),
                avail: 500 * GIB,
                total: 1000 * GIB,
            },
        );
    }

    /// Moves guest `vmid` to `node`, as Proxmox HA does when the guest's node fails (or an
    /// admin with `pct migrate`/`qm migrate`): its config goes with it, nothing else changes.
    pub fn move_guest(&mut self, vmid: u32, node: &str) {
        let guest = self
            .lxc
            .get_mut(&vmid)
            .or(self.qemu.get_mut(&vmid))
            .unwrap_or_else(|| panic!("no guest {vmid} to move"));
        guest.0 = node.to_owned();
    }

    fn major(&self) -> u32 {
        self.version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0)
    }
}

pub struct Simulator {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<State>>,
    /// The server certificate (DER) when serving HTTPS.
    pub certificate: Option<Vec<u8>>,
    dir: tempfile::TempDir,
}

/// What an HTTPS simulator serves with and expects.
struct Tls {
    config: Arc<rustls::ServerConfig>,
    /// The whole expected `Authorization` header value.
    authorization: String,
}

pub fn schema_path() -> PathBuf {
    lab_tests::workspace::reference_path("proxmox/apidata.json")
}

impl Simulator {
    /// Starts the server on an ephemeral loopback port; it lives as long as the test process.
    pub fn start() -> Simulator {
        Self::spawn(None)
    }

    /// Serves HTTPS with a fresh self-signed certificate for `localhost`, and accepts only
    /// `Authorization: PVEAPIToken=<token_id>=<secret>`.
    pub fn start_https(token_id: &str, secret: &str) -> Simulator {
        let key = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        Self::start_https_with(
            key.cert.der().to_vec(),
            key.signing_key.serialize_der(),
            token_id,
            secret,
        )
    }

    /// Like [`Self::start_https`], with a certificate for `localhost` issued by a fresh CA, as
    /// a cluster's pve-root-ca signs its nodes' certificates; returns the CA's PEM too.
    pub fn start_https_with_ca(token_id: &str, secret: &str) -> (Simulator, String) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Proxmox Virtual Environment");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let sim = Self::start_https_with(
            leaf.der().to_vec(),
            leaf_key.serialize_der(),
            token_id,
            secret,
        );
        (sim, ca_cert.pem())
    }

    fn start_https_with(cert: Vec<u8>, key: Vec<u8>, token_id: &str, secret: &str) -> Simulator {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.clone().into()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.into()),
            )
            .unwrap();
        let mut sim = Self::spawn(Some(Tls {
            config: Arc::new(config),
            authorization: format!("PVEAPIToken={token_id}={secret}"),
        }));
        sim.certificate = Some(cert);
        sim
    }

    fn spawn(tls: Option<Tls>) -> Simulator {
        let tls = tls.map(Arc::new);
        let schema = Arc::new(Schema::load(&schema_path()).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(fresh_node()));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (schema, state, tls) = (schema.clone(), shared.clone(), tls.clone());
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                    match tls {
                        None => {
                            let _ = serve(stream, &schema, &state, None);
                        }
                        Some(tls) => {
                            let Ok(conn) = rustls::ServerConnection::new(tls.config.clone()) else {
                                return;
                            };
                            let stream = rustls::StreamOwned::new(conn, stream);
                            let _ = serve(stream, &schema, &state, Some(&tls.authorization));
                        }
                    }
                });
            }
        });
        Simulator {
            addr,
            state,
            certificate: None,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// `lab-bootstrap OP` as it runs on a Proxmox host whose `pvesh` is this simulator, laid out
    /// in the test directory `dir`: files under `dir/root`, the daemons' binaries from
    /// `dir/bin`, the host's commands through the recording `dir/stand-in`, `dir/lab.toml`.
    /// Further arguments go after it.
    pub fn bootstrap_on_host(&self, op: &str, dir: &std::path::Path) -> std::process::Command {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_lab-bootstrap"));
        command
            .arg(op)
            .args(["--api", "pvesh", "--pvesh"])
            .arg(self.pvesh_shim())
            .arg("--root")
            .arg(dir.join("root"))
            .arg("--binaries")
            .arg(dir.join("bin"))
            .arg("--run-via")
            .arg(dir.join("stand-in"))
            .arg(dir.join("lab.toml"));
        command
    }

    /// A `pvesh` lookalike talking to this simulator: `pvesh get|create|set|delete PATH
    /// --name value ... --output-format json`; prints the data, exits 255 with the error.
    pub fn pvesh_shim(&self) -> PathBuf {
        let path = self.dir.path().join("pvesh");
        let script = format!(
            r#"#!/bin/bash
set -u
verb=$1; path=$2; shift 2
case $verb in get) m=GET;; create) m=POST;; set) m=PUT;; delete) m=DELETE;; *) echo "unknown verb $verb" >&2; exit 255;; esac
args=()
while [ $# -gt 0 ]; do
  case $1 in
    --output-format) shift 2;;
    --*) args+=(--data-urlencode "${{1#--}}=$2"); shift 2;;
    *) echo "unexpected argument $1" >&2; exit 255;;
  esac
done
get=(); [ $m = GET ] && get=(-G)
out=$(curl -sS --max-time 10 "${{get[@]}}" -X $m -H 'X-Pvesh: 1' -w '\n%{{http_code}}' "${{args[@]}}" "http://{addr}/api2/json$path") || exit 255
code=${{out##*$'\n'}}; body=${{out%$'\n'*}}
if [ "$code" != 200 ]; then echo "$body" >&2; exit 255; fi
printf '%s\n' "$body"
"#,
            addr = self.addr
        );
        std::fs::write(&path, script).unwrap();
        let mut perms = std::fs::metadata(&path).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&path, perms).unwrap();
        path
    }

    pub fn rejected(&self) -> Vec<(Call, String)> {
        self.state.lock().unwrap().rejected.clone()
    }

    pub fn writes(&self) -> Vec<Call> {
        let s = self.state.lock().unwrap();
        s.calls.iter().filter(|c| c.is_write()).cloned().collect()
    }

    pub fn clear_calls(&self) {
        let mut s = self.state.lock().unwrap();
        s.calls.clear();
        s.rejected.clear();
    }
}

fn serve(
    mut stream: impl Read + Write,
    schema: &Schema,
    state: &Mutex<State>,
    authorization: Option<&str>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(&mut stream);
    let mut head = Vec::new();
    // Bounded: a request head is at most 64 lines.
    for _ in 0..64 {
        let mut line = Vec::new();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        head.extend_from_slice(&line);
        if line == b"\r\n" || line == b"\n" {
            break;
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(&head).map_err(std::io::Error::other)?;
    let method = req.method.unwrap_or("").to_owned();
    let target = req.path.unwrap_or("").to_owned();
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).into_owned())
    };
    let pvesh = header("x-pvesh").is_some();
    let authorized = authorization.is_none_or(|a| header("authorization").as_deref() == Some(a));
    let length: usize = header("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length.min(1 << 20)];
    reader.read_exact(&mut body)?;
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let path = decode(path.strip_prefix("/api2/json").unwrap_or(path));
    let mut params = form(query);
    params.extend(form(&String::from_utf8_lossy(&body)));
    let call = Call {
        method,
        path,
        params,
        at: std::time::SystemTime::now(),
    };
    drop(reader);
    let (code, data) = if authorized {
        handle(schema, state, call)
    } else {
        (401, Value::String("authentication failure".into()))
    };
    let body = if code == 200 {
        if pvesh {
            data.to_string()
        } else {
            json!({ "data": data }).to_string()
        }
    } else if pvesh {
        data.as_str().unwrap_or_default().to_owned()
    } else {
        json!({ "data": null, "message": data }).to_string()
    };
    write!(
        stream,
        "HTTP/1.1 {code} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        if code == 200 { "OK" } else { "Error" },
        body.len()
    )?;
    stream.flush()
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

fn form(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn handle(schema: &Schema, state: &Mutex<State>, call: Call) -> (u16, Value) {
    let mut s = state.lock().unwrap();
    s.calls.push(call.clone());
    let resolved = match schema.validate(&call.method, &call.path, &call.params) {
        Ok(r) => r,
        Err(e) => {
            s.rejected.push((call, e.to_string()));
            return (400, Value::String(e.to_string()));
        }
    };
    match route(&mut s, &call, &resolved.template, &resolved.path_params) {
        Ok(v) => (200, v),
        Err(e) => (500, Value::String(e)),
    }
}

fn params_map(call: &Call) -> BTreeMap<String, String> {
    call.params.iter().cloned().collect()
}

fn upid(s: &mut State, node: &str, kind: &str, id: &str) -> Value {
    s.tasks += 1;
    Value::String(format!(
        "UPID:{node}:{:08X}:00000000:00000000:{kind}:{id}:root@pam:",
        s.tasks
    ))
}

fn route(
    s: &mut State,
    call: &Call,
    template: &str,
    pp: &BTreeMap<String, String>,
) -> Result<Value, String> {
    // Backup jobs are served below with the datacenter's other objects.
    let cluster_wide = (template.starts_with("/cluster/")
        && !template.starts_with("/cluster/backup"))
        || template == "/version"
        || template == "/nodes";
    if cluster_wide {
        return cluster::route(s, call, template, pp);
    }
    let node = pp.get("node").cloned().unwrap_or_default();
    let vmid: u32 = pp.get("vmid").and_then(|v| v.parse().ok()).unwrap_or(0);
    let m = call.method.as_str();
    // As on Proxmox: a guest is reached only through the node it is on.
    for (prefix, guests, kind) in [
        ("/nodes/{node}/lxc/{vmid}", &s.lxc, "lxc"),
        ("/nodes/{node}/qemu/{vmid}", &s.qemu, "qemu-server"),
    ] {
        if let (true, Some((on, _))) = (template.starts_with(prefix), guests.get(&vmid)) {
            if *on != node {
                return Err(format!(
                    "Configuration file 'nodes/{node}/{kind}/{vmid}.conf' does not exist"
                ));
            }
        }
    }
    match (m, template) {
        ("GET", "/nodes/{node}/network") => {
            // As on a node: the list shows written (pending) interfaces too; only running
            // ones are `active`.
            let running = s.network.get(&node).cloned().unwrap_or_default();
            let mut ifaces = running.clone();
            ifaces.extend(s.pending.get(&node).cloned().unwrap_or_default());
            Ok(Value::Array(
                ifaces
                    .into_iter()
                    .map(|(name, props)| {
                        let mut o = json!({ "iface": name });
                        if running.contains_key(&name) {
                            o["active"] = json!(1);
                        }
                        for (k, v) in props {
                            o[k] = Value::String(v);
                        }
                        o
                    })
                    .collect(),
            ))
        }
        ("POST", "/nodes/{node}/network") => {
            let mut props = params_map(call);
            let iface = props.remove("iface").unwrap_or_default();
            let exists = s.network.get(&node).is_some_and(|n| n.contains_key(&iface))
                || s.pending.get(&node).is_some_and(|n| n.contains_key(&iface));
            if exists {
                return Err(format!("interface '{iface}' already exists"));
            }
            s.pending.entry(node).or_default().insert(iface, props);
            Ok(Value::Null)
        }
        ("PUT", "/nodes/{node}/network") => {
            let pending = s.pending.remove(&node).unwrap_or_default();
            s.network.entry(node.clone()).or_default().extend(pending);
            Ok(upid(s, &node, "srvreload", "networking"))
        }
        ("PUT", "/nodes/{node}/network/{iface}") => {
            let iface = pp.get("iface").cloned().unwrap_or_default();
            let mut props = params_map(call);
            props.remove("type");
            let current = s
                .network
                .get(&node)
                .and_then(|n| n.get(&iface))
                .cloned()
                .ok_or(format!("interface '{iface}' does not exist"))?;
            let mut merged = current;
            merged.extend(props);
            s.pending.entry(node).or_default().insert(iface, merged);
            Ok(Value::Null)
        }
        ("DELETE", "/nodes/{node}/network/{iface}") => {
            let iface = pp.get("iface").cloned().unwrap_or_default();
            s.network
                .get_mut(&node)
                .and_then(|n| n.remove(&iface))
                .ok_or(format!("interface '{iface}' does not exist"))?;
            Ok(Value::Null)
        }
        ("GET", "/nodes/{node}/lxc") | ("GET", "/nodes/{node}/qemu") => {
            let guests = if template.ends_with("lxc") {
                &s.lxc
            } else {
                &s.qemu
            };
            Ok(Value::Array(
                guests
                    .iter()
                    .filter(|(_, (n, _))| *n == node)
                    .map(|(id, (_, c))| {
                        json!({ "vmid": id, "name": c.get("hostname").or(c.get("name")),
                                "status": if s.running.contains(id) { "running" } else { "stopped" },
                                "tags": c.get("tags") })
                    })
                    .collect(),
            ))
        }
        ("POST", "/nodes/{node}/lxc") | ("POST", "/nodes/{node}/qemu") => {
            let mut config = params_map(call);
            let id: u32 = config
                .remove("vmid")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if s.lxc.contains_key(&id) || s.qemu.contains_key(&id) {
                return Err(format!(
                    "unable to create guest {id}: config file already exists"
                ));
            }
            let lxc = template.ends_with("lxc");
            config.remove("start");
            if s.nodes.len() > 1 {
                cluster::check_guest_node(s, &node, &config)?;
            }
            if lxc {
                s.lxc.insert(id, (node.clone(), config));
                Ok(upid(s, &node, "vzcreate", &id.to_string()))
            } else {
                s.qemu.insert(id, (node.clone(), config));
                Ok(upid(s, &node, "qmcreate", &id.to_string()))
            }
        }
        ("GET", "/nodes/{node}/lxc/{vmid}/config")
        | ("GET", "/nodes/{node}/qemu/{vmid}/config") => {
            let guests = if template.contains("/lxc/") {
                &s.lxc
            } else {
                &s.qemu
            };
            let (_, config) = guests
                .get(&vmid)
                .ok_or(format!("guest {vmid} does not exist"))?;
            Ok(json!(config))
        }
        ("PUT", "/nodes/{node}/lxc/{vmid}/config")
        | ("PUT", "/nodes/{node}/qemu/{vmid}/config")
        | ("POST", "/nodes/{node}/qemu/{vmid}/config") => {
            let lxc = template.contains("/lxc/");
            let guests = if lxc { &mut s.lxc } else { &mut s.qemu };
            let (_, config) = guests
                .get_mut(&vmid)
                .ok_or(format!("guest {vmid} does not exist"))?;
            let mut params = params_map(call);
            if let Some(delete) = params.remove("delete") {
                for key in delete.split([',', ';', ' ']) {
                    config.remove(key);
                }
            }
            params.remove("digest");
            config.extend(params);
            if m == "POST" {
                Ok(upid(s, &node, "qmconfig", &vmid.to_string()))
            } else {
                Ok(Value::Null)
            }
        }
        ("POST", "/nodes/{node}/lxc/{vmid}/status/stop")
        | ("POST", "/nodes/{node}/qemu/{vmid}/status/stop") => {
            s.running.remove(&vmid);
            Ok(upid(s, &node, "vzstop", &vmid.to_string()))
        }
        ("DELETE", "/nodes/{node}/lxc/{vmid}") | ("DELETE", "/nodes/{node}/qemu/{vmid}") => {
            // As on a real node: a running guest cannot be destroyed.
            if s.running.contains(&vmid) {
                return Err(format!("unable to destroy guest {vmid}: it is running"));
            }
            let lxc = template.contains("/lxc/");
            let sid = format!("{}:{vmid}", if lxc { "ct" } else { "vm" });
            if s.ha_resources.contains_key(&sid) {
                // As PVE: an HA-managed guest goes only with `purge`, which takes it out of HA.
                if params_map(call).get("purge").map(String::as_str) != Some("1") {
                    return Err(format!(
                        "unable to remove guest {vmid} - used in HA resources and purge parameter not set"
                    ));
                }
                s.ha_resources.remove(&sid);
            }
            let guests = if lxc { &mut s.lxc } else { &mut s.qemu };
            guests
                .remove(&vmid)
                .ok_or(format!("guest {vmid} does not exist"))?;
            Ok(upid(s, &node, "vzdestroy", &vmid.to_string()))
        }
        ("GET", "/nodes/{node}/tasks/{upid}/status") => {
            let upid = pp.get("upid").cloned().unwrap_or_default();
            let exit = s.failed_tasks.get(&upid).map_or("OK", String::as_str);
            Ok(json!({ "upid": upid, "status": "stopped", "exitstatus": exit, "node": node }))
        }
        ("GET", "/nodes/{node}/storage/{storage}/content") => {
            let storage = pp.get("storage").map_or("", String::as_str);
            if !s.storages.contains_key(storage) {
                return Err(format!("storage '{storage}' does not exist"));
            }
            let key = format!("{node}/{storage}");
            // A volume id is `storage:content/name`.
            let wanted = params_map(call).get("content").cloned();
            Ok(Value::Array(
                s.content
                    .get(&key)
                    .into_iter()
                    .flatten()
                    .filter(|v| {
                        wanted.as_deref().is_none_or(|c| {
                            v.split_once(':')
                                .is_some_and(|(_, rest)| rest.starts_with(&format!("{c}/")))
                        })
                    })
                    .map(|v| json!({ "volid": v }))
                    .collect(),
            ))
        }
        ("GET", "/nodes/{node}/storage/{storage}/status") => {
            let storage = pp.get("storage").map_or("", String::as_str);
            let st = s
                .storages
                .get(storage)
                .ok_or(format!("storage '{storage}' does not exist"))?;
            Ok(
                json!({ "type": st.kind, "content": st.content, "avail": st.avail,
                       "total": st.total, "used": st.total.saturating_sub(st.avail),
                       "active": 1, "enabled": 1, "shared": i64::from(st.kind == "nfs") }),
            )
        }
        ("GET", "/nodes/{node}/aplinfo") => Ok(Value::Array(
            s.appliances
                .iter()
                .map(|t| json!({ "template": t, "section": "system", "type": "lxc" }))
                .collect(),
        )),
        ("POST", "/nodes/{node}/aplinfo") => {
            let params = params_map(call);
            let (storage, template) = (params["storage"].clone(), params["template"].clone());
            if !s.appliances.contains(&template) {
                return Err(format!("no such template '{template}'"));
            }
            s.content
                .entry(format!("{node}/{storage}"))
                .or_default()
                .push(format!("{storage}:vztmpl/{template}"));
            Ok(upid(s, &node, "download", &storage))
        }
        ("POST", "/nodes/{node}/storage/{storage}/download-url") => {
            let storage = pp.get("storage").cloned().unwrap_or_default();
            let params = params_map(call);
            let volid = format!(
                "{storage}:{}/{}",
                params.get("content").map_or("", String::as_str),
                params.get("filename").map_or("", String::as_str)
            );
            let served = params.get("url").and_then(|url| s.served.get(url)).cloned();
            let pinned = params.get("checksum").map(|sum| sum.to_lowercase());
            if let (Some(got), Some(expected)) = (served, pinned) {
                if got != expected {
                    // Proxmox's download task dies with this line (PVE::Tools::download_file_from_url).
                    let task = upid(s, &node, "download", &storage);
                    s.failed_tasks.insert(
                        task.as_str().unwrap_or_default().to_owned(),
                        format!("checksum mismatch: got '{got}' != expect '{expected}'"),
                    );
                    return Ok(task);
                }
            }
            s.content
                .entry(format!("{node}/{storage}"))
                .or_default()
                .push(volid);
            Ok(upid(s, &node, "download", &storage))
        }
        ("GET", "/access/roles") => Ok(Value::Array(
            s.roles
                .iter()
                .map(|(id, privs)| {
                    let privs: Vec<&str> = privs.iter().map(String::as_str).collect();
                    json!({ "roleid": id, "privs": privs.join(","), "special": 0 })
                })
                .collect(),
        )),
        ("POST", "/access/roles") => {
            let params = params_map(call);
            let id = params.get("roleid").cloned().unwrap_or_default();
            if s.roles.contains_key(&id) {
                return Err(format!("role '{id}' already exists"));
            }
            s.roles.insert(id, privilege_set(params.get("privs")));
            Ok(Value::Null)
        }
        ("PUT", "/access/roles/{roleid}") => {
            let params = params_map(call);
            let id = pp.get("roleid").cloned().unwrap_or_default();
            let append = params.get("append").map(String::as_str) == Some("1");
            let role = s
                .roles
                .get_mut(&id)
                .ok_or(format!("role '{id}' does not exist"))?;
            let privs = privilege_set(params.get("privs"));
            if append {
                role.extend(privs);
            } else {
                *role = privs;
            }
            Ok(Value::Null)
        }
        ("DELETE", "/access/roles/{roleid}") => {
            let id = pp.get("roleid").cloned().unwrap_or_default();
            s.roles
                .remove(&id)
                .ok_or(format!("role '{id}' does not exist"))?;
            // As PVE does: the role's ACL entries go with it.
            s.acl.retain(|(_, _, _, role), _| *role != id);
            Ok(Value::Null)
        }
        ("GET", "/access/users") => Ok(Value::Array(
            s.users
                .iter()
                .map(|(id, props)| {
                    let mut o = json!({ "userid": id, "enable": 1 });
                    for (k, v) in props {
                        o[k] = Value::String(v.clone());
                    }
                    o
                })
                .collect(),
        )),
        ("POST", "/access/users") => {
            let mut props = params_map(call);
            let id = props.remove("userid").unwrap_or_default();
            if s.users.contains_key(&id) {
                return Err(format!("create user failed: user '{id}' already exists"));
            }
            s.users.insert(id, props);
            Ok(Value::Null)
        }
        ("DELETE", "/access/users/{userid}") => {
            let id = pp.get("userid").cloned().unwrap_or_default();
            s.users
                .remove(&id)
                .ok_or(format!("user '{id}' does not exist"))?;
            // As PVE does: its tokens and ACL entries go with it.
            s.tokens.retain(|(user, _), _| *user != id);
            s.acl
                .retain(|(_, _, ugid, _), _| *ugid != id && !ugid.starts_with(&format!("{id}!")));
            Ok(Value::Null)
        }
        ("GET", "/access/acl") => Ok(Value::Array(
            s.acl
                .iter()
                .map(|((path, kind, ugid, roleid), propagate)| {
                    json!({ "path": path, "type": kind, "ugid": ugid, "roleid": roleid,
                            "propagate": u8::from(*propagate) })
                })
                .collect(),
        )),
        ("PUT", "/access/acl") => {
            let params = params_map(call);
            let path = params.get("path").cloned().unwrap_or_default();
            let delete = params.get("delete").map(String::as_str) == Some("1");
            let propagate = params.get("propagate").map(String::as_str) != Some("0");
            let split = |key: &str| -> Vec<String> {
                params
                    .get(key)
                    .map(|v| {
                        v.split([',', ';', ' '])
                            .filter(|x| !x.is_empty())
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let mut subjects: Vec<(&str, String)> = Vec::new();
            subjects.extend(split("users").into_iter().map(|u| ("user", u)));
            subjects.extend(split("tokens").into_iter().map(|t| ("token", t)));
            for role in split("roles") {
                if !s.roles.contains_key(&role) {
                    return Err(format!("role '{role}' does not exist"));
                }
                for (kind, ugid) in &subjects {
                    let exists = match *kind {
                        "user" => s.users.contains_key(ugid),
                        _ => ugid.rsplit_once('!').is_some_and(|(u, t)| {
                            s.tokens.contains_key(&(u.to_owned(), t.to_owned()))
                        }),
                    };
                    if !exists {
                        return Err(format!("{kind} '{ugid}' does not exist"));
                    }
                    let key = (path.clone(), (*kind).to_owned(), ugid.clone(), role.clone());
                    if delete {
                        s.acl.remove(&key);
                    } else {
                        s.acl.insert(key, propagate);
                    }
                }
            }
            Ok(Value::Null)
        }
        ("GET", "/access/users/{userid}/token") => {
            let id = pp.get("userid").cloned().unwrap_or_default();
            if !s.users.contains_key(&id) {
                return Err(format!("user '{id}' does not exist"));
            }
            Ok(Value::Array(
                s.tokens
                    .iter()
                    .filter(|((user, _), _)| *user == id)
                    .map(|((_, token), (privsep, _))| {
                        json!({ "tokenid": token, "privsep": u8::from(*privsep) })
                    })
                    .collect(),
            ))
        }
        ("POST", "/access/users/{userid}/token/{tokenid}") => {
            let user = pp.get("userid").cloned().unwrap_or_default();
            let token = pp.get("tokenid").cloned().unwrap_or_default();
            if !s.users.contains_key(&user) {
                return Err(format!("user '{user}' does not exist"));
            }
            let key = (user.clone(), token.clone());
            if s.tokens.contains_key(&key) {
                return Err("Token already exists.".to_owned());
            }
            let params = params_map(call);
            let privsep = params.get("privsep").map(String::as_str) != Some("0");
            s.tasks += 1;
            // A UUID as PVE makes them, different for every token.
            let secret = format!(
                "5e1f{:04x}-1c2d-4e5f-8a9b-{:012x}",
                s.tasks,
                0xc0ffee + s.tasks
            );
            s.tokens.insert(key, (privsep, secret.clone()));
            Ok(json!({ "full-tokenid": format!("{user}!{token}"),
                       "info": { "privsep": u8::from(privsep) }, "value": secret }))
        }
        ("PUT", "/access/users/{userid}/token/{tokenid}") => {
            let key = (
                pp.get("userid").cloned().unwrap_or_default(),
                pp.get("tokenid").cloned().unwrap_or_default(),
            );
            let params = params_map(call);
            let (privsep, _) = s.tokens.get_mut(&key).ok_or("no such token".to_owned())?;
            if let Some(p) = params.get("privsep") {
                *privsep = p != "0";
            }
            Ok(json!({ "privsep": u8::from(*privsep) }))
        }
        ("DELETE", "/access/users/{userid}/token/{tokenid}") => {
            let key = (
                pp.get("userid").cloned().unwrap_or_default(),
                pp.get("tokenid").cloned().unwrap_or_default(),
            );
            s.tokens.remove(&key).ok_or("no such token".to_owned())?;
            let full = format!("{}!{}", key.0, key.1);
            s.acl.retain(|(_, _, ugid, _), _| *ugid != full);
            Ok(Value::Null)
        }
        ("GET", "/cluster/backup") => Ok(Value::Array(
            s.backup_jobs
                .iter()
                .map(|(id, props)| {
                    let mut o = json!({ "id": id, "type": "vzdump" });
                    for (k, v) in props {
                        o[k] = Value::String(v.clone());
                    }
                    // PVE answers the retention parsed, as an object.
                    if let Some(prune) = props.get("prune-backups") {
                        let parsed: serde_json::Map<String, Value> = prune
                            .split(',')
                            .filter_map(|kv| kv.split_once('='))
                            .map(|(k, v)| {
                                let n = v.parse::<u64>().map_or(json!(v), |n| json!(n));
                                (k.to_owned(), n)
                            })
                            .collect();
                        o["prune-backups"] = Value::Object(parsed);
                    }
                    if let Some(enabled) = props.get("enabled") {
                        o["enabled"] = json!(enabled.parse::<u8>().unwrap_or(1));
                    }
                    o
                })
                .collect(),
        )),
        ("POST", "/cluster/backup") => {
            let mut props = params_map(call);
            let id = props.remove("id").unwrap_or_default();
            if s.backup_jobs.contains_key(&id) {
                return Err(format!("Job '{id}' already exists"));
            }
            if !props.contains_key("vmid") && props.get("all").map(String::as_str) != Some("1") {
                return Err("one of 'vmid', 'all' or 'pool' is needed".to_owned());
            }
            if let Some(storage) = props.get("storage") {
                let allows_backup = s
                    .storages
                    .get(storage)
                    .is_some_and(|st| st.content.split(',').any(|c| c == "backup"));
                if !allows_backup {
                    return Err(format!("storage '{storage}' does not support backups"));
                }
            }
            s.backup_jobs.insert(id, props);
            Ok(Value::Null)
        }
        ("PUT", "/cluster/backup/{id}") => {
            let id = pp.get("id").cloned().unwrap_or_default();
            let mut params = params_map(call);
            let job = s
                .backup_jobs
                .get_mut(&id)
                .ok_or(format!("job '{id}' does not exist"))?;
            if let Some(delete) = params.remove("delete") {
                for key in delete.split([',', ';', ' ']) {
                    job.remove(key);
                }
            }
            job.extend(params);
            Ok(Value::Null)
        }
        ("DELETE", "/cluster/backup/{id}") => {
            let id = pp.get("id").cloned().unwrap_or_default();
            s.backup_jobs
                .remove(&id)
                .ok_or(format!("job '{id}' does not exist"))?;
            Ok(Value::Null)
        }
        _ => Err(format!("the simulator does not implement {m} {template}")),
    }
}

fn privilege_set(privs: Option<&String>) -> std::collections::BTreeSet<String> {
    privs
        .map(|p| {
            p.split([',', ';', ' '])
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The cluster-wide part of the API: the release, the nodes, SDN and HA.
mod cluster {
    use super::{params_map, upid, Call, Objects, State};
    use serde_json::{json, Value};
    use std::collections::BTreeMap;

    pub fn route(
        s: &mut State,
        call: &Call,
        template: &str,
        pp: &BTreeMap<String, String>,
    ) -> Result<Value, String> {
        let m = call.method.as_str();
        let params = params_map(call);
        let pending = params.get("pending").map(String::as_str) == Some("1");
        match (m, template) {
            ("GET", "/version") => {
                let release: String = s.version.split('.').take(2).collect::<Vec<_>>().join(".");
                Ok(json!({ "version": s.version, "release": release, "repoid": "0123abcd" }))
            }
            ("GET", "/cluster/resources") => {
                let kind = params.get("type").map(String::as_str);
                let mut out = Vec::new();
                if kind.is_none_or(|k| k == "vm") {
                    for (guests, kind) in [(&s.lxc, "lxc"), (&s.qemu, "qemu")] {
                        for (id, (node, config)) in guests {
                            let status = if s.running.contains(id) {
                                "running"
                            } else {
                                "stopped"
                            };
                            out.push(json!({ "id": format!("{kind}/{id}"), "type": kind,
                                "vmid": id, "node": node, "status": status,
                                "name": config.get("hostname").or(config.get("name")),
                                "template": 0 }));
                        }
                    }
                }
                if kind.is_none_or(|k| k == "node") {
                    for (n, _) in &s.nodes {
                        out.push(
                            json!({ "id": format!("node/{n}"), "type": "node", "node": n,
                            "status": "online" }),
                        );
                    }
                }
                Ok(Value::Array(out))
            }
            ("GET", "/nodes") => Ok(Value::Array(
                s.nodes
                    .iter()
                    .map(|(n, _)| json!({ "node": n, "status": "online", "type": "node" }))
                    .collect(),
            )),
            ("GET", "/cluster/status") => {
                let mut out = vec![json!({ "type": "cluster", "id": "cluster", "name": "lab",
                    "nodes": s.nodes.len(), "quorate": 1, "version": 3 })];
                for (i, (n, ip)) in s.nodes.iter().enumerate() {
                    out.push(
                        json!({ "type": "node", "id": format!("node/{n}"), "name": n,
                        "ip": ip, "online": 1, "nodeid": i + 1, "local": i64::from(i == 0) }),
                    );
                }
                Ok(Value::Array(out))
            }
            ("PUT", "/cluster/sdn") => {
                s.sdn_running = s.sdn.clone();
                let node = s.nodes.first().map(|(n, _)| n.clone()).unwrap_or_default();
                Ok(upid(s, &node, "reloadnetworkall", ""))
            }
            ("GET", "/cluster/sdn/zones") => Ok(listing(
                &s.sdn.zones,
                &s.sdn_running.zones,
                "zone",
                pending,
                |_| true,
            )),
            ("GET", "/cluster/sdn/vnets") => Ok(listing(
                &s.sdn.vnets,
                &s.sdn_running.vnets,
                "vnet",
                pending,
                |_| true,
            )),
            ("GET", "/cluster/sdn/vnets/{vnet}/subnets") => {
                let prefix = format!("{}/", pp["vnet"]);
                Ok(listing(
                    &s.sdn.subnets,
                    &s.sdn_running.subnets,
                    "subnet",
                    pending,
                    |id| id.starts_with(&prefix),
                ))
            }
            ("POST", "/cluster/sdn/zones") => {
                let zone = params["zone"].clone();
                if s.sdn.zones.contains_key(&zone) {
                    return Err(format!("zone ID '{zone}' already defined"));
                }
                if params.get("type").map(String::as_str) == Some("vxlan")
                    && !params.contains_key("peers")
                {
                    return Err("missing peers: a vxlan zone needs its peers".to_owned());
                }
                s.sdn.zones.insert(zone, params);
                Ok(Value::Null)
            }
            ("PUT", "/cluster/sdn/zones/{zone}") => update(&mut s.sdn.zones, &pp["zone"], params),
            ("DELETE", "/cluster/sdn/zones/{zone}") => {
                let zone = &pp["zone"];
                if s.sdn.vnets.values().any(|v| v.get("zone") == Some(zone)) {
                    return Err(format!("cannot delete zone '{zone}', it is used by a vnet"));
                }
                s.sdn
                    .zones
                    .remove(zone)
                    .ok_or(format!("zone '{zone}' does not exist"))?;
                Ok(Value::Null)
            }
            ("POST", "/cluster/sdn/vnets") => {
                let vnet = params["vnet"].clone();
                if s.sdn.vnets.contains_key(&vnet) {
                    return Err(format!("vnet ID '{vnet}' already defined"));
                }
                let zone = params.get("zone").cloned().unwrap_or_default();
                let Some(zone_cfg) = s.sdn.zones.get(&zone) else {
                    return Err(format!("zone '{zone}' does not exist"));
                };
                if zone_cfg.get("type").map(String::as_str) == Some("vxlan") {
                    let Some(tag) = params.get("tag") else {
                        return Err("missing vxlan tag".to_owned());
                    };
                    if s.sdn.vnets.values().any(|v| v.get("tag") == Some(tag)) {
                        return Err(format!("tag {tag} already exists in another vnet"));
                    }
                }
                s.sdn.vnets.insert(vnet, params);
                Ok(Value::Null)
            }
            ("PUT", "/cluster/sdn/vnets/{vnet}") => update(&mut s.sdn.vnets, &pp["vnet"], params),
            ("DELETE", "/cluster/sdn/vnets/{vnet}") => {
                let vnet = &pp["vnet"];
                let prefix = format!("{vnet}/");
                if s.sdn.subnets.keys().any(|k| k.starts_with(&prefix)) {
                    return Err(format!("cannot delete vnet '{vnet}', it has subnets"));
                }
                s.sdn
                    .vnets
                    .remove(vnet)
                    .ok_or(format!("vnet '{vnet}' does not exist"))?;
                Ok(Value::Null)
            }
            ("POST", "/cluster/sdn/vnets/{vnet}/subnets") => {
                let vnet = pp["vnet"].clone();
                let zone = s
                    .sdn
                    .vnets
                    .get(&vnet)
                    .and_then(|v| v.get("zone").cloned())
                    .ok_or(format!("vnet '{vnet}' does not exist"))?;
                let cidr: ipnet::IpNet = params["subnet"]
                    .parse()
                    .map_err(|_| "not a CIDR".to_owned())?;
                let id = format!("{zone}-{}-{}", cidr.network(), cidr.prefix_len());
                let key = format!("{vnet}/{id}");
                if s.sdn.subnets.contains_key(&key) {
                    return Err(format!("subnet '{id}' already defined"));
                }
                let mut config = params;
                config.insert("subnet".to_owned(), id);
                config.insert("cidr".to_owned(), cidr.to_string());
                config.insert("zone".to_owned(), zone);
                config.insert("vnet".to_owned(), vnet);
                s.sdn.subnets.insert(key, config);
                Ok(Value::Null)
            }
            ("PUT", "/cluster/sdn/vnets/{vnet}/subnets/{subnet}") => {
                let key = format!("{}/{}", pp["vnet"], pp["subnet"]);
                update(&mut s.sdn.subnets, &key, params)
            }
            ("DELETE", "/cluster/sdn/vnets/{vnet}/subnets/{subnet}") => {
                let key = format!("{}/{}", pp["vnet"], pp["subnet"]);
                s.sdn
                    .subnets
                    .remove(&key)
                    .ok_or(format!("subnet '{key}' does not exist"))?;
                Ok(Value::Null)
            }
            ("GET", "/cluster/ha/resources") => Ok(list(&s.ha_resources)),
            ("POST", "/cluster/ha/resources") => {
                let sid = params["sid"].clone();
                if s.ha_resources.contains_key(&sid) {
                    return Err(format!("resource ID '{sid}' already defined"));
                }
                let (kind, id) = sid.split_once(':').unwrap_or(("vm", sid.as_str()));
                let id: u32 = id.parse().map_err(|_| format!("bad sid {sid}"))?;
                let exists = if kind == "ct" {
                    s.lxc.contains_key(&id)
                } else {
                    s.qemu.contains_key(&id)
                };
                if !exists {
                    return Err(format!("unable to find {kind} {id}"));
                }
                if let Some(group) = params.get("group") {
                    if s.major() >= 9 {
                        return Err("ha groups have been migrated to rules".to_owned());
                    }
                    if !s.ha_groups.contains_key(group) {
                        return Err(format!("group '{group}' does not exist"));
                    }
                }
                let mut config = params;
                config.insert("type".to_owned(), kind.to_owned());
                s.ha_resources.insert(sid, config);
                Ok(Value::Null)
            }
            ("PUT", "/cluster/ha/resources/{sid}") => {
                update(&mut s.ha_resources, &pp["sid"], params)
            }
            ("DELETE", "/cluster/ha/resources/{sid}") => {
                let sid = &pp["sid"];
                s.ha_resources
                    .remove(sid)
                    .ok_or(format!("resource '{sid}' does not exist"))?;
                Ok(Value::Null)
            }
            (_, t) if t.starts_with("/cluster/ha/rules") && s.major() < 9 => {
                // Proxmox 8 has no such path.
                Err(format!("Method '{m} {t}' not implemented"))
            }
            (_, t) if t.starts_with("/cluster/ha/groups") && m != "GET" && s.major() >= 9 => {
                Err("ha groups have been migrated to rules".to_owned())
            }
            ("GET", "/cluster/ha/rules") => Ok(list(&s.ha_rules)),
            ("POST", "/cluster/ha/rules") => {
                let rule = params["rule"].clone();
                if s.ha_rules.contains_key(&rule) {
                    return Err(format!("rule '{rule}' already defined"));
                }
                for sid in params
                    .get("resources")
                    .into_iter()
                    .flat_map(|r| r.split(','))
                {
                    if !s.ha_resources.contains_key(sid) {
                        return Err(format!("resource '{sid}' is not an HA resource"));
                    }
                }
                s.ha_rules.insert(rule, params);
                Ok(Value::Null)
            }
            ("PUT", "/cluster/ha/rules/{rule}") => update(&mut s.ha_rules, &pp["rule"], params),
            ("DELETE", "/cluster/ha/rules/{rule}") => {
                let rule = &pp["rule"];
                s.ha_rules
                    .remove(rule)
                    .ok_or(format!("rule '{rule}' does not exist"))?;
                Ok(Value::Null)
            }
            ("GET", "/cluster/ha/groups") => Ok(list(&s.ha_groups)),
            ("POST", "/cluster/ha/groups") => {
                let group = params["group"].clone();
                if s.ha_groups.contains_key(&group) {
                    return Err(format!("group '{group}' already defined"));
                }
                s.ha_groups.insert(group, params);
                Ok(Value::Null)
            }
            ("PUT", "/cluster/ha/groups/{group}") => update(&mut s.ha_groups, &pp["group"], params),
            ("DELETE", "/cluster/ha/groups/{group}") => {
                let group = &pp["group"];
                if s.ha_resources
                    .values()
                    .any(|r| r.get("group") == Some(group))
                {
                    return Err(format!("group '{group}' is still used by a resource"));
                }
                s.ha_groups
                    .remove(group)
                    .ok_or(format!("group '{group}' does not exist"))?;
                Ok(Value::Null)
            }
            _ => Err(format!("the simulator does not implement {m} {template}")),
        }
    }

    /// On a cluster: the node is one of it, and every NIC's bridge is there (its own, or a
    /// VNet put into effect).
    pub fn check_guest_node(
        s: &State,
        node: &str,
        config: &BTreeMap<String, String>,
    ) -> Result<(), String> {
        if !s.nodes.iter().any(|(n, _)| n == node) {
            return Err(format!("no such cluster node '{node}'"));
        }
        for (key, value) in config {
            if !key.starts_with("net") || !key[3..].chars().all(|c| c.is_ascii_digit()) {
                continue;
            }
            let bridge = value
                .split(',')
                .find_map(|p| p.strip_prefix("bridge="))
                .unwrap_or_default();
            let own = s.network.get(node).is_some_and(|n| n.contains_key(bridge));
            if !own && !s.sdn_running.vnets.contains_key(bridge) {
                return Err(format!("bridge '{bridge}' does not exist on node {node}"));
            }
        }
        Ok(())
    }

    fn update(
        objects: &mut Objects,
        id: &str,
        mut params: BTreeMap<String, String>,
    ) -> Result<Value, String> {
        let config = objects
            .get_mut(id)
            .ok_or(format!("'{id}' does not exist"))?;
        if let Some(delete) = params.remove("delete") {
            for key in delete.split([',', ';', ' ']) {
                config.remove(key);
            }
        }
        params.remove("digest");
        config.extend(params);
        Ok(Value::Null)
    }

    fn list(objects: &Objects) -> Value {
        Value::Array(objects.values().map(|c| json!(c)).collect())
    }

    /// An SDN listing: the written config; with `pending`, as PVE::Network::SDN's
    /// pending_config gives it: the running values, what differs under `pending`, and `state`
    /// (`new`, `changed`, `deleted`) on what is not in effect as written.
    fn listing(
        config: &Objects,
        running: &Objects,
        id_key: &str,
        pending: bool,
        keep: impl Fn(&str) -> bool,
    ) -> Value {
        let mut out = Vec::new();
        if !pending {
            for (id, c) in config.iter().filter(|(id, _)| keep(id)) {
                let mut o = json!(c);
                o[id_key] = json!(c.get(id_key).cloned().unwrap_or_else(|| id.clone()));
                out.push(o);
            }
            return Value::Array(out);
        }
        let ids: std::collections::BTreeSet<&String> = config
            .keys()
            .chain(running.keys())
            .filter(|id| keep(id))
            .collect();
        for id in ids {
            let (c, r) = (config.get(id), running.get(id));
            let mut o = json!(r.cloned().unwrap_or_default());
            let mut changes = serde_json::Map::new();
            let state = match (c, r) {
                (None, Some(_)) => Some("deleted"),
                (Some(c), None) => {
                    for (k, v) in c {
                        changes.insert(k.clone(), json!(v));
                    }
                    Some("new")
                }
                (Some(c), Some(r)) => {
                    for (k, v) in c {
                        if r.get(k) != Some(v) {
                            changes.insert(k.clone(), json!(v));
                        }
                    }
                    for k in r.keys().filter(|k| !c.contains_key(*k)) {
                        changes.insert(k.clone(), json!("deleted"));
                    }
                    (!changes.is_empty()).then_some("changed")
                }
                (None, None) => None,
            };
            let own_id = c
                .or(r)
                .and_then(|c| c.get(id_key).cloned())
                .unwrap_or_else(|| id.clone());
            o[id_key] = json!(own_id);
            if let Some(state) = state {
                o["state"] = json!(state);
                o["pending"] = Value::Object(changes);
            }
            out.push(o);
        }
        Value::Array(out)
    }
}
