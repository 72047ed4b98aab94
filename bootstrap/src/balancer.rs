//! lab-lb's runtime API as day-two operations use it: a node's servers drained before the node
//! goes down, waited for until their last connection or request finished, and enabled again
//! once it is back. lab-bootstrap never links lab-lb: it runs `lab-lb ctl` inside the lb
//! container (`pct exec <vmid> -- lab-lb ctl …`), where the socket is, as an admin would.

use crate::host::{command_line, CommandError, Runner};
use crate::model::{Lab, Role};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Why the balancer could not be asked or did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum BalancerError {
    /// lab.toml has no lb container.
    #[error("lab.toml has no [[machine]] with role = \"lb\": no balancer to drain nodes at")]
    NoBalancer,
    /// `lab-lb ctl` could not be run, or refused.
    #[error("the balancer's runtime API: {0}")]
    Command(#[from] CommandError),
    /// `lab-lb ctl servers` printed something else than its listing.
    #[error("the balancer's runtime API: `{command}` printed an unexpected line: `{line}`")]
    Listing {
        /// The command run.
        command: String,
        /// The line that is not a server.
        line: String,
    },
}

/// One server entry of the running lb.toml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// Its backend.
    pub backend: String,
    /// Its address.
    pub address: SocketAddr,
    /// Its state as `lab-lb ctl servers` shows it: `ready`, `draining`, `drained`, `disabled`.
    pub state: String,
}

impl Server {
    /// `BACKEND/ADDRESS`, as `lab-lb ctl` names a server.
    pub fn name(&self) -> String {
        format!("{}/{}", self.backend, self.address)
    }

    /// `servers`' names, comma-separated, or `(no servers)`: what progress lines say.
    pub fn names(servers: &[Server]) -> String {
        if servers.is_empty() {
            return "(no servers)".to_owned();
        }
        servers
            .iter()
            .map(Server::name)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whether it was drained or disabled (and not enabled since).
    pub fn is_held_back(&self) -> bool {
        matches!(self.state.as_str(), "draining" | "drained" | "disabled")
    }
}

/// The runtime API of the lab's lb container, or of both containers of an lb pair (each has
/// its own servers' states, so a drain is made, and waited for, on both).
pub struct Balancer<'a> {
    vmids: Vec<String>,
    runner: &'a mut dyn Runner,
}

impl<'a> Balancer<'a> {
    /// The balancer of `lab`, reached with `runner` on the Proxmox host.
    pub fn of(lab: &Lab, runner: &'a mut dyn Runner) -> Result<Self, BalancerError> {
        let vmids: Vec<String> = lab
            .instances(Role::Lb)
            .iter()
            .map(|m| m.vmid.to_string())
            .collect();
        if vmids.is_empty() {
            return Err(BalancerError::NoBalancer);
        }
        Ok(Self { vmids, runner })
    }

    fn ctl_on(&mut self, vmid: &str, request: &[&str]) -> Result<String, BalancerError> {
        let mut args = vec!["exec", vmid, "--", "lab-lb", "ctl"];
        args.extend_from_slice(request);
        Ok(self.runner.check("pct", &args)?.stdout)
    }

    /// `request` on every container of the balancer, in turn.
    fn ctl(&mut self, request: &[&str]) -> Result<(), BalancerError> {
        for vmid in self.vmids.clone() {
            self.ctl_on(&vmid, request)?;
        }
        Ok(())
    }

    /// Every server entry whose address is `ip` (a node's net2 address: its kube-apiserver,
    /// its ingress ports), in lb.toml's order; held back when it is on any container.
    pub fn servers_of(&mut self, ip: IpAddr) -> Result<Vec<Server>, BalancerError> {
        let mut servers: Vec<Server> = Vec::new();
        for vmid in self.vmids.clone() {
            for server in self.listing_of(&vmid, ip)? {
                match servers
                    .iter_mut()
                    .find(|s| s.backend == server.backend && s.address == server.address)
                {
                    Some(known) if !known.is_held_back() => known.state = server.state,
                    Some(_) => {}
                    None => servers.push(server),
                }
            }
        }
        Ok(servers)
    }

    fn listing_of(&mut self, vmid: &str, ip: IpAddr) -> Result<Vec<Server>, BalancerError> {
        let listing = self.ctl_on(vmid, &["servers"])?;
        let mut servers = Vec::new();
        // The header, then `backend server state health active weight`.
        for line in listing.lines().skip(1).filter(|l| !l.trim().is_empty()) {
            let words: Vec<&str> = line.split_whitespace().collect();
            let address = words.get(1).and_then(|a| a.parse::<SocketAddr>().ok());
            let (Some(backend), Some(address), Some(state)) =
                (words.first(), address, words.get(2))
            else {
                return Err(BalancerError::Listing {
                    command: command_line("pct", &["exec", vmid, "--", "lab-lb", "ctl", "servers"]),
                    line: line.to_owned(),
                });
            };
            if address.ip() == ip {
                servers.push(Server {
                    backend: (*backend).to_owned(),
                    address,
                    state: (*state).to_owned(),
                });
            }
        }
        Ok(servers)
    }

    /// No new connections or requests to `server`; those open finish.
    pub fn drain(&mut self, server: &Server) -> Result<(), BalancerError> {
        self.ctl(&["drain", &server.name()])
    }

    /// Waits, at most `timeout`, until `server`'s last connection or request finished.
    pub fn wait_drained(
        &mut self,
        server: &Server,
        timeout: Duration,
    ) -> Result<(), BalancerError> {
        let timeout = format!("{}s", timeout.as_secs().max(1));
        self.ctl(&["wait-drained", &server.name(), "--timeout", &timeout])
    }

    /// `server` takes connections and requests again (once its health checks pass).
    pub fn enable(&mut self, server: &Server) -> Result<(), BalancerError> {
        self.ctl(&["enable", &server.name()])
    }
}
