//! `[storage]` and `[backup] vzdump_storage` end to end against the Proxmox API simulator
//! (every call checked against the real schema): the Proxmox CSI plugin's role, user, ACL and
//! token, its secret kept 0600 and never shown, the nodes' topology labels (Talos
//! schema-valid), the plugin's manifests decoded as Kubernetes objects, the budget refused
//! naming its key, and the vzdump job made, left alone and removed.

mod support;
#[path = "support/talos_schema.rs"]
mod talos_schema;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use lab_bootstrap::model::Storage;
use lab_bootstrap::state_dir::StateDir;
use lab_bootstrap::storage::{manifests, CsiIdentity, TokenSecret, PRIVILEGES};
use lab_bootstrap::talos::{self, Secrets};
use lab_bootstrap::Lab;
use serde_json::Value;
use support::proxmox_sim::Simulator;
use talos_schema::{documents, TalosSchema};

/// The privileges of docs/install.md of sergelogvinov/proxmox-csi-plugin v0.19.1, as written
/// there: `pveum role add CSI -privs "VM.Audit VM.Config.Disk Datastore.Allocate
/// Datastore.AllocateSpace Datastore.Audit"`.
const PLUGIN_DOCUMENTED_PRIVS: &str =
    "VM.Audit VM.Config.Disk Datastore.Allocate Datastore.AllocateSpace Datastore.Audit";

fn example() -> toml_edit::DocumentMut {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/lab.toml");
    std::fs::read_to_string(file).unwrap().parse().unwrap()
}

/// configs/lab.toml with `[storage]` on local-lvm and a vzdump job on local.
fn with_storage(budget: &str) -> toml_edit::DocumentMut {
    let mut doc = example();
    let mut storage = toml_edit::Table::new();
    storage["proxmox_storage"] = toml_edit::value("local-lvm");
    storage["budget"] = toml_edit::value(budget);
    doc["storage"] = toml_edit::Item::Table(storage);
    let mut backup = toml_edit::Table::new();
    backup["vzdump_storage"] = toml_edit::value("local");
    doc["backup"] = toml_edit::Item::Table(backup);
    doc
}

struct Bench {
    dir: tempfile::TempDir,
    sim: Simulator,
    /// Everything every run printed, to look for the secret in.
    printed: std::cell::RefCell<String>,
}

impl Bench {
    fn new(doc: &toml_edit::DocumentMut) -> Self {
        let bench = Self {
            dir: tempfile::tempdir().unwrap(),
            sim: Simulator::start(),
            printed: Default::default(),
        };
        bench.write(doc);
        bench
    }

    fn write(&self, doc: &toml_edit::DocumentMut) {
        std::fs::write(self.lab_file(), doc.to_string()).unwrap();
    }

    fn lab_file(&self) -> PathBuf {
        self.dir.path().join("lab.toml")
    }

    fn lab(&self) -> Lab {
        lab_daemon::config::load(&self.lab_file()).unwrap()
    }

    fn state(&self) -> StateDir {
        StateDir::new(self.dir.path().join("state"))
    }

    fn run(&self, op: &str) -> (Output, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_lab-bootstrap"))
            .arg(op)
            .args(["--proxmox-only", "--yes", "--api", "pvesh", "--pvesh"])
            .arg(self.sim.pvesh_shim())
            .arg("--state")
            .arg(self.state().path())
            .arg(self.lab_file())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self.printed.borrow_mut().push_str(&text);
        (out, text)
    }

    fn apply(&self) -> String {
        let (out, text) = self.run("apply");
        assert!(out.status.success(), "{text}");
        assert!(self.sim.rejected().is_empty(), "{:?}", self.sim.rejected());
        text
    }

