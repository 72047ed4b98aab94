use lab_lb::LbDaemon;
use std::process::ExitCode;

// Many small short-lived allocations per request (headers, buffers, futures): mimalloc's
// thread-local free lists serve them for a fraction of glibc's cost.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    lab_daemon::cli::main::<LbDaemon>(
        "L4/L7 load balancer for the lab's Kubernetes API and ingress",
    )
}
