//! The wg-quick configuration an admin peer needs: lab-schema's, which lab-bootstrap writes
//! too.

pub use lab_schema::vpn::client_config::{ClientConfig, ClientPeer, NoEndpoint};
