//! The HTTPS transport against the simulator serving a self-signed certificate: trusted by its
//! pinned fingerprint, refused with any other, and the token secret never shows in errors.

mod support;

use lab_bootstrap::proxmox::client::ProxmoxApi;
use lab_bootstrap::proxmox::https::{fingerprint, Https, Trust};
use support::proxmox_sim::Simulator;

const TOKEN_ID: &str = "root@pam!lab";
const SECRET: &str = "5f0c2a8e-93b1-4b7e-a1d2-7c4e9f1b3a60";

fn url(sim: &Simulator) -> String {
    format!("https://localhost:{}", sim.addr.port())
}

#[test]
fn the_pinned_fingerprint_is_trusted_and_calls_are_checked() {
    let sim = Simulator::start_https(TOKEN_ID, SECRET);
    let pin = fingerprint(sim.certificate.as_ref().unwrap());
    let api = Https::new(&url(&sim), TOKEN_ID, SECRET, &Trust::Fingerprint(pin)).unwrap();
    let params = vec![
        ("iface".to_owned(), "vmbr2".to_owned()),
        ("type".to_owned(), "bridge".to_owned()),
        ("cidr".to_owned(), "10.10.2.1/24".to_owned()),
        ("autostart".to_owned(), "1".to_owned()),
    ];
    api.post("/nodes/pve/network", &params).unwrap();
    api.put("/nodes/pve/network", &[]).unwrap();
    let list = api.get("/nodes/pve/network").unwrap();
    assert_eq!(list[0]["iface"], "vmbr2");
    assert!(sim.rejected().is_empty(), "{:?}", sim.rejected());

    // A call the schema refuses comes back as an error naming the parameter, without the secret.
    let bad = vec![("vmid".to_owned(), "12".to_owned())];
    let err = api.post("/nodes/pve/qemu", &bad).unwrap_err().to_string();
    assert!(err.contains("HTTP 400") && err.contains("`vmid`"), "{err}");
    assert!(!err.contains(SECRET), "{err}");
    assert!(!format!("{api:?}").contains(SECRET));
}

#[test]
fn a_wrong_fingerprint_is_refused_before_anything_is_sent() {
    let sim = Simulator::start_https(TOKEN_ID, SECRET);
    let mut wrong = sim.certificate.clone().unwrap();
    wrong[0] ^= 1;
    let api = Https::new(
        &url(&sim),
        TOKEN_ID,
        SECRET,
        &Trust::Fingerprint(fingerprint(&wrong)),
    )
    .unwrap();
    let err = api.get("/nodes/pve/network").unwrap_err().to_string();
    assert!(err.contains("not the pinned"), "{err}");
    assert!(!err.contains(SECRET), "{err}");
    // The request never reached the server.
    assert!(sim.state.lock().unwrap().calls.is_empty());
}

#[test]
fn a_wrong_secret_is_refused_without_echoing_it() {
    let sim = Simulator::start_https(TOKEN_ID, SECRET);
    let pin = fingerprint(sim.certificate.as_ref().unwrap());
    let other = "0000aaaa-bbbb-cccc-dddd-eeeeffff0000";
    let api = Https::new(&url(&sim), TOKEN_ID, other, &Trust::Fingerprint(pin)).unwrap();
    let err = api.get("/nodes/pve/network").unwrap_err().to_string();
    assert!(err.contains("HTTP 401"), "{err}");
    assert!(!err.contains(other) && !err.contains(SECRET), "{err}");
}

#[test]
fn an_unrelated_ca_is_refused() {
    let sim = Simulator::start_https(TOKEN_ID, SECRET);
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, other.cert.pem()).unwrap();
    let api = Https::new(&url(&sim), TOKEN_ID, SECRET, &Trust::CaFile(ca)).unwrap();
    let err = api.get("/nodes/pve/network").unwrap_err().to_string();
    assert!(err.contains("TLS"), "{err}");
    assert!(sim.state.lock().unwrap().calls.is_empty());
}

#[test]
fn the_cli_plans_over_https_and_says_what_a_token_cannot_do() {
    let sim = Simulator::start_https(TOKEN_ID, SECRET);
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("token");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let lab = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/lab.toml");
    let pin = fingerprint(sim.certificate.as_ref().unwrap());
    let run = |op: &str, pin: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_lab-bootstrap"))
            .args([
                op,
                "--api",
                "https",
                "--url",
                &url(&sim),
                "--token-id",
                TOKEN_ID,
            ])
            .arg("--token-secret-file")
            .arg(&secret_file)
            .args(["--fingerprint", pin, "--yes"])
            .arg(&lab)
            .output()
            .unwrap()
    };
    let text = |out: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };

    let out = run("plan", &pin);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    // The preflight's reads (storage status, content, appliance index) work over HTTPS too.
    assert!(text(&out).contains("Preflight: OK"), "{}", text(&out));
    assert!(!text(&out).contains(SECRET));

    // The vpn container needs /dev/net/tun, which only root@pam may pass: refused up front.
    let out = run("apply", &pin);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("container 201 (vpn): dev0") && t.contains("--api pvesh"),
        "{t}"
    );
    assert!(sim.writes().is_empty(), "{:?}", sim.writes());

    let mut wrong = sim.certificate.clone().unwrap();
    wrong[1] ^= 1;
    let out = run("plan", &fingerprint(&wrong));
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("not the pinned") && !t.contains(SECRET), "{t}");
}

#[test]
fn the_cluster_ca_is_trusted_from_a_file() {
    let (sim, ca_pem) = Simulator::start_https_with_ca(TOKEN_ID, SECRET);
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("pve-root-ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let api = Https::new(&url(&sim), TOKEN_ID, SECRET, &Trust::CaFile(ca.clone())).unwrap();
    assert_eq!(
        api.get("/nodes/pve/network").unwrap(),
        serde_json::json!([])
    );
    // The same CA does not vouch for another name.
    let other = format!("https://127.0.0.1:{}", sim.addr.port());
    let api = Https::new(&other, TOKEN_ID, SECRET, &Trust::CaFile(ca)).unwrap();
    let err = api.get("/nodes/pve/network").unwrap_err().to_string();
    assert!(err.contains("TLS"), "{err}");
}
