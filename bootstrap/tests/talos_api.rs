//! lab-talos-api's client against the stand-in apid, both over mutual TLS with a lab's own PKI
//! (the secrets bundle's OS CA, the talosconfig's admin certificate): etcd bootstrapped once and
//! `AlreadyExists` counted as done, the kubeconfig extracted from the streamed tar.gz, a health
//! wait on a node that becomes ready late (and one that never does), a client certificate from
//! another CA refused by the node, a node with a certificate from another CA refused by the
//! client, Version and ApplyConfiguration, whose dry run reports the mode Talos would use (a
//! changed installer needs a reboot) and changes nothing.

#[path = "support/talos_api.rs"]
mod apid;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use lab_bootstrap::talos::kubeconfig::admin_kubeconfig;
use lab_bootstrap::talos::{AdminCredentials, Secrets};
use lab_bootstrap::Lab;
use lab_talos_api::client::{Bootstrapped, Client, Credentials, Nodes, Problem, Timeouts};
use lab_talos_api::proto::machine::apply_configuration_request::Mode;
use lab_talos_api::stand_in::Readiness;
use lab_tests::workspace;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};
use x509_parser::prelude::*;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn lab() -> Lab {
    lab_daemon::config::load(&workspace::config_path("lab.toml")).unwrap()
}

fn pem(encoded: &str) -> String {
    String::from_utf8(STANDARD.decode(encoded).unwrap()).unwrap()
}

