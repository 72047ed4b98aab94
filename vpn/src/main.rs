#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use lab_daemon::cli::{self, DaemonCommand, RunArgs};
use lab_daemon::DaemonConfig;
use lab_vpn::key::{PrivateKey, PublicKey};
use lab_vpn::peer_admin::{self, AddRequest, PeerError};
use lab_vpn::{qr, VpnConfig, VpnDaemon};
use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Userspace WireGuard gateway into the lab's administration network.
#[derive(Parser)]
#[command(name = "lab-vpn", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    #[command(flatten)]
    Daemon(DaemonCommand),
    /// Print a new private key, as `wg genkey` does
    Genkey,
    /// Read a private key on stdin, print its public key, as `wg pubkey` does
    Pubkey,
    /// Add, remove or list admin peers in vpn.toml (applied live if the daemon runs)
    #[command(subcommand)]
    Peer(PeerCommand),
    /// Make this host forward nothing through any WireGuard interface lab-vpn has not opened:
    /// the nftables table `inet lab_vpn` with a forward policy of drop, which stays when lab-vpn
    /// stops. The unit runs it before anything else; it needs no config and keeps the rules of
    /// a running lab-vpn.
    Guard,
}

#[derive(Subcommand)]
enum PeerCommand {
    /// Add a peer: next free tunnel address, a new key pair (or --public-key), vpn.toml
    /// rewritten atomically, the running daemon reloaded. The client's wg-quick config goes to
    /// stdout (or --output), its QR code to stderr.
    Add {
        /// The peer's name (letters, digits, `-`, `_`)
        name: String,
        #[arg(short, long, value_name = "FILE", default_value = VpnConfig::DEFAULT_PATH)]
        config: PathBuf,
        /// Use this public key instead of generating a key pair
        #[arg(long, value_name = "KEY")]
        public_key: Option<PublicKey>,
        /// Tunnel address for the peer instead of the next free one
        #[arg(long, value_name = "IP")]
        address: Option<IpAddr>,
        /// Also generate a preshared key (stored as NAME.psk next to the config, 0600)
        #[arg(long)]
        preshared_key: bool,
        /// Gateway address for the client [default: interface.public_endpoint]
        #[arg(long, value_name = "HOST:PORT")]
        endpoint: Option<String>,
        /// The client's PersistentKeepalive in seconds; 0 leaves it out
        #[arg(long, value_name = "SECONDS", default_value_t = lab_vpn::client_config::ClientConfig::DEFAULT_KEEPALIVE)]
        keepalive: u16,
        /// Write the client config to FILE (created 0600) instead of stdout
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Also write the QR code as a PNG image (created 0600)
        #[arg(long, value_name = "FILE")]
        qr_png: Option<PathBuf>,
        /// Do not draw the QR code
        #[arg(long)]
        no_qr: bool,
    },
    /// Remove a peer from vpn.toml and the running daemon
    Remove {
        name: String,
        #[arg(short, long, value_name = "FILE", default_value = VpnConfig::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// List peers with their latest handshake and transfer
    List {
        #[arg(short, long, value_name = "FILE", default_value = VpnConfig::DEFAULT_PATH)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = match cli::parse::<Cli>() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    match cli.command {
        Some(Command::Daemon(command)) => command.execute::<VpnDaemon>(),
        None => cli::run::<VpnDaemon>(cli.run),
        Some(Command::Peer(command)) => match peer(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                for line in e.to_string().lines() {
                    eprintln!("lab-vpn peer: {line}");
                }
                if e.is_config() {
                    lab_daemon::exit::code(lab_daemon::exit::CONFIG)
                } else {
                    ExitCode::FAILURE
                }
            }
        },
        Some(Command::Guard) => match lab_vpn::forwarding::install_guard() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lab-vpn guard: {e}");
                lab_daemon::exit::code(lab_daemon::exit::OS_ERROR)
            }
        },
        Some(Command::Genkey) => {
            lab_daemon::cli::out(&format!("{}\n", PrivateKey::generate().expose_base64()));
            ExitCode::SUCCESS
        }
        Some(Command::Pubkey) => {
            let mut text = String::new();
            let read = std::io::stdin().take(1024).read_to_string(&mut text);
            match read.ok().and_then(|_| text.parse::<PrivateKey>().ok()) {
                Some(key) => {
                    lab_daemon::cli::out(&format!("{}\n", key.public_key()));
                    ExitCode::SUCCESS
                }
                None => {
                    // As `wg pubkey`: the input is a secret, so it is not echoed.
                    eprintln!("lab-vpn pubkey: stdin is not a WireGuard private key (44 base64 characters)");
                    lab_daemon::exit::code(lab_daemon::exit::USAGE)
                }
            }
        }
    }
}

