//! The manager VM's cloud-init user-data: its login, and a first-boot unit that installs the
//! tools of `[manager.tools]` (each checked against its SHA-256), places the talosconfig in the
//! user's home, fetches the kubeconfig from the cluster and bootstraps Flux when `[gitops]` is
//! set. The snippet carries the admin talosconfig (and the Git token): it is written 0600.
//!
//! The work is done by a systemd oneshot rather than cloud-init's `runcmd`, so a failed
//! download or a cluster not up yet is retried by systemd (bounded by its start limit), its
//! log is in the journal, and `systemctl restart lab-manager-setup` runs it again by hand.

use crate::model::{Checksum, Lab, NetworkId, Role, ToolError};
use serde::Serialize;

/// The first-boot script; its steps are skipped when done, so it can run at every boot.
pub const SETUP_SCRIPT: &str = include_str!("manager-setup.sh");
/// Where cloud-init writes the script on the manager.
pub const SETUP_SCRIPT_PATH: &str = "/usr/local/sbin/lab-manager-setup";
/// The unit that runs it.
pub const SETUP_UNIT: &str = "lab-manager-setup.service";
/// Its settings (shell assignments), the script's only argument.
pub const SETUP_ENV_PATH: &str = "/etc/lab-manager/setup.env";
/// The tools to install, one a line: `NAME VERSION URL MEMBER CHECKSUM`.
pub const TOOLS_PATH: &str = "/etc/lab-manager/tools";
/// The admin talosconfig as cloud-init writes it (root's, 0600); the script copies it home.
pub const TALOSCONFIG_PATH: &str = "/etc/lab-manager/talosconfig";
/// The Git token of `[gitops] token_file` (root's, 0600).
pub const GIT_TOKEN_PATH: &str = "/etc/lab-manager/git-token";
/// Where the script keeps what it has done.
pub const SETUP_STATE_DIR: &str = "/var/lib/lab-manager";

/// Tries of `talosctl kubeconfig` (and of the API before Flux) in one run, [`CLUSTER_DELAY_S`]
/// apart: 15 minutes, long enough for apply to bootstrap etcd after the VMs start.
const CLUSTER_TRIES: u32 = 90;
const CLUSTER_DELAY_S: u32 = 10;
/// curl's own retries of one download.
const DOWNLOAD_TRIES: u32 = 5;

/// The unit: after cloud-init's last stage (its packages are in), restarted on failure every
/// 30 s, at most 4 runs in 3 hours, so a lab that cannot come up ends with a failed unit.
const UNIT: &str = "\
[Unit]
Description=Lab manager: talosctl, kubectl, flux, helm, talosconfig and kubeconfig (lab-bootstrap)
Wants=network-online.target
After=network-online.target cloud-final.service
StartLimitIntervalSec=3h
StartLimitBurst=4

[Service]
Type=oneshot
# systemd sets no HOME for root's services; kubectl and flux keep their caches there.
Environment=HOME=/root
ExecStart=/usr/local/sbin/lab-manager-setup /etc/lab-manager/setup.env
Restart=on-failure
RestartSec=30

[Install]
WantedBy=multi-user.target
";

/// Why the manager's user-data cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// A tool's release cannot be decided from lab.toml.
    #[error(transparent)]
    Tools(#[from] ToolError),
    /// The cloud-config could not be written as YAML.
    #[error("the manager's cloud-init: {0}")]
    Yaml(String),
}

/// What the snippet carries besides lab.toml: the secrets and the login's keys.
#[derive(Debug, Clone, Copy)]
pub struct ManagerInputs<'a> {
    /// The admin talosconfig.
    pub talosconfig: &'a str,
    /// The OpenSSH public keys of `[manager] ssh_keys_file`, one a line.
    pub ssh_keys: Option<&'a str>,
    /// The token of `[gitops] token_file`.
    pub git_token: Option<&'a str>,
}

#[derive(Serialize)]
struct CloudConfig<'a> {
    hostname: &'a str,
    fqdn: String,
    manage_etc_hosts: bool,
    users: Vec<User<'a>>,
    packages: Vec<&'static str>,
    write_files: Vec<WriteFile>,
    runcmd: Vec<Vec<String>>,
}

#[derive(Serialize)]
struct User<'a> {
    name: &'a str,
    groups: Vec<&'static str>,
    shell: &'static str,
    sudo: &'static str,
    lock_passwd: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ssh_authorized_keys: Vec<&'a str>,
}

/// One file of the manager's `write_files`.
#[derive(Debug, Serialize)]
pub struct WriteFile {
    /// Where it goes on the manager.
    pub path: String,
    /// Its mode, octal as cloud-init takes it (`0644`).
    pub permissions: &'static str,
    /// Its text.
    pub content: String,
    /// Written after the packages are installed, so no package's own default (or dpkg's
    /// question about a changed conffile) comes after it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub defer: bool,
}

/// What another part of the lab adds to the manager's one cloud-config (cloud-init takes a
/// single user-data; vendor-data would lose its lists to the user-data's same keys).
#[derive(Debug, Default)]
pub struct CloudConfigPart {
    /// Debian packages to install.
    pub packages: Vec<&'static str>,
    /// Files to write.
    pub write_files: Vec<WriteFile>,
    /// Commands run once at first boot, after the packages and files, before the setup unit.
    pub runcmd: Vec<Vec<String>>,
}

