//! `lab-bootstrap upgrade kubernetes VERSION` on a rendered copy of configs/lab.toml, its Talos
//! API a stand-in apid on loopback: the skew rules refuse a two-minor jump and a downgrade
//! naming both releases, and leave lab.toml and the nodes alone; `--dry-run` prints the
//! sequence and changes nothing; the upgrade gives control planes their new images one at a
//! time with a health check before each and after the last, then the workers, sets
//! `kubernetes_version` in lab.toml with its comments kept, rewrites the snippets, and every
//! config it applied is valid against Talos's schema; run again, it applies nothing.

#[path = "support/talos_api.rs"]
mod apid;
#[path = "support/talos_schema.rs"]
mod talos_schema;

use lab_bootstrap::progress::Stage;
use lab_bootstrap::state_dir::StateDir;
use lab_bootstrap::talos::cluster::Access;
use lab_bootstrap::talos::kubeconfig::admin_kubeconfig;
use lab_bootstrap::talos::Secrets;
use lab_bootstrap::Lab;
use std::path::PathBuf;
use std::process::{Command, Output};
use talos_schema::{documents, TalosSchema};

const BIN: &str = env!("CARGO_BIN_EXE_lab-bootstrap");
const EXAMPLE: &str = include_str!("../../configs/lab.toml");

struct Bench {
    dir: tempfile::TempDir,
}

