use clap::{Parser, Subcommand};
use lab_daemon::cli::{self, CheckArgs, RunArgs};
use lab_lb::{LbConfig, LbDaemon};
use std::process::ExitCode;

/// L4/L7 load balancer for the lab's Kubernetes API and ingress.
#[derive(Parser)]
#[command(name = "lab-lb", version)]
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
        Some(Command::Check(args)) => cli::check::<LbConfig>(args),
        Some(Command::Run(args)) => cli::run::<LbDaemon>(args),
        None => cli::run::<LbDaemon>(cli.run),
    }
}
