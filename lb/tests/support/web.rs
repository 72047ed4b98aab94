//! An nginx backend for the L7 tests: answers every path with its name and the forwarding
//! headers it received, and logs each request it saw (to check nothing ambiguous got through).

use lab_tests::ports;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct EchoBackend {
    pub address: SocketAddr,
    dir: tempfile::TempDir,
    child: Child,
}

impl EchoBackend {
    pub fn start(name: &str) -> Self {
        Self::start_with(name, "", "")
    }

    /// With `listen` flags (` ssl`, ` http2`) and extra `server` lines (certificates).
    pub fn start_with(name: &str, listen: &str, server: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let address = ports::free_tcp();
        let d = dir.path().display();
        let config = format!(
            "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;
events {{ worker_connections 1024; }}
http {{
  log_format seen '$request cl=$http_content_length te=$http_transfer_encoding';
  access_log {d}/access.log seen;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  keepalive_timeout 60s; keepalive_requests 100000;
  server {{
    listen {address}{listen};
    {server}
    location / {{
      default_type text/plain;
      add_header X-Backend-Only yes;
      add_header X-Protocol $server_protocol;
      return 200 \"{name} uri=$request_uri xff=$http_x_forwarded_for proto=$http_x_forwarded_proto fhost=$http_x_forwarded_host fwd=$http_forwarded added=$http_x_added gone=$http_x_gone\\n\";
    }}
  }}
}}
"
        );
        std::fs::write(dir.path().join("nginx.conf"), config).unwrap();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(address).is_err() {
            assert!(Instant::now() < deadline, "nginx did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            address,
            dir,
            child,
        }
    }

    /// The request lines nginx logged so far.
    pub fn seen(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("access.log")
    }
}

impl Drop for EchoBackend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `curl` with `args` and the URL; (status, headers, body).
pub fn curl(args: &[&str], url: &str) -> (u16, String, String) {
    let output = Command::new("curl")
        .args([
            "--silent",
            "--max-time",
            "10",
            "--dump-header",
            "/dev/stderr",
        ])
        .args(["--write-out", "\n%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (
        status.trim().parse().unwrap_or(0),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        body.to_owned(),
    )
}

/// Sends `raw` on a new connection and returns what came back until the server closed or
/// went quiet.
pub fn raw_exchange(address: SocketAddr, raw: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    stream.write_all(raw).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}