impl Bench {
    /// configs/lab.toml pinned at Kubernetes `version`, rendered (secrets made, snippets
    /// written under `root/`: what the nodes booted with).
    fn rendered(version: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pinned = EXAMPLE.replacen(
            "talos_version = \"v1.13.9\"\n",
            &format!("talos_version = \"v1.13.9\"\nkubernetes_version = \"{version}\"\n"),
            1,
        );
        assert_ne!(pinned, EXAMPLE);
        std::fs::write(dir.path().join("lab.toml"), pinned).unwrap();
        let lab = Self { dir };
        let out = Command::new(BIN)
            .arg("render")
            .arg("--root")
            .arg(lab.path("root"))
            .arg("--state")
            .arg(lab.path("state"))
            .arg(lab.path("lab.toml"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        lab
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn lab_toml(&self) -> String {
        std::fs::read_to_string(self.path("lab.toml")).unwrap()
    }

    fn snippet(&self, node: &str) -> String {
        std::fs::read_to_string(self.path(&format!("root/var/lib/vz/snippets/lab-{node}.yaml")))
            .unwrap()
    }

    /// A stand-in apid with etcd bootstrapped, every node ready.
    fn apid(&self) -> apid::Apid {
        let state = StateDir::new(self.path("state"));
        let secrets = Secrets::load(&state.talos_secrets()).unwrap();
        let lab: Lab = lab_daemon::config::load(&self.path("lab.toml")).unwrap();
        let kubeconfig = admin_kubeconfig(&lab, &secrets).unwrap();
        let apid = apid::start(
            &secrets,
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            "cp1",
            &kubeconfig,
            apid::all_ready(),
        );
        let endpoint = apid.address.to_string();
        Access::new(&lab, &state, Some(&endpoint))
            .unwrap()
            .bootstrap(std::time::Duration::ZERO, &mut Stage::start("etcd", "test"))
            .unwrap();
        apid
    }

    fn upgrade(&self, version: &str, apid: &apid::Apid, extra: &[&str]) -> Output {
        Command::new(BIN)
            .args(["upgrade", "kubernetes", version])
            .args(extra)
            .arg("--root")
            .arg(self.path("root"))
            .arg("--state")
            .arg(self.path("state"))
            .arg("--talos-endpoint")
            .arg(apid.address.to_string())
            .arg(self.path("lab.toml"))
            .output()
            .unwrap()
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_two_minor_jump_and_a_downgrade_are_refused_naming_both_releases() {
    let lab = Bench::rendered("v1.34.1");
    let apid = lab.apid();
    let before = lab.lab_toml();
    for (version, says) in [
        (
            "v1.36.0",
            "v1.36.0 is more than one minor version past the running Kubernetes v1.34.1",
        ),
        (
            "v1.33.9",
            "v1.33.9 is older than the running Kubernetes v1.34.1: a downgrade is not supported",
        ),
        ("v1.37.0", "v1.37.0 is more than one minor version past"),
    ] {
        let out = lab.upgrade(version, &apid, &[]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(text(&out).contains(says), "{version}: {}", text(&out));
    }
    assert_eq!(lab.lab_toml(), before);
    assert!(
        apid.rollout_calls().is_empty(),
        "{:?}",
        apid.rollout_calls()
    );
    assert!(apid.stand_in.record().applied.is_empty());
}

#[test]
fn a_minor_the_lab_s_talos_release_does_not_ship_is_refused() {
    let lab = Bench::rendered("v1.36.0");
    let apid = lab.apid();
    let out = lab.upgrade("v1.37.1", &apid, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("v1.37.1 is newer than Talos v1.13.9 supports")
            && said.contains("v1.36")
            && said.contains("model/tools.rs"),
        "{said}"
    );
}

#[test]
fn control_planes_first_one_at_a_time_then_workers_and_lab_toml_says_it() {
    let lab = Bench::rendered("v1.35.2");
    let apid = lab.apid();
    let before = lab.lab_toml();

    // --dry-run: the sequence, nothing applied, lab.toml as it was.
    let out = lab.upgrade("v1.36.3", &apid, &["--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("Kubernetes v1.35.2 → v1.36.3"), "{said}");
    for line in [
        "1. wait for the cluster to be healthy",
        "2. ApplyConfiguration cp1 (10.10.1.11) (control plane)",
        "7. wait for the cluster to be healthy",
        "8. ApplyConfiguration w1 (10.10.1.21) (worker)",
        "~ machine.kubelet.image: ghcr.io/siderolabs/kubelet:v1.35.2 → ghcr.io/siderolabs/kubelet:v1.36.3",
        "~ cluster.apiServer.image: registry.k8s.io/kube-apiserver:v1.35.2 → registry.k8s.io/kube-apiserver:v1.36.3",
    ] {
        assert!(said.contains(line), "{line}\n{said}");
    }
    assert_eq!(lab.lab_toml(), before);
    assert!(
        apid.rollout_calls().is_empty(),
        "{:?}",
        apid.rollout_calls()
    );
    assert!(lab.snippet("cp1").contains("kube-apiserver:v1.35.2"));

    let out = lab.upgrade("v1.36.3", &apid, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let workers: Vec<String> = workers(&lab);
    let mut expected: Vec<String> = Vec::new();
    for cp in ["cp1", "cp2", "cp3"] {
        expected.push("HealthCheck".into());
        expected.push(format!("ApplyConfiguration {cp}"));
    }
    expected.push("HealthCheck".into());
    expected.extend(workers.iter().map(|w| format!("ApplyConfiguration {w}")));
    assert_eq!(apid.rollout_calls(), expected);

    // lab.toml says it, its comments kept; plan and render agree with the nodes.
    let edited = lab.lab_toml();
    assert_eq!(
        edited,
        before.replace(
            "kubernetes_version = \"v1.35.2\"",
            "kubernetes_version = \"v1.36.3\""
        )
    );
    let record = apid.stand_in.record();
    let schema = TalosSchema::load();
    for (node, config) in &record.configs {
        let config = String::from_utf8(config.clone()).unwrap();
        // A rebuilt VM boots with what its node runs.
        assert_eq!(lab.snippet(node), config, "{node}");
        assert!(
            config.contains("ghcr.io/siderolabs/kubelet:v1.36.3"),
            "{node}"
        );
        let control_plane = node.starts_with("cp");
        for image in [
            "registry.k8s.io/kube-apiserver:v1.36.3",
            "registry.k8s.io/kube-controller-manager:v1.36.3",
            "registry.k8s.io/kube-scheduler:v1.36.3",
            "registry.k8s.io/kube-proxy:v1.36.3",
        ] {
            assert_eq!(config.contains(image), control_plane, "{node}: {image}");
        }
        for document in documents(&config) {
            let errors = schema.errors(&document);
            assert!(errors.is_empty(), "{node}: {errors:#?}");
        }
    }
    assert_eq!(record.configs.len(), 3 + workers.len());
    // The records are the state directory's, 0600.
    let recorded = lab.path("state/talos-applied/cp1.yaml");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&recorded).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Run again: every node has it, nothing is applied.
    let calls = apid.rollout_calls().len();
    let out = lab.upgrade("v1.36.3", &apid, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("0 nodes given their new config"),
        "{}",
        text(&out)
    );
    assert_eq!(apid.rollout_calls().len(), calls);
}

fn workers(lab: &Bench) -> Vec<String> {
    let parsed: Lab = lab_daemon::config::load(&lab.path("lab.toml")).unwrap();
    parsed
        .machines
        .iter()
        .filter(|m| m.role == lab_bootstrap::model::Role::Worker)
        .map(|m| m.name.to_string())
        .collect()
}

#[test]
fn an_upgrade_run_again_after_it_stopped_goes_on_with_the_nodes_still_to_do() {
    let lab = Bench::rendered("v1.35.2");
    let apid = lab.apid();
    let workers = workers(&lab);
    let mut left: Vec<String> = vec!["cp3".into()];
    left.extend(workers.iter().cloned());
    let old: Vec<(String, String)> = left.iter().map(|n| (n.clone(), lab.snippet(n))).collect();
    let out = lab.upgrade("v1.36.3", &apid, &[]);
    assert!(out.status.success(), "{}", text(&out));
    // As if it had stopped after cp2: the others' records still say what they ran before.
    for (node, config) in &old {
        std::fs::write(
            lab.path(&format!("state/talos-applied/{node}.yaml")),
            config,
        )
        .unwrap();
    }
    let done = apid.rollout_calls().len();
    let out = lab.upgrade("v1.36.3", &apid, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let mut expected = vec![
        "HealthCheck".to_owned(),
        "ApplyConfiguration cp3".to_owned(),
        "HealthCheck".to_owned(),
    ];
    expected.extend(workers.iter().map(|w| format!("ApplyConfiguration {w}")));
    assert_eq!(apid.rollout_calls()[done..].to_vec(), expected);
}