/// The talosconfig's credentials: the bundle's OS CA and an admin certificate from `issuer`.
fn credentials(secrets: &Secrets, issuer: &Secrets) -> Credentials {
    let admin = AdminCredentials::generate(issuer).unwrap();
    Credentials::from_pem(
        &pem(&secrets.certs.os.crt),
        &pem(&admin.crt),
        &pem(&admin.key),
    )
    .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn connect(address: SocketAddr, credentials: &Credentials) -> Client {
    Client::connect(&address.to_string(), credentials, Timeouts::default())
        .await
        .unwrap()
}

#[test]
fn bootstrap_runs_once_and_already_exists_counts_as_done() {
    let secrets = Secrets::generate().unwrap();
    let apid = apid::start(&secrets, LOOPBACK, "cp1", "", apid::all_ready());
    let credentials = credentials(&secrets, &secrets);
    runtime().block_on(async {
        let mut client = connect(apid.address, &credentials).await;
        assert_eq!(client.bootstrap().await.unwrap(), Bootstrapped::Now);
        assert_eq!(client.bootstrap().await.unwrap(), Bootstrapped::Already);
        // The retrying form, as apply calls it, on a node bootstrapped already.
        let again = lab_talos_api::client::bootstrap_within(
            &apid.address.to_string(),
            &credentials,
            Timeouts::default(),
            Duration::from_secs(5),
            |e| panic!("not a reason to wait: {e}"),
        )
        .await
        .unwrap();
        assert_eq!(again, Bootstrapped::Already);
    });
    let record = apid.stand_in.record();
    assert!(record.bootstrapped);
    assert_eq!(record.bootstrap_calls, 3);
}

#[test]
fn the_etcd_snapshot_streams_whole_into_the_writer_and_is_refused_past_the_bound() {
    let secrets = Secrets::generate().unwrap();
    let apid = apid::start(&secrets, LOOPBACK, "cp1", "", apid::all_ready());
    let credentials = credentials(&secrets, &secrets);
    let expected = lab_talos_api::stand_in::etcd_snapshot_of("cp1");
    runtime().block_on(async {
        let mut client = connect(apid.address, &credentials).await;
        // Before etcd runs there is nothing to snapshot, and the node says so.
        let mut out = Vec::new();
        let e = client.etcd_snapshot(&mut out, 1 << 30).await.unwrap_err();
        assert_eq!(e.call, "EtcdSnapshot");
        assert!(
            matches!(&e.problem, Problem::Status { code, .. } if *code == lab_talos_api::Code::FailedPrecondition),
            "{e}"
        );
        client.bootstrap().await.unwrap();
        // Many chunks, put together in order.
        let size = client.etcd_snapshot(&mut out, 1 << 30).await.unwrap();
        assert_eq!(size, expected.len() as u64);
        assert_eq!(out, expected);
        // A bound below its size: refused, not read on past it.
        let mut cut = Vec::new();
        let bound = expected.len() as u64 / 2;
        let e = client.etcd_snapshot(&mut cut, bound).await.unwrap_err();
        assert!(matches!(e.problem, Problem::SnapshotTooLarge(b) if b == bound), "{e}");
        assert!(cut.len() as u64 <= bound, "{}", cut.len());
    });
}

#[test]
fn a_node_not_answering_is_retried_until_the_wait_is_over_and_named() {
    let secrets = Secrets::generate().unwrap();
    // A port nothing listens on.
    let closed = TcpListener::bind((LOOPBACK, 0))
        .unwrap()
        .local_addr()
        .unwrap();
    let mut tries = 0;
    let started = Instant::now();
    let error = runtime()
        .block_on(lab_talos_api::client::bootstrap_within(
            &closed.to_string(),
            &credentials(&secrets, &secrets),
            Timeouts::default(),
            Duration::from_secs(5),
            |_| tries += 1,
        ))
        .unwrap_err();
    assert!(tries >= 1, "not retried");
    assert!(started.elapsed() < Duration::from_secs(10), "not bounded");
    assert!(error.is_not_ready(), "{error}");
    let text = error.to_string();
    assert!(text.contains(&closed.to_string()), "{text}");
    assert!(text.contains("connect"), "{text}");
}

#[test]
fn the_kubeconfig_is_extracted_from_the_streamed_tar_gz() {
    let lab = lab();
    let secrets = Secrets::generate().unwrap();
    let kubeconfig = admin_kubeconfig(&lab, &secrets).unwrap();
    // Larger than one streamed chunk, so the client has to put the pieces together.
    assert!(kubeconfig.len() > 2048, "{}", kubeconfig.len());
    let apid = apid::start(&secrets, LOOPBACK, "cp1", &kubeconfig, apid::all_ready());
    let fetched = runtime().block_on(async {
        let mut client = connect(apid.address, &credentials(&secrets, &secrets)).await;
        client.kubeconfig().await.unwrap()
    });
    assert_eq!(String::from_utf8(fetched.clone()).unwrap(), kubeconfig);

    // What kubectl would use: the cluster endpoint, the cluster's CA, an admin certificate of
    // system:masters signed by that CA.
    let yaml: serde_json::Value = serde_norway::from_slice(&fetched).unwrap();
    assert_eq!(
        yaml["clusters"][0]["cluster"]["server"],
        "https://10.10.2.2:6443"
    );
    assert_eq!(
        yaml["clusters"][0]["cluster"]["certificate-authority-data"],
        secrets.certs.k8s.crt.as_str()
    );
    let crt = pem(yaml["users"][0]["user"]["client-certificate-data"]
        .as_str()
        .unwrap());
    let ca = pem(&secrets.certs.k8s.crt);
    let (_, crt) = parse_x509_pem(crt.as_bytes()).unwrap();
    let (_, ca) = parse_x509_pem(ca.as_bytes()).unwrap();
    let (crt, ca) = (crt.parse_x509().unwrap(), ca.parse_x509().unwrap());
    crt.verify_signature(Some(ca.public_key())).unwrap();
    let groups: Vec<&str> = crt
        .subject()
        .iter_organization()
        .map(|o| o.as_str().unwrap())
        .collect();
    assert_eq!(groups, ["system:masters"]);
    assert_eq!(
        yaml["current-context"], yaml["contexts"][0]["name"],
        "{yaml}"
    );
}

#[test]
fn a_kubeconfig_stream_over_the_bound_is_refused() {
    let secrets = Secrets::generate().unwrap();
    // Past the bound even gzipped: bytes that do not compress.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let noise: String = (0..1_600_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'!' + (state % 90) as u8)
        })
        .collect();
    let apid = apid::start(&secrets, LOOPBACK, "cp1", &noise, apid::all_ready());
    let error = runtime()
        .block_on(async {
            let mut client = connect(apid.address, &credentials(&secrets, &secrets)).await;
            client.kubeconfig().await
        })
        .unwrap_err();
    assert!(matches!(error.problem, Problem::ArchiveTooLarge), "{error}");
    assert!(error.to_string().contains("Kubeconfig"), "{error}");
}

/// Ready when something accepts connections on `port` at the node's address: the stand-in
/// itself for the control plane, a listener the test opens late for the worker.
fn listening_on(port: u16) -> Readiness {
    Arc::new(move |node: &str| {
        let ip: IpAddr = node.parse().unwrap();
        std::net::TcpStream::connect_timeout(&SocketAddr::new(ip, port), Duration::from_millis(200))
            .is_ok()
    })
}

