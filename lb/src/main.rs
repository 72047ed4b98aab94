use lab_lb::LbDaemon;
use std::process::ExitCode;

fn main() -> ExitCode {
    lab_daemon::cli::main::<LbDaemon>(
        "L4/L7 load balancer for the lab's Kubernetes API and ingress",
    )
}
