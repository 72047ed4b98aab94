//! Certificates made with the real `openssl` for the TLS-termination tests (lab-lb's, and
//! lab-bootstrap's `https` routes).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A certificate and its private key, PEM files.
pub struct Pair {
    /// The certificate.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// A self-signed EC certificate for `name` with subject `/CN=<name>/O=<org>`, written as
/// `<file>.crt` and `<file>.key` in `dir`.
pub fn make(dir: &Path, file: &str, name: &str, org: &str) -> Pair {
    make_for(dir, file, &[name], org)
}

/// As [`make`], valid for every one of `names` (the first is the subject's CN).
pub fn make_for(dir: &Path, file: &str, names: &[&str], org: &str) -> Pair {
    let name = names.first().copied().unwrap_or("localhost");
    let alt_names: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
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
        .args([
            "-addext",
            &format!("subjectAltName={}", alt_names.join(",")),
        ])
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

fn openssl(args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A CA (`ca.crt`, `ca.key`) and a server certificate for `name` it signed (`<name>.crt/.key`).
pub fn ca_and_server(dir: &Path, name: &str) -> (PathBuf, Pair) {
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let ca_crt = dir.join("ca.crt");
    let ca_key = dir.join("ca.key");
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "2",
        "-keyout",
        &s(&ca_key),
        "-out",
        &s(&ca_crt),
        "-subj",
        "/CN=lab test CA",
    ]);
    let pair = Pair {
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
    };
    let csr = dir.join(format!("{name}.csr"));
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &s(&pair.key),
        "-out",
        &s(&csr),
        "-subj",
        &format!("/CN={name}"),
    ]);
    let ext = dir.join(format!("{name}.ext"));
    std::fs::write(
        &ext,
        format!(
            "subjectAltName=DNS:{name}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
        ),
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &s(&csr),
        "-CA",
        &s(&ca_crt),
        "-CAkey",
        &s(&ca_key),
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        &s(&pair.cert),
        "-extfile",
        &s(&ext),
    ]);
    (ca_crt, pair)
}

/// A self-signed certificate for `name` that expired yesterday.
pub fn expired(dir: &Path, name: &str) -> Pair {
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let pair = Pair {
        cert: dir.join(format!("{name}-expired.crt")),
        key: dir.join(format!("{name}-expired.key")),
    };
    let csr = dir.join(format!("{name}-expired.csr"));
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &s(&pair.key),
        "-out",
        &s(&csr),
        "-subj",
        &format!("/CN={name}"),
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        &s(&csr),
        "-signkey",
        &s(&pair.key),
        "-days",
        "-1",
        "-out",
        &s(&pair.cert),
    ]);
    pair
}