    fn secret_on_node(&self) -> String {
        let id = CsiIdentity::of(&self.lab());
        let s = self.sim.state.lock().unwrap();
        s.tokens[&(id.user, id.token)].1.clone()
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn apply_makes_the_plugins_role_user_acl_and_token_and_keeps_the_secret_private() {
    let bench = Bench::new(&with_storage("200G"));
    let lab = bench.lab();
    let id = CsiIdentity::of(&lab);

    let (out, plan) = bench.run("plan");
    assert_eq!(out.status.code(), Some(2), "{plan}");
    for line in [
        format!("+ role \"{}\"", id.role),
        format!("+ user \"{}\"", id.user),
        format!("+ acl \"/ {} {}\"", id.user, id.role),
        format!("+ token \"{}\"", id.token_id()),
        "Datacenter: 5 to add".to_owned(),
    ] {
        assert!(plan.contains(&line), "{line} in:\n{plan}");
    }
    assert!(
        plan.contains(
            "storage 'local-lvm' (400.0 GiB free of 800.0 GiB) holds the volumes' budget of 200G"
        ),
        "{plan}"
    );
    assert!(bench.sim.writes().is_empty(), "plan only reads");

    bench.apply();
    {
        let s = bench.sim.state.lock().unwrap();
        let documented: std::collections::BTreeSet<String> = PLUGIN_DOCUMENTED_PRIVS
            .split(' ')
            .map(str::to_owned)
            .collect();
        assert_eq!(
            s.roles[&id.role], documented,
            "exactly the plugin's privileges"
        );
        assert_eq!(PRIVILEGES.join(" "), PLUGIN_DOCUMENTED_PRIVS);
        assert!(s.users[&id.user]["comment"].contains("of lab homelab"));
        let acl = (
            "/".to_owned(),
            "user".to_owned(),
            id.user.clone(),
            id.role.clone(),
        );
        assert_eq!(s.acl.get(&acl), Some(&true), "{:?}", s.acl);
        assert_eq!(s.acl.len(), 1);
        let (privsep, _) = &s.tokens[&(id.user.clone(), id.token.clone())];
        assert!(
            !privsep,
            "the plugin's token runs with the user's privileges"
        );
    }
    let secret = bench.secret_on_node();
    let state = bench.state();
    let token_file = state.proxmox_csi_token();
    assert_eq!(std::fs::read_to_string(&token_file).unwrap(), secret);
    assert_eq!(mode(&token_file), 0o600);
    let dir = state.storage_manifests();
    for file in [
        "namespace.yaml",
        "proxmox-csi-plugin-secret.yaml",
        "storageclass.yaml",
    ] {
        assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
    }
    let manifest = std::fs::read_to_string(dir.join("proxmox-csi-plugin-secret.yaml")).unwrap();
    assert!(manifest.contains(&secret), "the Secret carries the token");

    // A second apply changes nothing on the node and writes nothing.
    bench.sim.clear_calls();
    let (out, plan) = bench.run("plan");
    assert_eq!(out.status.code(), Some(0), "{plan}");
    bench.apply();
    assert!(bench.sim.writes().is_empty(), "{:?}", bench.sim.writes());

    let printed = bench.printed.borrow();
    assert!(
        !printed.contains(&secret),
        "the token secret was printed:\n{printed}"
    );
}

#[test]
fn a_lost_token_secret_replaces_the_token_and_destroy_removes_everything() {
    let bench = Bench::new(&with_storage("200G"));
    bench.apply();
    let first = bench.secret_on_node();
    let state = bench.state();
    std::fs::remove_file(state.proxmox_csi_token()).unwrap();

    let (_, plan) = bench.run("plan");
    assert!(plan.contains("-/+ token"), "{plan}");
    assert!(plan.contains("has lost its secret"), "{plan}");
    bench.apply();
    let second = bench.secret_on_node();
    assert_ne!(first, second);
    assert_eq!(
        std::fs::read_to_string(state.proxmox_csi_token()).unwrap(),
        second
    );

    let (out, text) = bench.run("destroy");
    assert!(out.status.success(), "{text}");
    assert!(
        bench.sim.rejected().is_empty(),
        "{:?}",
        bench.sim.rejected()
    );
    {
        let s = bench.sim.state.lock().unwrap();
        assert!(
            s.roles.is_empty() && s.users.is_empty(),
            "{:?} {:?}",
            s.roles,
            s.users
        );
        assert!(s.acl.is_empty() && s.tokens.is_empty());
        assert!(s.backup_jobs.is_empty(), "{:?}", s.backup_jobs);
    }
    assert!(!state.proxmox_csi_token().exists());
    assert!(!state.storage_manifests().exists());
    let printed = bench.printed.borrow();
    for secret in [&first, &second] {
        assert!(!printed.contains(secret.as_str()), "{printed}");
    }
}

#[test]
fn dropping_storage_from_lab_toml_removes_the_plugins_objects() {
    let bench = Bench::new(&with_storage("200G"));
    bench.apply();
    let mut doc = with_storage("200G");
    doc.remove("storage");
    bench.write(&doc);
    let (_, plan) = bench.run("plan");
    assert!(plan.contains("- user"), "{plan}");
    bench.apply();
    let s = bench.sim.state.lock().unwrap();
    assert!(s.users.is_empty() && s.roles.is_empty() && s.tokens.is_empty());
    assert_eq!(s.backup_jobs.len(), 1, "the vzdump job stays");
}

#[test]
fn a_user_of_that_name_made_by_hand_is_a_conflict() {
    let bench = Bench::new(&with_storage("200G"));
    let id = CsiIdentity::of(&bench.lab());
    bench.sim.state.lock().unwrap().users.insert(
        id.user.clone(),
        [("comment".to_owned(), "mine".to_owned())].into(),
    );
    let (out, text) = bench.run("apply");
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "user {} already exists and is not managed by lab-bootstrap",
            id.user
        )),
        "{text}"
    );
    assert!(bench.sim.writes().is_empty(), "{:?}", bench.sim.writes());
}