#[test]
fn the_health_wait_follows_a_node_that_becomes_ready_late() {
    let secrets = Secrets::generate().unwrap();
    // The port is the stand-in's, which it knows only once it listens: bind first, then serve.
    let probe = TcpListener::bind((LOOPBACK, 0)).unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let tls = lab_bootstrap::local::stand_in::talos_api_tls(&secrets, "cp1", &[LOOPBACK]).unwrap();
    let stand_in =
        lab_talos_api::stand_in::StandIn::new("cp1", "v1.13.9", Vec::new(), listening_on(port));
    let listener = std::net::TcpListener::bind((LOOPBACK, port)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let server = stand_in.clone();
    std::thread::spawn(move || {
        runtime().block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            server.serve(listener, &tls).await.unwrap();
        })
    });
    let address = SocketAddr::new(LOOPBACK, port);
    let late = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let nodes = Nodes {
        control_planes: vec!["127.0.0.1".to_owned()],
        workers: vec![late.to_string()],
    };
    let credentials = credentials(&secrets, &secrets);
    runtime().block_on(async {
        let mut client = connect(address, &credentials).await;
        client.bootstrap().await.unwrap();

        // The worker never comes: the wait ends, naming it.
        let mut seen = Vec::new();
        let started = Instant::now();
        let error = client
            .health_check(&nodes, Duration::from_secs(2), |m| seen.push(m.to_owned()))
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(10));
        match &error.problem {
            Problem::Status { code, message } => {
                assert_eq!(*code, lab_talos_api::Code::DeadlineExceeded, "{error}");
                assert!(message.contains("all nodes to report ready"), "{message}");
                assert!(message.contains("127.0.0.2"), "{message}");
            }
            other => panic!("{other}"),
        }

        // It comes up 2s into the wait: the wait goes on until then, and ends healthy.
        let worker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(2));
            let listener = TcpListener::bind((late, port)).unwrap();
            std::thread::sleep(Duration::from_secs(20));
            drop(listener);
        });
        let mut seen = Vec::new();
        let started = Instant::now();
        client
            .health_check(&nodes, Duration::from_secs(15), |m| seen.push(m.to_owned()))
            .await
            .unwrap();
        assert!(started.elapsed() >= Duration::from_secs(2), "{seen:#?}");
        assert!(
            seen.iter()
                .any(|m| m == "waiting for all nodes to report ready: not yet: 127.0.0.2"),
            "{seen:#?}"
        );
        assert_eq!(
            seen.last().map(String::as_str),
            Some("waiting for all nodes to report ready: OK"),
            "{seen:#?}"
        );
        assert!(
            seen.iter()
                .any(|m| m == "waiting for etcd members to be the control plane nodes: OK"),
            "{seen:#?}"
        );
        drop(worker);
    });
}

#[test]
fn a_client_certificate_from_another_ca_is_refused() {
    let secrets = Secrets::generate().unwrap();
    let stranger = Secrets::generate().unwrap();
    let apid = apid::start(&secrets, LOOPBACK, "cp1", "", apid::all_ready());
    let node = apid.address.to_string();
    runtime().block_on(async {
        // Trusting the node, but holding a certificate the node's CA did not sign.
        let foreign = credentials(&secrets, &stranger);
        let refused = async {
            let mut client = Client::connect(&node, &foreign, Timeouts::default()).await?;
            client.bootstrap().await
        }
        .await
        .unwrap_err();
        assert!(refused.to_string().contains(&node), "{refused}");
        assert!(
            refused.to_string().contains("client certificate"),
            "{refused}"
        );
        // The node's own admin gets in.
        let mut client = connect(apid.address, &credentials(&secrets, &secrets)).await;
        assert_eq!(client.version().await.unwrap().hostname, "cp1");
    });
    let record = apid.stand_in.record();
    assert_eq!(
        record.bootstrap_calls, 0,
        "the refused client reached the node"
    );
}

#[test]
fn a_node_with_a_certificate_from_another_ca_is_refused() {
    let secrets = Secrets::generate().unwrap();
    let impostor = Secrets::generate().unwrap();
    let apid = apid::start(&impostor, LOOPBACK, "cp1", "", apid::all_ready());
    let node = apid.address.to_string();
    let error = runtime()
        .block_on(async {
            let mut client =
                Client::connect(&node, &credentials(&secrets, &secrets), Timeouts::default())
                    .await?;
            client.bootstrap().await
        })
        .unwrap_err();
    let text = error.to_string();
    assert!(text.contains(&node), "{text}");
    assert!(text.to_lowercase().contains("certificate"), "{text}");
    assert_eq!(apid.stand_in.record().bootstrap_calls, 0);
}

