//! The manager VM: its cloud-init snippet is valid cloud-config (the real `cloud-init schema`),
//! written 0600 where `cicustom` points, with the login, the talosconfig and `[gitops]`'s token;
//! the first-boot script passes `bash -n` and shellcheck, and run here against a loopback HTTP
//! server standing in for the release hosts it installs every tool checked against its SHA-256
//! (published or pinned), refuses a mismatch naming the tool, places the talosconfig and the
//! kubeconfig 0600 in the user's home, and bootstraps Flux once; `plan` shows the releases;
//! `validate` refuses what is malformed.

mod support;

use lab_bootstrap::proxmox::desired::{desired, Sources};
use lab_bootstrap::Lab;
use lab_tests::suites::config_check::{self, Checker};
use lab_tests::workspace;
use serde_norway::Value;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use support::proxmox_sim::Simulator;
use toml_edit::value;

const BIN: &str = env!("CARGO_BIN_EXE_lab-bootstrap");
const SNIPPET: &str = "var/lib/vz/snippets/lab-manager.yaml";
const TOKEN: &str = "glpat-very-secret-token";
const REPO: &str = "https://git.example.org/lab/fleet.git";

/// configs/lab.toml in `dir` with `extra` appended, and the token file next to it.
fn lab_in(dir: &Path, extra: &str) -> PathBuf {
    std::fs::write(dir.join("git-token"), format!("{TOKEN}\n")).unwrap();
    let file = dir.join("lab.toml");
    std::fs::write(&file, workspace::config_text("lab.toml") + extra).unwrap();
    file
}

fn gitops() -> String {
    format!("\n[gitops]\nurl = \"{REPO}\"\ntoken_file = \"git-token\"\n")
}

