//! `lab-vpn genkey` / `pubkey` produce what `wg` produces and accepts.

use std::io::Write;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_lab-vpn");

fn run(program: &str, args: &[&str], input: Option<&str>) -> (bool, String, String) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        if let Some(input) = input {
            stdin.write_all(input.as_bytes()).unwrap();
        }
    }
    let output = child.wait_with_output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn genkey_and_pubkey_agree_with_wg() {
    let (ok, ours, _) = run(BIN, &["genkey"], None);
    assert!(ok && ours.len() == 44, "{ours}");
    let (_, wg_public, _) = run("wg", &["pubkey"], Some(&ours));
    let (ok, our_public, _) = run(BIN, &["pubkey"], Some(&ours));
    assert!(ok);
    assert_eq!(our_public, wg_public);

    let (_, wg_private, _) = run("wg", &["genkey"], None);
    let (_, wg_public, _) = run("wg", &["pubkey"], Some(&wg_private));
    assert_eq!(run(BIN, &["pubkey"], Some(&wg_private)).1, wg_public);
}

#[test]
fn pubkey_refuses_garbage_without_echoing_it() {
    let (ok, out, err) = run(BIN, &["pubkey"], Some("my secret text"));
    assert!(!ok);
    assert!(out.is_empty());
    assert!(!err.contains("my secret text"), "{err}");
}