#[test]
fn a_stand_in_node_certificate_is_the_os_ca_s_for_its_addresses_and_not_named_like_it() {
    let secrets = Secrets::generate().unwrap();
    let address = IpAddr::V4(Ipv4Addr::new(10, 10, 1, 11));
    let tls = lab_bootstrap::local::stand_in::talos_api_tls(&secrets, "cp1", &[address]).unwrap();
    let ca_pem = pem(&secrets.certs.os.crt);
    assert_eq!(tls.client_ca, ca_pem);
    let (_, crt) = parse_x509_pem(tls.crt.as_bytes()).unwrap();
    let (_, ca) = parse_x509_pem(ca_pem.as_bytes()).unwrap();
    let (crt, ca) = (crt.parse_x509().unwrap(), ca.parse_x509().unwrap());
    crt.verify_signature(Some(ca.public_key())).unwrap();
    // A leaf named like its issuer looks self-signed to OpenSSL-based clients.
    assert_ne!(crt.subject(), crt.issuer());
    let sans = crt.subject_alternative_name().unwrap().unwrap();
    assert_eq!(
        sans.value.general_names,
        vec![GeneralName::IPAddress(&[10, 10, 1, 11])]
    );
}

#[test]
fn version_and_apply_configuration() {
    let secrets = Secrets::generate().unwrap();
    let apid = apid::start(&secrets, LOOPBACK, "cp2", "", apid::all_ready());
    let config = b"version: v1alpha1\nmachine:\n  type: controlplane\n".to_vec();
    runtime().block_on(async {
        let mut client = connect(apid.address, &credentials(&secrets, &secrets)).await;
        let version = client.version().await.unwrap();
        assert_eq!(version.hostname, "cp2");
        assert_eq!(version.tag, "v1.13.9");
        let details = client
            .apply_configuration(&config, Mode::Auto)
            .await
            .unwrap();
        assert!(details.contains("without a reboot"), "{details}");
        let empty = client
            .apply_configuration(&[], Mode::Auto)
            .await
            .unwrap_err();
        assert!(empty.to_string().contains("ApplyConfiguration"), "{empty}");
    });
    assert_eq!(apid.stand_in.record().applied, vec![config]);
}

#[test]
fn a_dry_run_reports_the_mode_talos_would_use_and_changes_nothing() {
    let secrets = Secrets::generate().unwrap();
    let apid = apid::start(&secrets, LOOPBACK, "cp1", "", apid::all_ready());
    let config = |install: &str, kubelet: &str| {
        format!(
            "version: v1alpha1\nmachine:\n  install:\n    image: {install}\n  kubelet:\n    image: {kubelet}\n---\napiVersion: v1alpha1\nkind: HostnameConfig\nhostname: w7\n"
        )
        .into_bytes()
    };
    let running = config("installer:v1", "kubelet:v1");
    runtime().block_on(async {
        let mut client = connect(apid.address, &credentials(&secrets, &secrets)).await;
        client
            .apply_configuration(&running, Mode::Auto)
            .await
            .unwrap();
        // Only the kubelet: in place.
        let kubelet = client
            .apply_configuration_dry_run(&config("installer:v1", "kubelet:v2"), Mode::Auto)
            .await
            .unwrap();
        assert_eq!(kubelet.mode, Some(Mode::NoReboot), "{kubelet:?}");
        assert!(
            kubelet.details.starts_with("Dry run summary:"),
            "{kubelet:?}"
        );
        // Another installer takes effect at boot only.
        let installer = config("installer:v2", "kubelet:v1");
        let reboot = client
            .apply_configuration_dry_run(&installer, Mode::Auto)
            .await
            .unwrap();
        assert_eq!(reboot.mode, Some(Mode::Reboot), "{reboot:?}");
        assert!(reboot.details.contains("machine.install"), "{reboot:?}");
        let staged = client
            .apply_configuration_dry_run(&installer, Mode::Staged)
            .await
            .unwrap();
        assert_eq!(staged.mode, Some(Mode::Staged), "{staged:?}");
        let refused = client
            .apply_configuration_dry_run(&installer, Mode::NoReboot)
            .await
            .unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("without reboot is not supported"),
            "{refused}"
        );
    });
    let record = apid.stand_in.record();
    // Kept by the hostname the config names, and no dry run applied.
    assert_eq!(record.configs.get("w7"), Some(&running));
    assert_eq!(record.applied, vec![running]);
    assert_eq!(
        record
            .calls
            .into_iter()
            .map(|(_, call)| call)
            .collect::<Vec<_>>(),
        [
            "ApplyConfiguration w7",
            "ApplyConfiguration dry-run w7",
            "ApplyConfiguration dry-run w7",
            "ApplyConfiguration dry-run w7",
            "ApplyConfiguration dry-run w7",
        ]
    );
}
