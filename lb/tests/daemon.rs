//! lab-lb as a user and systemd see it: `check`, the notify protocol, metrics, reload, stop.

use lab_tests::suites::config_check::{self, Checker};
use lab_tests::{daemon_conventions, ports, systemd_unit, workspace};
use toml_edit::{value, DocumentMut, InlineTable};

const BIN: &str = env!("CARGO_BIN_EXE_lab-lb");

daemon_conventions! {
    bin: BIN,
    example: "lb.toml",
    misspell: ("balance", "balence"),
    metrics_prefix: "lab_lb",
    loopback_config: loopback_config,
    in_netns: false,
    change: add_server_to_workers_http,
    changed_metric: "lab_lb_backend_servers{backend=\"workers-http\"} 3",
    unit: "lab-lb.service",
    installed_at: "/usr/local/bin/lab-lb",
}

#[test]
fn two_listeners_on_one_address_are_refused() {
    let mut config = workspace::config_document("lb.toml");
    let first = config["listener"][0]["listen"].as_str().map(str::to_owned);
    config["listener"][1]["listen"] = value(first.unwrap_or_default());
    let second_line = config
        .to_string()
        .lines()
        .enumerate()
        .filter(|(_, l)| l.starts_with("listen = \"10.10.2.2:6443\""))
        .nth(1)
        .map(|(i, _)| i + 1)
        .unwrap();
    config_check::document_refused_with(
        Checker::daemon(BIN),
        "lb.toml",
        &config,
        &[&format!(
            "lb.toml:{second_line}:10: key `listener[1].listen`: 10.10.2.2:6443 is already taken by listener `kube-apiserver`"
        )],
    );
}

#[test]
fn listener_to_a_missing_backend_and_backend_without_servers_are_refused() {
    let mut config = workspace::config_document("lb.toml");
    config["listener"][0]["backend"] = value("nowhere");
    config["backend"][3]["server"] = value(toml_edit::Array::new());
    config_check::document_refused_with(
        Checker::daemon(BIN),
        "lb.toml",
        &config,
        &[
            "key `listener[0].backend`: no [[backend]] is named `nowhere`",
            "key `backend[3]`: backend `workers-https` has no [[backend.server]]",
        ],
    );
}

/// The example, moved onto loopback ports the test picked: listeners, metrics, and the backend
/// servers too (health checks must never probe the lab's real addresses from a test).
fn loopback_config(_dir: &std::path::Path) -> DocumentMut {
    let mut config = workspace::config_document("lb.toml");
    config["metrics"]["listen"] = value(ports::free_tcp().to_string());
    if let Some(listeners) = config["listener"].as_array_of_tables_mut() {
        for listener in listeners.iter_mut() {
            listener["listen"] = value(ports::free_tcp().to_string());
        }
    }
    if let Some(backends) = config["backend"].as_array_of_tables_mut() {
        for backend in backends.iter_mut() {
            if let Some(servers) = backend["server"].as_array_mut() {
                for server in servers.iter_mut() {
                    if let Some(table) = server.as_inline_table_mut() {
                        table.insert("address", ports::free_tcp().to_string().into());
                    }
                }
            }
        }
    }
    config
}

fn add_server_to_workers_http(config: &mut DocumentMut) {
    let backends = config["backend"].as_array_of_tables_mut().unwrap();
    let workers = backends
        .iter_mut()
        .find(|b| b["name"].as_str() == Some("workers-http"))
        .unwrap();
    let mut server = InlineTable::new();
    server.insert("address", ports::free_tcp().to_string().into());
    workers["server"].as_array_mut().unwrap().push(server);
}

#[test]
fn unit_is_notify_reloadable_and_least_privileged() {
    let text = std::fs::read_to_string(workspace::root().join("systemd/lab-lb.service")).unwrap();
    let service =
        systemd_unit::assert_daemon_unit(&text, "/etc/lab-lb/lb.toml", "CAP_NET_BIND_SERVICE");
    assert!(service.contains(&("PrivateDevices".to_owned(), "yes".to_owned())));
    assert!(service.contains(&("LimitNOFILE".to_owned(), "65536".to_owned())));
}

#[test]
fn health_check_mistakes_are_refused() {
    let mut config = workspace::config_document("lb.toml");
    config["backend"][2]["health_check"]["path"] = value("/healthz");
    config["backend"][0]["health_check"]["timeout"] = value("5s");
    config_check::document_refused_with(
        Checker::daemon(BIN),
        "lb.toml",
        &config,
        &[
            "key `backend[2].health_check`: `path` and `expect_status` apply to kind = \"http\" or \"https\" only",
            "key `backend[0].health_check.timeout`: must be longer than 0s and at most the interval (2s)",
        ],
    );
}
