//! Talos secrets, machine configs and talosconfig, checked as Talos would check them: every
//! document against the Talos 1.13 config schema, every certificate parsed and verified.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use lab_bootstrap::model::{NetworkId, Role, Schematic};
use lab_bootstrap::state_dir::StateDir;
use lab_bootstrap::talos::{self, Secrets};
use lab_bootstrap::Lab;
use lab_tests::workspace;
use serde_json::Value;
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use talos_schema::{documents, TalosSchema};
use x509_parser::prelude::*;

#[path = "support/talos_schema.rs"]
mod talos_schema;

const OID_ED25519: &str = "1.3.101.112";
const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const YEAR: i64 = 365 * 24 * 3600;

fn lab() -> Lab {
    lab_daemon::config::load(&workspace::config_path("lab.toml")).unwrap()
}

/// One bundle for the whole file: generating keys is the slow part.
fn secrets() -> &'static (tempfile::TempDir, Secrets) {
    static SECRETS: OnceLock<(tempfile::TempDir, Secrets)> = OnceLock::new();
    SECRETS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let secrets = Secrets::load_or_generate(&StateDir::new(dir.path().join("state"))).unwrap();
        (dir, secrets)
    })
}

fn configs() -> Vec<(String, Vec<Value>)> {
    talos::machine_configs(&lab(), &secrets().1)
        .unwrap()
        .into_iter()
        .map(|(name, yaml)| (name, documents(&yaml)))
        .collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn config_of(docs: &[Value]) -> &Value {
    let configs: Vec<_> = docs.iter().filter(|d| d.get("kind").is_none()).collect();
    assert_eq!(configs.len(), 1, "one v1alpha1 config document");
    configs[0]
}

fn pem_of(base64_pem: &Value) -> Vec<u8> {
    STANDARD.decode(base64_pem.as_str().unwrap()).unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn every_document_of_every_node_matches_the_talos_1_13_schema() {
    let schema = TalosSchema::load();
    let configs = configs();
    let lab = lab();
    let talos_nodes: Vec<String> = lab
        .machines
        .iter()
        .filter(|m| matches!(m.role, Role::ControlPlane | Role::Worker))
        .map(|m| m.name.to_string())
        .collect();
    let names: Vec<String> = configs.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(names, talos_nodes);
    for (node, docs) in &configs {
        // The config, an alias and a link per NIC, a resolver and a hostname.
        assert_eq!(docs.len(), 1 + 2 * 2 + 2, "{node}");
        for doc in docs {
            let errors = schema.errors(doc);
            assert!(errors.is_empty(), "{node}: {errors:#?}\n{doc:#}");
        }
    }
}

#[test]
fn the_schema_check_refuses_what_talos_would() {
    let schema = TalosSchema::load();
    let (_, docs) = configs().remove(0);
    let mut link = of_kind(&docs, "LinkConfig")[0].clone();
    link["mtu"] = "big".into();
    assert!(!schema.errors(&link).is_empty());
    let mut config = config_of(&docs).clone();
    config["machine"]["network"] = serde_json::json!({ "hostname": "cp1" });
    assert!(
        !schema.errors(&config).is_empty(),
        "machine.network is gone in 1.13"
    );
    let mut unknown = of_kind(&docs, "HostnameConfig")[0].clone();
    unknown["kind"] = "NoSuchConfig".into();
    assert!(!schema.errors(&unknown).is_empty());
}

#[test]
fn nodes_get_their_names_addresses_and_nics_by_mac() {
    let lab = lab();
    for (node, docs) in configs() {
        let machine = lab
            .machines
            .iter()
            .find(|m| m.name.as_str() == node)
            .unwrap();
        assert_eq!(
            of_kind(&docs, "HostnameConfig")[0]["hostname"],
            node.as_str()
        );
        let aliases = of_kind(&docs, "LinkAliasConfig");
        let links = of_kind(&docs, "LinkConfig");
        let mut default_routes = Vec::new();
        for (index, nic) in machine.nics.iter().enumerate() {
            let name = nic.network.as_str();
            let mac = machine.mac(index).unwrap().to_string().to_lowercase();
            let alias = aliases.iter().find(|a| a["name"] == name).unwrap();
            assert_eq!(
                alias["selector"]["match"],
                format!("mac(link.permanent_addr) == \"{mac}\"")
            );
            let link = links.iter().find(|l| l["name"] == name).unwrap();
            let network = lab.networks.get(nic.network);
            assert_eq!(
                link["addresses"],
                serde_json::json!([{ "address": format!("{}/{}", nic.address, network.cidr.prefix_len()) }])
            );
            assert_eq!(link["up"], true);
            for route in link["routes"].as_array().into_iter().flatten() {
                assert!(
                    route.get("destination").is_none(),
                    "{node}: only a default route"
                );
                let gateway: std::net::Ipv4Addr =
                    route["gateway"].as_str().unwrap().parse().unwrap();
                assert!(
                    network.cidr.contains(&gateway),
                    "{node}: gateway on link {name}"
                );
                default_routes.push((nic.network, gateway));
            }
        }
        assert_eq!(
            default_routes,
            vec![(NetworkId::Net1, lab.networks.net1.host)],
            "{node}: one default route, via the host on the admin network"
        );
        // The lab's DNS, on the host's address where the default route leaves.
        let resolvers = of_kind(&docs, "ResolverConfig");
        assert_eq!(
            resolvers[0]["nameservers"][0]["address"],
            lab.networks.net1.host.to_string()
        );
        assert_eq!(resolvers[0]["searchDomains"]["domains"][0], "lab");
    }
}

#[test]
fn configs_carry_the_cluster_and_secrets_and_only_control_planes_the_ca_keys() {
    let lab = lab();
    let secrets = &secrets().1;
    let mut seen = HashMap::new();
    for (node, docs) in configs() {
        let config = config_of(&docs);
        let machine = lab
            .machines
            .iter()
            .find(|m| m.name.as_str() == node)
            .unwrap();
        let control_plane = machine.role == Role::ControlPlane;
        *seen.entry(control_plane).or_insert(0) += 1;
        let (m, c) = (&config["machine"], &config["cluster"]);
        assert_eq!(
            m["type"],
            if control_plane {
                "controlplane"
            } else {
                "worker"
            }
        );
        assert_eq!(m["token"], secrets.trustdinfo.token.as_str());
        assert_eq!(m["ca"]["crt"], secrets.certs.os.crt.as_str());
        assert_eq!(m["install"]["disk"], "/dev/sda");
        // The example's extensions are the default, the QEMU guest agent alone.
        assert_eq!(
            m["install"]["image"],
            "factory.talos.dev/nocloud-installer/ce4c980550dd2ab1b17bbf2b08801c7eb59418eafe8f279833297925d67c7515:v1.13.9"
        );
        for nic in &machine.nics {
            assert!(m["certSANs"]
                .as_array()
                .unwrap()
                .contains(&nic.address.to_string().into()));
        }
        assert_eq!(c["controlPlane"]["endpoint"], lab.cluster.endpoint.as_str());
        assert_eq!(c["clusterName"], lab.cluster.name.as_str());
        assert_eq!(c["id"], secrets.cluster.id.as_str());
        assert_eq!(c["secret"], secrets.cluster.secret.as_str());
        assert_eq!(c["token"], secrets.secrets.bootstraptoken.as_str());
        assert_eq!(
            c["network"]["podSubnets"][0],
            lab.cluster.pod_cidr.to_string()
        );
        assert_eq!(
            c["network"]["serviceSubnets"][0],
            lab.cluster.service_cidr.to_string()
        );
        assert_eq!(c["ca"]["crt"], secrets.certs.k8s.crt.as_str());
        if control_plane {
            assert_eq!(m["ca"]["key"], secrets.certs.os.key.as_str());
            assert_eq!(c["ca"]["key"], secrets.certs.k8s.key.as_str());
            assert_eq!(
                c["aggregatorCA"]["key"],
                secrets.certs.k8saggregator.key.as_str()
            );
            assert_eq!(
                c["serviceAccount"]["key"],
                secrets.certs.k8sserviceaccount.key.as_str()
            );
            assert_eq!(c["etcd"]["ca"]["key"], secrets.certs.etcd.key.as_str());
            assert_eq!(
                c["secretboxEncryptionSecret"],
                secrets.secrets.secretboxencryptionsecret.as_str()
            );
            assert_eq!(c["apiServer"]["certSANs"], serde_json::json!(["10.10.2.2"]));
        } else {
            let text = serde_json::to_string(config).unwrap();
            for (what, key) in [
                ("Talos OS CA key", &secrets.certs.os.key),
                ("Kubernetes CA key", &secrets.certs.k8s.key),
                ("aggregator CA key", &secrets.certs.k8saggregator.key),
                ("etcd CA key", &secrets.certs.etcd.key),
                ("service account key", &secrets.certs.k8sserviceaccount.key),
                (
                    "secretbox secret",
                    &secrets.secrets.secretboxencryptionsecret,
                ),
            ] {
                assert!(
                    !text.contains(key.as_str()),
                    "{node} (worker) carries the {what}"
                );
            }
        }
    }
    assert_eq!(seen, HashMap::from([(true, 3), (false, 2)]));
}

fn certificate(pem_bytes: &[u8]) -> Vec<u8> {
    let (_, pem) = parse_x509_pem(pem_bytes).unwrap();
    assert_eq!(pem.label, "CERTIFICATE");
    pem.contents
}

fn key_type(cert: &X509Certificate) -> String {
    let algorithm = &cert.public_key().algorithm;
    let oid = algorithm.algorithm.to_id_string();
    match algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok()) {
        Some(curve) => format!("{oid}/{}", curve.to_id_string()),
        None => oid,
    }
}

/// The public key a PEM private key (as Talos stores them) belongs to.
fn public_key_of(key_pem: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(key_pem).unwrap();
    let (_, block) = parse_x509_pem(key_pem).unwrap();
    match block.label.as_str() {
        "EC PRIVATE KEY" => p256::SecretKey::from_sec1_pem(text)
            .unwrap()
            .public_key()
            .to_sec1_bytes()
            .to_vec(),
        "ED25519 PRIVATE KEY" => {
            let key = p256::pkcs8::PrivateKeyInfo::try_from(block.contents.as_slice()).unwrap();
            assert_eq!(key.algorithm.oid.to_string(), OID_ED25519);
            rcgen::KeyPair::try_from(block.contents.as_slice())
                .unwrap()
                .public_key_raw()
                .to_vec()
        }
        other => panic!("unexpected private key block {other}"),
    }
}

fn assert_valid_for_years(cert: &X509Certificate, what: &str, years: i64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let validity = cert.validity();
    assert!(
        validity.not_before.timestamp() <= now,
        "{what} not yet valid"
    );
    assert!(
        validity.not_after.timestamp() >= now + years * YEAR - 24 * 3600,
        "{what} expires before {years} years"
    );
}

#[test]
fn the_bundle_holds_talos_shaped_certificate_authorities() {
    let secrets = &secrets().1;
    let cas = [
        ("os", &secrets.certs.os, OID_ED25519.to_owned()),
        (
            "k8s",
            &secrets.certs.k8s,
            format!("{OID_EC_PUBLIC_KEY}/{OID_P256}"),
        ),
        (
            "k8saggregator",
            &secrets.certs.k8saggregator,
            format!("{OID_EC_PUBLIC_KEY}/{OID_P256}"),
        ),
        (
            "etcd",
            &secrets.certs.etcd,
            format!("{OID_EC_PUBLIC_KEY}/{OID_P256}"),
        ),
    ];
    for (what, ca, expected_type) in cas {
        let der = certificate(&STANDARD.decode(&ca.crt).unwrap());
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        assert_eq!(key_type(&cert), expected_type, "{what}");
        assert!(cert.is_ca(), "{what} is a CA");
        let usage = cert.key_usage().unwrap().unwrap().value;
        assert!(usage.key_cert_sign(), "{what} may sign certificates");
        assert_valid_for_years(&cert, what, 9);
        cert.verify_signature(None).unwrap();
        assert_eq!(
            public_key_of(&STANDARD.decode(&ca.key).unwrap()),
            cert.public_key().subject_public_key.data.to_vec(),
            "{what}: key and certificate belong together"
        );
    }
    let service_account = STANDARD
        .decode(&secrets.certs.k8sserviceaccount.key)
        .unwrap();
    assert_eq!(
        parse_x509_pem(&service_account).unwrap().1.label,
        "EC PRIVATE KEY"
    );
    assert_eq!(
        public_key_of(&service_account).len(),
        65,
        "an uncompressed P-256 point"
    );

    let token = regex_like_token;
    assert!(token(&secrets.secrets.bootstraptoken));
    assert!(token(&secrets.trustdinfo.token));
    assert_eq!(
        STANDARD
            .decode(&secrets.secrets.secretboxencryptionsecret)
            .unwrap()
            .len(),
        32
    );
    assert_eq!(STANDARD.decode(&secrets.cluster.secret).unwrap().len(), 32);
    assert_eq!(
        base64::engine::general_purpose::URL_SAFE
            .decode(&secrets.cluster.id)
            .unwrap()
            .len(),
        32
    );
}

/// `[a-z0-9]{6}.[a-z0-9]{16}`.
fn regex_like_token(token: &str) -> bool {
    let ok = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    matches!(token.split_once('.'), Some((a, b)) if ok(a, 6) && ok(b, 16))
}

#[test]
fn the_bundle_file_has_talosctls_layout_and_is_private() {
    let (dir, secrets) = secrets();
    let state = StateDir::new(dir.path().join("state"));
    let file = state.talos_secrets();
    assert_eq!(mode(state.path()), 0o700);
    assert_eq!(mode(&file), 0o600);
    // The bundle and the marker that makes the directory lab-bootstrap's; no temporary files.
    let mut leftovers: Vec<_> = std::fs::read_dir(state.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    leftovers.sort();
    assert_eq!(
        leftovers,
        [lab_bootstrap::state_dir::STATE_MARKER, "talos-secrets.yaml"],
        "no temporary files left"
    );
    assert_eq!(mode(&state.marker()), 0o600);
    let yaml: Value = serde_norway::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&yaml), ["certs", "cluster", "secrets", "trustdinfo"]);
    assert_eq!(
        keys(&yaml["certs"]),
        ["etcd", "k8s", "k8saggregator", "k8sserviceaccount", "os"]
    );
    assert_eq!(
        keys(&yaml["secrets"]),
        ["bootstraptoken", "secretboxencryptionsecret"]
    );
    assert_eq!(
        yaml["secrets"]["bootstraptoken"],
        secrets.secrets.bootstraptoken.as_str()
    );
}