#[test]
fn a_budget_the_storage_cannot_hold_is_refused_naming_the_key() {
    // local-lvm holds 800 GiB, 400 of them free.
    let bench = Bench::new(&with_storage("500G"));
    let (out, text) = bench.run("apply");
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("storage.budget: 500G does not fit storage 'local-lvm', which has 400.0 GiB free besides"),
        "{text}"
    );
    assert!(text.contains("apply refused by preflight"), "{text}");
    assert!(bench.sim.writes().is_empty(), "{:?}", bench.sim.writes());

    let bench = Bench::new(&with_storage("1T"));
    let (out, text) = bench.run("plan");
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(
            "storage.budget: 1T does not fit storage 'local-lvm', which holds 800.0 GiB in all"
        ),
        "{text}"
    );

    let mut doc = with_storage("200G");
    doc["storage"]["proxmox_storage"] = toml_edit::value("local");
    let bench = Bench::new(&doc);
    let (out, text) = bench.run("plan");
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(
            "storage.proxmox_storage: storage 'local' does not allow the content type images"
        ),
        "{text}"
    );
}

#[test]
fn bad_storage_keys_are_refused_by_validate_naming_them() {
    let mut doc = with_storage("lots");
    doc["storage"]["storage_class"] = toml_edit::value("Fast_Disks");
    doc["backup"]["vzdump_schedule"] = toml_edit::value("daily; rm -rf /");
    let bench = Bench::new(&doc);
    let out = Command::new(env!("CARGO_BIN_EXE_lab-bootstrap"))
        .arg("validate")
        .arg(bench.lab_file())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(78), "{text}");
    for expected in [
        "storage.budget",
        "`lots` is not a size like \"200G\"",
        "storage.storage_class",
        "`Fast_Disks` is not a Kubernetes object name",
        "backup.vzdump_schedule",
    ] {
        assert!(text.contains(expected), "{expected} in:\n{text}");
    }
}