/// `lab-bootstrap render` of `lab_toml` into `dir/root` and `dir/state`.
fn render(lab_toml: &Path, dir: &Path) -> (PathBuf, PathBuf) {
    let (root, state) = (dir.join("root"), dir.join("state"));
    let out = Command::new(BIN)
        .arg("render")
        .arg("--root")
        .arg(&root)
        .arg("--state")
        .arg(&state)
        .arg(lab_toml)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    (root, state)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// The snippet's `write_files`, path to (permissions, content).
fn written_files(user_data: &str) -> BTreeMap<String, (String, String)> {
    let doc: Value = serde_norway::from_str(user_data).unwrap();
    doc["write_files"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_owned(),
                (
                    f["permissions"].as_str().unwrap().to_owned(),
                    f["content"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect()
}

fn cloud_init_schema(file: &Path) {
    let out = Command::new("cloud-init")
        .args(["schema", "--config-file"])
        .arg(file)
        .output()
        .expect("cloud-init (Debian package cloud-init, in scripts/test.sh's needs)");
    assert!(out.status.success(), "{}: {}", file.display(), text(&out));
    assert!(text(&out).contains("Valid cloud-config"), "{}", text(&out));
}

#[test]
fn the_manager_snippet_is_valid_private_cloud_config_where_cicustom_points() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("keys"),
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBx0ZxlS1SvzHZGaYjKRrHgxMr0nI0pDzHt2pB9wz0eQ admin@laptop\n",
    )
    .unwrap();
    let lab_toml = lab_in(dir.path(), "");
    let text_with_keys = std::fs::read_to_string(&lab_toml).unwrap().replace(
        "# ssh_keys_file = \"manager_authorized_keys\"",
        "ssh_keys_file = \"keys\"",
    );
    std::fs::write(&lab_toml, text_with_keys).unwrap();
    let (root, state) = render(&lab_toml, dir.path());

    let lab: Lab = lab_daemon::config::load(&lab_toml).unwrap();
    let manager = desired(&lab, &Sources::defaults(&lab))
        .into_iter()
        .find(|r| r.name == "manager")
        .unwrap();
    assert_eq!(
        manager.create["cicustom"],
        "user=local:snippets/lab-manager.yaml"
    );
    let snippet = root.join(SNIPPET);
    assert_eq!(mode(&snippet), 0o600, "it holds the admin talosconfig");
    cloud_init_schema(&snippet);

    let user_data = std::fs::read_to_string(&snippet).unwrap();
    assert!(user_data.starts_with("#cloud-config\n"));
    let doc: Value = serde_norway::from_str(&user_data).unwrap();
    assert_eq!(doc["hostname"], "manager");
    assert_eq!(doc["fqdn"], "manager.lab");
    let user = &doc["users"][0];
    assert_eq!(user["name"], "lab");
    assert_eq!(
        user["ssh_authorized_keys"][0]
            .as_str()
            .unwrap()
            .split_whitespace()
            .last(),
        Some("admin@laptop")
    );
    let files = written_files(&user_data);
    let talosconfig = std::fs::read_to_string(state.join("talosconfig")).unwrap();
    assert_eq!(
        files["/etc/lab-manager/talosconfig"],
        ("0600".to_owned(), talosconfig)
    );
    for private in ["/etc/lab-manager/setup.env", "/etc/lab-manager/tools"] {
        assert_eq!(files[private].0, "0600", "{private}");
    }
    assert_eq!(files["/usr/local/sbin/lab-manager-setup"].0, "0755");
    assert!(
        !files.contains_key("/etc/lab-manager/git-token"),
        "no [gitops], no token"
    );
    assert!(!files["/etc/lab-manager/setup.env"]
        .1
        .contains("LAB_GITOPS_URL"));
    let runcmd = serde_norway::to_string(&doc["runcmd"]).unwrap();
    assert!(runcmd.contains("lab-manager-setup.service"), "{runcmd}");

    // The unit as systemd reads it, with the script at its path.
    let unit_dir = tempfile::tempdir().unwrap();
    let unit = unit_dir.path().join("lab-manager-setup.service");
    std::fs::write(
        &unit,
        &files["/etc/systemd/system/lab-manager-setup.service"].1,
    )
    .unwrap();
    let script = unit_dir.path().join("lab-manager-setup");
    std::fs::write(&script, &files["/usr/local/sbin/lab-manager-setup"].1).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    lab_tests::systemd_unit::verify(&unit, &[("/usr/local/sbin/lab-manager-setup", &script)])
        .unwrap();
}

#[test]
fn with_gitops_the_snippet_carries_the_token_and_the_repository() {
    let dir = tempfile::tempdir().unwrap();
    let lab_toml = lab_in(dir.path(), &gitops());
    let (root, _) = render(&lab_toml, dir.path());
    let snippet = root.join(SNIPPET);
    assert_eq!(mode(&snippet), 0o600);
    cloud_init_schema(&snippet);
    let files = written_files(&std::fs::read_to_string(&snippet).unwrap());
    assert_eq!(
        files["/etc/lab-manager/git-token"],
        ("0600".to_owned(), format!("{TOKEN}\n"))
    );
    let env = &files["/etc/lab-manager/setup.env"].1;
    for line in [
        format!("LAB_GITOPS_URL='{REPO}'"),
        "LAB_GITOPS_BRANCH='main'".to_owned(),
        "LAB_GITOPS_PATH='clusters/homelab'".to_owned(),
        "LAB_GITOPS_TOKEN_FILE='/etc/lab-manager/git-token'".to_owned(),
    ] {
        assert!(env.lines().any(|l| l == line), "{line}\n{env}");
    }
    assert!(!env.contains(TOKEN), "the token stays in its own file");
}

#[test]
fn the_default_tools_come_from_the_official_release_urls_at_the_clusters_versions() {
    let dir = tempfile::tempdir().unwrap();
    let (root, _) = render(&lab_in(dir.path(), ""), dir.path());
    let files = written_files(&std::fs::read_to_string(root.join(SNIPPET)).unwrap());
    let tools = &files["/etc/lab-manager/tools"].1;
    let expected = "\
talosctl v1.13.9 https://github.com/siderolabs/talos/releases/download/v1.13.9/talosctl-linux-amd64 - https://github.com/siderolabs/talos/releases/download/v1.13.9/sha256sum.txt
kubectl v1.36.3 https://dl.k8s.io/release/v1.36.3/bin/linux/amd64/kubectl - https://dl.k8s.io/release/v1.36.3/bin/linux/amd64/kubectl.sha256
flux v2.9.4 https://github.com/fluxcd/flux2/releases/download/v2.9.4/flux_2.9.4_linux_amd64.tar.gz flux https://github.com/fluxcd/flux2/releases/download/v2.9.4/flux_2.9.4_checksums.txt
helm v4.2.4 https://get.helm.sh/helm-v4.2.4-linux-amd64.tar.gz linux-amd64/helm https://get.helm.sh/helm-v4.2.4-linux-amd64.tar.gz.sha256sum
";
    assert_eq!(tools, expected);
    let env = &files["/etc/lab-manager/setup.env"].1;
    assert!(env.lines().any(|l| l == "LAB_CURL_PROTO='=https'"), "{env}");
    assert!(
        env.lines()
            .any(|l| l == "LAB_CONTROL_PLANES='10.10.1.11 10.10.1.12 10.10.1.13'"),
        "{env}"
    );

    // An explicit Kubernetes release moves kubectl with it; a pinned sha256 replaces the file.
    let sha = "ab".repeat(32);
    let lab_toml = lab_in(
        dir.path(),
        &format!("\n[manager.tools.helm]\nversion = \"3.19.0\"\nsha256 = \"{sha}\"\n"),
    );
    let with_k8s = std::fs::read_to_string(&lab_toml).unwrap().replace(
        "talos_version = \"v1.13.9\"",
        "talos_version = \"v1.13.9\"\nkubernetes_version = \"1.35.4\"",
    );
    std::fs::write(&lab_toml, with_k8s).unwrap();
    let other = tempfile::tempdir().unwrap();
    let (root, _) = render(&lab_toml, other.path());
    let files = written_files(&std::fs::read_to_string(root.join(SNIPPET)).unwrap());
    let tools = &files["/etc/lab-manager/tools"].1;
    assert!(
        tools
            .contains("kubectl v1.35.4 https://dl.k8s.io/release/v1.35.4/bin/linux/amd64/kubectl "),
        "{tools}"
    );
    assert!(tools.contains(&format!("helm v3.19.0 https://get.helm.sh/helm-v3.19.0-linux-amd64.tar.gz linux-amd64/helm sha256:{sha}\n")), "{tools}");
}

#[test]
fn the_setup_script_passes_bash_n_and_shellcheck() {
    let script = workspace::root().join("bootstrap/src/render/manager-setup.sh");
    let out = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let out = Command::new("shellcheck")
        .arg(&script)
        .output()
        .expect("shellcheck (Debian package shellcheck, in scripts/test.sh's needs)");
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn plan_shows_each_tools_release_and_whether_it_is_pinned() {
    let dir = tempfile::tempdir().unwrap();
    let sha = "cd".repeat(32);
    let lab_toml = lab_in(
        dir.path(),
        &format!(
            "\n[manager.tools.kubectl]\nsha256 = \"{sha}\"\n{}",
            gitops()
        ),
    );
    let sim = Simulator::start();
    let out = Command::new(BIN)
        .args(["plan", "--proxmox-only", "--api", "pvesh", "--pvesh"])
        .arg(sim.pvesh_shim())
        .arg(&lab_toml)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    for line in [
        "Manager tools (installed by the manager on first boot, linux-amd64):",
        "  talosctl v1.13.9 from https://github.com/siderolabs/talos/releases/download/v1.13.9/talosctl-linux-amd64 (not pinned: sha256 from https://github.com/siderolabs/talos/releases/download/v1.13.9/sha256sum.txt)",
        "  kubectl v1.36.3 from https://dl.k8s.io/release/v1.36.3/bin/linux/amd64/kubectl (sha256 pinned in lab.toml)",
        "  flux v2.9.4 from https://github.com/fluxcd/flux2/releases/download/v2.9.4/flux_2.9.4_linux_amd64.tar.gz (not pinned: sha256 from https://github.com/fluxcd/flux2/releases/download/v2.9.4/flux_2.9.4_checksums.txt)",
        "  helm v4.2.4 from https://get.helm.sh/helm-v4.2.4-linux-amd64.tar.gz (not pinned: sha256 from https://get.helm.sh/helm-v4.2.4-linux-amd64.tar.gz.sha256sum)",
        &format!("  then flux bootstrap git {REPO} (branch main, path clusters/homelab), once"),
    ] {
        assert!(stdout.lines().any(|l| l == line), "{line}\n{stdout}");
    }
    assert!(!stdout.contains(TOKEN));
}

const VALIDATE: Checker<'static> = Checker {
    bin: BIN,
    subcommand: "validate",
};

#[test]
fn malformed_versions_checksums_urls_and_gitops_are_refused_by_key() {
    let refused = |edit: &dyn Fn(&mut toml_edit::DocumentMut), expected: &[&str]| {
        let mut lab = workspace::config_document("lab.toml");
        edit(&mut lab);
        config_check::document_refused_with(VALIDATE, "lab.toml", &lab, expected);
    };
    refused(
        &|lab| lab["manager"]["tools"]["kubectl"]["version"] = value("latest"),
        &["key `manager.tools.kubectl.version`: `latest` is not a release like `v1.2.3`"],
    );
    refused(
        &|lab| lab["manager"]["tools"]["flux"]["sha256"] = value("abc123"),
        &["key `manager.tools.flux.sha256`: `abc123` is not a SHA-256"],
    );
    refused(
        &|lab| {
            lab["manager"]["tools"]["helm"]["url"] =
                value("http://mirror.example/helm-v4.2.4-linux-amd64.tar.gz")
        },
        &["key `manager.tools.helm.url`: `http://mirror.example/helm-v4.2.4-linux-amd64.tar.gz` is not an https:// URL"],
    );
    refused(
        &|lab| lab["cluster"]["kubernetes_version"] = value("1.36"),
        &["key `cluster.kubernetes_version`: `1.36` is not a Kubernetes release"],
    );
    // A Talos release lab-bootstrap has no Kubernetes default for: kubectl's must be named.
    refused(
        &|lab| {
            lab["cluster"]["talos_version"] = value("v1.99.0");
        },
        &["key `manager.tools.kubectl.version`: lab-bootstrap does not know which Kubernetes release Talos `v1.99.0` runs by default"],
    );
    refused(
        &|lab| {
            lab["gitops"]["url"] = value("git@github.com:me/fleet.git");
            lab["gitops"]["token_file"] = value("no-such-token");
        },
        &[
            "key `gitops.url`: `git@github.com:me/fleet.git` is not an https:// repository URL",
            "key `gitops.token_file`: cannot read",
        ],
    );
    refused(
        &|lab| {
            lab["gitops"]["url"] = value(REPO);
            lab["gitops"]["token_file"] = value("/dev/null");
            lab["gitops"]["path"] = value("../elsewhere");
        },
        &[
            "key `gitops.path`: `../elsewhere` is not a relative directory of the repository",
            "key `gitops.token_file`: /dev/null is empty",
        ],
    );
}

/// A static file server on loopback standing in for github.com, dl.k8s.io and get.helm.sh:
/// `GET /<host>/<path>` serves `<root>/<host>/<path>`. Counts the requests.
struct Releases {
    base: String,
    requests: Arc<AtomicUsize>,
}

impl Releases {
    fn serve(root: PathBuf) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}/", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                counted.fetch_add(1, Ordering::SeqCst);
                let request = String::from_utf8_lossy(&request);
                let path = request.split_whitespace().nth(1).unwrap_or("/");
                let file = root.join(path.trim_start_matches('/'));
                let response = match std::fs::read(&file) {
                    Ok(body) if !path.contains("..") => {
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        r.extend(body);
                        r
                    }
                    _ => {
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_vec()
                    }
                };
                let _ = stream.write_all(&response);
            }
        });
        Self { base, requests }
    }
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// A stand-in for each tool: records its arguments (and, for flux, the token it was given) in
/// `$FAKE_LOG`. talosctl refuses `kubeconfig` twice (the cluster not up yet), then writes one.
fn fake_tool(name: &str) -> String {
    let body = match name {
        "talosctl" => {
            r#"
n=$(cat "$FAKE_LOG.talosctl-tries" 2>/dev/null || echo 0)
echo $((n + 1)) >"$FAKE_LOG.talosctl-tries"
if [ "$n" -lt 2 ]; then echo "rpc error: connection refused" >&2; exit 1; fi
out=${!#}
printf 'apiVersion: v1\nkind: Config\nclusters: []\n' >"$out"
"#
        }
        "flux" => r#"echo "flux token=$GIT_PASSWORD" >>"$FAKE_LOG""#,
        _ => "",
    };
    format!("#!/bin/bash\necho \"{name} $*\" >>\"$FAKE_LOG\"\n{body}\n")
}

/// Serves every tool of the rendered tools file under `www` as its project publishes it:
/// the binary or its `.tar.gz`, and a checksum file in the project's format (with a line for
/// another file first, so the right line must be picked). Returns the tools file pointing at
/// `base` instead of the official hosts.
fn publish(tools: &str, www: &Path, base: &str) -> String {
    for line in tools.lines() {
        let [name, _version, url, member, checksum]: [&str; 5] =
            line.split(' ').collect::<Vec<_>>().try_into().unwrap();
        let file = www.join(url.strip_prefix("https://").unwrap());
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        if file.exists() {
            // Published once: a release's files do not change.
        } else if member == "-" {
            std::fs::write(&file, fake_tool(name)).unwrap();
        } else {
            let staging = tempfile::tempdir().unwrap();
            let binary = staging.path().join(member);
            std::fs::create_dir_all(binary.parent().unwrap()).unwrap();
            std::fs::write(&binary, fake_tool(name)).unwrap();
            let status = Command::new("tar")
                .arg("-czf")
                .arg(&file)
                .arg("-C")
                .arg(staging.path())
                .arg(member)
                .status()
                .unwrap();
            assert!(status.success());
        }
        let file_name = url.rsplit('/').next().unwrap();
        let hash = sha256(&file);
        if let Some(sums_url) = checksum.strip_prefix("https://") {
            let sums = if sums_url.ends_with("kubectl.sha256") {
                format!("{hash}\n")
            } else {
                format!(
                    "{}  {name}-darwin-arm64\n{hash}  {file_name}\n",
                    "0".repeat(64)
                )
            };
            std::fs::write(www.join(sums_url), sums).unwrap();
        }
    }
    tools.replace("https://", base)
}

struct Manager {
    dir: tempfile::TempDir,
    env: PathBuf,
    script: PathBuf,
    files: BTreeMap<String, (String, String)>,
}

impl Manager {
    /// Renders `lab_toml` and lays out the manager's files under a temporary directory: the
    /// rendered script, tools (pointed at `releases`), talosconfig and token, and the rendered
    /// settings with only the paths (and plain HTTP for loopback) moved into the directory.
    fn from(lab_toml: &Path, www: &Path, releases: &Releases) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (root, _) = render(lab_toml, dir.path());
        let files = written_files(&std::fs::read_to_string(root.join(SNIPPET)).unwrap());
        let d = dir.path();
        let etc = d.join("etc");
        let home = d.join("home");
        let bin = d.join("bin");
        for path in [&etc, &home, &bin] {
            std::fs::create_dir_all(path).unwrap();
        }
        let tools = publish(&files["/etc/lab-manager/tools"].1, www, &releases.base);
        std::fs::write(etc.join("tools"), tools).unwrap();
        std::fs::write(
            etc.join("talosconfig"),
            &files["/etc/lab-manager/talosconfig"].1,
        )
        .unwrap();
        if let Some((_, token)) = files.get("/etc/lab-manager/git-token") {
            std::fs::write(etc.join("git-token"), token).unwrap();
        }
        let script = d.join("lab-manager-setup");
        std::fs::write(&script, &files["/usr/local/sbin/lab-manager-setup"].1).unwrap();
        let mut env = files["/etc/lab-manager/setup.env"].1.clone();
        env.push_str(&format!(
            "LAB_USER=nobody\nLAB_HOME={}\nLAB_TOOLS_FILE={}\nLAB_BIN_DIR={}\nLAB_TALOSCONFIG={}\nLAB_STATE_DIR={}\nLAB_CURL_PROTO='=http'\nLAB_CLUSTER_DELAY=0\nLAB_DOWNLOAD_TRIES=1\n",
            home.display(),
            etc.join("tools").display(),
            bin.display(),
            etc.join("talosconfig").display(),
            d.join("state").display(),
        ));
        if files.contains_key("/etc/lab-manager/git-token") {
            env.push_str(&format!(
                "LAB_GITOPS_TOKEN_FILE={}\n",
                etc.join("git-token").display()
            ));
        }
        let env_file = etc.join("setup.env");
        std::fs::write(&env_file, env).unwrap();
        Self {
            dir,
            env: env_file,
            script,
            files,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn run(&self) -> Output {
        Command::new("bash")
            .arg(&self.script)
            .arg(&self.env)
            .env("FAKE_LOG", self.path("calls.log"))
            .output()
            .unwrap()
    }

    fn calls(&self) -> String {
        std::fs::read_to_string(self.path("calls.log")).unwrap_or_default()
    }
}

fn nobody() -> (u32, u32) {
    let out = Command::new("id").args(["-u", "nobody"]).output().unwrap();
    let uid = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let out = Command::new("id").args(["-g", "nobody"]).output().unwrap();
    let gid = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    (uid, gid)
}

#[test]
fn the_setup_script_installs_checked_tools_places_both_configs_and_bootstraps_flux_once() {
    let lab_dir = tempfile::tempdir().unwrap();
    let lab_toml = lab_in(lab_dir.path(), &gitops());
    let www = tempfile::tempdir().unwrap();
    let releases = Releases::serve(www.path().to_owned());
    let manager = Manager::from(&lab_toml, www.path(), &releases);

    let out = manager.run();
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    for tool in ["talosctl", "kubectl", "flux", "helm"] {
        let installed = manager.path(&format!("bin/{tool}"));
        assert_eq!(mode(&installed), 0o755, "{tool}");
        assert_eq!(
            std::fs::read_to_string(&installed).unwrap(),
            fake_tool(tool),
            "{tool}"
        );
        assert!(log.contains(&format!("{tool} v")), "{log}");
    }

    let (uid, gid) = nobody();
    let talosconfig = manager.path("home/.talos/config");
    let kubeconfig = manager.path("home/.kube/config");
    for (file, dir) in [
        (&talosconfig, manager.path("home/.talos")),
        (&kubeconfig, manager.path("home/.kube")),
    ] {
        assert_eq!(mode(file), 0o600, "{}", file.display());
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
        let meta = std::fs::metadata(file).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (uid, gid), "{}", file.display());
    }
    assert_eq!(
        std::fs::read_to_string(&talosconfig).unwrap(),
        manager.files["/etc/lab-manager/talosconfig"].1
    );
    assert!(std::fs::read_to_string(&kubeconfig)
        .unwrap()
        .contains("kind: Config"));

    // talosctl was asked three times, each control plane in turn, until one answered.
    let calls = manager.calls();
    let asked: Vec<&str> = calls
        .lines()
        .filter(|l| l.starts_with("talosctl") && l.contains(" kubeconfig "))
        .collect();
    assert_eq!(asked.len(), 3, "{calls}");
    for (call, node) in asked.iter().zip(["10.10.1.11", "10.10.1.12", "10.10.1.13"]) {
        assert!(
            call.contains(&format!(
                "--talosconfig {} --nodes {node} kubeconfig --force --merge=false",
                talosconfig.display()
            )),
            "{call}"
        );
    }
    assert_eq!(log.matches("does not answer yet").count(), 2, "{log}");
    let flux: Vec<&str> = calls.lines().filter(|l| l.starts_with("flux")).collect();
    assert_eq!(
        flux,
        [
            format!("flux bootstrap git --kubeconfig {} --url {REPO} --branch main --path clusters/homelab --username git --token-auth --silent", kubeconfig.display()).as_str(),
            &format!("flux token={TOKEN}"),
        ],
        "{calls}"
    );
    assert!(
        calls.contains("kubectl --kubeconfig"),
        "the API is waited for before flux"
    );
    // Secrets stay out of the log (the journal).
    assert!(!log.contains(TOKEN), "{log}");
    let key = &manager.files["/etc/lab-manager/talosconfig"].1;
    let key = key
        .lines()
        .find(|l| l.trim_start().starts_with("key:"))
        .unwrap();
    assert!(
        !log.contains(key.trim_start().trim_start_matches("key: ")),
        "{log}"
    );

    // A second run (a reboot, a restart): nothing downloaded, flux not run again.
    let before = releases.requests.load(Ordering::SeqCst);
    let out = manager.run();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(releases.requests.load(Ordering::SeqCst), before);
    assert_eq!(manager.calls().matches("flux bootstrap").count(), 1);
    assert!(
        text(&out).contains("flux: already bootstrapped"),
        "{}",
        text(&out)
    );
}

#[test]
fn without_gitops_no_flux_bootstrap_runs() {
    let lab_dir = tempfile::tempdir().unwrap();
    let lab_toml = lab_in(lab_dir.path(), "");
    let www = tempfile::tempdir().unwrap();
    let releases = Releases::serve(www.path().to_owned());
    let manager = Manager::from(&lab_toml, www.path(), &releases);
    let out = manager.run();
    assert!(out.status.success(), "{}", text(&out));
    assert!(manager.path("home/.kube/config").exists());
    assert!(
        !manager.calls().contains("flux bootstrap"),
        "{}",
        manager.calls()
    );
}

#[test]
fn a_download_not_matching_its_published_checksum_is_not_installed_and_fails_naming_the_tool() {
    let lab_dir = tempfile::tempdir().unwrap();
    let lab_toml = lab_in(lab_dir.path(), "");
    let www = tempfile::tempdir().unwrap();
    let releases = Releases::serve(www.path().to_owned());
    let manager = Manager::from(&lab_toml, www.path(), &releases);
    // The binary changed after its checksum was published (or in transit).
    let kubectl = www
        .path()
        .join("dl.k8s.io/release/v1.36.3/bin/linux/amd64/kubectl");
    std::fs::write(&kubectl, "#!/bin/sh\necho tampered\n").unwrap();

    let out = manager.run();
    let log = text(&out);
    assert!(!out.status.success(), "{log}");
    assert!(
        log.contains(&format!(
            "kubectl v1.36.3: SHA-256 mismatch for {}dl.k8s.io/release/v1.36.3/bin/linux/amd64/kubectl: expected",
            releases.base
        )),
        "{log}"
    );
    assert!(log.contains(&sha256(&kubectl)), "{log}");
    assert!(!manager.path("bin/kubectl").exists());
    assert!(!manager.path("home/.kube/config").exists());
}

#[test]
fn a_pinned_checksum_is_what_is_checked() {
    let www = tempfile::tempdir().unwrap();
    let releases = Releases::serve(www.path().to_owned());
    // Pinned to what the project publishes: installed, though the checksum file says otherwise.
    let lab_dir = tempfile::tempdir().unwrap();
    let probe = Manager::from(&lab_in(lab_dir.path(), ""), www.path(), &releases);
    let helm_tgz = www
        .path()
        .join("get.helm.sh/helm-v4.2.4-linux-amd64.tar.gz");
    let right = sha256(&helm_tgz);
    drop(probe);
    let lab_toml = lab_in(
        lab_dir.path(),
        &format!("\n[manager.tools.helm]\nsha256 = \"{right}\"\n"),
    );
    let manager = Manager::from(&lab_toml, www.path(), &releases);
    std::fs::write(
        www.path()
            .join("get.helm.sh/helm-v4.2.4-linux-amd64.tar.gz.sha256sum"),
        format!("{}  helm-v4.2.4-linux-amd64.tar.gz\n", "1".repeat(64)),
    )
    .unwrap();
    let out = manager.run();
    assert!(out.status.success(), "{}", text(&out));
    assert!(manager.path("bin/helm").exists());

    // Pinned to anything else: refused, naming the tool, not installed.
    let wrong = "0".repeat(64);
    let lab_toml = lab_in(
        lab_dir.path(),
        &format!("\n[manager.tools.helm]\nsha256 = \"{wrong}\"\n"),
    );
    let manager = Manager::from(&lab_toml, www.path(), &releases);
    let out = manager.run();
    let log = text(&out);
    assert!(!out.status.success(), "{log}");
    assert!(
        log.contains(&format!(
            "helm v4.2.4: SHA-256 mismatch for {}get.helm.sh/helm-v4.2.4-linux-amd64.tar.gz: expected {wrong}, got {right}; not installed",
            releases.base
        )),
        "{log}"
    );
    assert!(!manager.path("bin/helm").exists());
}
