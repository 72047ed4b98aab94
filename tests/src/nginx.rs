//! Real nginx backends on loopback, each answering with its own name, so a test can see which
//! server a request reached.

use crate::ports;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A certificate and key for `name`, made with the real `openssl`.
pub struct Certificate {
    /// The PEM certificate, self-signed, for `CN=<name>` and `DNS:<name>`.
    pub cert: PathBuf,
    /// Its PEM private key (P-256, unencrypted).
    pub key: PathBuf,
}

/// A self-signed certificate for `name` (valid 2 days), written to `dir` as `<name>.crt` and
/// `<name>.key`; panics if `openssl` fails.
pub fn self_signed(dir: &Path, name: &str) -> Certificate {
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args([
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            &format!("subjectAltName=DNS:{name}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("cannot run openssl: {e}"));
    assert!(status.success(), "openssl req failed for {name}");
    Certificate { cert, key }
}

/// A running nginx on a free loopback port; stopped when dropped.
pub struct Nginx {
    /// What it answers `GET /` with (and the name its certificate is for).
    pub name: String,
    /// Where it listens.
    pub address: SocketAddr,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// Size of `/big`, served slowly (`limit_rate`) for tests that need a long-lived stream.
pub const BIG_BYTES: usize = 512 * 1024;

impl Nginx {
    /// Plain HTTP: `GET /` answers `<name>\n`, `GET /readyz` 401 (as an apiserver does to an
    /// anonymous client), `GET /big` a slow download.
    pub fn http(name: &str) -> Self {
        Self::start(name, None)
    }

    /// Plain HTTP behind a PROXY protocol header (v1 or v2, as nginx detects): `GET /` answers
    /// the client address and port the header announced, `<ip> <port>\n`.
    pub fn http_behind_proxy_protocol(name: &str) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        Self::start_in(dir, name, None, true)
    }

    /// HTTPS with a certificate for `name`: `GET /` answers `<name>\n`.
    pub fn https(name: &str) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let certificate = self_signed(dir.path(), name);
        Self::start_in(dir, name, Some(certificate), false)
    }

    fn start(name: &str, certificate: Option<Certificate>) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        Self::start_in(dir, name, certificate, false)
    }

    fn start_in(
        dir: tempfile::TempDir,
        name: &str,
        certificate: Option<Certificate>,
        proxy_protocol: bool,
    ) -> Self {
        let address = ports::free_tcp();
        let d = dir.path().display();
        let (ssl, tls_lines) = match &certificate {
            Some(c) => (
                " ssl",
                format!(
                    "ssl_certificate {}; ssl_certificate_key {};",
                    c.cert.display(),
                    c.key.display()
                ),
            ),
            None => ("", String::new()),
        };
        let (proxy, answer) = if proxy_protocol {
            (
                " proxy_protocol",
                "$proxy_protocol_addr $proxy_protocol_port".to_owned(),
            )
        } else {
            ("", name.to_owned())
        };
        std::fs::write(dir.path().join("big"), vec![b'x'; BIG_BYTES])
            .unwrap_or_else(|e| panic!("{e}"));
        let config = format!(
            "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  keepalive_timeout 60s;
  server {{
    listen {address}{ssl}{proxy};
    {tls_lines}
    location = / {{ default_type text/plain; return 200 \"{answer}\\n\"; }}
    location = /big {{ alias {d}/big; limit_rate 128k; }}
    location = /readyz {{ return 401; }}
  }}
}}
"
        );
        std::fs::write(dir.path().join("nginx.conf"), config).unwrap_or_else(|e| panic!("{e}"));
        let mut nginx = Self {
            name: name.to_owned(),
            address,
            dir,
            child: None,
        };
        nginx.restart();
        nginx
    }

    /// (Re)starts nginx on the same address and waits until it accepts connections.
    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(self.dir.path())
            .arg("-c")
            .arg(self.dir.path().join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run nginx (installed by the README's test command?): {e}")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(self.address).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx {} did not start on {}",
                self.name,
                self.address
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops nginx; its port refuses connections afterwards.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}
