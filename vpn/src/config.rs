//! `vpn.toml`: the types and their checks are lab-schema's, so lab-bootstrap renders the same
//! types lab-vpn loads.

pub use lab_schema::vpn::{Interface, Peer, VpnConfig};
