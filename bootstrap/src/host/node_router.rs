//! Guests on the other Proxmox nodes of a cluster. `pct` and `qm` act only on the guests of the
//! node they run on, so a command for a guest on another node runs on that node, over SSH
//! to its `[[node]] address`, the way Proxmox admins reach them: the cluster's nodes trust each
//! other's root key through /etc/pve/priv/authorized_keys. A guest on the router node gets the
//! very commands it always did.
//!
//! `pct push` reads a file of the machine it runs on, so a file for a container on another node
//! is first copied with scp into [`STAGING_DIR`] there (root's alone: the vpn's key passes
//! through it), pushed with `pct push` on that node, then removed. `pct push` rather than
//! `cat >` inside the container: it sets the mode given and the owner (root, mapped for an
//! unprivileged container) exactly as on the router node, whatever the container's umask or a
//! file already there.

use super::{command_line, CommandError, Output, Runner};
use crate::model::Lab;
use crate::model::PlacementError;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// Where a file for a container on another node waits on that node for `pct push`.
pub const STAGING_DIR: &str = "/var/lib/lab-bootstrap";

/// A Proxmox node other than the router node, as SSH reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteNode {
    /// Its name (`[[node]] name`).
    pub name: String,
    /// Its management address (`[[node]] address`).
    pub address: Ipv4Addr,
}

impl RemoteNode {
    /// `ssh`'s arguments up to the remote command: no password prompt that would wait for a
    /// terminal, and a bounded wait for a node that is down.
    fn ssh_args(&self) -> Vec<String> {
        let mut args = connect_options();
        args.push(format!("root@{}", self.address));
        args.push("--".to_owned());
        args
    }
}

