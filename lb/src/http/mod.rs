//! Layer 7: [`router`] is a listener's routing, shared by our HTTP/1.1 path ([`h1`]) and
//! pingora's ([`pingora`], the adapter for h2, upgrades and TLS or h2 upstreams); [`listener`]
//! accepts and hands each connection to one of them.

pub(crate) mod h1;
pub(crate) mod h2;
pub(crate) mod idle;
pub(crate) mod listener;
pub(crate) mod metrics;
pub(crate) mod pingora;
pub(crate) mod router;
