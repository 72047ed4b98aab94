//! The sysctl drop-in that makes the host a router between its bridges.

/// Where the drop-in is installed.
pub const PATH: &str = "/etc/sysctl.d/90-lab.conf";

/// The settings, as `(key, value)`, so tests can apply exactly these in a namespace.
pub const SETTINGS: [(&str, &str); 1] = [("net.ipv4.ip_forward", "1")];

/// The drop-in's text: [`SETTINGS`], one `key = value` a line, under a comment.
pub fn dropin() -> String {
    let mut out =
        String::from("# Written by lab-bootstrap: the host routes between the lab bridges.\n");
    for (key, value) in SETTINGS {
        out.push_str(&format!("{key} = {value}\n"));
    }
    out
}
