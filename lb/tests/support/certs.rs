//! Certificates made with `openssl` for the TLS-termination tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A self-signed EC certificate for `name` with subject `/CN=<name>/O=<org>`, written as
/// `<file>.crt` and `<file>.key` in `dir`.
pub fn make(dir: &Path, file: &str, name: &str, org: &str) -> Pair {
    let pair = Pair {
        cert: dir.join(format!("{file}.crt")),
        key: dir.join(format!("{file}.key")),
    };
    let status = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .arg("-keyout")
        .arg(&pair.key)
        .arg("-out")
        .arg(&pair.cert)
        .args(["-subj", &format!("/CN={name}/O={org}")])
        .args(["-addext", &format!("subjectAltName=DNS:{name}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(status.success());
    pair
}

/// Puts `from`'s files at `to`'s paths the way an ACME client does: write aside, rename over.
pub fn install(from: &Pair, to: &Pair) {
    for (src, dst) in [(&from.cert, &to.cert), (&from.key, &to.key)] {
        let temp = dst.with_extension("new");
        std::fs::copy(src, &temp).unwrap();
        std::fs::rename(&temp, dst).unwrap();
    }
}
