//! How many connections a listening socket holds open, in all and per client address: past
//! either limit a new connection is closed at once, so no single address (nor a flood of them)
//! can take the process's file descriptors. lab-lb's listeners and both daemons' metrics
//! endpoints count with it.

use ipnet::IpNet;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// A listener's limits, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once on the socket, from all clients together.
    pub total: usize,
    /// Connections open at once from one client address (unless it is `exempt`).
    pub per_client: usize,
    /// Sources counted only in the total: upstream proxies that carry many clients' connections
    /// (`accept_proxy_from`).
    pub exempt: Vec<IpNet>,
}

/// Which limit refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    /// The socket holds [`Limits::total`] connections already.
    Total,
    /// The client's address holds [`Limits::per_client`] connections already.
    PerClient,
}

/// The connections open on one listening socket. It outlives reloads with the socket, so a
/// lowered limit applies to the connections already open.
#[derive(Default)]
pub struct Admission {
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    total: usize,
    /// Only addresses with a connection open: the map never holds more entries than `total`.
    by_client: HashMap<IpAddr, usize>,
}

/// One admitted connection; gives its place back when dropped.
pub struct Admitted {
    admission: Arc<Admission>,
    client: Option<IpAddr>,
}

impl Admission {
    fn open(&self) -> MutexGuard<'_, Open> {
        // Counting never panics while holding the lock; a poisoned one is still consistent.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a place for a connection from `client`, or says which limit is reached.
    pub fn admit(self: &Arc<Self>, client: IpAddr, limits: &Limits) -> Result<Admitted, Over> {
        let mut open = self.open();
        if open.total >= limits.total {
            return Err(Over::Total);
        }
        let counted = !limits.exempt.iter().any(|net| net.contains(&client));
        if counted {
            let from_client = open.by_client.entry(client).or_insert(0);
            if *from_client >= limits.per_client {
                return Err(Over::PerClient);
            }
            *from_client += 1;
        }
        open.total += 1;
        Ok(Admitted {
            admission: self.clone(),
            client: counted.then_some(client),
        })
    }

    /// Connections open now.
    pub fn total(&self) -> usize {
        self.open().total
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.admission.open();
        open.total = open.total.saturating_sub(1);
        if let Some(client) = self.client {
            if let Some(count) = open.by_client.get_mut(&client) {
                *count -= 1;
                if *count == 0 {
                    open.by_client.remove(&client);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_client: usize, exempt: &[&str]) -> Limits {
        Limits {
            total,
            per_client,
            exempt: exempt.iter().map(|n| n.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn one_address_is_held_to_its_share_and_others_still_get_in() {
        let admission = Arc::new(Admission::default());
        let limits = limits(10, 2, &[]);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = admission.admit(a, &limits).unwrap();
        let _second = admission.admit(a, &limits).unwrap();
        assert_eq!(admission.admit(a, &limits).err(), Some(Over::PerClient));
        let _other = admission.admit(b, &limits).unwrap();
        drop(first);
        let _again = admission.admit(a, &limits).unwrap();
        assert_eq!(admission.total(), 3);
    }

    #[test]
    fn the_total_holds_over_all_addresses_and_places_come_back() {
        let admission = Arc::new(Admission::default());
        let limits = limits(3, 2, &[]);
        let held: Vec<Admitted> = (1..=3)
            .map(|i| {
                let ip: IpAddr = format!("192.0.2.{i}").parse().unwrap();
                admission.admit(ip, &limits).unwrap()
            })
            .collect();
        let late: IpAddr = "192.0.2.9".parse().unwrap();
        assert_eq!(admission.admit(late, &limits).err(), Some(Over::Total));
        drop(held);
        assert_eq!(admission.total(), 0);
        assert!(admission.open().by_client.is_empty(), "entries left behind");
        assert!(admission.admit(late, &limits).is_ok());
    }

    #[test]
    fn an_upstream_proxy_counts_only_in_the_total() {
        let admission = Arc::new(Admission::default());
        let limits = limits(100, 1, &["10.10.2.0/24"]);
        let proxy: IpAddr = "10.10.2.7".parse().unwrap();
        let held: Vec<Admitted> = (0..5)
            .map(|_| admission.admit(proxy, &limits).unwrap())
            .collect();
        assert_eq!(held.len(), 5);
        assert!(admission.open().by_client.is_empty());
    }
}
