//! Configuring the tunnel interface over netlink (rtnetlink), not by running `ip`.

use futures_util::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol,
};
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why the interface could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// No netlink socket could be opened.
    #[error("cannot open a netlink socket: {0}")]
    Connect(std::io::Error),
    /// The kernel has no interface of this name.
    #[error("interface {0} not found")]
    NoSuchInterface(String),
    /// The kernel refused a request.
    #[error("{what}: {source}")]
    Request {
        /// What was asked, for the message: `adding 10.8.0.1/24 to wg0`.
        what: String,
        /// What the kernel answered.
        source: rtnetlink::Error,
    },
}

/// Gives interface `name` its addresses and MTU, brings it up, and makes `routes` the routes
/// through it: ones added earlier and no longer wanted (a peer removed on reload) are deleted.
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
        sync_routes(&handle, name, index, routes).await
    }
    .await;
    connection.abort();
    result
}

/// The destination of a route message, as a network.
fn destination(message: &RouteMessage) -> Option<IpNet> {
    let length = message.header.destination_prefix_length;
    let address = message
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Destination(RouteAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
            RouteAttribute::Destination(RouteAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
            _ => None,
        })
        .unwrap_or(match message.header.address_family {
            rtnetlink::packet_route::AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        });
    IpNet::new(address, length).ok()
}

/// Static routes of the main table through interface `index`: the ones this daemon adds (the
/// kernel's own subnet routes and routes an admin added by hand with `ip route` differ in
/// protocol, and are left alone).
async fn routes_through(
    handle: &Handle,
    index: u32,
) -> Result<Vec<(IpNet, RouteMessage)>, rtnetlink::Error> {
    let mut found = Vec::new();
    for request in [
        RouteMessageBuilder::<Ipv4Addr>::new().build(),
        RouteMessageBuilder::<Ipv6Addr>::new().build(),
    ] {
        let mut dump = handle.route().get(request).execute();
        while let Some(message) = dump.try_next().await? {
            let ours = message.header.table == RouteHeader::RT_TABLE_MAIN
                && message.header.protocol == RouteProtocol::Static
                && message.attributes.contains(&RouteAttribute::Oif(index));
            if let (true, Some(net)) = (ours, destination(&message)) {
                found.push((net, message));
            }
        }
    }
    Ok(found)
}

async fn sync_routes(
    handle: &Handle,
    name: &str,
    index: u32,
    routes: &[IpNet],
) -> Result<(), NetlinkError> {
    let existing = routes_through(handle, index)
        .await
        .map_err(|source| NetlinkError::Request {
            what: format!("listing the routes via {name}"),
            source,
        })?;
    for (net, message) in existing {
        if !routes.contains(&net) {
            handle
                .route()
                .del(message)
                .execute()
                .await
                .map_err(|source| NetlinkError::Request {
                    what: format!("removing the route to {net} via {name}"),
                    source,
                })?;
        }
    }
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