#[test]
fn secrets_are_never_regenerated() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::new(dir.path().join("nested").join("state"));
    let first = Secrets::load_or_generate(&state).unwrap();
    let file: PathBuf = state.talos_secrets();
    let bytes = std::fs::read(&file).unwrap();
    let second = Secrets::load_or_generate(&state).unwrap();
    assert_eq!(first, second);
    assert_eq!(
        std::fs::read(&file).unwrap(),
        bytes,
        "the file is not rewritten"
    );
    assert_eq!(Secrets::load(&file).unwrap(), first);

    // A bundle others can read is refused, and left as it is rather than replaced.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let error = Secrets::load_or_generate(&state).unwrap_err().to_string();
    assert!(
        error.contains("talos-secrets.yaml") && error.contains("0644"),
        "{error}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), bytes);

    // So is a damaged one, naming the key.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let damaged = String::from_utf8(bytes.clone())
        .unwrap()
        .replace(&first.trustdinfo.token, "not-a-token");
    std::fs::write(&file, damaged).unwrap();
    let error = Secrets::load_or_generate(&state).unwrap_err().to_string();
    assert!(error.contains("trustdinfo.token"), "{error}");
}

#[test]
fn a_fresh_bundle_differs_from_the_last() {
    let a = Secrets::generate().unwrap();
    let b = Secrets::generate().unwrap();
    assert_ne!(a.cluster.secret, b.cluster.secret);
    assert_ne!(a.secrets.bootstraptoken, b.secrets.bootstraptoken);
    assert_ne!(a.certs.os.key, b.certs.os.key);
}

