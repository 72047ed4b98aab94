//! TLS: listeners' certificates chosen by SNI, the server side stream, and the client side to
//! upstream servers.

pub(crate) mod certs;
pub(crate) mod stream;
pub(crate) mod upstream;
