//! `lab-bootstrap backup` and `restore --dry-run`, the real binary against the stand-in apid
//! (mutual TLS with the lab's own PKI): the archive 0600 in a 0700 directory, unpacked by the
//! real `tar` and checked with the real `sha256sum` against its manifest and the snapshot the
//! node streamed; `[backup] keep` keeping exactly the newest of this lab's archives, and a
//! failed backup removing nothing (and an old archive that cannot be removed said apart from a
//! failed backup); restore --dry-run accepting a good archive with its
//! recovery steps, refusing a tampered one (naming the file), one of another lab and one of
//! another cluster; the daily timer's units passing `systemd-analyze verify`.

#[path = "support/talos_api.rs"]
mod apid;

use lab_bootstrap::render::backup::{files, BackupJob};
use lab_bootstrap::state_dir::StateDir;
use lab_bootstrap::talos::{AdminCredentials, Secrets};
use lab_bootstrap::Lab;
use lab_talos_api::client::{Client, Credentials, Timeouts};
use lab_talos_api::stand_in::etcd_snapshot_of;
use lab_tests::{systemd_unit, workspace};
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_lab-bootstrap");
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A lab (configs/lab.toml with `[backup]` pointing into the test's directory), its state
/// directory rendered, and a stand-in apid for its secrets.
struct Bench {
    dir: tempfile::TempDir,
    apid: apid::Apid,
}

impl Bench {
    fn new(name: &str, keep: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut doc = workspace::config_document("lab.toml");
        doc["cluster"]["name"] = toml_edit::value(name);
        doc["backup"] = toml_edit::table();
        doc["backup"]["dir"] = toml_edit::value(dir.path().join("backups").display().to_string());
        doc["backup"]["keep"] = toml_edit::value(i64::from(keep));
        let file = dir.path().join("lab.toml");
        std::fs::write(&file, doc.to_string()).unwrap();
        let lab: Lab = lab_daemon::config::load(&file).unwrap();
        let state = StateDir::new(dir.path().join("state"));
        lab_bootstrap::render::state::render_all(&lab, &dir.path().join("root"), &state).unwrap();
        let secrets = Secrets::load(&state.talos_secrets()).unwrap();
        let apid = apid::start(&secrets, LOOPBACK, "cp1", "kubeconfig", apid::all_ready());
        Self { dir, apid }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn state(&self) -> StateDir {
        StateDir::new(self.path("state"))
    }

    fn backups(&self) -> PathBuf {
        self.path("backups")
    }

    /// etcd bootstrapped on the stand-in, as apply does: only then is there a snapshot.
    fn bootstrap(&self) {
        let state = self.state();
        let secrets = Secrets::load(&state.talos_secrets()).unwrap();
        let admin = AdminCredentials::load(&state.talos_admin()).unwrap();
        let pem = |encoded: &str| {
            use base64::Engine;
            String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .unwrap(),
            )
            .unwrap()
        };
        let credentials = Credentials::from_pem(
            &pem(&secrets.certs.os.crt),
            &pem(&admin.crt),
            &pem(&admin.key),
        )
        .unwrap();
        let address = self.apid.address.to_string();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                Client::connect(&address, &credentials, Timeouts::default())
                    .await
                    .unwrap()
                    .bootstrap()
                    .await
                    .unwrap()
            });
    }

    fn backup(&self) -> Output {
        Command::new(BIN)
            .arg("backup")
            .arg("--state")
            .arg(self.path("state"))
            .args(["--talos-endpoint", &self.apid.address.to_string()])
            .arg(self.path("lab.toml"))
            .output()
            .unwrap()
    }

    /// A backup that must succeed; its archive.
    fn backup_ok(&self) -> PathBuf {
        let out = self.backup();
        assert!(out.status.success(), "{}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout.lines().next().unwrap();
        let archive = line
            .strip_prefix("backup ")
            .and_then(|rest| rest.split(' ').next())
            .unwrap();
        PathBuf::from(archive)
    }

    fn restore(&self, archive: &Path, state: &Path, dry_run: bool) -> Output {
        let mut command = Command::new(BIN);
        command.arg("restore");
        if dry_run {
            command.arg("--dry-run");
        }
        command
            .arg("--state")
            .arg(state)
            .arg(archive)
            .arg(self.path("lab.toml"))
            .output()
            .unwrap()
    }
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn run(program: &str, args: &[&str], dir: &Path) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{program} {args:?}: {}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// The archive unpacked by the real tar into a new directory.
fn unpack(archive: &Path) -> tempfile::TempDir {
    let out = tempfile::tempdir().unwrap();
    run(
        "tar",
        &[
            "-xzf",
            archive.to_str().unwrap(),
            "-C",
            out.path().to_str().unwrap(),
        ],
        out.path(),
    );
    out
}

/// `sha256sum`'s hash of `file` in `dir`.
fn sha256sum(dir: &Path, file: &str) -> String {
    run("sha256sum", &["--", file], dir)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

fn manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

/// The archive's files, repacked by the real tar after `change` in the unpacked copy.
fn tampered(archive: &Path, into: &Path, change: impl FnOnce(&Path)) -> PathBuf {
    let unpacked = unpack(archive);
    change(unpacked.path());
    let out = into.join(archive.file_name().unwrap());
    run(
        "tar",
        // As someone repacking by hand would: `./`-prefixed names, directories included.
        &["-czf", out.to_str().unwrap(), "."],
        unpacked.path(),
    );
    out
}

#[test]
fn a_backup_holds_the_streamed_snapshot_and_the_state_directory_with_right_checksums() {
    let bench = Bench::new("lab", 7);
    bench.bootstrap();
    let archive = bench.backup_ok();
    assert_eq!(archive.parent().unwrap(), bench.backups());
    let name = archive.file_name().unwrap().to_str().unwrap();
    assert!(
        name.starts_with("lab-")
            && name.ends_with("Z.tar.gz")
            && name.len() == "lab-20261201T171123Z.tar.gz".len(),
        "{name}"
    );
    assert_eq!(
        mode(&archive),
        0o600,
        "the archive holds the cluster's secrets"
    );
    assert_eq!(mode(&bench.backups()), 0o700);
    // Nothing half-written left beside it.
    let names: Vec<_> = std::fs::read_dir(bench.backups())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");

    let unpacked = unpack(&archive);
    let dir = unpacked.path();
    let manifest = manifest(dir);
    assert_eq!(manifest["lab"], "lab");
    assert_eq!(manifest["talos_version"], "v1.13.9");
    // What the node streamed, whole, and the checksum the manifest gives is that of those bytes.
    let snapshot = std::fs::read(dir.join("etcd.snapshot")).unwrap();
    assert_eq!(snapshot, etcd_snapshot_of("cp1"));
    assert_eq!(
        manifest["snapshot"]["sha256"],
        sha256sum(dir, "etcd.snapshot")
    );
    assert_eq!(manifest["snapshot"]["size"], snapshot.len());
    // Every file of the state directory, as it is there, listed with its checksum.
    let state = bench.state();
    let mut listed: Vec<String> = Vec::new();
    for file in manifest["files"].as_array().unwrap() {
        let path = file["path"].as_str().unwrap();
        assert_eq!(file["sha256"], sha256sum(dir, path), "{path}");
        let relative = path.strip_prefix("state/").unwrap();
        assert_eq!(
            std::fs::read(dir.join(path)).unwrap(),
            std::fs::read(state.path().join(relative)).unwrap(),
            "{path}"
        );
        listed.push(relative.to_owned());
    }
    for wanted in [
        "talos-secrets.yaml",
        "talos-admin.yaml",
        "talosconfig",
        "vpn-gateway.key",
        "vpn-clients/laptop.conf",
    ] {
        assert!(
            listed.iter().any(|l| l == wanted),
            "{wanted} not in {listed:?}"
        );
    }
    // Taken from the one control plane there is, asked once.
    assert_eq!(bench.apid.stand_in.record().snapshot_calls, 1);
}

/// Archives of this lab from long ago, oldest first, and two files that are not its own.
fn old_archives(bench: &Bench) -> Vec<PathBuf> {
    std::fs::create_dir_all(bench.backups()).unwrap();
    let old: Vec<PathBuf> = (1..=5)
        .map(|day| {
            bench
                .backups()
                .join(format!("lab-2020010{day}T030000Z.tar.gz"))
        })
        .collect();
    for path in &old {
        std::fs::write(path, "an old archive").unwrap();
    }
    std::fs::write(
        bench.backups().join("lab-b-20200101T030000Z.tar.gz"),
        "another lab's",
    )
    .unwrap();
    std::fs::write(bench.backups().join("notes.txt"), "the user's").unwrap();
    old
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn retention_keeps_the_newest_only_after_a_backup_succeeded() {
    let bench = Bench::new("lab", 3);
    let old = old_archives(&bench);
    let before = listing(&bench.backups());

    // etcd not bootstrapped: the node has no snapshot to give.
    let failed = bench.backup();
    assert!(!failed.status.success(), "{}", text(&failed));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains("EtcdSnapshot") && stderr.contains("etcd is not running"),
        "{stderr}"
    );
    assert!(stderr.contains("no archive written or removed"), "{stderr}");
    assert_eq!(
        listing(&bench.backups()),
        before,
        "a failed backup removes nothing"
    );
    // Each control plane asked in turn before giving up (the stand-in answers for all three).
    assert_eq!(bench.apid.stand_in.record().snapshot_calls, 3);
    for node in ["cp1 (10.10.1.11)", "cp2 (10.10.1.12)", "cp3 (10.10.1.13)"] {
        assert!(stderr.contains(node), "{node}: {stderr}");
    }

    bench.bootstrap();
    let archive = bench.backup_ok();
    let mut expected = vec![
        "lab-20200104T030000Z.tar.gz".to_owned(),
        "lab-20200105T030000Z.tar.gz".to_owned(),
        archive.file_name().unwrap().to_str().unwrap().to_owned(),
        "lab-b-20200101T030000Z.tar.gz".to_owned(),
        "notes.txt".to_owned(),
    ];
    expected.sort();
    assert_eq!(listing(&bench.backups()), expected);
    assert!(!old[0].exists());
}

#[test]
fn restore_dry_run_accepts_a_good_archive_and_prints_the_recovery() {
    let bench = Bench::new("lab", 7);
    bench.bootstrap();
    let archive = bench.backup_ok();
    let out = bench.restore(&archive, &bench.path("state"), true);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let sum = manifest(unpack(&archive).path())["snapshot"]["sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(stdout.contains(&sum), "{stdout}");
    assert!(
        stdout.contains("holds the same cluster's secrets"),
        "{stdout}"
    );
    assert!(
        stdout.contains("talosctl --talosconfig")
            && stdout.contains("bootstrap --recover-from=./etcd.snapshot"),
        "{stdout}"
    );
    // -n of the first control plane's net1 address.
    assert!(stdout.contains("-n 10.10.1.11 "), "{stdout}");

    // On a host that lost its state directory, the first step is putting it back.
    let empty = bench.restore(&archive, &bench.path("no-state"), true);
    assert!(empty.status.success(), "{}", text(&empty));
    assert!(
        String::from_utf8_lossy(&empty.stdout).contains("restore the state directory"),
        "{}",
        text(&empty)
    );

    // Not half-done: without --dry-run, nothing.
    let real = bench.restore(&archive, &bench.path("state"), false);
    assert_eq!(real.status.code(), Some(64), "{}", text(&real));
    assert!(
        String::from_utf8_lossy(&real.stderr).contains("not implemented"),
        "{}",
        text(&real)
    );
}

#[test]
fn restore_dry_run_refuses_a_tampered_archive_naming_the_file() {
    let bench = Bench::new("lab", 7);
    bench.bootstrap();
    let archive = bench.backup_ok();
    let work = bench.path("tampered");
    std::fs::create_dir(&work).unwrap();

    // Repacked as it was: accepted (so what follows fails for the change alone).
    let same = tampered(&archive, &work, |_| {});
    let out = bench.restore(&same, &bench.path("state"), true);
    assert!(out.status.success(), "{}", text(&out));

    let flipped = tampered(&archive, &work, |dir| {
        let path = dir.join("etcd.snapshot");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[5000] ^= 0x01;
        std::fs::write(&path, bytes).unwrap();
    });
    let out = bench.restore(&flipped, &bench.path("state"), true);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`etcd.snapshot`") && stderr.contains("sha256"),
        "{stderr}"
    );

    let edited = tampered(&archive, &work, |dir| {
        let path = dir.join("state/talosconfig");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push('\n');
        std::fs::write(&path, text).unwrap();
    });
    let out = bench.restore(&edited, &bench.path("state"), true);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("`state/talosconfig`"),
        "{}",
        text(&out)
    );
}

#[test]
fn restore_dry_run_refuses_another_lab_s_archive_and_another_cluster_s() {
    let other_lab = Bench::new("other", 7);
    other_lab.bootstrap();
    let theirs = other_lab.backup_ok();
    let bench = Bench::new("lab", 7);
    let out = bench.restore(&theirs, &bench.path("state"), true);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("backup of lab `other`, not of `lab` (cluster.name)"),
        "{stderr}"
    );

    // Same name, another cluster: its secrets would not be this state directory's.
    let twin = Bench::new("lab", 7);
    twin.bootstrap();
    let twins = twin.backup_ok();
    let out = bench.restore(&twins, &bench.path("state"), true);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("state/talos-secrets.yaml") && stderr.contains("another cluster"),
        "{stderr}"
    );
}

