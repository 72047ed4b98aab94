//! The pvesh transport against the API simulator: real calls through a `pvesh` lookalike,
//! every one checked against the Proxmox schema by the simulator.

mod support;

use std::time::Duration;

use lab_bootstrap::proxmox::client::{wait_task, ApiError, Method, ProxmoxApi, Pvesh};
use support::proxmox_sim::Simulator;

fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn pvesh_creates_and_applies_a_bridge() {
    let sim = Simulator::start();
    let api = Pvesh::new(sim.pvesh_shim());
    api.post(
        "/nodes/pve/network",
        &p(&[
            ("iface", "vmbr1"),
            ("type", "bridge"),
            ("cidr", "10.10.1.1/24"),
            ("autostart", "1"),
            ("comments", "managed by lab-bootstrap"),
        ]),
    )
    .unwrap();
    // Written but not up until applied, as on a real node.
    let pending = api.get("/nodes/pve/network").unwrap();
    assert_eq!(pending[0]["iface"], "vmbr1");
    assert!(pending[0].get("active").is_none(), "{pending}");
    let upid = api.put("/nodes/pve/network", &[]).unwrap();
    wait_task(
        &api,
        upid.as_str().unwrap(),
        Duration::from_secs(5),
        Duration::from_millis(50),
    )
    .unwrap();
    let list = api.get("/nodes/pve/network").unwrap();
    assert_eq!(list[0]["iface"], "vmbr1");
    assert_eq!(list[0]["cidr"], "10.10.1.1/24");
    assert_eq!(list[0]["active"], 1);
    assert!(sim.rejected().is_empty(), "{:?}", sim.rejected());
}

#[test]
fn pvesh_creates_a_container_and_waits_for_its_task() {
    let sim = Simulator::start();
    let api = Pvesh::new(sim.pvesh_shim());
    let upid = api
        .post(
            "/nodes/pve/lxc",
            &p(&[
                ("vmid", "201"),
                ("ostemplate", "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"),
                ("unprivileged", "1"),
                ("net0", "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:0C:90,ip=192.168.1.51/24,gw=192.168.1.1"),
                ("dev0", "/dev/net/tun"),
            ]),
        )
        .unwrap();
    let upid = upid.as_str().unwrap();
    assert!(upid.starts_with("UPID:pve:"), "{upid}");
    wait_task(
        &api,
        upid,
        Duration::from_secs(5),
        Duration::from_millis(50),
    )
    .unwrap();
    let config = api.get("/nodes/pve/lxc/201/config").unwrap();
    assert_eq!(config["dev0"], "/dev/net/tun");
    assert!(sim.rejected().is_empty(), "{:?}", sim.rejected());
}

#[test]
fn a_call_the_schema_refuses_fails_with_the_parameter_named() {
    let sim = Simulator::start();
    let api = Pvesh::new(sim.pvesh_shim());
    let err = api
        .call(
            Method::Post,
            "/nodes/pve/qemu",
            &p(&[
                ("vmid", "300"),
                ("net0", "virtio=BC:24:11:00:00:10,colour=red"),
            ]),
        )
        .unwrap_err();
    assert!(matches!(err, ApiError::Refused { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("`net0`") && text.contains("colour"), "{text}");
    assert_eq!(sim.rejected().len(), 1);
    // Nothing was created by the refused call.
    assert_eq!(api.get("/nodes/pve/qemu").unwrap(), serde_json::json!([]));
}

#[test]
fn a_bad_upid_is_refused_before_any_call() {
    let sim = Simulator::start();
    let api = Pvesh::new(sim.pvesh_shim());
    let err = wait_task(
        &api,
        "not-a-task",
        Duration::from_secs(1),
        Duration::from_millis(10),
    )
    .unwrap_err();
    assert!(matches!(err, ApiError::NotUpid { .. }), "{err}");
}
