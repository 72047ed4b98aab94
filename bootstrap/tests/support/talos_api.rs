//! A stand-in apid for tests, on a loopback address: lab-talos-api's stand-in with the
//! certificate the local lab gives its nodes (lab-bootstrap's own code), for the secrets of a
//! test's lab.

use lab_bootstrap::talos::Secrets;
use lab_talos_api::stand_in::{Readiness, StandIn, Tls};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// A running stand-in; stops with the test process.
pub struct Apid {
    /// Where it listens.
    pub address: SocketAddr,
    /// What it was asked (shared with the server).
    pub stand_in: StandIn,
}

impl Apid {
    /// Its ApplyConfiguration calls (not the dry runs) and health checks, in order: a
    /// rollout's sequence.
    #[allow(dead_code)] // not every test file rolls configs out
    pub fn rollout_calls(&self) -> Vec<String> {
        self.stand_in
            .record()
            .calls
            .into_iter()
            .map(|(_, call)| call)
            .filter(|c| !c.contains("dry-run"))
            .collect()
    }
}

/// Serves `stand_in` on `ip` (any free port) with `tls`.
pub fn serve(ip: IpAddr, stand_in: StandIn, tls: Tls) -> Apid {
    serve_on(ip, 0, stand_in, tls)
}

/// Serves `stand_in` on `ip`:`port` with `tls`, from a thread made here (in this thread's
/// network namespace, where it opens the socket again after an upgrade's reboot).
pub fn serve_on(ip: IpAddr, port: u16, stand_in: StandIn, tls: Tls) -> Apid {
    let listener = std::net::TcpListener::bind((ip, port)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let address = listener.local_addr().unwrap();
    let server = stand_in.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            server.serve(listener, &tls).await.unwrap();
        });
    });
    Apid { address, stand_in }
}

/// The stand-in of node `hostname` for `secrets`, its certificate for `ip`, serving
/// `kubeconfig` and judging nodes with `readiness`.
pub fn start(
    secrets: &Secrets,
    ip: IpAddr,
    hostname: &str,
    kubeconfig: &str,
    readiness: Readiness,
) -> Apid {
    let tls = lab_bootstrap::local::stand_in::talos_api_tls(secrets, hostname, &[ip]).unwrap();
    let stand_in = StandIn::new(
        hostname,
        "v1.13.9",
        kubeconfig.as_bytes().to_vec(),
        readiness,
    );
    serve(ip, stand_in, tls)
}

/// Every node ready.
pub fn all_ready() -> Readiness {
    Arc::new(|_: &str| true)
}