/// `[manager.tools]` as the script reads it: one line per tool.
pub fn tools_file(lab: &Lab) -> Result<String, ToolError> {
    let mut out = String::new();
    for tool in lab.manager_tools()? {
        let checksum = match &tool.checksum {
            Checksum::Pinned(sha) => format!("sha256:{sha}"),
            Checksum::Published(url) => url.clone(),
        };
        out.push_str(&format!(
            "{} {} {} {} {checksum}\n",
            tool.name,
            tool.version,
            tool.url,
            tool.member.as_deref().unwrap_or("-"),
        ));
    }
    Ok(out)
}

/// `value` as one single-quoted shell word.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// The script's settings: the user, where things go, the control planes, `[gitops]`.
pub fn setup_env(lab: &Lab) -> String {
    let user = &lab.manager.user;
    let control_planes: Vec<String> = lab
        .addresses_of(Role::ControlPlane, NetworkId::Net1)
        .iter()
        .map(ToString::to_string)
        .collect();
    let mut vars = vec![
        ("LAB_USER", user.clone()),
        // cloud-init's default home for a user it creates.
        ("LAB_HOME", format!("/home/{user}")),
        ("LAB_TOOLS_FILE", TOOLS_PATH.to_owned()),
        ("LAB_BIN_DIR", "/usr/local/bin".to_owned()),
        ("LAB_TALOSCONFIG", TALOSCONFIG_PATH.to_owned()),
        ("LAB_STATE_DIR", SETUP_STATE_DIR.to_owned()),
        ("LAB_CONTROL_PLANES", control_planes.join(" ")),
        ("LAB_CURL_PROTO", "=https".to_owned()),
        ("LAB_DOWNLOAD_TRIES", DOWNLOAD_TRIES.to_string()),
        ("LAB_CLUSTER_TRIES", CLUSTER_TRIES.to_string()),
        ("LAB_CLUSTER_DELAY", CLUSTER_DELAY_S.to_string()),
    ];
    if let (Some(gitops), Some(path)) = (&lab.gitops, lab.gitops_path()) {
        vars.extend([
            ("LAB_GITOPS_URL", gitops.url.clone()),
            ("LAB_GITOPS_BRANCH", gitops.branch.clone()),
            ("LAB_GITOPS_PATH", path),
            ("LAB_GITOPS_USERNAME", gitops.username.clone()),
            ("LAB_GITOPS_TOKEN_FILE", GIT_TOKEN_PATH.to_owned()),
        ]);
    }
    let mut out = String::from("# Rendered by lab-bootstrap from lab.toml.\n");
    for (name, value) in vars {
        out.push_str(&format!("{name}={}\n", shell_quote(&value)));
    }
    out
}

/// The manager's user-data (`#cloud-config`), for `cicustom: user=`; it replaces what Proxmox
/// would make from `ciuser`/`sshkeys`, so it creates the login itself.
/// `more` (dashboards and logging) joins the same cloud-config.
pub fn user_data(
    lab: &Lab,
    manager: &str,
    inputs: ManagerInputs,
    more: CloudConfigPart,
) -> Result<String, ManagerError> {
    let private = |path: &str, content: &str| WriteFile {
        path: path.to_owned(),
        permissions: "0600",
        content: content.to_owned(),
        defer: false,
    };
    let mut write_files = vec![
        WriteFile {
            path: SETUP_SCRIPT_PATH.to_owned(),
            permissions: "0755",
            content: SETUP_SCRIPT.to_owned(),
            defer: false,
        },
        WriteFile {
            path: "/etc/systemd/system/lab-manager-setup.service".to_owned(),
            permissions: "0644",
            content: UNIT.to_owned(),
            defer: false,
        },
        private(SETUP_ENV_PATH, &setup_env(lab)),
        private(TOOLS_PATH, &tools_file(lab)?),
        private(TALOSCONFIG_PATH, inputs.talosconfig),
    ];
    if let (Some(_), Some(token)) = (&lab.gitops, inputs.git_token) {
        write_files.push(private(GIT_TOKEN_PATH, &format!("{token}\n")));
    }
    write_files.extend(more.write_files);
    let mut packages = vec!["curl", "ca-certificates"];
    for package in more.packages {
        if !packages.contains(&package) {
            packages.push(package);
        }
    }
    let command = |words: &[&str]| words.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>();
    let mut runcmd = vec![command(&["systemctl", "daemon-reload"])];
    runcmd.extend(more.runcmd);
    runcmd.extend([
        command(&["systemctl", "enable", SETUP_UNIT]),
        // Queued, not waited for: the unit runs after cloud-final, which this is part of.
        command(&["systemctl", "start", "--no-block", SETUP_UNIT]),
    ]);
    let config = CloudConfig {
        hostname: manager,
        fqdn: format!("{manager}.{}", lab.networks.domain),
        manage_etc_hosts: true,
        users: vec![User {
            name: &lab.manager.user,
            groups: vec!["sudo"],
            shell: "/bin/bash",
            sudo: "ALL=(ALL) NOPASSWD:ALL",
            lock_passwd: true,
            ssh_authorized_keys: inputs
                .ssh_keys
                .map(|keys| {
                    keys.lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty() && !l.starts_with('#'))
                        .collect()
                })
                .unwrap_or_default(),
        }],
        packages,
        write_files,
        runcmd,
    };
    let yaml = serde_norway::to_string(&config).map_err(|e| ManagerError::Yaml(e.to_string()))?;
    Ok(format!("#cloud-config\n{yaml}"))
}
