//! Layer 4: the TCP proxy, the splice that moves its bytes, the client socket both proxies read
//! from, and what is read off a connection before it is proxied (PROXY protocol, SNI).

pub(crate) mod client_socket;
pub(crate) mod proxy;
pub mod proxy_protocol;
pub(crate) mod replay;
pub mod sni;
pub(crate) mod splice;
