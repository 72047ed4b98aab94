//! `[[lb.route]]` with `mode = "http"` and `"https"`: rendered into lb.toml listeners with
//! routes by host and path and certificates by SNI, accepted by the real `lab-lb check` with
//! the certificate files beside it as the container holds them; and `lab-bootstrap validate`
//! refusing, under the lab.toml key, what lab-lb would refuse and what no client would accept
//! (a certificate not valid for a route's host).

use lab_bootstrap::model::Lab;
use lab_bootstrap::render::containers::{files, lb_config, STAGING_DIR};
use lab_daemon::config::load;
use lab_schema::lb::ListenerMode;
use lab_tests::binaries::workspace_bin;
use lab_tests::certs;
use lab_tests::workspace;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_lab-bootstrap");

/// The example's four routes (indices 0-3), then an `http` route (4) with one rule and an
/// `https` route (5) with two certificates and two rules.
const L7_ROUTES: &str = r#"
[[lb.route]]
name = "web"
listen = "net0"
port = 8080
mode = "http"
roles = ["worker"]

[[lb.route.http]]
host = "grafana.apps.lab"
path = "/"
machines = ["w1"]
target_port = 3000

[[lb.route]]
name = "web-tls"
listen = "net0"
port = 8443
mode = "https"
roles = ["worker"]
target_port = 80

[[lb.route.cert]]
cert = "certs/apps.crt"
key = "certs/apps.key"

[[lb.route.cert]]
cert = "certs/grafana.crt"
key = "certs/grafana.key"
names = ["grafana.lab"]

[[lb.route.http]]
host = "*.apps.lab"
machines = ["w2"]

[[lb.route.http]]
host = "grafana.lab"
path = "/api"
machines = ["w1"]
target_port = 3000
"#;

/// A directory with lab.toml (the example and [`L7_ROUTES`], changed by `edit`) and the
/// certificates it names under `certs/`.
fn lab_dir(edit: impl FnOnce(&mut String)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let certs_dir = dir.path().join("certs");
    std::fs::create_dir(&certs_dir).unwrap();
    certs::make_for(&certs_dir, "apps", &["*.apps.lab", "apps.lab"], "lab");
    certs::make_for(&certs_dir, "grafana", &["grafana.lab"], "lab");
    let mut text = workspace::config_text("lab.toml") + L7_ROUTES;
    edit(&mut text);
    std::fs::write(dir.path().join("lab.toml"), text).unwrap();
    dir
}

fn validate(dir: &Path) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .arg("validate")
        .arg(dir.join("lab.toml"))
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `validate` refuses the lab with exit 78, naming `key` with a message containing `words`.
fn refused(dir: &Path, key: &str, words: &str) {
    let (code, stderr) = validate(dir);
    assert_eq!(code, Some(78), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains(&format!("key `{key}`:")))
        .unwrap_or_else(|| panic!("no problem named `{key}`:\n{stderr}"));
    assert!(line.contains(words), "{line}");
}

#[test]
fn http_and_https_routes_render_and_the_real_lab_lb_check_accepts_them() {
    let dir = lab_dir(|_| {});
    let (code, stderr) = validate(dir.path());
    assert_eq!(code, Some(0), "{stderr}");
    let lab = load::<Lab>(&dir.path().join("lab.toml")).unwrap();

    let config = lb_config(&lab).unwrap();
    let web = config
        .listeners
        .iter()
        .find(|l| l.name.as_str() == "web")
        .unwrap();
    assert_eq!(web.mode, ListenerMode::Http);
    let rules = &web.http.as_ref().unwrap().routes;
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].host.as_deref(), Some("grafana.apps.lab"));
    assert_eq!(rules[0].backend.as_ref().unwrap().as_str(), "web.0");
    let tls = config
        .listeners
        .iter()
        .find(|l| l.name.as_str() == "web-tls")
        .unwrap();
    let http = tls.http.as_ref().unwrap();
    let by_rule: Vec<(Option<&str>, Option<&str>, &str)> = http
        .routes
        .iter()
        .map(|r| {
            (
                r.host.as_deref(),
                r.path.as_deref(),
                r.backend.as_ref().unwrap().as_str(),
            )
        })
        .collect();
    assert_eq!(
        by_rule,
        [
            (Some("*.apps.lab"), None, "web-tls.0"),
            (Some("grafana.lab"), Some("/api"), "web-tls.1")
        ]
    );
    let pairs: Vec<(String, String, Vec<String>)> = http
        .certs
        .iter()
        .map(|p| {
            (
                p.cert.display().to_string(),
                p.key.display().to_string(),
                p.names.clone(),
            )
        })
        .collect();
    assert_eq!(
        pairs,
        [
            (
                "certs/web-tls-0.crt".into(),
                "certs/web-tls-0.key".into(),
                vec![]
            ),
            (
                "certs/web-tls-1.crt".into(),
                "certs/web-tls-1.key".into(),
                vec!["grafana.lab".to_owned()]
            ),
        ]
    );
    let servers = |name: &str| -> Vec<String> {
        let backend = config
            .backends
            .iter()
            .find(|b| b.name.as_str() == name)
            .unwrap();
        backend
            .servers
            .iter()
            .map(|s| s.address.to_string())
            .collect()
    };
    assert_eq!(servers("web-tls"), ["10.10.2.21:80", "10.10.2.22:80"]);
    assert_eq!(servers("web-tls.0"), ["10.10.2.22:80"]);
    assert_eq!(servers("web-tls.1"), ["10.10.2.21:3000"]);
    assert_eq!(servers("web.0"), ["10.10.2.21:3000"]);

    // The lb container's files as apply stages them: lb.toml and the certificates, keys 0600.
    let root = tempfile::tempdir().unwrap();
    for file in files(&lab).unwrap() {
        let path = root.path().join(file.path.strip_prefix("/").unwrap());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &file.contents).unwrap();
        std::fs::set_permissions(&path, PermissionsExt::from_mode(file.mode)).unwrap();
    }
    let lb_dir = root
        .path()
        .join(STAGING_DIR.trim_start_matches('/'))
        .join("lb/etc/lab-lb");
    let mode = |p: &str| {
        std::fs::metadata(lb_dir.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("certs/web-tls-0.key"), 0o600);
    assert_eq!(mode("certs/web-tls-1.key"), 0o600);
    assert_eq!(mode("certs/web-tls-0.crt"), 0o644);
    assert_eq!(
        std::fs::read_to_string(lb_dir.join("certs/web-tls-1.crt")).unwrap(),
        std::fs::read_to_string(dir.path().join("certs/grafana.crt")).unwrap()
    );
    let check = |what: &str| {
        let out = Command::new(workspace_bin("lab-lb"))
            .arg("check")
            .arg(lb_dir.join("lb.toml"))
            .output()
            .unwrap();
        (
            out.status.success(),
            format!("{what}: {}", String::from_utf8_lossy(&out.stderr)),
        )
    };
    let (ok, text) = check("as rendered");
    assert!(ok, "{text}");
    // lab-lb really loads the pairs it was given: a key that is not its certificate's is refused.
    std::fs::copy(
        lb_dir.join("certs/web-tls-1.key"),
        lb_dir.join("certs/web-tls-0.key"),
    )
    .unwrap();
    let (ok, text) = check("keys swapped");
    assert!(!ok, "{text}");
    assert!(text.contains("do not belong together"), "{text}");
}

