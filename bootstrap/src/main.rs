use clap::{Parser, Subcommand};
use lab_bootstrap::Lab;
use lab_daemon::cli;
use std::path::PathBuf;
use std::process::ExitCode;

/// From one lab.toml to a running lab on a Proxmox host.
#[derive(Parser)]
#[command(name = "lab-bootstrap", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a lab.toml without touching anything
    Validate {
        /// The lab description
        #[arg(value_name = "FILE", default_value = "lab.toml")]
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = match cli::parse::<Cli>() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    match cli.command {
        Command::Validate { file } => cli::check_file::<Lab>("lab-bootstrap", &file),
    }
}