#[test]
fn talosconfig_reaches_the_control_planes_as_admin() {
    let lab = lab();
    let secrets = &secrets().1;
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::new(dir.path().join("state"));
    let admin = talos::AdminCredentials::load_or_generate(&state, secrets).unwrap();
    // Kept like the bundle: a second run gets the same certificate, so the same talosconfig.
    assert_eq!(
        talos::AdminCredentials::load_or_generate(&state, secrets).unwrap(),
        admin
    );
    assert_eq!(mode(&state.talos_admin()), 0o600);
    assert!(state.talos_admin().ends_with("talos-admin.yaml"));
    let text = talos::talosconfig(&lab, secrets, &admin).unwrap();
    assert_eq!(text, talos::talosconfig(&lab, secrets, &admin).unwrap());
    let yaml: Value = serde_norway::from_str(&text).unwrap();
    assert_eq!(yaml["context"], "homelab");
    let context = &yaml["contexts"]["homelab"];
    let control_planes: Vec<Value> = lab
        .machines
        .iter()
        .filter(|m| m.role == Role::ControlPlane)
        .map(|m| m.address_on(NetworkId::Net1).unwrap().to_string().into())
        .collect();
    assert_eq!(context["endpoints"], Value::Array(control_planes));
    assert_eq!(context["ca"], secrets.certs.os.crt.as_str());

    let ca_der = certificate(&pem_of(&context["ca"]));
    let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
    let admin_der = certificate(&pem_of(&context["crt"]));
    let (_, admin) = X509Certificate::from_der(&admin_der).unwrap();
    assert_eq!(key_type(&admin), OID_ED25519);
    assert!(!admin.is_ca());
    admin.verify_signature(Some(ca.public_key())).unwrap();
    assert_eq!(admin.issuer(), ca.subject());
    let organisations: Vec<_> = admin
        .subject()
        .iter_organization()
        .map(|o| o.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(organisations, ["os:admin"]);
    let usage = admin.extended_key_usage().unwrap().unwrap().value;
    assert!(usage.client_auth);
    assert_valid_for_years(&admin, "admin certificate", 1);
    assert_eq!(
        public_key_of(&pem_of(&context["key"])),
        admin.public_key().subject_public_key.data.to_vec()
    );
}

/// Every secret a bundle, the admin credentials and the host's private files carry, as text
/// and, for PEM keys, as the lines of their PEM body.
fn secret_texts(secrets: &Secrets, admin: &talos::AdminCredentials) -> Vec<String> {
    let mut out = vec![
        secrets.cluster.secret.clone(),
        secrets.secrets.bootstraptoken.clone(),
        secrets.secrets.secretboxencryptionsecret.clone(),
        secrets.trustdinfo.token.clone(),
    ];
    // A token's secret half alone would be enough for a kubelet to join.
    for token in [&secrets.secrets.bootstraptoken, &secrets.trustdinfo.token] {
        out.push(token.split_once('.').unwrap().1.to_owned());
    }
    let certs = &secrets.certs;
    for key in [
        &certs.etcd.key,
        &certs.k8s.key,
        &certs.k8saggregator.key,
        &certs.k8sserviceaccount.key,
        &certs.os.key,
        &admin.key,
    ] {
        out.push(key.clone());
        let pem = String::from_utf8(STANDARD.decode(key).unwrap()).unwrap();
        out.extend(
            pem.lines()
                .filter(|l| !l.starts_with("-----") && l.len() >= 16)
                .map(str::to_owned),
        );
    }
    out
}

#[test]
fn debug_output_never_shows_a_secret() {
    let lab = lab();
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::new(dir.path().join("state"));
    let secrets = Secrets::load_or_generate(&state).unwrap();
    let admin = talos::AdminCredentials::load_or_generate(&state, &secrets).unwrap();
    let host_files = lab_bootstrap::render::state::host_files(&lab, &state).unwrap();
    let gateway_key = std::fs::read_to_string(state.vpn_gateway_key())
        .unwrap()
        .trim()
        .to_owned();
    assert!(host_files.iter().any(|f| f.contents.contains(&gateway_key)));
    let mut secret = secret_texts(&secrets, &admin);
    secret.push(gateway_key);

    let certs = &secrets.certs;
    let shown = [
        ("Secrets", format!("{secrets:?}")),
        ("Secrets (pretty)", format!("{secrets:#?}")),
        ("ClusterIdentity", format!("{:?}", secrets.cluster)),
        ("ClusterTokens", format!("{:?}", secrets.secrets)),
        ("TrustdInfo", format!("{:?}", secrets.trustdinfo)),
        ("Certs", format!("{certs:?}")),
        ("EncodedCertAndKey", format!("{:?}", certs.os)),
        ("EncodedKey", format!("{:?}", certs.k8sserviceaccount)),
        ("AdminCredentials", format!("{admin:?}")),
        ("host files", format!("{host_files:?}")),
    ];
    for (what, text) in &shown {
        for s in &secret {
            assert!(!text.contains(s.as_str()), "{what}'s Debug shows a secret");
        }
        assert!(text.contains("redacted"), "{what}: {text}");
    }
    // What is not secret still helps: the certificates and the cluster's discovery id.
    assert!(shown[0].1.contains(&certs.os.crt));
    assert!(shown[0].1.contains(&secrets.cluster.id));
    assert!(shown[8].1.contains(&admin.crt));
}

/// The IDs the Image Factory gives the same schematics.
#[test]
fn schematic_ids_are_those_the_image_factory_gives() {
    let schematic = |extensions: &[&str]| Schematic {
        official_extensions: extensions.iter().map(|e| (*e).to_owned()).collect(),
    };
    // The empty schematic: siderolabs/image-factory, pkg/schematic/schematic_test.go (TestID,
    // "empty"), and the examples of its docs/api.md (`factory.talos.dev/installer/3765…:v1.5.0`).
    let empty = schematic(&[]);
    assert_eq!(empty.to_yaml(), "customization: {}\n");
    assert_eq!(
        empty.id(),
        "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba"
    );
    // qemu-guest-agent alone: the ID factory.talos.dev gives it, published in many public Proxmox
    // setups (e.g. `talosctl gen config --install-image
    // factory.talos.dev/installer/ce4c9805…:v1.9.4`, Terraform `talos_img_schematic` defaults).
    assert_eq!(
        schematic(&["siderolabs/qemu-guest-agent"]).id(),
        "ce4c980550dd2ab1b17bbf2b08801c7eb59418eafe8f279833297925d67c7515"
    );
    // The factory's web page: "Your image schematic ID is: dc7b152c…" for iscsi-tools and
    // qemu-guest-agent (as quoted in public Talos-on-Proxmox notes), and 88d1f7a5… with
    // util-linux-tools as well (the Longhorn set, e.g. `factory.talos.dev/nocloud-installer/
    // 88d1f7a5…:v1.12.1`), each listing its schematic YAML.
    assert_eq!(
        schematic(&["siderolabs/iscsi-tools", "siderolabs/qemu-guest-agent"]).id(),
        "dc7b152cb3ea99b821fcb7340ce7168313ce393d663740b791c36f6e95fc8586"
    );
    assert_eq!(
        schematic(&[
            "siderolabs/iscsi-tools",
            "siderolabs/qemu-guest-agent",
            "siderolabs/util-linux-tools"
        ])
        .id(),
        "88d1f7a5c4f1d3aba7df787c448c1d3d008ed29cfb34af53fa0df4336a56040b"
    );
}

/// A second extension is another schematic: another installer in every machine config (still
/// a valid Talos 1.13 document) and another disk image.
#[test]
fn a_second_extension_changes_the_installer_and_the_disk_image() {
    let mut lab = lab();
    let guest_agent = lab.talos_factory();
    lab.cluster.talos_extensions = vec![
        "siderolabs/iscsi-tools".to_owned(),
        "siderolabs/qemu-guest-agent".to_owned(),
    ];
    let both = lab.talos_factory();
    let id = "dc7b152cb3ea99b821fcb7340ce7168313ce393d663740b791c36f6e95fc8586";
    assert_ne!(both.schematic_id, guest_agent.schematic_id);
    assert_eq!(both.schematic_id, id);
    assert_eq!(
        both.installer,
        format!("factory.talos.dev/nocloud-installer/{id}:v1.13.9")
    );
    assert_eq!(
        both.disk_image_url,
        format!("https://factory.talos.dev/image/{id}/v1.13.9/nocloud-amd64.qcow2")
    );
    assert_eq!(
        both.disk_image_file,
        format!("talos-v1.13.9-{id}-nocloud-amd64.qcow2")
    );
    let schema = TalosSchema::load();
    let configs = talos::machine_configs(&lab, &secrets().1).unwrap();
    assert!(!configs.is_empty());
    for (node, yaml) in configs {
        let docs = documents(&yaml);
        assert_eq!(
            config_of(&docs)["machine"]["install"]["image"],
            both.installer.as_str(),
            "{node}"
        );
        for doc in &docs {
            let errors = schema.errors(doc);
            assert!(errors.is_empty(), "{node}: {errors:#?}\n{doc:#}");
        }
    }
}
