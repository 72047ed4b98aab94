//! The Debian packages the host's own units run: dnsmasq for `lab-dnsmasq@`, nft for
//! `lab-network`'s ruleset, the node exporter and journal upload the manager watches the host
//! with. Proxmox VE ships none of them by default; apply installs what is missing
//! before anything needs it.

use super::containers::{Package, JOURNAL_UPLOAD};
use super::{CommandError, HostError, Runner};

/// `dnsmasq-base` holds `/usr/sbin/dnsmasq` alone: the `dnsmasq` package would also start its
/// own `dnsmasq.service` on every interface, clashing with the per-bridge instances and with
/// the DNS the node already runs.
const DNSMASQ: Package = Package {
    command: "dnsmasq",
    name: "dnsmasq-base",
};

const NFTABLES: Package = Package {
    command: "nft",
    name: "nftables",
};

/// The host's metrics for the manager's Prometheus (`render::observability`).
const NODE_EXPORTER: Package = Package {
    command: "prometheus-node-exporter",
    name: "prometheus-node-exporter",
};

/// The packages the host lacks, by whether their command is on its PATH (read-only).
pub fn missing(runner: &mut dyn Runner) -> Result<Vec<Package>, CommandError> {
    let mut out = Vec::new();
    for package in [DNSMASQ, NFTABLES, NODE_EXPORTER, JOURNAL_UPLOAD] {
        let probe = format!("command -v {}", package.command);
        if !runner.run("sh", &["-c", &probe])?.success {
            out.push(package);
        }
    }
    Ok(out)
}

/// Installs `packages` on the host with apt-get.
pub fn install(runner: &mut dyn Runner, packages: &[Package]) -> Result<(), HostError> {
    let names: Vec<&str> = packages.iter().map(|p| p.name).collect();
    let fail = |e: CommandError| HostError::HostInstall {
        packages: names.join(" "),
        reason: e.to_string(),
    };
    // noninteractive: no prompt may wait for a terminal apply does not have.
    let apt = ["DEBIAN_FRONTEND=noninteractive", "apt-get", "-q"];
    let update: Vec<&str> = apt.iter().copied().chain(["update"]).collect();
    runner.check("env", &update).map_err(fail)?;
    let install: Vec<&str> = apt
        .iter()
        .copied()
        .chain(["-y", "--no-install-recommends", "install"])
        .chain(packages.iter().map(|p| p.name))
        .collect();
    runner.check("env", &install).map_err(fail)?;
    Ok(())
}
