//! Stand-ins for what the lab's VMs would serve, since Talos cannot boot here: on each port the
//! real node serves, a server answering every HTTP request with the node's name, over TLS (a
//! certificate made for the node at start) where the real service speaks TLS. The balancer's
//! health checks and balancing then meet real servers; `status` says they are stand-ins.

use super::LocalError;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
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
        Role::ControlPlane => (vec![], vec![6443, 50000]),
        Role::Worker => (vec![80], vec![443]),
        Role::Manager => (vec![80], vec![]),
        Role::Lb | Role::Vpn => (vec![], vec![]),
    }
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

/// Serves until killed: plain HTTP on `http`, HTTP over TLS on `tls`.
pub fn serve(name: &str, http: &[u16], tls: &[u16]) -> Result<(), LocalError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| LocalError::StandIn(e.to_string()))?;
    let name: Arc<str> = Arc::from(name);
    let acceptor = TlsAcceptor::from(tls_config(&name)?);
    runtime.block_on(async move {
        let mut tasks = Vec::new();
        for (port, secure) in http
            .iter()
            .map(|p| (*p, false))
            .chain(tls.iter().map(|p| (*p, true)))
        {
            let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))
                .await
                .map_err(|e| LocalError::StandIn(format!("port {port}: {e}")))?;
            let (name, acceptor) = (name.clone(), acceptor.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let Ok((stream, client)) = listener.accept().await else {
                        continue;
                    };
                    let (name, acceptor) = (name.clone(), acceptor.clone());
                    tokio::spawn(async move {
                        if secure {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                answer(stream, name, client).await;
                            }
                        } else {
                            answer(stream, name, client).await;
                        }
                    });
                }
            }));
        }
        eprintln!("stand-in {name}: HTTP on {http:?}, TLS on {tls:?}");
        for task in tasks {
            let _ = task.await;
        }
        Ok(())
    })
}