#[test]
fn the_vzdump_job_is_made_left_alone_changed_and_removed() {
    let bench = Bench::new(&with_storage("200G"));
    let (_, plan) = bench.run("plan");
    assert!(plan.contains("+ backup job \"lab-homelab\""), "{plan}");
    bench.apply();
    let lab = bench.lab();
    let mut guests: Vec<u32> = lab
        .machines
        .iter()
        .filter(|m| m.role.is_container() || m.role == lab_bootstrap::model::Role::Manager)
        .map(|m| m.vmid)
        .collect();
    guests.sort();
    {
        let s = bench.sim.state.lock().unwrap();
        let job = &s.backup_jobs["lab-homelab"];
        let vmids: Vec<String> = guests.iter().map(u32::to_string).collect();
        assert_eq!(job["vmid"], vmids.join(","));
        assert_eq!(job["storage"], "local");
        assert_eq!(job["schedule"], "02:00");
        assert_eq!(job["prune-backups"], "keep-last=7");
        assert_eq!(job["mode"], "snapshot");
    }

    bench.sim.clear_calls();
    bench.apply();
    assert!(bench.sim.writes().is_empty(), "{:?}", bench.sim.writes());

    let mut doc = with_storage("200G");
    doc["backup"]["keep"] = toml_edit::value(3);
    doc["backup"]["vzdump_schedule"] = toml_edit::value("sat 03:30");
    bench.write(&doc);
    let (_, plan) = bench.run("plan");
    assert!(plan.contains("~ backup job \"lab-homelab\""), "{plan}");
    bench.sim.clear_calls();
    bench.apply();
    let writes = bench.sim.writes();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(
        (writes[0].method.as_str(), writes[0].path.as_str()),
        ("PUT", "/cluster/backup/lab-homelab")
    );
    {
        let s = bench.sim.state.lock().unwrap();
        let job = &s.backup_jobs["lab-homelab"];
        assert_eq!(job["prune-backups"], "keep-last=3");
        assert_eq!(job["schedule"], "sat 03:30");
    }

    doc["backup"]
        .as_table_mut()
        .unwrap()
        .remove("vzdump_storage");
    bench.write(&doc);
    bench.apply();
    assert!(bench.sim.state.lock().unwrap().backup_jobs.is_empty());
}

#[test]
fn a_vzdump_storage_without_backup_content_is_refused() {
    let mut doc = with_storage("200G");
    doc["backup"]["vzdump_storage"] = toml_edit::value("local-lvm");
    let bench = Bench::new(&doc);
    let (out, text) = bench.run("plan");
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(
            "backup.vzdump_storage: storage 'local-lvm' does not allow the content type backup"
        ),
        "{text}"
    );
}

fn secrets(dir: &Path) -> Secrets {
    Secrets::load_or_generate(&StateDir::new(dir.join("state"))).unwrap()
}

#[test]
fn every_node_config_carries_the_topology_labels_and_stays_schema_valid() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = secrets(dir.path());
    let bench = Bench::new(&with_storage("200G"));
    let lab = bench.lab();
    let schema = TalosSchema::load();
    let configs = talos::machine_configs(&lab, &secrets).unwrap();
    let talos_nodes = lab
        .machines
        .iter()
        .filter(|m| !m.role.is_container() && m.role != lab_bootstrap::model::Role::Manager)
        .count();
    assert_eq!(configs.len(), talos_nodes);
    for (node, yaml) in &configs {
        let docs = documents(yaml);
        let config = docs.iter().find(|d| d.get("kind").is_none()).unwrap();
        let labels = &config["machine"]["nodeLabels"];
        assert_eq!(labels["topology.kubernetes.io/region"], "homelab", "{node}");
        assert_eq!(
            labels["topology.kubernetes.io/zone"],
            lab.proxmox.node.as_str(),
            "{node}"
        );
        for doc in &docs {
            let errors = schema.errors(doc);
            assert!(errors.is_empty(), "{node}: {errors:#?}");
        }
    }
    // Without [storage], no labels: the configs are as they were.
    let plain: Lab = {
        let file = dir.path().join("plain.toml");
        std::fs::write(&file, example().to_string()).unwrap();
        lab_daemon::config::load(&file).unwrap()
    };
    for (node, yaml) in talos::machine_configs(&plain, &secrets).unwrap() {
        assert!(!yaml.contains("nodeLabels"), "{node}");
    }
}

