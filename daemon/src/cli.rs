//! The command-line surface both daemons share: `run` and `check`.

use crate::config::{load, ConfigError, ConfigFile};
use crate::exit;
use crate::lifecycle::{self, Daemon};
use crate::DaemonConfig;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `run`: serve until stopped.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RunArgs {
    /// Configuration file [default: the program's file under /etc]
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `check`: validate a configuration file and exit, like `nginx -t`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CheckArgs {
    /// Configuration file [default: the program's file under /etc]
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
}

/// The commands every daemon has; a daemon with more flattens this into its own.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum DaemonCommand {
    /// Serve (the default)
    Run(RunArgs),
    /// Check a configuration file and exit
    Check(CheckArgs),
}

impl DaemonCommand {
    /// Runs the command for daemon `D`; returns the exit status.
    pub fn execute<D: Daemon>(self) -> ExitCode {
        match self {
            DaemonCommand::Run(args) => run::<D>(args),
            DaemonCommand::Check(args) => check::<D>(args),
        }
    }
}

#[derive(Debug, clap::Parser)]
#[command(version)]
struct DaemonCli {
    #[command(subcommand)]
    command: Option<DaemonCommand>,
    #[command(flatten)]
    run: RunArgs,
}

/// The whole `main` of a daemon whose only commands are `run` (the default) and `check`.
pub fn main<D: Daemon>(about: &'static str) -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    let command = DaemonCli::command().name(D::Config::PROGRAM).about(about);
    let cli = command
        .try_get_matches()
        .and_then(|matches| DaemonCli::from_arg_matches(&matches));
    match cli {
        Ok(DaemonCli {
            command: Some(command),
            ..
        }) => command.execute::<D>(),
        Ok(DaemonCli { command: None, run }) => self::run::<D>(run),
        Err(e) => usage_error(e),
    }
}

/// Parses the command line; `--help` and `--version` exit 0, a usage error exits 64.
pub fn parse<T: clap::Parser>() -> Result<T, ExitCode> {
    T::try_parse().map_err(usage_error)
}

fn usage_error(e: clap::Error) -> ExitCode {
    let usage_error = e.use_stderr();
    // Printing can only fail on a closed terminal, where there is no one to tell.
    let _ = e.print();
    if usage_error {
        exit::code(exit::USAGE)
    } else {
        ExitCode::SUCCESS
    }
}

/// `run`: serves daemon `D` with the config of `args` (or its default path) until stopped.
pub fn run<D: Daemon>(args: RunArgs) -> ExitCode {
    let path = args
        .config
        .unwrap_or_else(|| PathBuf::from(D::Config::DEFAULT_PATH));
    lifecycle::run::<D>(&path)
}

/// `check`: the daemon's config as it would load it, files it names included.
pub fn check<D: Daemon>(args: CheckArgs) -> ExitCode {
    let path = args
        .file
        .unwrap_or_else(|| PathBuf::from(D::Config::DEFAULT_PATH));
    report_check(D::Config::PROGRAM, &path, D::load_config(&path))
}

/// Validates `path` as a `T`: one line on stdout and exit 0 when valid; every problem on stderr
/// and exit 78 otherwise.
pub fn check_file<T: ConfigFile>(program: &str, path: &Path) -> ExitCode {
    report_check(program, path, load::<T>(path))
}

fn report_check<T: ConfigFile>(
    program: &str,
    path: &Path,
    loaded: Result<T, ConfigError>,
) -> ExitCode {
    match loaded {
        Ok(config) => {
            println!(
                "{program}: configuration file {} is valid: {}",
                path.display(),
                config.summary()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            for line in e.lines() {
                eprintln!("{program}: {line}");
            }
            eprintln!(
                "{program}: configuration file {} test failed",
                path.display()
            );
            exit::code(exit::CONFIG)
        }
    }
}

/// Writes `text` to stdout. A closed stdout (`| head`) is not an error worth a panic, as
/// `println!` would make it: the reader has gone, so the rest goes nowhere.
pub fn out(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
}
