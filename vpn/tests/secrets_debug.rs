//! `{:?}` of anything that holds a private or preshared key shows none of it: a stray
//! `tracing::debug!(?value)` or an `unwrap` on a `Result` holding one must not put a key in the
//! journal.

use lab_vpn::config;
use lab_vpn::device::{PeerSettings, SessionKeys};
use lab_vpn::key::{read_key_file, PrivateKey, PublicKey};

/// Every form 32 key bytes could be printed in: base64 (`wg`, vpn.toml), hex (the UAPI), and
/// Rust's own `{:?}` of bytes (a list of decimals), also only its first few elements in case a
/// formatter truncates.
fn forms(bytes: &[u8; 32]) -> Vec<String> {
    use base64::Engine;
    let decimals: Vec<String> = bytes.iter().map(u8::to_string).collect();
    vec![
        base64::engine::general_purpose::STANDARD.encode(bytes),
        bytes.iter().map(|b| format!("{b:02x}")).collect(),
        bytes.iter().map(|b| format!("{b:02X}")).collect(),
        format!("{bytes:?}"),
        decimals[..6].join(", "),
        decimals[..6].join(",\n"),
    ]
}

fn assert_hidden(what: &str, text: &str, secret: &[u8; 32]) {
    for form in forms(secret) {
        let compact: String = text.split_whitespace().collect();
        let form_compact: String = form.split_whitespace().collect();
        assert!(
            !text.contains(&form) && !compact.contains(&form_compact),
            "{what}'s Debug shows the key ({form}):\n{text}"
        );
    }
}

/// Distinct, non-trivial bytes, so a match cannot be a coincidence.
fn secret_bytes(seed: u8) -> [u8; 32] {
    let mut bytes = [0u8; 32];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = seed
            .wrapping_mul(37)
            .wrapping_add((i as u8).wrapping_mul(101))
            | 0x41;
    }
    bytes
}

#[test]
fn a_private_key_debug_shows_no_key_material() {
    let bytes = secret_bytes(1);
    let key = PrivateKey::from_bytes(bytes);
    // The clamped scalar is what the key really is; check both.
    let scalar = key.secret().to_bytes();
    for text in [
        format!("{key:?}"),
        format!("{key:#?}"),
        format!("{:?}", Some(&key)),
    ] {
        assert_hidden("PrivateKey", &text, &bytes);
        assert_hidden("PrivateKey", &text, &scalar);
    }
    // Its public key is not secret and may be shown.
    let public: PublicKey = key.public_key();
    assert!(format!("{public:?}").contains(&public.to_string()));
}

#[test]
fn key_file_errors_name_the_file_not_the_key() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let bytes = secret_bytes(2);
    let path = dir.path().join("open.key");
    std::fs::write(&path, forms(&bytes)[0].as_bytes()).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let error = read_key_file(&path).unwrap_err();
    assert_hidden("KeyFileError", &format!("{error:?}"), &bytes);
    assert_hidden("KeyFileError", &error.to_string(), &bytes);
    // One character short of a key: Malformed, and still not quoted.
    let path = dir.path().join("short.key");
    std::fs::write(&path, &forms(&bytes)[0][1..]).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let error = read_key_file(&path).unwrap_err();
    assert_hidden("KeyFileError", &format!("{error:?}"), &bytes);
    // The config holds the path of the preshared key, never the key.
    let peer = config::Peer {
        name: "admin".parse().unwrap(),
        public_key: PrivateKey::from_bytes(secret_bytes(3)).public_key(),
        preshared_key_file: Some(path.clone()),
        allowed_ips: vec!["10.10.100.2/32".parse().unwrap()],
        endpoint: None,
        persistent_keepalive: None,
    };
    assert_hidden("config::Peer", &format!("{peer:?}"), &bytes);
}

/// Fails today: `SessionKeys` and `PeerSettings` derive `Debug`, which prints the preshared key
/// as its bytes. They live in vpn/src/device/peer.rs, which is frozen for the security fix in
/// 6df3b19; the fix (a `Debug` that writes `preshared_key: Some(<secret>)`) is to land there.
#[test]
fn session_keys_and_peer_settings_debug_show_no_preshared_key() {
    let psk = secret_bytes(4);
    let keys = SessionKeys {
        public_key: PrivateKey::from_bytes(secret_bytes(5)).public_key(),
        preshared_key: Some(psk),
        keepalive: Some(25),
    };
    assert_hidden("SessionKeys", &format!("{keys:?}"), &psk);
    let settings = PeerSettings {
        name: "admin".parse().unwrap(),
        keys,
        allowed_ips: vec!["10.10.100.2/32".parse().unwrap()],
        endpoint: None,
    };
    assert_hidden("PeerSettings", &format!("{settings:?}"), &psk);
    assert_hidden("PeerSettings", &format!("{settings:#?}"), &psk);
}
