use clap::{Parser, Subcommand};
use lab_daemon::cli::{self, DaemonCommand, RunArgs};
use lab_daemon::RuntimeConfig;
use lab_lb::runtime_api::{self, CtlError};
use lab_lb::LbDaemon;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

// Many small short-lived allocations per request (headers, buffers, futures): mimalloc's
// thread-local free lists serve them for a fraction of glibc's cost.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    #[command(flatten)]
    Daemon(DaemonCommand),
    /// Talk to the running daemon's runtime API (`[runtime] socket`): list, drain, disable,
    /// enable servers and set their weights. Servers are named BACKEND/ADDRESS, as in lb.toml:
    /// `control-plane-apiserver/10.10.2.11:6443`
    Ctl {
        /// The runtime API's socket
        #[arg(short, long, value_name = "PATH", default_value = RuntimeConfig::LB_SOCKET)]
        socket: PathBuf,
        #[command(subcommand)]
        command: CtlCommand,
    },
}

#[derive(Subcommand)]
enum CtlCommand {
    /// Backends and servers: state (ready, draining, drained, disabled), health, active
    /// connections or requests, weight
    Servers,
    /// No new connections or requests to the server; those open finish
    Drain { server: String },
    /// As drain, and the server's idle kept-alive connections are closed
    Disable { server: String },
    /// Back to taking connections and requests (when healthy)
    Enable { server: String },
    /// Set the server's weight (0 to 256) until lab-lb restarts; kept over reloads
    Weight { server: String, weight: String },
    /// Wait until a drained server has no active connection or request left (exit 0), or the
    /// timeout passed (exit 1)
    WaitDrained {
        server: String,
        #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime_serde::re::humantime::parse_duration)]
        timeout: Duration,
    },
}

fn main() -> ExitCode {
    let cli = match cli::parse::<Cli>() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    match cli.command {
        Some(Command::Daemon(command)) => command.execute::<LbDaemon>(),
        None => cli::run::<LbDaemon>(cli.run),
        Some(Command::Ctl { socket, command }) => match ctl(&socket, command) {
            Ok(text) => {
                cli::out(&text);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("lab-lb ctl: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn ctl(socket: &std::path::Path, command: CtlCommand) -> Result<String, CtlError> {
    let request = match command {
        CtlCommand::Servers => "servers".to_owned(),
        CtlCommand::Drain { server } => format!("drain {server}"),
        CtlCommand::Disable { server } => format!("disable {server}"),
        CtlCommand::Enable { server } => format!("enable {server}"),
        CtlCommand::Weight { server, weight } => format!("weight {server} {weight}"),
        CtlCommand::WaitDrained { server, timeout } => {
            runtime_api::wait_drained(socket, &server, timeout)?;
            return Ok(String::new());
        }
    };
    runtime_api::request(socket, &request)
}