fn connect_options() -> Vec<String> {
    ["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
        .map(str::to_owned)
        .to_vec()
}

/// Runs `pct` and `qm` for each guest on the node it is on, everything else through `inner` as
/// it is.
pub struct NodeRouter<R> {
    inner: R,
    /// The guests on another node than the router node, by VMID.
    remote: BTreeMap<u32, RemoteNode>,
    /// The nodes SSH reached already in this run.
    reached: BTreeSet<String>,
    /// The nodes whose [`STAGING_DIR`] was made in this run.
    staging_made: BTreeSet<String>,
}

impl<R: Runner> NodeRouter<R> {
    /// The router for `lab`'s guests: each on the node `located` says it is on (by VMID, as
    /// the Proxmox API reported it: HA or an admin may have moved it), one not there yet where
    /// placement (`Lab::placement`) creates it. On one node, or with every guest on the router
    /// node, it runs everything through `inner` unchanged.
    pub fn new(
        lab: &Lab,
        located: &BTreeMap<u32, String>,
        inner: R,
    ) -> Result<Self, PlacementError> {
        let placement = lab.placement()?;
        let mut remote = BTreeMap::new();
        for guest in lab.guests() {
            let Some(node) = located
                .get(&guest.vmid)
                .or_else(|| placement.get(guest.name.as_str()))
            else {
                continue;
            };
            if *node == lab.proxmox.node {
                continue;
            }
            if let Some(entry) = lab.nodes.iter().find(|n| &n.name == node) {
                remote.insert(
                    guest.vmid,
                    RemoteNode {
                        name: entry.name.clone(),
                        address: entry.address,
                    },
                );
            }
        }
        Ok(Self {
            inner,
            remote,
            reached: BTreeSet::new(),
            staging_made: BTreeSet::new(),
        })
    }

    /// The runner every command goes through in the end.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// The node other than the router node that a `pct`/`qm` command is for: every subcommand
    /// lab-bootstrap runs (`status`, `start`, `exec`, `push`) names the guest's VMID first.
    fn remote_for(&self, program: &str, args: &[&str]) -> Option<RemoteNode> {
        if !matches!(program, "pct" | "qm") {
            return None;
        }
        let vmid: u32 = args.get(1)?.parse().ok()?;
        self.remote.get(&vmid).cloned()
    }

    /// Fails, naming the node and its address, unless SSH reaches it as root: without this, a
    /// node that is down would read as guests that are merely stopped.
    fn reach(&mut self, node: &RemoteNode) -> Result<(), CommandError> {
        if self.reached.contains(&node.name) {
            return Ok(());
        }
        let mut args = node.ssh_args();
        args.push("true".to_owned());
        let probe = self.inner.run("ssh", &as_strs(&args))?;
        if !probe.success {
            return Err(CommandError::Unreachable {
                node: node.name.clone(),
                address: node.address,
                stderr: probe.stderr.trim().to_owned(),
            });
        }
        self.reached.insert(node.name.clone());
        Ok(())
    }

    /// `program args` run on `node` (each argument quoted for its shell, which ssh hands the
    /// command line to).
    fn on_node(
        &mut self,
        node: &RemoteNode,
        program: &str,
        args: &[&str],
    ) -> Result<Output, CommandError> {
        let mut ssh = node.ssh_args();
        ssh.push(program.to_owned());
        ssh.extend(args.iter().map(|a| shell_quote(a)));
        self.inner.run("ssh", &as_strs(&ssh))
    }

    /// `pct push VMID SOURCE TARGET --perms MODE` for a container on `node`: SOURCE copied into
    /// [`STAGING_DIR`] there, pushed, then removed whether the push succeeded or not.
    fn push(&mut self, node: &RemoteNode, args: &[&str]) -> Result<Output, CommandError> {
        let (Some(vmid), Some(source)) = (args.get(1), args.get(2)) else {
            return self.on_node(node, "pct", args);
        };
        if !self.staging_made.contains(&node.name) {
            self.check_on_node(node, "install", &["-d", "-m", "700", STAGING_DIR])?;
            self.staging_made.insert(node.name.clone());
        }
        let staged = format!("{STAGING_DIR}/push-{vmid}");
        let mut scp = connect_options();
        scp.extend([
            "-q".to_owned(),
            (*source).to_owned(),
            format!("root@{}:{staged}", node.address),
        ]);
        let copy = self.inner.run("scp", &as_strs(&scp))?;
        if !copy.success {
            return Ok(copy);
        }
        let mut pushed = args.to_vec();
        pushed[2] = &staged;
        let push = self.on_node(node, "pct", &pushed);
        let removed = self.check_on_node(node, "rm", &["-f", &staged]);
        let push = push?;
        removed?;
        Ok(push)
    }

    fn check_on_node(
        &mut self,
        node: &RemoteNode,
        program: &str,
        args: &[&str],
    ) -> Result<Output, CommandError> {
        let output = self.on_node(node, program, args)?;
        if output.success {
            Ok(output)
        } else {
            Err(CommandError::Failed {
                command: format!(
                    "{} (on node {} {})",
                    command_line(program, args),
                    node.name,
                    node.address
                ),
                stderr: output.stderr.trim().to_owned(),
            })
        }
    }
}

impl<R: Runner> Runner for NodeRouter<R> {
    fn run(&mut self, program: &str, args: &[&str]) -> Result<Output, CommandError> {
        let Some(node) = self.remote_for(program, args) else {
            return self.inner.run(program, args);
        };
        self.reach(&node)?;
        if program == "pct" && args.first() == Some(&"push") {
            return self.push(&node, args);
        }
        self.on_node(&node, program, args)
    }

    /// [`Runner::check`], whose failure names the node a guest's command ran on.
    fn check(&mut self, program: &str, args: &[&str]) -> Result<Output, CommandError> {
        let output = self.run(program, args)?;
        if output.success {
            return Ok(output);
        }
        let mut command = command_line(program, args);
        if let Some(node) = self.remote_for(program, args) {
            command = format!("{command} (on node {} {})", node.name, node.address);
        }
        Err(CommandError::Failed {
            command,
            stderr: output.stderr.trim().to_owned(),
        })
    }
}

fn as_strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// `arg` as one word for a POSIX shell: as it is when nothing in it is special, else in single
/// quotes.
fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn arguments_reach_the_node_s_shell_as_one_word_each() {
        assert_eq!(shell_quote("/etc/lab-lb/lb.toml"), "/etc/lab-lb/lb.toml");
        assert_eq!(shell_quote("command -v nft"), "'command -v nft'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a;rm -rf /"), "'a;rm -rf /'");
    }
}
