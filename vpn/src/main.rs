use clap::{Parser, Subcommand};
use lab_daemon::cli::{self, DaemonCommand, RunArgs};
use lab_vpn::key::PrivateKey;
use lab_vpn::VpnDaemon;
use std::io::Read;
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
}

fn main() -> ExitCode {
    let cli = match cli::parse::<Cli>() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    match cli.command {
        Some(Command::Daemon(command)) => command.execute::<VpnDaemon>(),
        None => cli::run::<VpnDaemon>(cli.run),
        Some(Command::Genkey) => {
            println!("{}", PrivateKey::generate().expose_base64());
            ExitCode::SUCCESS
        }
        Some(Command::Pubkey) => {
            let mut text = String::new();
            let read = std::io::stdin().take(1024).read_to_string(&mut text);
            match read.ok().and_then(|_| text.parse::<PrivateKey>().ok()) {
                Some(key) => {
                    println!("{}", key.public_key());
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