#[test]
fn the_backup_timer_and_service_pass_systemd_analyze_verify() {
    let root = tempfile::tempdir().unwrap();
    let units = root.path().join("etc/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    let job = BackupJob {
        program: PathBuf::from("/usr/local/sbin/lab-bootstrap"),
        lab_file: PathBuf::from("/root/my lab/lab.toml"),
        state: PathBuf::from("/var/lib/lab-bootstrap"),
    };
    for file in files(&job) {
        std::fs::write(units.join(file.path.file_name().unwrap()), &file.contents).unwrap();
    }
    let program = [("/usr/local/sbin/lab-bootstrap", Path::new(BIN))];
    systemd_unit::verify(&units.join("lab-backup.service"), &program).unwrap();
    systemd_unit::verify(&units.join("lab-backup.timer"), &program).unwrap();
    let service = std::fs::read_to_string(units.join("lab-backup.service")).unwrap();
    assert!(
        service.contains(r#"ExecStart="/usr/local/sbin/lab-bootstrap" backup --state "/var/lib/lab-bootstrap" "/root/my lab/lab.toml""#),
        "{service}"
    );
    let timer = std::fs::read_to_string(units.join("lab-backup.timer")).unwrap();
    for line in [
        "OnCalendar=daily",
        "Persistent=true",
        "RandomizedDelaySec=1h",
        "WantedBy=timers.target",
    ] {
        assert!(timer.lines().any(|l| l == line), "{line}: {timer}");
    }
}

#[test]
fn an_old_archive_that_cannot_be_removed_is_said_and_the_new_one_kept() {
    let bench = Bench::new("lab", 1);
    bench.bootstrap();
    // A directory by an archive's name: remove_file refuses it.
    let stuck = bench.backups().join("lab-20200101T030000Z.tar.gz");
    std::fs::create_dir_all(stuck.join("inside")).unwrap();
    let out = bench.backup();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("written, but removing the archives beyond `[backup] keep` failed")
            && stderr.contains("lab-20200101T030000Z.tar.gz"),
        "{stderr}"
    );
    let names = listing(&bench.backups());
    assert_eq!(names.len(), 2, "{names:?}");
    let new = names.iter().find(|n| !n.starts_with("lab-2020")).unwrap();
    let ok = bench.restore(&bench.backups().join(new), &bench.path("state"), true);
    assert!(ok.status.success(), "{}", text(&ok));
}
