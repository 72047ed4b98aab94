//! How `http` listeners reach backends: TLS verified against a CA, verification explicitly off,
//! a wrong CA refused (502), and h2 to the servers.

mod support;

use support::certs;
use support::web::{curl, EchoBackend};
use support::Setup;

fn config(setup: &Setup, server: std::net::SocketAddr, upstream: &str) -> String {
    setup.config(&format!(
        "[[listener]]\nname = \"web\"\nlisten = \"{}\"\nmode = \"http\"\nbackend = \"app\"\n\
         [listener.http]\n[[listener.http.upstream]]\nbackend = \"app\"\n{upstream}\n\
         [[backend]]\nname = \"app\"\nserver = [{{ address = \"{server}\" }}]\n",
        setup.lb
    ))
}

#[test]
fn tls_to_servers_verified_against_a_ca_or_explicitly_not() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, pair) = certs::ca_and_server(dir.path(), "app.internal");
    let other_dir = tempfile::tempdir().unwrap();
    let (other_ca, _) = certs::ca_and_server(other_dir.path(), "app.internal");
    let server = EchoBackend::start_with(
        "tls-app",
        " ssl",
        &format!(
            "ssl_certificate {}; ssl_certificate_key {};",
            pair.cert.display(),
            pair.key.display()
        ),
    );
    let url = |setup: &Setup| format!("http://{}/x", setup.lb);

    let verified = Setup::new();
    let _a = verified.start(&config(
        &verified,
        server.address,
        &format!(
            "tls = true\nca = \"{}\"\nserver_name = \"app.internal\"",
            ca.display()
        ),
    ));
    let (status, _, body) = curl(&[], &url(&verified));
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("tls-app "), "{body}");

    let unverified = Setup::new();
    let _b = unverified.start(&config(
        &unverified,
        server.address,
        "tls = true\nverify = false",
    ));
    let (status, _, _) = curl(&[], &url(&unverified));
    assert_eq!(status, 200);

    let wrong = Setup::new();
    let _c = wrong.start(&config(
        &wrong,
        server.address,
        &format!(
            "tls = true\nca = \"{}\"\nserver_name = \"app.internal\"",
            other_ca.display()
        ),
    ));
    let (status, _, _) = curl(&[], &url(&wrong));
    assert_eq!(status, 502, "a server the CA did not sign");
}

#[test]
fn h2_to_servers() {
    let server = EchoBackend::start_with("h2-app", " http2", "");
    let setup = Setup::new();
    let _lb = setup.start(&config(&setup, server.address, "h2 = true"));
    let (status, headers, body) = curl(&[], &format!("http://{}/", setup.lb));
    assert_eq!(status, 200, "{body}");
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("x-protocol: http/2.0"),
        "{headers}"
    );
}