fn storage_of(lab: &Lab) -> &Storage {
    lab.storage.as_ref().unwrap()
}

/// Decodes `yaml` as the typed object and checks nothing of it was dropped on the way: the
/// typed object, serialised again, is the document itself (k8s-openapi skips unknown fields).
fn decode<T: serde::de::DeserializeOwned + serde::Serialize>(yaml: &str) -> T {
    let document: Value = serde_norway::from_str(yaml).unwrap();
    let typed: T = serde_json::from_value(document.clone()).unwrap();
    assert_eq!(serde_json::to_value(&typed).unwrap(), document, "{yaml}");
    typed
}

#[test]
fn the_manifests_decode_as_kubernetes_objects_the_plugin_reads() {
    use k8s_openapi::api::core::v1::{Namespace, Secret};
    use k8s_openapi::api::storage::v1::StorageClass;

    let bench = Bench::new(&with_storage("200G"));
    let lab = bench.lab();
    let secret = TokenSecret::new("0b5c2f1e-test-secret".to_owned());
    let rendered = manifests::render(&lab, storage_of(&lab), &secret).unwrap();
    let yaml = |file: &str| {
        rendered
            .iter()
            .find(|m| m.file == file)
            .unwrap()
            .yaml
            .clone()
    };

    let namespace: Namespace = decode(&yaml("namespace.yaml"));
    assert_eq!(namespace.metadata.name.as_deref(), Some("csi-proxmox"));

    let object: Secret = decode(&yaml("proxmox-csi-plugin-secret.yaml"));
    assert_eq!(object.metadata.name.as_deref(), Some("proxmox-csi-plugin"));
    assert_eq!(object.metadata.namespace.as_deref(), Some("csi-proxmox"));
    let config = &object.string_data.unwrap()["config.yaml"];
    let config: Value = serde_norway::from_str(config).unwrap();
    let cluster = &config["clusters"][0];
    assert_eq!(cluster["url"], "https://10.10.1.1:8006/api2/json");
    assert_eq!(cluster["insecure"], true);
    assert_eq!(cluster["token_id"], "lab-csi-homelab@pve!csi");
    assert_eq!(cluster["token_secret"], "0b5c2f1e-test-secret");
    // The region the plugin matches with the nodes' topology.kubernetes.io/region.
    assert_eq!(cluster["region"], lab.cluster.name.as_str());

    let class: StorageClass = decode(&yaml("storageclass.yaml"));
    assert_eq!(class.metadata.name.as_deref(), Some("proxmox"));
    assert_eq!(class.provisioner, "csi.proxmox.sinextra.dev");
    let parameters = class.parameters.unwrap();
    assert_eq!(parameters["storage"], "local-lvm");
    assert_eq!(
        class.metadata.annotations.unwrap()["storageclass.kubernetes.io/is-default-class"],
        "true"
    );
    assert_eq!(
        class.volume_binding_mode.as_deref(),
        Some("WaitForFirstConsumer")
    );
}

#[test]
fn with_gitops_the_manifests_but_the_secret_are_laid_out_for_the_repository() {
    let mut doc = with_storage("200G");
    let bench = Bench::new(&doc);
    std::fs::write(bench.dir.path().join("gitops-token"), "tok3n\n").unwrap();
    let mut gitops = toml_edit::Table::new();
    gitops["url"] = toml_edit::value("https://git.example/me/fleet.git");
    gitops["token_file"] =
        toml_edit::value(bench.dir.path().join("gitops-token").to_str().unwrap());
    doc["gitops"] = toml_edit::Item::Table(gitops);
    doc["storage"]["default_class"] = toml_edit::value(false);
    bench.write(&doc);
    bench.apply();
    let git = bench
        .state()
        .storage_manifests()
        .join("gitops/clusters/homelab/proxmox-csi");
    let mut files: Vec<String> = std::fs::read_dir(&git)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["namespace.yaml", "storageclass.yaml"]);
    let class = std::fs::read_to_string(git.join("storageclass.yaml")).unwrap();
    assert!(!class.contains("is-default-class"), "{class}");
}
