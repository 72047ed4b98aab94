//! Stand-ins for what the lab's VMs would serve, since Talos cannot boot here: on each port the
//! real node serves, a server answering every HTTP request with the node's name, over TLS (a
//! certificate made for the node at start) where the real service speaks TLS; and on the Talos
//! nodes' port 50000 a stand-in apid (lab-talos-api) speaking the Talos API over mutual TLS
//! with the lab's own PKI. The balancer's health checks and balancing, and lab-bootstrap's
//! Talos client, then meet real servers; `status` says they are stand-ins.

use super::LocalError;
use crate::talos::kubeconfig::admin_kubeconfig;
use crate::talos::pki;
use crate::talos::Secrets;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use lab_talos_api::stand_in::{Etcd, Readiness, StandIn};
use std::net::IpAddr;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Header naming the stand-in in every answer.
pub const HEADER: &str = "x-lab-stand-in";
/// Header with the address the connection came from, as the stand-in saw it (after any NAT).
pub const CLIENT_HEADER: &str = "x-lab-client";

/// What the node would serve, by role: kube-apiserver and Talos API on control planes, ingress
/// on workers, something to reach on the manager.
pub fn ports(role: crate::model::Role) -> (Vec<u16>, Vec<u16>) {
    use crate::model::Role;
    match role {
        Role::ControlPlane => (vec![], vec![6443]),
        Role::Worker => (vec![80], vec![443]),
        Role::Manager => (vec![80], vec![]),
        Role::Lb | Role::Vpn => (vec![], vec![]),
    }
}

/// Whether the node runs apid (on [`TALOS_API_PORT`]): every Talos node does.
pub fn talos_api(role: crate::model::Role) -> bool {
    matches!(
        role,
        crate::model::Role::ControlPlane | crate::model::Role::Worker
    )
}

/// The Talos API's port.
pub const TALOS_API_PORT: u16 = lab_talos_api::client::PORT;

/// The stand-in apid of node `name`, from the local lab in `state`: a certificate for the
/// node's addresses from the lab's OS CA, the admin kubeconfig of the lab's Kubernetes CA, and
/// a node counted ready once its own apid accepts connections.
fn talos_api_stand_in(
    name: &str,
    state: &Path,
) -> Result<(StandIn, lab_talos_api::stand_in::Tls), LocalError> {
    let failed = |problem: String| LocalError::StandIn(format!("Talos API of {name}: {problem}"));
    let local = super::state_dir::LocalStateDir::new(state);
    let lab = super::load_copy(&local)?;
    let secrets =
        Secrets::load(&local.talos().talos_secrets()).map_err(|e| failed(e.to_string()))?;
    let machine = lab
        .machines
        .iter()
        .find(|m| m.name.to_string() == name)
        .ok_or_else(|| failed("no such machine in lab.toml".to_owned()))?;
    let addresses: Vec<IpAddr> = machine
        .nics
        .iter()
        .map(|n| IpAddr::V4(n.address))
        .chain([IpAddr::V4(Ipv4Addr::LOCALHOST)])
        .collect();
    let tls = talos_api_tls(&secrets, name, &addresses).map_err(|e| failed(e.to_string()))?;
    let kubeconfig = admin_kubeconfig(&lab, &secrets).map_err(|e| failed(e.to_string()))?;
    let readiness: Readiness = Arc::new(|node: &str| {
        node.parse::<IpAddr>().is_ok_and(|ip| {
            std::net::TcpStream::connect_timeout(
                &SocketAddr::new(ip, TALOS_API_PORT),
                Duration::from_millis(300),
            )
            .is_ok()
        })
    });
    // Each node's process has its own copy of etcd's members: the lab's control planes, by
    // their kubelet (net2) addresses as the health check names them.
    let members: Vec<(String, String)> = lab
        .machines
        .iter()
        .filter(|m| m.role == crate::model::Role::ControlPlane)
        .filter_map(|m| {
            let address = m.address_on(crate::model::NetworkId::Net2)?;
            Some((m.name.to_string(), address.to_string()))
        })
        .collect();
    let stand_in = StandIn::new(
        name,
        &lab.cluster.talos_version,
        kubeconfig.into_bytes(),
        readiness,
    )
    .with_etcd(Etcd::new(&members));
    Ok((stand_in, tls))
}

