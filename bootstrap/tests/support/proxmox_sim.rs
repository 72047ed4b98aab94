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
        ..State::default()
    }
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
    let node = pp.get("node").cloned().unwrap_or_default();
    let vmid: u32 = pp.get("vmid").and_then(|v| v.parse().ok()).unwrap_or(0);
    let m = call.method.as_str();
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
                       "active": 1, "enabled": 1, "shared": 0 }),
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
        _ => Err(format!("the simulator does not implement {m} {template}")),
    }
}
