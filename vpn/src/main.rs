use clap::{Parser, Subcommand};
use lab_daemon::cli::{self, CheckArgs, RunArgs};
use lab_vpn::{VpnConfig, VpnDaemon};
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
    /// Serve (the default)
    Run(RunArgs),
    /// Check a configuration file and exit
    Check(CheckArgs),
}

fn main() -> ExitCode {
    let cli = match cli::parse::<Cli>() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    match cli.command {
        Some(Command::Check(args)) => cli::check::<VpnConfig>(args),
        Some(Command::Run(args)) => cli::run::<VpnDaemon>(args),
        None => cli::run::<VpnDaemon>(cli.run),
    }
}
