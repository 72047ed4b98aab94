//! `lab-lb`: the load balancer in front of the lab's Kubernetes API and ingress.
//!
//! [`config`] is the `lb.toml` schema, lab-schema's (also what `lab-bootstrap` serialises), and
//! the checks that read the files it names; [`daemon`] is the service the shared lifecycle in
//! `lab_daemon` runs. The rest, by what it holds: [`l4`] the TCP proxy and what it reads of a
//! connection (PROXY protocol, TLS ClientHello), `http` the L7 proxy (the router, our HTTP/1.1
//! path and pingora's adapter), `tls` certificates and TLS streams, `backend` the server pools,
//! their balancers and health checks; [`runtime_api`] the socket `lab-lb ctl` talks to, and
//! that client.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod backend;
mod clock;
pub mod config;
pub mod daemon;
mod http;
/// The HTTP/1.1 path's parsers for the fuzz targets; not an API.
#[doc(hidden)]
pub use http::h1::fuzzing as http1_fuzzing;
/// The HTTP/2 path's chunked-body reader for the fuzz targets; not an API.
#[doc(hidden)]
pub use http::h2::fuzzing as h2_fuzzing;
pub mod l4;
/// A TLS server connection of an `https` listener, for the fuzz targets; not an API.
#[doc(hidden)]
pub use tls::fuzzing as tls_fuzzing;
mod listener;
mod metrics;
mod refusals;
pub mod runtime_api;
mod status;
mod tls;

pub use config::LbConfig;
pub use daemon::LbDaemon;
