//! Configuring the tunnel interface over netlink (rtnetlink), not by running `ip`.

use futures_util::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::{LinkUnspec, RouteMessageBuilder};
use std::net::{Ipv4Addr, Ipv6Addr};

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("cannot open a netlink socket: {0}")]
    Connect(std::io::Error),
    #[error("interface {0} not found")]
    NoSuchInterface(String),
    #[error("{what}: {source}")]
    Request {
        what: String,
        source: rtnetlink::Error,
    },
}

/// Gives interface `name` its addresses and MTU, brings it up, and routes `routes` through it.
pub async fn configure(
    name: &str,
    addresses: &[IpNet],
    mtu: u16,
    routes: &[IpNet],
) -> Result<(), NetlinkError> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Connect)?;
    let connection = tokio::spawn(connection);
    let result = async {
        let link = handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute()
            .try_next()
            .await
            .map_err(|source| NetlinkError::Request {
                what: format!("looking up {name}"),
                source,
            })?
            .ok_or_else(|| NetlinkError::NoSuchInterface(name.to_owned()))?;
        let index = link.header.index;
        for address in addresses {
            handle
                .address()
                .add(index, address.addr(), address.prefix_len())
                .replace()
                .execute()
                .await
                .map_err(|source| NetlinkError::Request {
                    what: format!("adding {address} to {name}"),
                    source,
                })?;
        }
        handle
            .link()
            .set(
                LinkUnspec::new_with_index(index)
                    .mtu(u32::from(mtu))
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(|source| NetlinkError::Request {
                what: format!("setting {name} up with MTU {mtu}"),
                source,
            })?;
        for route in routes {
            let message = match route {
                IpNet::V4(net) => RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(net.network(), net.prefix_len())
                    .output_interface(index)
                    .build(),
                IpNet::V6(net) => RouteMessageBuilder::<Ipv6Addr>::new()
                    .destination_prefix(net.network(), net.prefix_len())
                    .output_interface(index)
                    .build(),
            };
            handle
                .route()
                .add(message)
                .replace()
                .execute()
                .await
                .map_err(|source| NetlinkError::Request {
                    what: format!("routing {route} via {name}"),
                    source,
                })?;
        }
        Ok(())
    }
    .await;
    connection.abort();
    result
}