/// What node `name`'s apid presents and trusts: a certificate for `addresses` from the
/// bundle's OS CA, and that CA for clients.
pub fn talos_api_tls(
    secrets: &Secrets,
    name: &str,
    addresses: &[IpAddr],
) -> Result<lab_talos_api::stand_in::Tls, crate::talos::PkiError> {
    let os_ca = secrets.os_ca().map_err(crate::talos::PkiError::Bundle)?;
    let server = pki::new_server(&os_ca, pki::KeyType::Ed25519, name, addresses)?;
    Ok(lab_talos_api::stand_in::Tls {
        crt: server.crt,
        key: server.key,
        client_ca: os_ca.crt,
    })
}

fn tls_config(name: &str) -> Result<Arc<rustls::ServerConfig>, LocalError> {
    let failed =
        |problem: String| LocalError::StandIn(format!("certificate for {name}: {problem}"));
    let certified = rcgen::generate_simple_self_signed(vec![name.to_owned()])
        .map_err(|e| failed(e.to_string()))?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| failed(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .map_err(|e| failed(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

async fn answer<S>(stream: S, name: Arc<str>, client: SocketAddr)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |_request| {
        let name = name.clone();
        async move {
            hyper::Response::builder()
                .header(HEADER, &*name)
                .header(CLIENT_HEADER, client.ip().to_string())
                .header("content-type", "text/plain")
                .body(Full::new(Bytes::from(format!("{name}\n"))))
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// Answers on `listener` until killed, HTTP over TLS when `secure`. With `up` (the node's apid
/// says whether the node is up), it is down with the node: while the node reboots after an
/// upgrade the port refuses and the connections open through it are cut, as a real node's
/// kube-apiserver and ingress are, and it opens again on `address` when the node is back.
async fn serve_port(
    mut listener: TcpListener,
    address: SocketAddr,
    secure: bool,
    name: Arc<str>,
    acceptor: TlsAcceptor,
    mut up: Option<tokio::sync::watch::Receiver<bool>>,
) {
    loop {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let went_down = async {
                match up.as_mut() {
                    Some(up) => drop(up.wait_for(|up| !*up).await),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, client)) = accepted else {
                        continue;
                    };
                    while connections.try_join_next().is_some() {}
                    let (name, acceptor) = (name.clone(), acceptor.clone());
                    connections.spawn(async move {
                        if secure {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                answer(stream, name, client).await;
                            }
                        } else {
                            answer(stream, name, client).await;
                        }
                    });
                }
                () = went_down => break,
            }
        }
        drop(listener);
        connections.abort_all();
        let Some(up) = up.as_mut() else {
            return;
        };
        if up.wait_for(|up| *up).await.is_err() {
            return;
        }
        listener = loop {
            match TcpListener::bind(address).await {
                Ok(listener) => break listener,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
    }
}

/// Serves until killed: plain HTTP on `http`, HTTP over TLS on `tls`, and with `talos_api`
/// (the local lab's state directory) the Talos API on [`TALOS_API_PORT`].
pub fn serve(
    name: &str,
    http: &[u16],
    tls: &[u16],
    talos_api: Option<&Path>,
) -> Result<(), LocalError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| LocalError::StandIn(e.to_string()))?;
    let apid = talos_api
        .map(|state| talos_api_stand_in(name, state))
        .transpose()?;
    let name: Arc<str> = Arc::from(name);
    let acceptor = TlsAcceptor::from(tls_config(&name)?);
    runtime.block_on(async move {
        let mut tasks = Vec::new();
        let up = apid.as_ref().map(|(apid, _)| apid.up());
        if let Some((apid, identity)) = apid {
            let port = TALOS_API_PORT;
            let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))
                .await
                .map_err(|e| LocalError::StandIn(format!("port {port}: {e}")))?;
            let name = name.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = apid.serve(listener, &identity).await {
                    eprintln!("stand-in {name}: {e}");
                }
            }));
        }
        for (port, secure) in http
            .iter()
            .map(|p| (*p, false))
            .chain(tls.iter().map(|p| (*p, true)))
        {
            let address = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
            let listener = TcpListener::bind(address)
                .await
                .map_err(|e| LocalError::StandIn(format!("port {port}: {e}")))?;
            let (name, acceptor) = (name.clone(), acceptor.clone());
            let up = up.clone();
            tasks.push(tokio::spawn(async move {
                serve_port(listener, address, secure, name, acceptor, up).await;
            }));
        }
        eprintln!(
            "stand-in {name}: HTTP on {http:?}, TLS on {tls:?}, Talos API: {}",
            talos_api.is_some()
        );
        for task in tasks {
            let _ = task.await;
        }
        Ok(())
    })
}