#[test]
fn a_missing_certificate_file_is_refused_naming_its_key() {
    let dir = lab_dir(|_| {});
    std::fs::remove_file(dir.path().join("certs/grafana.crt")).unwrap();
    refused(dir.path(), "lb.route[5].cert[1].cert", "cannot read");
}

#[test]
fn a_file_that_is_no_certificate_is_refused() {
    let dir = lab_dir(|_| {});
    std::fs::write(dir.path().join("certs/apps.crt"), "not a certificate\n").unwrap();
    refused(
        dir.path(),
        "lb.route[5].cert[0].cert",
        "no CERTIFICATE block",
    );
}

#[test]
fn the_key_of_another_certificate_is_refused() {
    let dir = lab_dir(|_| {});
    std::fs::copy(
        dir.path().join("certs/grafana.key"),
        dir.path().join("certs/apps.key"),
    )
    .unwrap();
    refused(dir.path(), "lb.route[5].cert[0].key", "is not the key of");
}

#[test]
fn an_expired_certificate_is_refused() {
    let dir = lab_dir(|_| {});
    let old = certs::expired(&dir.path().join("certs"), "grafana.lab");
    std::fs::rename(old.cert, dir.path().join("certs/grafana.crt")).unwrap();
    std::fs::rename(old.key, dir.path().join("certs/grafana.key")).unwrap();
    refused(dir.path(), "lb.route[5].cert[1].cert", "expired at");
}

#[test]
fn a_host_the_served_certificate_is_not_valid_for_is_refused() {
    // grafana.lab's pair is served for its names only; other hosts get the first, *.apps.lab.
    let dir =
        lab_dir(|text| *text = text.replace("host = \"grafana.lab\"", "host = \"metrics.lab\""));
    refused(
        dir.path(),
        "lb.route[5].http[1].host",
        "the certificate served for `metrics.lab`, lb.route[5].cert[0]",
    );
}

#[test]
fn a_pair_named_for_a_host_its_certificate_is_not_valid_for_is_refused() {
    let dir = lab_dir(|text| {
        *text = text.replace(
            "names = [\"grafana.lab\"]",
            "names = [\"grafana.lab\", \"x.apps.lab\"]",
        )
    });
    refused(
        dir.path(),
        "lb.route[5].cert[1].names[1]",
        "is not valid for `x.apps.lab`",
    );
}

#[test]
fn certificates_on_an_http_route_are_refused_as_lab_lb_refuses_them() {
    let dir = lab_dir(|text| {
        *text = text.replace(
            "mode = \"http\"\nroles = [\"worker\"]\n",
            "mode = \"http\"\nroles = [\"worker\"]\ncert = [{ cert = \"certs/apps.crt\", key = \"certs/apps.key\" }]\n",
        )
    });
    refused(
        dir.path(),
        "lb.route[4].mode",
        "certificates need mode = \"https\"",
    );
}

#[test]
fn rules_by_host_and_path_are_checked_as_lab_lb_checks_them() {
    let dir = lab_dir(|text| *text = text.replace("path = \"/api\"", "path = \"api\""));
    refused(
        dir.path(),
        "lb.route[5].http[1].path",
        "a path prefix starts with `/`",
    );
    let dir = lab_dir(|text| {
        *text = text.replace("host = \"grafana.apps.lab\"", "host = \"grafana apps\"")
    });
    refused(
        dir.path(),
        "lb.route[4].http[0].host",
        "is not a server name",
    );
    let dir = lab_dir(|text| *text = text.replace("machines = [\"w2\"]", "machines = [\"w9\"]"));
    refused(
        dir.path(),
        "lb.route[5].http[0].machines[0]",
        "there is no machine named `w9`",
    );
    let dir = lab_dir(|text| {
        *text = text.replace(
            "target_port = 3000\n\n[[lb.route]]",
            "target_port = 0\n\n[[lb.route]]",
        )
    });
    refused(
        dir.path(),
        "lb.route[4].http[0].target_port",
        "port 0 is not a port",
    );
}