fn describe_live(live: Option<bool>, interface: &str) -> String {
    match live {
        None => format!("lab-vpn is not running for {interface}; it takes effect when it starts"),
        Some(true) => format!("applied to the running {interface}"),
        Some(false) => format!(
            "the running {interface} did not take the change; its log says why (journalctl -u lab-vpn)"
        ),
    }
}

fn interface_name(config: &Path) -> String {
    lab_vpn::config::load(config)
        .map(|c| c.interface.name)
        .unwrap_or_else(|_| "the interface".to_owned())
}

fn peer(command: PeerCommand) -> Result<(), PeerError> {
    match command {
        PeerCommand::Add {
            name,
            config,
            public_key,
            address,
            preshared_key,
            endpoint,
            keepalive,
            output,
            qr_png,
            no_qr,
        } => {
            let request = AddRequest {
                name,
                public_key,
                address,
                preshared_key,
                endpoint,
                keepalive,
            };
            let added = peer_admin::add(&config, &request)?;
            let text = added.client.to_string();
            eprintln!(
                "lab-vpn peer: added `{}` with {} to {}; {}",
                request.name,
                added.client.address,
                config.display(),
                describe_live(added.live, &interface_name(&config))
            );
            match &output {
                Some(path) => {
                    lab_daemon::files::write_atomic(path, text.as_bytes(), 0o600).map_err(
                        |source| PeerError::Write {
                            path: path.display().to_string(),
                            source,
                        },
                    )?;
                    eprintln!("lab-vpn peer: client config written to {}", path.display());
                }
                None => print!("{text}"),
            }
            if let Some(path) = &qr_png {
                qr::write_png(&text, path)?;
                eprintln!("lab-vpn peer: QR code written to {}", path.display());
            }
            if !no_qr {
                eprintln!("{}", qr::terminal(&text)?);
            }
            Ok(())
        }
        PeerCommand::Remove { name, config } => {
            let live = peer_admin::remove(&config, &name)?;
            eprintln!(
                "lab-vpn peer: removed `{name}` from {}; {}",
                config.display(),
                describe_live(live, &interface_name(&config))
            );
            Ok(())
        }
        PeerCommand::List { config } => {
            let (peers, running) = peer_admin::list(&config)?;
            lab_daemon::cli::out(&format!(
                "{:<20} {:<20} {:<24} {:<28} {:>12} {:>12}\n",
                "NAME", "ALLOWED IPS", "ENDPOINT", "LATEST HANDSHAKE", "RECEIVED", "SENT"
            ));
            for peer in peers {
                let allowed = peer
                    .allowed_ips
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",");
                let status = peer.status.unwrap_or_default();
                let (handshake, received, sent) = if running {
                    (
                        peer_admin::ago(status.last_handshake),
                        peer_admin::bytes(status.received),
                        peer_admin::bytes(status.sent),
                    )
                } else {
                    ("(not running)".to_owned(), "-".to_owned(), "-".to_owned())
                };
                lab_daemon::cli::out(&format!(
                    "{:<20} {:<20} {:<24} {:<28} {:>12} {:>12}\n",
                    peer.name,
                    allowed,
                    status.endpoint.as_deref().unwrap_or("-"),
                    handshake,
                    received,
                    sent
                ));
            }
            Ok(())
        }
    }
}
