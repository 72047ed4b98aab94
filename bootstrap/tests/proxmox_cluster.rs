//! A lab across several Proxmox nodes, end to end against the API simulator: placement, the
//! SDN VXLAN zone with the lab's VNets, HA resources with node-affinity rules (Proxmox 9) or
//! groups (Proxmox 8); and the one-node lab exactly as before any of this existed.

mod support;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use support::proxmox_sim::Simulator;

fn config(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../configs")
        .join(name)
}

fn golden(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn run(sim: &Simulator, op: &str, file: &Path, extra: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lab-bootstrap"))
        .arg(op)
        .args(["--proxmox-only", "--api", "pvesh", "--pvesh"])
        .arg(sim.pvesh_shim())
        .args(extra)
        .arg(file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every write as one line, `METHOD path k=v k=v`, in the order made.
fn write_lines(sim: &Simulator) -> String {
    let mut out = String::new();
    for call in sim.writes() {
        let _ = write!(out, "{} {}", call.method, call.path);
        for (k, v) in &call.params {
            let _ = write!(out, " {k}={v}");
        }
        out.push('\n');
    }
    out
}

/// The one-node lab of configs/lab.toml plans and applies byte for byte as it did before
/// `[[node]]`, SDN and HA existed: the plan's text and every write the apply makes.
#[test]
fn a_one_node_lab_plans_and_applies_exactly_as_before() {
    let sim = Simulator::start();
    let out = run(&sim, "plan", &config("lab.toml"), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        golden("one-node-plan.txt")
    );
    let out = run(&sim, "apply", &config("lab.toml"), &["--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(sim.rejected().is_empty(), "{:?}", sim.rejected());
    assert_eq!(write_lines(&sim), golden("one-node-apply-writes.txt"));
}
