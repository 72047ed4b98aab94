//! `lab-lb`: the load balancer in front of the lab's Kubernetes API and ingress.
//!
//! [`config`] is the `lb.toml` schema, lab-schema's (also what `lab-bootstrap` serialises), and
//! the checks that read the files it names; [`daemon`] is the service the shared lifecycle in
//! `lab_daemon` runs.

#![forbid(unsafe_code)]

pub mod balance;
mod client_socket;
mod clock;
pub mod config;
pub mod daemon;
pub mod health;
mod http1;
/// The HTTP/1.1 path's parsers for the fuzz targets; not an API.
#[doc(hidden)]
pub use http1::fuzzing as http1_fuzzing;
pub mod http_config;
pub mod http_listener;
pub mod http_metrics;
pub mod http_proxy;
pub mod listener;
pub mod metrics;
pub mod pool;
pub mod proxy;
pub mod proxy_protocol;
mod replay;
pub mod sni;
pub mod splice;
pub mod status;
pub mod tls_certs;
pub mod tls_stream;
pub mod upstream_tls;

pub use config::LbConfig;
pub use daemon::LbDaemon;
