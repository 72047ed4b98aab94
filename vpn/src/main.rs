use lab_vpn::VpnDaemon;
use std::process::ExitCode;

fn main() -> ExitCode {
    lab_daemon::cli::main::<VpnDaemon>(
        "Userspace WireGuard gateway into the lab's administration network",
    )
}
