//! HTTP requests with the real `curl`.

use std::net::SocketAddr;
use std::process::Command;

/// What curl received.
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// The `Content-Type` header, empty when there was none.
    pub content_type: String,
    /// The body, as text.
    pub body: String,
}

/// `GET http://<address><path>` with optional extra headers; panics if curl cannot connect.
pub fn get(address: SocketAddr, path: &str, headers: &[&str]) -> Response {
    get_in(None, address, path, headers)
}

/// [`get`] from inside `netns` when given.
pub fn get_in(
    netns: Option<&crate::netns::Netns>,
    address: SocketAddr,
    path: &str,
    headers: &[&str],
) -> Response {
    let mut command = match netns {
        Some(netns) => netns.command("curl"),
        None => Command::new("curl"),
    };
    command
        .args([
            "--silent",
            "--show-error",
            "--max-time",
            "10",
            "--output",
            "-",
        ])
        .args(["--write-out", "\n%{http_code} %{content_type}"]);
    for header in headers {
        command.args(["--header", header]);
    }
    let output = command
        .arg(format!("http://{address}{path}"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run curl: {e}"));
    assert!(
        output.status.success(),
        "curl http://{address}{path} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, trailer) = text.rsplit_once('\n').unwrap_or(("", &text));
    let (status, content_type) = trailer.split_once(' ').unwrap_or((trailer, ""));
    Response {
        status: status.parse().unwrap_or(0),
        content_type: content_type.to_owned(),
        body: body.to_owned(),
    }
}
