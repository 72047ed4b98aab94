//! `lab-bootstrap peer add | remove | list` on a copy of configs/lab.toml: comments and layout
//! kept, the next free address, a made key pair's client config in the state directory (0600,
//! private key included), the edited lab validated before anything is written, and refusals
//! that leave lab.toml as it was.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_lab-bootstrap");
const EXAMPLE: &str = include_str!("../../configs/lab.toml");
const PHONE_KEY: &str = "m9XYp+SdT1i0HAvFg2d+VIqb0LEk+0iGEwjRTtPPVFM=";

fn peer(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("peer")
        .args(args)
        .arg("--state")
        .arg(dir.join("state"))
        .arg(dir.join("lab.toml"))
        .output()
        .unwrap()
}

fn lab_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lab.toml"), EXAMPLE).unwrap();
    dir
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every comment line of the example, in its order, is in `text`.
fn keeps_every_comment(text: &str) {
    let mut lines = text.lines();
    for comment in EXAMPLE.lines().filter(|l| l.trim_start().starts_with('#')) {
        assert!(
            lines.any(|l| l == comment),
            "lost or moved: {comment}\n{text}"
        );
    }
}

#[test]
fn peer_add_with_a_made_key_writes_lab_toml_and_the_client_config() {
    let dir = lab_dir();
    let out = peer(dir.path(), &["add", "phone"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("added peer `phone` at 10.10.100.3"),
        "{stdout}"
    );
    assert!(stdout.contains("lab-bootstrap apply"), "{stdout}");
    let text = std::fs::read_to_string(dir.path().join("lab.toml")).unwrap();
    keeps_every_comment(&text);
    // The example as it was, the new peer's table added after the last peer's.
    let added = text.replace(EXAMPLE.trim_end(), "");
    assert!(text.starts_with(&EXAMPLE[..EXAMPLE.find("[[vpn.peer]]").unwrap()]));
    assert!(
        text.contains(
            "address = \"10.10.100.2\"\n\n[[vpn.peer]]\nname = \"phone\"\npublic_key = \""
        ),
        "{added}"
    );
    assert!(text.contains("address = \"10.10.100.3\""), "{text}");
    let validate = Command::new(BIN)
        .arg("validate")
        .arg(dir.path().join("lab.toml"))
        .output()
        .unwrap();
    assert!(validate.status.success(), "{}", stderr(&validate));

    let client = dir.path().join("state/vpn-clients/phone.conf");
    let config = std::fs::read_to_string(&client).unwrap();
    assert!(config.contains("PrivateKey = "), "{config}");
    assert!(config.contains("Address = 10.10.100.3/32"), "{config}");
    assert!(config.contains("Endpoint = 192.168.1.51:51820"), "{config}");
    for file in [&client, &dir.path().join("state/vpn-clients/phone.key")] {
        let mode = std::fs::metadata(file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    }
    // The public key in lab.toml is the client's private key's.
    let private = config
        .lines()
        .find_map(|l| l.strip_prefix("PrivateKey = "))
        .unwrap();
    let public: lab_schema::vpn::key::PrivateKey = private.parse().unwrap();
    assert!(
        text.contains(&format!("public_key = \"{}\"", public.public_key())),
        "{text}"
    );

    let list = Command::new(BIN)
        .args(["peer", "list"])
        .arg(dir.path().join("lab.toml"))
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&list.stdout);
    let names: Vec<&str> = listed
        .lines()
        .filter_map(|l| l.split('\t').next())
        .collect();
    assert_eq!(names, ["laptop", "phone"], "{listed}");
}

#[test]
fn peer_add_with_a_key_or_key_file_and_remove_keep_the_rest_of_lab_toml() {
    let dir = lab_dir();
    let out = peer(
        dir.path(),
        &[
            "add",
            "phone",
            "--public-key",
            PHONE_KEY,
            "--address",
            "10.10.100.20",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    std::fs::write(
        dir.path().join("keys/tablet.pub"),
        "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\n",
    )
    .unwrap();
    let file = dir.path().join("keys/tablet.pub");
    let out = peer(
        dir.path(),
        &["add", "tablet", "--public-key-file", file.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(dir.path().join("lab.toml")).unwrap();
    // Named relative to lab.toml, as lab.toml's paths are; the next free address.
    assert!(
        text.contains(
            "name = \"tablet\"\npublic_key_file = \"keys/tablet.pub\"\naddress = \"10.10.100.3\""
        ),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "name = \"phone\"\npublic_key = \"{PHONE_KEY}\"\naddress = \"10.10.100.20\""
        )),
        "{text}"
    );
    // No key made: no client config with a private key.
    assert!(!dir.path().join("state/vpn-clients/phone.key").exists());

    // Removing the first peer keeps the section's comments above the next one.
    let out = peer(dir.path(), &["remove", "laptop"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(dir.path().join("lab.toml")).unwrap();
    keeps_every_comment(&text);
    assert!(!text.contains("name = \"laptop\""), "{text}");
    let out = peer(dir.path(), &["remove", "tablet"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = peer(dir.path(), &["remove", "phone"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(dir.path().join("lab.toml")).unwrap();
    keeps_every_comment(&text);
    assert!(!text.contains("[[vpn.peer]]"), "{text}");
}

#[test]
fn refused_peer_commands_leave_lab_toml_as_it_was() {
    let dir = lab_dir();
    let refused = |args: &[&str], words: &str| {
        let out = peer(dir.path(), args);
        assert_eq!(out.status.code(), Some(78), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(words), "{args:?}: {}", stderr(&out));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("lab.toml")).unwrap(),
            EXAMPLE,
            "{args:?} changed lab.toml"
        );
    };
    refused(
        &["add", "laptop", "--public-key", PHONE_KEY],
        "a peer named `laptop` is already vpn.peer[0]",
    );
    refused(
        &[
            "add",
            "phone",
            "--public-key",
            PHONE_KEY,
            "--address",
            "10.10.100.2",
        ],
        "key `vpn.peer[1].address`: 10.10.100.2 is already vpn.peer[0]'s",
    );
    refused(
        &[
            "add",
            "phone",
            "--public-key",
            PHONE_KEY,
            "--address",
            "10.10.1.7",
        ],
        "key `vpn.peer[1].address`",
    );
    refused(
        &[
            "add",
            "phone",
            "--public-key",
            "UcbHrqf+sj9jMaUWqHr0ffKnPvCGJGgK99qCWdHQP3k=",
        ],
        "key `vpn.peer[1].public_key`: the same key as vpn.peer[0]",
    );
    refused(&["add", "bad name"], "peer name `bad name`");
    refused(&["remove", "nobody"], "no peer named `nobody`");
    assert!(!dir.path().join("state").exists());
}
