//! `lab-bootstrap apply` end to end on the host side: the Proxmox API is the simulator, the
//! Talos API a stand-in apid on loopback (or nothing, as while the nodes boot), and the
//! host's commands (systemctl, sysctl, pct) go to a recording stand-in that keeps
//! each container's files in a directory, so `pct exec -- sha256sum` answers what `pct push`
//! put there. First apply installs and starts everything (VMs after their snippets); a second runs no writing command;
//! a config the daemon's `check` refuses, or a reload or restart it does not take, stops apply;
//! a changed lb config is pushed alone and lab-lb reloaded; a killed apply converges; what
//! apply does on the host is, in every scenario, what plan printed; and a changed node config
//! is planned by field (secrets masked, Talos's dry-run mode) and applied workers first, control
//! planes one at a time with the cluster healthy in between, going on after an unhealthy stop.
//! On a three-node cluster, a guest on another node gets its commands and files over `ssh` to
//! that node (the stand-in runs them as the node would) and one on the router node plain `pct`
//! and `qm`; a node ssh does not reach stops apply, named, before the host side changes anything;
//! a guest HA moved gets its commands on the node it is on now (the stand-in refuses them on any
//! other, as `pct` and `qm` do) and destroy removes it there.

#[path = "support/talos_api.rs"]
mod apid;
mod support;
// The host tests only: the Proxmox tests run no program.
#[path = "support/stand_in.rs"]
mod stand_in;

use lab_bootstrap::talos::kubeconfig::admin_kubeconfig;
use lab_bootstrap::talos::Secrets;
use lab_tests::binaries::workspace_bin;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use support::proxmox_sim::Simulator;

struct Bench {
    dir: tempfile::TempDir,
    sim: Simulator,
}

/// Where the Talos API is while the nodes boot: a loopback port nothing listens on.
const NO_NODE: &str = "127.0.0.1:1";

const STAND_IN: &str = r#"#!/bin/bash
# Test stand-in for the host's commands; everything it does happens under $DIR.
DIR="@DIR@"
# A command the ssh stand-in runs on a node is logged as its ssh line alone.
[ -n "$STAND_IN_NODE" ] || echo "$*" >> "$DIR/commands.log"
[ "$1" = timeout ] && shift 2
if [ -e "$DIR/fail" ] && [ "$*" = "$(cat "$DIR/fail")" ]; then
  rm "$DIR/fail"; echo "killed here" >&2; exit 1
fi
case "$1" in
  # Another node of the cluster: refused while the test has made it unreachable, else the
  # command runs here as the node's shell runs what ssh hands it (its words split as a shell
  # splits them); the node's own files are kept under node-ADDRESS.
  ssh)
    while [ "$1" != -- ]; do case $1 in root@*) node=${1#root@} ;; esac; shift; done; shift
    [ -e "$DIR/unreachable-$node" ] && { echo "ssh: connect to host $node port 22: No route to host" >&2; exit 255; }
    eval "set -- $*"
    STAND_IN_NODE=$node exec "$0" "$@" ;;
  scp)
    from=${@: -2:1}; to=${@: -1}; node=${to%%:*}; node=${node#root@}
    [ -e "$DIR/unreachable-$node" ] && { echo "ssh: connect to host $node port 22: No route to host" >&2; exit 255; }
    f="$DIR/node-$node${to#*:}"
    [ -d "$(dirname "$f")" ] || { echo "scp: ${to#*:}: No such file or directory" >&2; exit 1; }
    cp "$from" "$f" ;;
  install) [ -n "$STAND_IN_NODE" ] && [ "$2" = -d ] && mkdir -p "$DIR/node-$STAND_IN_NODE$5" && chmod "$4" "$DIR/node-$STAND_IN_NODE$5" ;;
  rm) [ -n "$STAND_IN_NODE" ] && [ "$2" = -f ] && rm -f "$DIR/node-$STAND_IN_NODE$3" ;;
  # The host: a command is there unless the test took it away; apt-get brings it back.
  sh) [ "$2" = -c ] && [ -e "$DIR/host-lacks-${3#command -v }" ] && exit 1 ;;
  env)
    [ "$3" = apt-get ] || exit 0
    [ -e "$DIR/no-apt" ] && { echo "E: Unable to locate package" >&2; exit 100; }
    for p in "$@"; do
      case $p in dnsmasq-base) rm -f "$DIR/host-lacks-dnsmasq" ;; nftables) rm -f "$DIR/host-lacks-nft" ;; esac
    done ;;
  # A guest is only on the node it is on (on-node-VMID: its address, as the test moved it).
  pct|qm)
    if [ -e "$DIR/on-node-$3" ] && [ "$(cat "$DIR/on-node-$3")" != "$STAND_IN_NODE" ]; then
      echo "Configuration file 'nodes/${STAND_IN_NODE:-router}/$3.conf' does not exist" >&2; exit 2
    fi ;;&
  pct)
    case "$2" in
      status) if [ -e "$DIR/running-$3" ]; then echo "status: running"; else echo "status: stopped"; fi ;;
      start) touch "$DIR/running-$3" ;;
      # On another node, the file pushed is one of that node's.
      push) src=$4; [ -n "$STAND_IN_NODE" ] && src="$DIR/node-$STAND_IN_NODE$4"
            mkdir -p "$(dirname "$DIR/ct/$3$5")" && cp "$src" "$DIR/ct/$3$5"
            # A transfer cut short (the container's disk full): the file arrives truncated.
            if [ -e "$DIR/truncate-push-$3" ]; then truncate -s 150 "$DIR/ct/$3$5"; fi ;;
      exec)
        vmid=$3; shift 4
        [ -e "$DIR/running-$vmid" ] || { echo "container $vmid not running" >&2; exit 1; }
        if [ "$1" = sha256sum ]; then
          shift; rc=0
          for p in "$@"; do
            f="$DIR/ct/$vmid$p"
            if [ -f "$f" ]; then echo "$(sha256sum < "$f" | cut -d' ' -f1)  $p"
            else echo "sha256sum: $p: No such file or directory" >&2; rc=1; fi
          done
          exit $rc
        fi
        # The daemon's own check: it refuses with the message in refuse-VMID, as lab-lb and
        # lab-vpn do (stderr, exit 78).
        if [ "$2" = check ]; then
          [ -f "$DIR/ct/$vmid$3" ] || { echo "$1: $3: No such file or directory" >&2; exit 78; }
          # The real binary pushed into the container checks the real file pushed there.
          if [ -e "$DIR/real-check-$vmid" ]; then exec "$DIR/ct/$vmid$1" check "$DIR/ct/$vmid$3"; fi
          if [ -e "$DIR/refuse-$vmid" ]; then cat "$DIR/refuse-$vmid" >&2; exit 78; fi
          echo "$1: configuration file $3 is valid"; exit 0
        fi
        if [ "$1" = cat ]; then exec cat "$DIR/ct/$vmid$2"; fi
        if [ "$1" = mv ] && [ "$2" = -f ]; then mv -f "$DIR/ct/$vmid$3" "$DIR/ct/$vmid$4"; exit; fi
        if [ "$1" = rm ] && [ "$2" = -f ]; then rm -f "$DIR/ct/$vmid$3"; exit; fi
        # What systemd says of the unit: status-VMID when the test set one (a refused reload, a
        # failed unit), else the daemon serving; @N@ is how many reloads it had, as lab-daemon
        # counts them in its status.
        # A unit stopped (stopped-VMID, keeping its last status) is started by reload-or-restart,
        # and a started daemon has had no reload.
        if [ "$1" = systemctl ] && [ "$2" = reload-or-restart ]; then
          if [ -e "$DIR/stopped-$vmid" ]; then rm "$DIR/stopped-$vmid"; echo 0 > "$DIR/reloads-$vmid"
          else echo $(( $(cat "$DIR/reloads-$vmid" 2>/dev/null || echo 0) + 1 )) > "$DIR/reloads-$vmid"; fi
        fi
        if [ "$1" = systemctl ] && [ "$2" = show ]; then
          n=$(cat "$DIR/reloads-$vmid" 2>/dev/null || echo 0)
          if [ -e "$DIR/stopped-$vmid" ]; then printf 'ActiveState=inactive\nStatusText=serving: 4 listeners (reload %s)\n' "$n"
          elif [ -e "$DIR/status-$vmid" ]; then sed "s/@N@/$n/" "$DIR/status-$vmid"
          else printf 'ActiveState=active\nStatusText=serving: 4 listeners (reload %s)\n' "$n"; fi
          exit 0
        fi
        # A Debian container: a command is there when its file is (in /usr/sbin, or at the
        # path asked); apt-get installs nftables' nft and systemd-journal-remote's uploader.
        if [ "$1" = sh ] && [ "$2" = -c ]; then
          c=${3#command -v }
          case $c in /*) [ -e "$DIR/ct/$vmid$c" ] ;; *) [ -e "$DIR/ct/$vmid/usr/sbin/$c" ] ;; esac
          exit
        fi
        if [ "$1" = env ] && [ "$3" = apt-get ]; then
          [ -e "$DIR/no-apt" ] && { echo "E: Unable to locate package" >&2; exit 100; }
          if [ "$7" = install ]; then
            for p in "${@:8}"; do
              case $p in
                nftables) mkdir -p "$DIR/ct/$vmid/usr/sbin" && touch "$DIR/ct/$vmid/usr/sbin/nft" ;;
                systemd-journal-remote) mkdir -p "$DIR/ct/$vmid/lib/systemd" && touch "$DIR/ct/$vmid/lib/systemd/systemd-journal-upload" ;;
                keepalived|curl) mkdir -p "$DIR/ct/$vmid/usr/sbin" && touch "$DIR/ct/$vmid/usr/sbin/$p" ;;
              esac
            done
          fi
        fi ;;
    esac ;;
  qm)
    case "$2" in
      status) if [ -e "$DIR/running-$3" ]; then echo "status: running"; else echo "status: stopped"; fi ;;
      # The snippets' directory under root: snippets-dir names it for a lab on a shared storage.
      start) snippets=$(cat "$DIR/snippets-dir" 2>/dev/null || echo var/lib/vz/snippets)
             [ -e "$DIR/root/$snippets/lab-cp1.yaml" ] || { echo "cp1 would boot without its snippet" >&2; exit 1; }
             touch "$DIR/running-$3" ;;
    esac ;;
esac
exit 0
"#;

impl Bench {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        stand_in::stand_in_script(dir.path(), STAND_IN);
        let binaries = dir.path().join("bin");
        std::fs::create_dir(&binaries).unwrap();
        for program in ["lab-lb", "lab-vpn"] {
            std::fs::write(binaries.join(program), format!("{program} build 1")).unwrap();
        }
        std::fs::create_dir(dir.path().join("root")).unwrap();
        std::fs::write(dir.path().join("lab.toml"), example()).unwrap();
        Self {
            dir,
            sim: Simulator::start(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// apply while the Talos nodes do not answer yet (their API on a port nothing listens
    /// on), not waiting for them: the host side alone.
    fn apply(&self) -> Output {
        self.apply_with(&["--no-wait", "--talos-endpoint", NO_NODE])
    }

    fn apply_with(&self, extra: &[&str]) -> Output {
        let _ = std::fs::remove_file(self.path("commands.log"));
        self.sim
            .bootstrap_on_host("apply", self.dir.path())
            .arg("--yes")
            .args(extra)
            .output()
            .unwrap()
    }

    fn state(&self) -> PathBuf {
        self.path("root/var/lib/lab-bootstrap")
    }

    /// A stand-in apid for the state directory's secrets (made by a first apply), on
    /// loopback, judging nodes with `readiness`.
    fn apid(&self, readiness: lab_talos_api::stand_in::Readiness) -> apid::Apid {
        let secrets = Secrets::load(&self.state().join("talos-secrets.yaml")).unwrap();
        let lab: lab_bootstrap::Lab = lab_daemon::config::load(&self.path("lab.toml")).unwrap();
        let kubeconfig = admin_kubeconfig(&lab, &secrets).unwrap();
        apid::start(
            &secrets,
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            "cp1",
            &kubeconfig,
            readiness,
        )
    }

    /// plan or destroy, as apply runs: the simulator, the stand-in, the test root.
    fn run(&self, op: &str, extra: &[&str]) -> (Output, String) {
        let _ = std::fs::remove_file(self.path("commands.log"));
        let out = self
            .sim
            .bootstrap_on_host(op, self.dir.path())
            .args(extra)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out, text)
    }

    /// Every file and directory under the test root, relative to it.
    fn listing(&self) -> Vec<String> {
        fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                out.push(path.strip_prefix(base).unwrap().display().to_string());
                if path.is_dir() {
                    walk(&path, base, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.path("root"), &self.path("root"), &mut out);
        out.sort();
        out
    }

    fn apply_ok(&self) -> String {
        let out = self.apply();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        assert!(self.sim.rejected().is_empty(), "{:?}", self.sim.rejected());
        text
    }

    fn commands(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("commands.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Commands that change something: not `pct status`/`qm status`, not `sha256sum`, not
    /// `command -v`, not `cat`, not `systemctl show`, on the host or (over ssh) on another
    /// node; not the ssh probe of a node.
    fn writes(&self) -> Vec<String> {
        self.commands()
            .into_iter()
            .filter(|c| {
                let c = c
                    .split_once(" -- ")
                    .filter(|(ssh, _)| ssh.starts_with("ssh "))
                    .map_or(c.as_str(), |(_, on_node)| on_node);
                c != "true"
                    && !c.starts_with("pct status")
                    && !c.starts_with("qm status")
                    && !c.contains(" -- sha256sum ")
                    && !c.contains(" -- sh -c command -v ")
                    && !c.contains(" -- sh -c 'command -v ")
                    && !c.contains(" -- cat ")
                    && !c.contains(" -- systemctl show ")
                    && !c.starts_with("sh -c command -v ")
            })
            .collect()
    }

    fn in_container(&self, vmid: u32, path: &str) -> String {
        std::fs::read_to_string(self.path(&format!("ct/{vmid}{path}"))).unwrap()
    }
}

fn example() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/lab.toml"))
        .unwrap()
}

fn staged(bench: &Bench, path: &str) -> String {
    bench
        .path("root")
        .join("var/lib/lab/containers")
        .join(path)
        .display()
        .to_string()
}

#[test]
fn first_apply_installs_everything_and_a_second_runs_nothing() {
    let bench = Bench::new();
    let first = bench.apply_ok();
    let writes = bench.writes();
    let lb_toml = staged(&bench, "lb/etc/lab-lb/lb.toml");
    let key = staged(&bench, "vpn/etc/lab-vpn/private.key");
    for expected in [
        "systemctl daemon-reload".to_owned(),
        "sysctl -p /etc/sysctl.d/90-lab.conf".to_owned(),
        "systemctl enable lab-dnsmasq@vmbr1.service".to_owned(),
        "systemctl restart lab-dnsmasq@vmbr1.service".to_owned(),
        "systemctl restart lab-dnsmasq@vmbr2.service".to_owned(),
        "systemctl restart lab-network.service".to_owned(),
        "pct start 200".to_owned(),
        "qm start 205".to_owned(),
        "qm start 211".to_owned(),
        "qm start 222".to_owned(),
        "pct start 201".to_owned(),
        format!("pct push 200 {lb_toml} /etc/lab-lb/lb.toml.new --perms 644"),
        "pct exec 200 -- /usr/local/bin/lab-lb check /etc/lab-lb/lb.toml.new".to_owned(),
        "pct exec 200 -- mv -f /etc/lab-lb/lb.toml.new /etc/lab-lb/lb.toml".to_owned(),
        format!("pct push 201 {key} /etc/lab-vpn/private.key --perms 600"),
        "pct exec 201 -- /usr/local/bin/lab-vpn check /etc/lab-vpn/vpn.toml.new".to_owned(),
        "pct exec 200 -- systemctl daemon-reload".to_owned(),
        "pct exec 200 -- systemctl enable lab-lb.service".to_owned(),
        "pct exec 200 -- systemctl restart lab-lb.service".to_owned(),
        "pct exec 201 -- systemctl restart lab-vpn.service".to_owned(),
    ] {
        assert!(writes.contains(&expected), "{expected}\n{writes:#?}");
    }
    // The daemon-reload before the restarts, inside the container too.
    let at = |c: &str| writes.iter().position(|w| w == c).unwrap();
    assert!(at("systemctl daemon-reload") < at("systemctl restart lab-network.service"));
    assert!(
        at("pct exec 200 -- systemctl daemon-reload")
            < at("pct exec 200 -- systemctl restart lab-lb.service")
    );
    // Each config is checked by the binary being installed, with the key it names already in
    // place, and moved into place before its daemon starts.
    assert!(
        at("pct exec 200 -- /usr/local/bin/lab-lb check /etc/lab-lb/lb.toml.new")
            > writes
                .iter()
                .position(|w| w.starts_with("pct push 200") && w.contains(" /usr/local/bin/lab-lb "))
                .unwrap()
    );
    assert!(
        at("pct exec 201 -- /usr/local/bin/lab-vpn check /etc/lab-vpn/vpn.toml.new")
            > at(&format!(
                "pct push 201 {key} /etc/lab-vpn/private.key --perms 600"
            ))
    );
    assert!(
        at("pct exec 200 -- mv -f /etc/lab-lb/lb.toml.new /etc/lab-lb/lb.toml")
            < at("pct exec 200 -- systemctl restart lab-lb.service")
    );
    assert!(!bench.path("ct/200/etc/lab-lb/lb.toml.new").exists());
    assert!(!bench.path("ct/201/etc/lab-vpn/vpn.toml.new").exists());
    assert!(bench
        .in_container(201, "/etc/lab-vpn/vpn.toml")
        .contains("private.key"));
    // Each restarted daemon is asked whether it runs.
    for vmid in [200, 201] {
        assert!(
            bench.commands().iter().any(|c| c.starts_with(&format!(
                "pct exec {vmid} -- systemctl show -p ActiveState,StatusText "
            ))),
            "{:#?}",
            bench.commands()
        );
    }
    // Control planes before workers.
    assert!(at("qm start 213") < at("qm start 221"));
    // lab-vpn's forwarding policy needs nft: installed into the vpn container, before lab-vpn
    // starts, and into nothing else; both containers get the journal uploader.
    let install =
        "pct exec 201 -- env DEBIAN_FRONTEND=noninteractive apt-get -q -y --no-install-recommends install nftables systemd-journal-remote";
    assert!(
        at("pct exec 201 -- env DEBIAN_FRONTEND=noninteractive apt-get -q update") < at(install)
    );
    assert!(at(install) < at("pct exec 201 -- systemctl restart lab-vpn.service"));
    let lb_install =
        "pct exec 200 -- env DEBIAN_FRONTEND=noninteractive apt-get -q -y --no-install-recommends install systemd-journal-remote";
    assert!(at(lb_install) < at("pct exec 200 -- systemctl restart lab-lb.service"));
    assert_eq!(
        writes.iter().filter(|w| w.contains("apt-get")).count(),
        4,
        "{writes:#?}"
    );
    // 5 files into lb (binary, config, unit, routes drop-in, journal upload drop-in), 7 into
    // vpn (and its key, and the boot guard unit lab-vpn.service pulls in).
    assert_eq!(
        writes.iter().filter(|w| w.starts_with("pct push")).count(),
        12
    );
    // Every journal goes to the manager's net1 address, the uploader restarted after its
    // drop-in (not the daemon's unit), the host's node exporter on the host's net1 address.
    let upload = "/etc/systemd/system/systemd-journal-upload.service.d/lab.conf";
    for vmid in [200, 201] {
        assert!(bench
            .in_container(vmid, upload)
            .contains("--url=http://10.10.1.5:19532"));
        assert!(
            at(&format!("pct exec {vmid} -- systemctl daemon-reload"))
                < at(&format!(
                    "pct exec {vmid} -- systemctl restart systemd-journal-upload.service"
                ))
        );
    }
    let host_file = |path: &str| std::fs::read_to_string(bench.path("root").join(path)).unwrap();
    assert!(host_file(&upload[1..]).contains("--url=http://10.10.1.5:19532"));
    assert!(
        host_file("etc/systemd/system/prometheus-node-exporter.service.d/lab.conf")
            .contains("--web.listen-address=10.10.1.1:9100")
    );
    for unit in [
        "systemd-journal-upload.service",
        "prometheus-node-exporter.service",
    ] {
        assert!(at("systemctl daemon-reload") < at(&format!("systemctl restart {unit}")));
    }
    assert!(bench
        .in_container(201, "/etc/systemd/system/lab-vpn-guard.service")
        .contains("ExecStart=/usr/local/bin/lab-vpn guard"));
    // The routes the containers' LXC network config cannot hold: lb reaches net1 and the VPN
    // tunnel, vpn reaches net2, through the host.
    let lb_routes = bench.in_container(
        200,
        "/etc/systemd/system/lab-lb.service.d/10-lab-routes.conf",
    );
    assert!(
        lb_routes.contains("ExecStartPre=+/usr/sbin/ip route replace 10.10.1.0/24 via 10.10.2.1"),
        "{lb_routes}"
    );
    assert!(
        lb_routes.contains("ip route replace 10.10.100.0/24 via 10.10.2.1"),
        "{lb_routes}"
    );
    let vpn_routes = bench.in_container(
        201,
        "/etc/systemd/system/lab-vpn.service.d/10-lab-routes.conf",
    );
    assert!(
        vpn_routes.contains("ExecStartPre=+/usr/sbin/ip route replace 10.10.2.0/24 via 10.10.1.1"),
        "{vpn_routes}"
    );
    assert!(!vpn_routes.contains("10.10.100.0/24"), "{vpn_routes}");
    assert_eq!(
        bench.in_container(200, "/usr/local/bin/lab-lb"),
        "lab-lb build 1"
    );
    assert!(bench
        .in_container(201, "/etc/systemd/system/lab-vpn.service")
        .contains("ExecStart=/usr/local/bin/lab-vpn"));
    // The nodes do not answer yet: told what happens next, and no kubeconfig without a wait.
    assert!(first.contains("etcd not bootstrapped yet"), "{first}");
    assert!(
        first.contains("apply again once cp1 (10.10.1.11) answers on port 50000"),
        "{first}"
    );
    assert!(
        first.contains("without --no-wait waits for it and writes"),
        "{first}"
    );
    assert!(!bench.state().join("kubeconfig").exists());
    assert!(!bench
        .path("root/var/lib/lab-bootstrap/pending-actions")
        .exists());

    bench.sim.clear_calls();
    let second = bench.apply_ok();
    assert!(bench.sim.writes().is_empty(), "{:?}", bench.sim.writes());
    assert!(bench.writes().is_empty(), "{:#?}", bench.writes());
    assert!(
        second.contains("0 files written, 0 pushed into containers, 0 services"),
        "{second}"
    );
}

#[test]
fn a_pair_fills_both_of_its_containers_with_keepalived_and_a_second_apply_runs_nothing() {
    let bench = Bench::new();
    let mut lab: toml_edit::DocumentMut = example().parse().unwrap();
    lab["lb"]["replicas"] = toml_edit::value(2);
    lab["vpn"]["replicas"] = toml_edit::value(2);
    std::fs::write(bench.path("lab.toml"), lab.to_string()).unwrap();
    bench.apply_ok();
    let writes = bench.writes();
    let at = |c: &str| {
        writes
            .iter()
            .position(|w| w == c)
            .unwrap_or_else(|| panic!("{c}\n{writes:#?}"))
    };
    for (vmid, unit) in [
        (200, "lab-lb.service"),
        (300, "lab-lb.service"),
        (201, "lab-vpn.service"),
        (301, "lab-vpn.service"),
    ] {
        let install = format!(
            "pct exec {vmid} -- env DEBIAN_FRONTEND=noninteractive apt-get -q -y --no-install-recommends install"
        );
        let install = writes
            .iter()
            .position(|w| w.starts_with(&install) && w.contains(" keepalived curl"))
            .unwrap_or_else(|| panic!("{vmid}: no keepalived install\n{writes:#?}"));
        assert!(
            install
                < at(&format!(
                    "pct exec {vmid} -- systemctl restart keepalived.service"
                ))
        );
        assert!(
            at(&format!("pct exec {vmid} -- systemctl daemon-reload"))
                < at(&format!(
                    "pct exec {vmid} -- systemctl restart keepalived.service"
                ))
        );
        assert!(at(&format!("pct exec {vmid} -- systemctl restart {unit}")) > 0);
        let dropin =
            bench.in_container(vmid, "/etc/systemd/system/keepalived.service.d/10-lab.conf");
        assert!(
            dropin.contains("CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_SETGID"),
            "{dropin}"
        );
    }
    let conf = |vmid| bench.in_container(vmid, "/etc/keepalived/keepalived.conf");
    assert!(
        conf(300).contains("unicast_src_ip 10.10.2.253"),
        "{}",
        conf(300)
    );
    assert!(
        conf(301).contains("unicast_src_ip 10.10.1.251"),
        "{}",
        conf(301)
    );
    // One gateway: both vpn containers have its key.
    assert_eq!(
        bench.in_container(201, "/etc/lab-vpn/private.key"),
        bench.in_container(301, "/etc/lab-vpn/private.key")
    );
    assert!(bench
        .in_container(300, "/etc/lab-lb/lb.toml")
        .contains("listen = \"10.10.2.253:8404\""));

    bench.sim.clear_calls();
    bench.apply_ok();
    assert!(bench.sim.writes().is_empty(), "{:?}", bench.sim.writes());
    assert!(bench.writes().is_empty(), "{:#?}", bench.writes());
}

/// The three nodes of configs/lab-cluster.toml.
const NODES: [(&str, &str); 3] = [
    ("pve1", "192.168.1.11"),
    ("pve2", "192.168.1.12"),
    ("pve3", "192.168.1.13"),
];

/// `ssh` to a node, up to the command run there.
fn ssh_to(address: &str) -> String {
    format!("ssh -o BatchMode=yes -o ConnectTimeout=10 root@{address} --")
}

/// A bench on a three-node cluster (Proxmox 9) with configs/lab-cluster.toml, its vpn pinned
/// to the router node pve1: the lb (200) is placed on pve2, the vpn (201) and the manager (205)
/// on pve1, cp1 (211) on pve3.
fn cluster_bench() -> Bench {
    let bench = Bench::new();
    bench
        .sim
        .state
        .lock()
        .unwrap()
        .make_cluster(&NODES, "9.0.10");
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/lab-cluster.toml");
    let mut lab: toml_edit::DocumentMut = std::fs::read_to_string(file).unwrap().parse().unwrap();
    for machine in lab["machine"].as_array_of_tables_mut().unwrap().iter_mut() {
        if machine["name"].as_str() == Some("vpn") {
            machine["node"] = toml_edit::value("pve1");
        }
    }
    std::fs::write(bench.path("lab.toml"), lab.to_string()).unwrap();
    std::fs::write(bench.path("snippets-dir"), "mnt/pve/labshare/snippets").unwrap();
    bench
}

#[test]
fn guests_on_other_nodes_get_their_files_and_commands_over_ssh_to_their_node() {
    let bench = cluster_bench();
    bench.apply_ok();
    {
        let s = bench.sim.state.lock().unwrap();
        assert_eq!(s.lxc[&200].0, "pve2");
        assert_eq!(s.lxc[&201].0, "pve1");
        assert_eq!(s.qemu[&205].0, "pve1");
        assert_eq!(s.qemu[&211].0, "pve3");
    }
    let writes = bench.writes();
    let (pve2, pve3) = (ssh_to("192.168.1.12"), ssh_to("192.168.1.13"));
    let lb_toml = staged(&bench, "lb/etc/lab-lb/lb.toml");
    let key = staged(&bench, "vpn/etc/lab-vpn/private.key");
    let push = "/var/lib/lab-bootstrap/push-200";
    for expected in [
        format!("{pve2} pct start 200"),
        format!("{pve2} install -d -m 700 /var/lib/lab-bootstrap"),
        format!("scp -o BatchMode=yes -o ConnectTimeout=10 -q {lb_toml} root@192.168.1.12:{push}"),
        format!("{pve2} pct push 200 {push} /etc/lab-lb/lb.toml.new --perms 644"),
        format!("{pve2} rm -f {push}"),
        format!("{pve2} pct exec 200 -- /usr/local/bin/lab-lb check /etc/lab-lb/lb.toml.new"),
        format!("{pve2} pct exec 200 -- mv -f /etc/lab-lb/lb.toml.new /etc/lab-lb/lb.toml"),
        format!("{pve2} pct exec 200 -- systemctl restart lab-lb.service"),
        format!("{pve3} qm start 211"),
        "pct start 201".to_owned(),
        format!("pct push 201 {key} /etc/lab-vpn/private.key --perms 600"),
        "pct exec 201 -- systemctl restart lab-vpn.service".to_owned(),
        "qm start 205".to_owned(),
    ] {
        assert!(writes.contains(&expected), "{expected}\n{writes:#?}");
    }
    // Each guest through its own node alone.
    for command in bench.commands() {
        let remote = command.starts_with("ssh ") || command.starts_with("scp ");
        for (vmid, on_router_node) in [(200, false), (201, true), (205, true), (211, false)] {
            let names = [" status ", " start ", " exec ", " push "]
                .iter()
                .any(|verb| command.contains(&format!("{verb}{vmid}")));
            if names {
                assert_eq!(remote, !on_router_node, "{command}");
            }
        }
    }
    // What arrived is what was rendered, and nothing is left on the node (the vpn's key would
    // pass through there when the vpn sits on another node).
    assert_eq!(
        bench.in_container(200, "/etc/lab-lb/lb.toml"),
        std::fs::read_to_string(&lb_toml).unwrap()
    );
    let staging = bench.path("node-192.168.1.12/var/lib/lab-bootstrap");
    assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);
    assert_eq!(
        std::fs::metadata(&staging).unwrap().permissions().mode() & 0o777,
        0o700
    );

    bench.sim.clear_calls();
    bench.apply_ok();
    assert!(bench.sim.writes().is_empty(), "{:?}", bench.sim.writes());
    assert!(bench.writes().is_empty(), "{:#?}", bench.writes());
    // The second apply did look, on each guest's own node.
    let commands = bench.commands();
    assert!(
        commands
            .iter()
            .any(|c| c.starts_with(&format!("{pve2} pct exec 200 -- sha256sum "))),
        "{commands:#?}"
    );
    assert!(commands.contains(&format!("{pve3} qm status 211")));
}

#[test]
fn an_unreachable_node_stops_apply_naming_the_node_and_its_address() {
    let bench = cluster_bench();
    std::fs::write(bench.path("unreachable-192.168.1.12"), "").unwrap();
    let out = bench.apply();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(
            "node pve2 (192.168.1.12) cannot be reached with `ssh root@192.168.1.12`: \
             ssh: connect to host 192.168.1.12 port 22: No route to host"
        ),
        "{text}"
    );
    assert!(!text.contains("Host complete"), "{text}");
    // Nothing was done on the host side before the plan found the node unreachable.
    assert!(bench.writes().is_empty(), "{:#?}", bench.writes());
}

/// HA (or an admin) moved the lb container to pve3 and the manager VM to pve2: plan shows it,
/// apply runs their `pct` and `qm` on the node each is on now, and destroy removes them there.
#[test]
fn guests_moved_by_ha_get_their_commands_on_the_node_they_are_on_and_are_destroyed_there() {
    let bench = cluster_bench();
    bench.apply_ok();
    {
        let mut s = bench.sim.state.lock().unwrap();
        s.move_guest(200, "pve3");
        s.move_guest(205, "pve2");
    }
    std::fs::write(bench.path("on-node-200"), "192.168.1.13").unwrap();
    std::fs::write(bench.path("on-node-205"), "192.168.1.12").unwrap();
    // A new lab-lb to push and restart; the manager stopped, to be started again.
    std::fs::write(bench.path("bin/lab-lb"), "lab-lb build 2").unwrap();
    std::fs::remove_file(bench.path("running-205")).unwrap();
    let (out, text) = bench.run("plan", &[]);
    assert_eq!(out.status.code(), Some(2), "{text}");
    for expected in [
        "container 200 (lb): on node pve3, placed on pve2: left there (HA moved it, or an admin)",
        "vm 205 (manager): on node pve2, placed on pve1: left there (HA moved it, or an admin)",
        "No changes. The nodes pve1, pve2, pve3 match lab.toml.",
    ] {
        assert!(text.contains(expected), "{expected}\n{text}");
    }
    bench.sim.clear_calls();
    bench.apply_ok();
    assert!(bench.sim.writes().is_empty(), "{:?}", bench.sim.writes());
    let writes = bench.writes();
    let (pve2, pve3) = (ssh_to("192.168.1.12"), ssh_to("192.168.1.13"));
    let push = "/var/lib/lab-bootstrap/push-200";
    for expected in [
        format!("{pve3} pct push 200 {push} /usr/local/bin/lab-lb --perms 755"),
        format!("{pve3} rm -f {push}"),
        format!("{pve3} pct exec 200 -- systemctl restart lab-lb.service"),
        format!("{pve2} qm start 205"),
    ] {
        assert!(writes.contains(&expected), "{expected}\n{writes:#?}");
    }
    // Nothing for either guest on the node it left.
    let pve1_local = |c: &String| !c.starts_with("ssh ") && !c.starts_with("scp ");
    for command in bench.commands() {
        assert!(
            !(command.starts_with(&pve2) && command.contains(" 200")),
            "{command}"
        );
        assert!(
            !(pve1_local(&command) && command.starts_with("qm ") && command.contains(" 205")),
            "{command}"
        );
    }
    assert_eq!(
        bench.in_container(200, "/usr/local/bin/lab-lb"),
        "lab-lb build 2"
    );

    bench.sim.clear_calls();
    let (out, text) = bench.run("destroy", &["--yes"]);
    assert!(out.status.success(), "{text}");
    assert!(
        bench.sim.rejected().is_empty(),
        "{:?}",
        bench.sim.rejected()
    );
    let deletes: Vec<String> = bench
        .sim
        .writes()
        .iter()
        .filter(|c| c.method == "DELETE")
        .map(|c| c.path.clone())
        .collect();
    assert!(
        deletes.contains(&"/nodes/pve3/lxc/200".to_owned()),
        "{deletes:?}"
    );
    assert!(
        deletes.contains(&"/nodes/pve2/qemu/205".to_owned()),
        "{deletes:?}"
    );
    let s = bench.sim.state.lock().unwrap();
    assert!(s.lxc.is_empty() && s.qemu.is_empty());
}

/// `upgrade talos` and node removal drain at the balancer where the lb container is now, as
/// `/cluster/resources` says (schema-checked by the simulator), not where it was placed.
#[test]
fn the_balancer_of_a_lab_whose_lb_moved_is_asked_on_the_node_it_is_on() {
    let bench = cluster_bench();
    bench.apply_ok();
    bench.sim.state.lock().unwrap().move_guest(200, "pve3");
    let lab: lab_bootstrap::Lab = lab_daemon::config::load(&bench.path("lab.toml")).unwrap();
    let api = lab_bootstrap::proxmox::client::Pvesh::new(bench.sim.pvesh_shim());
    let located = lab_bootstrap::proxmox::plan::guest_nodes(&api, &lab).unwrap();
    assert!(
        bench.sim.rejected().is_empty(),
        "{:?}",
        bench.sim.rejected()
    );
    assert_eq!(located[&200], "pve3");
    let mut runner =
        lab_bootstrap::host::node_router::NodeRouter::new(&lab, &located, Recorder::default())
            .unwrap();
    let mut balancer = lab_bootstrap::balancer::Balancer::of(&lab, &mut runner).unwrap();
    balancer.servers_of("10.10.2.11".parse().unwrap()).unwrap();
    drop(balancer);
    let pve3 = ssh_to("192.168.1.13");
    assert_eq!(
        runner.into_inner().0,
        [
            format!("{pve3} true"),
            format!("{pve3} pct exec 200 -- lab-lb ctl servers"),
        ]
    );
}

/// The file staged on the node for `pct push` (the vpn's key would be one) is removed there
/// even when the push fails, and the failure names the node.
#[test]
fn a_push_that_fails_on_another_node_leaves_nothing_staged_there() {
    let bench = cluster_bench();
    std::fs::write(
        bench.path("fail"),
        "pct push 200 /var/lib/lab-bootstrap/push-200 /etc/lab-lb/lb.toml.new --perms 644",
    )
    .unwrap();
    let out = bench.apply();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("(on node pve2 192.168.1.12)` failed: killed here"),
        "{text}"
    );
    assert!(bench.writes().contains(&format!(
        "{} rm -f /var/lib/lab-bootstrap/push-200",
        ssh_to("192.168.1.12")
    )));
    let staging = bench.path("node-192.168.1.12/var/lib/lab-bootstrap");
    assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);
}

/// Records every command, answering each as `lab-lb ctl servers` would.
#[derive(Default)]
struct Recorder(Vec<String>);

impl lab_bootstrap::host::Runner for Recorder {
    fn run(
        &mut self,
        program: &str,
        args: &[&str],
    ) -> Result<lab_bootstrap::host::Output, lab_bootstrap::host::CommandError> {
        self.0
            .push(lab_bootstrap::host::command_line(program, args));
        Ok(lab_bootstrap::host::Output {
            success: true,
            stdout: "backend server state health active weight\n\
                     kube-apiserver 10.10.2.11:6443 ready up 0 1\n"
                .to_owned(),
            stderr: String::new(),
        })
    }
}

/// Draining a node at the balancer (upgrade, node removal) asks the lb container on its node:
/// pve2 in the three-node lab.
#[test]
fn the_balancer_of_a_lab_whose_lb_is_on_another_node_is_asked_there() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/lab-cluster.toml");
    let lab: lab_bootstrap::Lab = lab_daemon::config::load(&file).unwrap();
    assert_eq!(lab.placement().unwrap()["lb"], "pve2");
    let mut runner = lab_bootstrap::host::node_router::NodeRouter::new(
        &lab,
        &BTreeMap::new(),
        Recorder::default(),
    )
    .unwrap();
    let mut balancer = lab_bootstrap::balancer::Balancer::of(&lab, &mut runner).unwrap();
    let servers = balancer.servers_of("10.10.2.11".parse().unwrap()).unwrap();
    balancer.drain(&servers[0]).unwrap();
    drop(balancer);
    let pve2 = ssh_to("192.168.1.12");
    assert_eq!(
        runner.into_inner().0,
        [
            format!("{pve2} true"),
            format!("{pve2} pct exec 200 -- lab-lb ctl servers"),
            format!("{pve2} pct exec 200 -- lab-lb ctl drain kube-apiserver/10.10.2.11:6443"),
        ]
    );
}

#[test]
fn a_changed_lb_config_is_pushed_alone_and_lab_lb_reloaded() {
    let bench = Bench::new();
    bench.apply_ok();
    let edited = example().replacen(
        "roles = [\"control-plane\"]\nbalance = \"least-connections\"",
        "roles = [\"control-plane\"]\nbalance = \"round-robin\"",
        1,
    );
    assert_ne!(edited, example());
    std::fs::write(bench.path("lab.toml"), edited).unwrap();
    bench.sim.clear_calls();
    bench.apply_ok();
    assert!(bench.sim.writes().is_empty(), "{:?}", bench.sim.writes());
    let lb_toml = staged(&bench, "lb/etc/lab-lb/lb.toml");
    assert_eq!(
        bench.writes(),
        [
            "pct exec 200 -- mkdir -p /etc/lab-lb".to_owned(),
            format!("pct push 200 {lb_toml} /etc/lab-lb/lb.toml.new --perms 644"),
            "pct exec 200 -- /usr/local/bin/lab-lb check /etc/lab-lb/lb.toml.new".to_owned(),
            "pct exec 200 -- mv -f /etc/lab-lb/lb.toml.new /etc/lab-lb/lb.toml".to_owned(),
            "pct exec 200 -- systemctl reload-or-restart lab-lb.service".to_owned(),
        ]
    );
    assert!(bench
        .in_container(200, "/etc/lab-lb/lb.toml")
        .contains("round-robin"));
    // The daemon's status is read before the reload and again after it, to confirm it.
    let commands = bench.commands();
    let show = "pct exec 200 -- systemctl show -p ActiveState,StatusText lab-lb.service";
    let reload = commands
        .iter()
        .position(|w| w == "pct exec 200 -- systemctl reload-or-restart lab-lb.service")
        .unwrap();
    assert!(
        commands[..reload].iter().any(|c| c == show),
        "{commands:#?}"
    );
    assert!(
        commands[reload..].iter().any(|c| c == show),
        "{commands:#?}"
    );
}

/// The manager moved: every uploader follows it, restarted after its drop-in, and neither
/// daemon is reloaded or restarted for a file that is not theirs.
#[test]
fn a_moved_manager_restarts_the_journal_uploaders_and_not_the_daemons() {
    let bench = Bench::new();
    bench.apply_ok();
    let edited = example().replacen(
        "nic = [{ network = \"net1\", address = \"10.10.1.5\" }]",
        "nic = [{ network = \"net1\", address = \"10.10.1.7\" }]",
        1,
    );
    assert_ne!(edited, example());
    std::fs::write(bench.path("lab.toml"), edited).unwrap();
    bench.apply_ok();
    let writes = bench.writes();
    let upload = "/etc/systemd/system/systemd-journal-upload.service.d/lab.conf";
    for vmid in [200, 201] {
        let at = |c: &str| {
            writes
                .iter()
                .position(|w| w == c)
                .unwrap_or_else(|| panic!("{c}\n{writes:#?}"))
        };
        assert!(
            at(&format!("pct exec {vmid} -- systemctl daemon-reload"))
                < at(&format!(
                    "pct exec {vmid} -- systemctl restart systemd-journal-upload.service"
                ))
        );
        assert!(bench
            .in_container(vmid, upload)
            .contains("--url=http://10.10.1.7:19532"));
    }
    assert!(writes.contains(&"systemctl restart systemd-journal-upload.service".to_owned()));
    assert!(
        !writes
            .iter()
            .any(|w| w.contains("lab-lb.service") || w.contains("lab-vpn.service")),
        "{writes:#?}"
    );
}

#[test]
fn a_new_binary_restarts_its_service() {
    let bench = Bench::new();
    bench.apply_ok();
    std::fs::write(bench.path("bin/lab-vpn"), "lab-vpn build 2").unwrap();
    bench.apply_ok();
    let writes = bench.writes();
    assert!(
        writes.contains(&"pct exec 201 -- systemctl restart lab-vpn.service".to_owned()),
        "{writes:#?}"
    );
    assert_eq!(
        writes.iter().filter(|w| w.starts_with("pct push")).count(),
        1
    );
    assert!(!writes.iter().any(|w| w.contains(" 200 ")), "{writes:#?}");
}

#[test]
fn an_apply_killed_between_writing_and_restarting_converges() {
    let bench = Bench::new();
    // Killed right after the host files were written, before lab-network restarted.
    std::fs::write(bench.path("fail"), "systemctl restart lab-network.service").unwrap();
    let out = bench.apply();
    assert!(!out.status.success());
    let text = bench.apply_ok();
    let writes = bench.writes();
    assert!(
        writes.contains(&"systemctl restart lab-network.service".to_owned()),
        "{text}\n{writes:#?}"
    );
    // The dnsmasq restarts that had run are not repeated.
    assert!(
        !writes.contains(&"systemctl restart lab-dnsmasq@vmbr1.service".to_owned()),
        "{writes:#?}"
    );

    // Killed after lab-lb's files were pushed, before it restarted.
    std::fs::write(bench.path("bin/lab-lb"), "lab-lb build 2").unwrap();
    std::fs::write(
        bench.path("fail"),
        "pct exec 200 -- systemctl restart lab-lb.service",
    )
    .unwrap();
    assert!(!bench.apply().status.success());
    bench.apply_ok();
    let writes = bench.writes();
    assert_eq!(
        writes,
        [
            "pct exec 200 -- systemctl enable lab-lb.service",
            "pct exec 200 -- systemctl restart lab-lb.service"
        ],
        "restarted without pushing again"
    );
    bench.apply_ok();
    assert!(bench.writes().is_empty(), "{:#?}", bench.writes());
}

#[test]
fn a_vpn_container_that_lost_nft_gets_it_again_and_lab_vpn_restarted() {
    let bench = Bench::new();
    bench.apply_ok();
    std::fs::remove_file(bench.path("ct/201/usr/sbin/nft")).unwrap();
    let (out, text) = bench.run("plan", &[]);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert_eq!(
        host_changes(&text),
        [
            "+ package \"vpn:nftables\"",
            "~ restart \"ct 201: lab-vpn.service\""
        ],
        "{text}"
    );
    // No apt source: a clear error naming the container and the package, nothing restarted.
    std::fs::write(bench.path("no-apt"), "").unwrap();
    let out = bench.apply();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("container vpn: installing nftables failed"),
        "{err}"
    );
    assert!(!bench
        .writes()
        .iter()
        .any(|w| w.contains("systemctl restart")));
    std::fs::remove_file(bench.path("no-apt")).unwrap();
    let text = bench.apply_ok();
    assert!(text.contains("installed nftables into vpn"), "{text}");
    assert!(
        bench
            .writes()
            .contains(&"pct exec 201 -- systemctl restart lab-vpn.service".to_owned()),
        "{:#?}",
        bench.writes()
    );
    bench.apply_ok();
    assert!(bench.writes().is_empty(), "{:#?}", bench.writes());
}

#[test]
fn apply_bootstraps_etcd_through_the_talos_api_once_and_writes_the_kubeconfig() {
    let bench = Bench::new();
    bench.apply_ok();
    let apid = bench.apid(apid::all_ready());
    let endpoint = apid.address.to_string();
    let waiting = ["--talos-endpoint", endpoint.as_str()];
    let out = bench.apply_with(&waiting);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("etcd bootstrapped on cp1 (10.10.1.11)"),
        "{text}"
    );
    assert!(
        text.contains("cluster [") && text.contains("healthy"),
        "{text}"
    );
    // What the node streamed, written next to the talosconfig, readable by root alone.
    let kubeconfig = bench.state().join("kubeconfig");
    let written = std::fs::read_to_string(&kubeconfig).unwrap();
    let yaml: serde_json::Value = serde_norway::from_str(&written).unwrap();
    assert_eq!(
        yaml["clusters"][0]["cluster"]["server"],
        "https://10.10.2.2:6443"
    );
    assert_eq!(
        std::fs::metadata(&kubeconfig).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        text.contains(&format!("kubeconfig written: {}", kubeconfig.display())),
        "{text}"
    );
    assert_eq!(apid.stand_in.record().bootstrap_calls, 1);
    assert!(bench.writes().is_empty(), "{:#?}", bench.writes());

    // Seen once, never asked again.
    let again = bench.apply_with(&waiting);
    assert!(again.status.success());
    assert_eq!(apid.stand_in.record().bootstrap_calls, 1);
    assert_eq!(std::fs::read_to_string(&kubeconfig).unwrap(), written);

    // An apply that stopped before recording it asks again: AlreadyExists is done too.
    std::fs::remove_file(bench.state().join("etcd-bootstrapped")).unwrap();
    let text = String::from_utf8_lossy(&bench.apply_with(&waiting).stdout).into_owned();
    assert!(
        text.contains("etcd bootstrapped on cp1 (10.10.1.11) already"),
        "{text}"
    );
    assert_eq!(apid.stand_in.record().bootstrap_calls, 2);
    assert!(bench.state().join("etcd-bootstrapped").exists());
}

#[test]
fn a_node_not_answering_yet_defers_the_bootstrap_to_the_next_apply() {
    let bench = Bench::new();
    let text = bench.apply_ok();
    assert!(text.contains("etcd not bootstrapped yet"), "{text}");
    assert!(text.contains("Connection refused"), "{text}");
    assert!(!bench.state().join("etcd-bootstrapped").exists());
    let apid = bench.apid(apid::all_ready());
    let out = bench.apply_with(&["--no-wait", "--talos-endpoint", &apid.address.to_string()]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("etcd bootstrapped on cp1"), "{text}");
    assert!(bench.writes().is_empty(), "{:#?}", bench.writes());
    // --no-wait: no wait, no kubeconfig, and told how to get one.
    assert!(!bench.state().join("kubeconfig").exists());
    assert!(text.contains("without --no-wait waits for it"), "{text}");
}

#[test]
fn apply_waits_a_bounded_time_and_names_what_never_became_ready() {
    let bench = Bench::new();
    bench.apply_ok();
    // Nodes are named to the health check by their kubelets' (net2) addresses, as Talos matches
    // them with the Kubernetes nodes' InternalIP.
    let apid = bench.apid(std::sync::Arc::new(|node: &str| node != "10.10.2.22"));
    let started = std::time::Instant::now();
    let out = bench.apply_with(&[
        "--talos-endpoint",
        &apid.address.to_string(),
        "--wait-timeout",
        "3",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert!(
        stderr.contains("waiting for all nodes to report ready: not yet: 10.10.2.22"),
        "{stderr}"
    );
    assert!(stderr.contains("cluster health not done after"), "{stderr}");
    assert!(stderr.contains("--no-wait"), "{stderr}");
    assert!(!bench.state().join("kubeconfig").exists());
    // etcd itself was bootstrapped, and is not asked for again.
    assert!(bench.state().join("etcd-bootstrapped").exists());
}

/// The host's part of plan's output: the lines after "On the host:" that name a change.
fn host_changes(text: &str) -> Vec<String> {
    text.split_once("On the host:")
        .map(|(_, host)| {
            host.lines()
                .map(str::trim)
                .filter(|l| l.starts_with('+') || l.starts_with('~') || l.starts_with('-'))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn plan_after_a_full_apply_lists_nothing_and_exits_0() {
    let bench = Bench::new();
    bench.apply_ok();
    bench.sim.clear_calls();
    let (out, text) = bench.run("plan", &[]);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("The host's files and services match lab.toml"),
        "{text}"
    );
    assert!(host_changes(&text).is_empty(), "{text}");
    assert!(bench.writes().is_empty(), "{:#?}", bench.writes());
    assert!(bench.sim.writes().is_empty(), "{:?}", bench.sim.writes());
}

#[test]
fn plan_of_a_changed_lb_route_lists_its_push_and_the_reload() {
    let bench = Bench::new();
    bench.apply_ok();
    let edited = example().replacen(
        "roles = [\"control-plane\"]\nbalance = \"least-connections\"",
        "roles = [\"control-plane\"]\nbalance = \"round-robin\"",
        1,
    );
    assert_ne!(edited, example());
    std::fs::write(bench.path("lab.toml"), edited).unwrap();
    let before = bench.listing();
    let staged_before = std::fs::read_to_string(staged(&bench, "lb/etc/lab-lb/lb.toml")).unwrap();
    let pushed_before = bench.in_container(200, "/etc/lab-lb/lb.toml");
    let (out, text) = bench.run("plan", &[]);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert_eq!(
        host_changes(&text),
        [
            // The copy on the host that apply pushes from.
            "~ file \"/var/lib/lab/containers/lb/etc/lab-lb/lb.toml\"",
            "~ push \"lb:/etc/lab-lb/lb.toml\"",
            "~ reload \"ct 200: lab-lb.service\"",
        ],
        "{text}"
    );
    assert!(
        text.contains(
            "/etc/lab-lb/lb.toml will be pushed into lb as /etc/lab-lb/lb.toml.new, checked there \
             by `/usr/local/bin/lab-lb check`, and moved into place only if it passes"
        ),
        "{text}"
    );
    // Read only: nothing written, pushed or restarted.
    assert!(bench.writes().is_empty(), "{:#?}", bench.writes());
    assert_eq!(bench.listing(), before);
    assert_eq!(
        std::fs::read_to_string(staged(&bench, "lb/etc/lab-lb/lb.toml")).unwrap(),
        staged_before
    );
    assert_eq!(
        bench.in_container(200, "/etc/lab-lb/lb.toml"),
        pushed_before
    );
    // And apply does what plan said.
    bench.apply_ok();
    assert_eq!(
        bench.writes(),
        [
            "pct exec 200 -- mkdir -p /etc/lab-lb".to_owned(),
            format!(
                "pct push 200 {} /etc/lab-lb/lb.toml.new --perms 644",
                staged(&bench, "lb/etc/lab-lb/lb.toml")
            ),
            "pct exec 200 -- /usr/local/bin/lab-lb check /etc/lab-lb/lb.toml.new".to_owned(),
            "pct exec 200 -- mv -f /etc/lab-lb/lb.toml.new /etc/lab-lb/lb.toml".to_owned(),
            "pct exec 200 -- systemctl reload-or-restart lab-lb.service".to_owned(),
        ]
    );
    assert_eq!(
        bench.in_container(200, "/etc/lab-lb/lb.toml"),
        std::fs::read_to_string(staged(&bench, "lb/etc/lab-lb/lb.toml")).unwrap()
    );
    let (out, text) = bench.run("plan", &[]);
    assert_eq!(out.status.code(), Some(0), "{text}");
}

fn edit_lb_balance(bench: &Bench) {
    let edited = example().replacen(
        "roles = [\"control-plane\"]\nbalance = \"least-connections\"",
        "roles = [\"control-plane\"]\nbalance = \"round-robin\"",
        1,
    );
    assert_ne!(edited, example());
    std::fs::write(bench.path("lab.toml"), edited).unwrap();
}

/// apply's output, and whether it succeeded.
fn apply_text(bench: &Bench) -> (bool, String) {
    let out = bench.apply();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn a_config_the_daemon_refuses_stops_apply_with_its_message_and_keeps_the_old_one() {
    let bench = Bench::new();
    bench.apply_ok();
    let old = bench.in_container(200, "/etc/lab-lb/lb.toml");
    edit_lb_balance(&bench);
    let refusal =
        "lab-lb: /etc/lab-lb/lb.toml.new:31:1: backend[0].balance: not known to this build\n\
                   lab-lb: configuration file /etc/lab-lb/lb.toml.new test failed\n";
    std::fs::write(bench.path("refuse-200"), refusal).unwrap();
    let (ok, text) = apply_text(&bench);
    assert!(!ok, "{text}");
    assert!(
        text.contains(
            "container lb: `/usr/local/bin/lab-lb check` refused the new /etc/lab-lb/lb.toml"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "  lab-lb: /etc/lab-lb/lb.toml.new:31:1: backend[0].balance: not known to this build"
        ),
        "{text}"
    );
    let writes = bench.writes();
    assert!(
        writes.contains(&"pct exec 200 -- rm -f /etc/lab-lb/lb.toml.new".to_owned()),
        "{writes:#?}"
    );
    assert!(
        !writes.iter().any(|w| w.contains("systemctl")),
        "{writes:#?}"
    );
    assert!(!writes.iter().any(|w| w.contains(" mv ")), "{writes:#?}");
    assert_eq!(bench.in_container(200, "/etc/lab-lb/lb.toml"), old);
    assert!(!bench.path("ct/200/etc/lab-lb/lb.toml.new").exists());

    // Refused again while the daemon says no; once it accepts, the new config goes in.
    let (ok, text) = apply_text(&bench);
    assert!(!ok, "{text}");
    std::fs::remove_file(bench.path("refuse-200")).unwrap();
    bench.apply_ok();
    assert!(
        bench
            .writes()
            .contains(&"pct exec 200 -- systemctl reload-or-restart lab-lb.service".to_owned()),
        "{:#?}",
        bench.writes()
    );
    assert_ne!(bench.in_container(200, "/etc/lab-lb/lb.toml"), old);
    bench.apply_ok();
    assert!(bench.writes().is_empty(), "{:#?}", bench.writes());
}

#[test]
fn the_real_lab_lb_checks_what_apply_pushes_and_its_refusal_is_apply_s_error() {
    let bench = Bench::new();
    std::fs::copy(workspace_bin("lab-lb"), bench.path("bin/lab-lb")).unwrap();
    std::fs::write(bench.path("real-check-200"), "").unwrap();
    bench.apply_ok();
    let old = bench.in_container(200, "/etc/lab-lb/lb.toml");
    // The config lab-schema checked on the host arrives damaged: only lab-lb check, inside,
    // can see it.
    edit_lb_balance(&bench);
    std::fs::write(bench.path("truncate-push-200"), "").unwrap();
    let (ok, text) = apply_text(&bench);
    assert!(!ok, "{text}");
    let staged = bench.path("ct/200/etc/lab-lb/lb.toml.new");
    assert!(
        text.contains(
            "container lb: `/usr/local/bin/lab-lb check` refused the new /etc/lab-lb/lb.toml"
        ),
        "{text}"
    );
    // lab-lb's own lines: file:line:column, then its verdict.
    assert!(
        text.contains(&format!("  lab-lb: {}:", staged.display())),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "  lab-lb: configuration file {} test failed",
            staged.display()
        )),
        "{text}"
    );
    assert!(!staged.exists());
    assert_eq!(bench.in_container(200, "/etc/lab-lb/lb.toml"), old);
    assert!(
        !bench.writes().iter().any(|w| w.contains("systemctl")),
        "{:#?}",
        bench.writes()
    );
}

#[test]
fn a_reload_the_daemon_refused_or_a_unit_not_running_stops_apply() {
    let bench = Bench::new();
    bench.apply_ok();
    edit_lb_balance(&bench);
    let status = bench.path("status-200");
    std::fs::write(
        &status,
        "ActiveState=active\nStatusText=reload refused, still serving the previous configuration \
         (reload @N@): cannot listen for metrics on 10.10.2.2:8404: Address in use\n",
    )
    .unwrap();
    let (ok, text) = apply_text(&bench);
    assert!(!ok, "{text}");
    assert!(
        text.contains(
            "container 200: lab-lb.service did not take its new configuration: state active, \
             status: reload refused, still serving the previous configuration (reload 1): cannot \
             listen for metrics on 10.10.2.2:8404: Address in use"
        ),
        "{text}"
    );
    // A daemon whose status the reload left as it was has not said how the reload went (systemd's
    // reload only sent SIGHUP): not taken for success.
    std::fs::write(
        &status,
        "ActiveState=active\nStatusText=serving: 4 listeners\n",
    )
    .unwrap();
    let (ok, text) = apply_text(&bench);
    assert!(!ok, "{text}");
    assert!(
        text.contains(
            "container 200: lab-lb.service did not report on its reload within 10s; its status is \
             still: serving: 4 listeners"
        ),
        "{text}"
    );
    // Still due: the next apply reloads again and asks again.
    std::fs::remove_file(&status).unwrap();
    bench.apply_ok();
    assert_eq!(
        bench.writes(),
        ["pct exec 200 -- systemctl reload-or-restart lab-lb.service"],
        "{:#?}",
        bench.writes()
    );

    // A stopped unit is started by the reload: running, it counts no reload, and is taken.
    std::fs::write(bench.path("lab.toml"), example()).unwrap();
    std::fs::write(bench.path("reloads-200"), "0\n").unwrap();
    std::fs::write(bench.path("stopped-200"), "").unwrap();
    bench.apply_ok();
    assert!(!bench.path("stopped-200").exists());

    // A restart after which the unit is not running.
    std::fs::write(bench.path("bin/lab-vpn"), "lab-vpn build 2").unwrap();
    std::fs::write(
        bench.path("status-201"),
        "StatusText=failed: cannot open /dev/net/tun\nActiveState=failed\n",
    )
    .unwrap();
    let (ok, text) = apply_text(&bench);
    assert!(!ok, "{text}");
    assert!(
        text.contains(
            "container 201: lab-vpn.service did not take its new configuration: state failed, \
             status: failed: cannot open /dev/net/tun"
        ),
        "{text}"
    );
}

#[test]
fn plan_on_a_fresh_host_creates_no_file_and_makes_no_secret() {
    let bench = Bench::new();
    let before = bench.listing();
    let outside: Vec<_> = std::fs::read_dir(bench.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let (out, text) = bench.run("plan", &[]);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert_eq!(bench.listing(), before, "{text}");
    let mut after: Vec<_> = std::fs::read_dir(bench.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "commands.log")
        .collect();
    let mut outside = outside;
    outside.sort();
    after.sort();
    assert_eq!(after, outside);
    let changes = host_changes(&text);
    let state = bench.path("root/var/lib/lab-bootstrap");
    for expected in [
        "+ file \"/etc/lab/lab.nft\"".to_owned(),
        "+ file \"/var/lib/vz/snippets/lab-cp1.yaml\"".to_owned(),
        format!("+ file \"{}/talosconfig\"", state.display()),
        "~ restart \"lab-network.service\"".to_owned(),
        "~ vm \"211\"".to_owned(),
        "~ push \"lb:/usr/local/bin/lab-lb\"".to_owned(),
        "+ package \"vpn:nftables\"".to_owned(),
    ] {
        assert!(changes.contains(&expected), "{expected}\n{text}");
    }
    assert!(
        text.contains("lab-cp1.yaml will be created (with the Talos secrets"),
        "{text}"
    );
    assert!(bench.writes().is_empty(), "{:#?}", bench.writes());
}

/// Every file (not directory) under the root, outside the state directory.
fn lab_files(bench: &Bench) -> Vec<String> {
    bench
        .listing()
        .into_iter()
        .filter(|p| !p.starts_with("var/lib/lab-bootstrap"))
        .filter(|p| bench.path("root").join(p).is_file())
        .collect()
}

#[test]
fn apply_installs_and_starts_the_daily_backup_of_this_lab() {
    let bench = Bench::new();
    bench.apply_ok();
    let units = bench.path("root/etc/systemd/system");
    let service = std::fs::read_to_string(units.join("lab-backup.service")).unwrap();
    // The lab-bootstrap, lab.toml and state directory apply ran with, by absolute paths.
    let exec = format!(
        "ExecStart=\"{}\" backup --state \"{}\" \"{}\"",
        env!("CARGO_BIN_EXE_lab-bootstrap"),
        bench.state().display(),
        bench.path("lab.toml").display()
    );
    assert!(service.lines().any(|l| l == exec), "{exec}\n{service}");
    let timer = std::fs::read_to_string(units.join("lab-backup.timer")).unwrap();
    assert!(timer.lines().any(|l| l == "OnCalendar=daily"), "{timer}");
    let writes = bench.writes();
    let at = |c: &str| {
        writes
            .iter()
            .position(|w| w == c)
            .unwrap_or_else(|| panic!("{c}\n{writes:#?}"))
    };
    assert!(at("systemctl daemon-reload") < at("systemctl enable lab-backup.timer"));
    assert!(at("systemctl enable lab-backup.timer") < at("systemctl restart lab-backup.timer"));
    // The timer starts; the backup itself waits for it (it needs a running cluster).
    assert!(
        !writes.iter().any(|w| w.contains("lab-backup.service")),
        "{writes:#?}"
    );
}

#[test]
fn destroy_removes_what_apply_wrote_and_keeps_the_state_and_a_second_does_nothing() {
    let bench = Bench::new();
    bench.apply_ok();
    assert!(!lab_files(&bench).is_empty());
    let (out, text) = bench.run("destroy", &["--yes"]);
    assert!(out.status.success(), "{text}");
    assert!(
        lab_files(&bench).is_empty(),
        "{:#?}\n{text}",
        lab_files(&bench)
    );
    let writes = bench.writes();
    for unit in [
        "lab-backup.timer",
        "lab-dnsmasq@vmbr1.service",
        "lab-dnsmasq@vmbr2.service",
        "lab-network.service",
    ] {
        let expected = format!("systemctl disable --now {unit}");
        assert!(writes.contains(&expected), "{expected}\n{writes:#?}");
    }
    let state = bench.path("root/var/lib/lab-bootstrap");
    assert!(state.join("talos-secrets.yaml").is_file());
    assert!(state.join("vpn-gateway.key").is_file());
    assert!(text.contains("--purge-state deletes them"), "{text}");
    // Nothing of the lab's own directories is left.
    assert!(!bench.path("root/etc/lab").exists());
    assert!(!bench.path("root/var/lib/lab").exists());

    let before = bench.listing();
    bench.sim.clear_calls();
    let (out, text) = bench.run("destroy", &["--yes"]);
    assert!(out.status.success(), "{text}");
    assert!(bench.writes().is_empty(), "{:#?}", bench.writes());
    assert!(bench.sim.writes().is_empty(), "{:?}", bench.sim.writes());
    assert_eq!(bench.listing(), before);
    assert!(text.contains("Host complete: 0 changes."), "{text}");
}

#[test]
fn destroy_after_a_changing_apply_also_removes_the_backups_of_its_own_files() {
    let bench = Bench::new();
    // The user's own file where the sysctl drop-in goes: its backup stays theirs.
    let sysctl = bench.path("root/etc/sysctl.d/90-lab.conf");
    std::fs::create_dir_all(sysctl.parent().unwrap()).unwrap();
    std::fs::write(&sysctl, "# the user's\n").unwrap();
    bench.apply_ok();
    let edited = example().replacen(
        "roles = [\"control-plane\"]\nbalance = \"least-connections\"",
        "roles = [\"control-plane\"]\nbalance = \"round-robin\"",
        1,
    );
    std::fs::write(bench.path("lab.toml"), edited).unwrap();
    bench.apply_ok();
    let staged_backup = staged(&bench, "lb/etc/lab-lb/lb.toml.bak");
    assert!(Path::new(&staged_backup).is_file());
    let (out, text) = bench.run("destroy", &["--yes"]);
    assert!(out.status.success(), "{text}");
    assert_eq!(
        lab_files(&bench),
        ["etc/sysctl.d/90-lab.conf.bak"],
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(bench.path("root/etc/sysctl.d/90-lab.conf.bak")).unwrap(),
        "# the user's\n"
    );
}

#[test]
fn destroy_keeps_a_file_edited_by_hand_and_purge_state_removes_the_state() {
    let bench = Bench::new();
    bench.apply_ok();
    let nft = bench.path("root/etc/lab/lab.nft");
    std::fs::write(&nft, "# mine now\n").unwrap();
    let (out, text) = bench.run("destroy", &["--yes", "--purge-state"]);
    assert!(out.status.success(), "{text}");
    assert_eq!(std::fs::read_to_string(&nft).unwrap(), "# mine now\n");
    assert!(
        text.contains("kept /etc/lab/lab.nft: changed by hand"),
        "{text}"
    );
    assert_eq!(lab_files(&bench), ["etc/lab/lab.nft"]);
    assert!(!bench.path("root/var/lib/lab-bootstrap").exists(), "{text}");
}

#[test]
fn destroy_without_yes_and_without_an_answer_touches_nothing() {
    let bench = Bench::new();
    bench.apply_ok();
    let before = bench.listing();
    bench.sim.clear_calls();
    // No terminal: stdin is empty, which is not "yes".
    let (out, text) = bench.run("destroy", &[]);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("- file \"/etc/lab/lab.nft\""), "{text}");
    assert!(text.contains("Nothing changed."), "{text}");
    assert_eq!(bench.listing(), before);
    assert!(bench.writes().is_empty(), "{:#?}", bench.writes());
    assert!(bench.sim.writes().is_empty(), "{:?}", bench.sim.writes());
}

#[test]
fn purge_state_deletes_only_a_directory_lab_bootstrap_marked_as_its_state() {
    let bench = Bench::new();
    bench.apply_ok();
    let state = bench.path("root/var/lib/lab-bootstrap");
    let marker = state.join(lab_bootstrap::state_dir::STATE_MARKER);
    assert!(marker.is_file(), "apply marks the state directory it makes");

    // Someone's directory given as --state by mistake: refused before anything changes.
    let mine = bench.path("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("thesis.tex"), "years of work\n").unwrap();
    let before = bench.listing();
    bench.sim.clear_calls();
    let mine_arg = mine.display().to_string();
    let (out, text) = bench.run("destroy", &["--yes", "--purge-state", "--state", &mine_arg]);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(&format!("refusing to purge {mine_arg}"))
            && text.contains(lab_bootstrap::state_dir::STATE_MARKER),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(mine.join("thesis.tex")).unwrap(),
        "years of work\n"
    );
    assert_eq!(bench.listing(), before);
    assert!(bench.writes().is_empty(), "{:#?}", bench.writes());
    assert!(bench.sim.writes().is_empty(), "{:?}", bench.sim.writes());

    // The lab's own state directory without its marker (made before markers) is refused too.
    std::fs::remove_file(&marker).unwrap();
    let (out, text) = bench.run("destroy", &["--yes", "--purge-state"]);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(&format!("refusing to purge {}", state.display())),
        "{text}"
    );
    assert!(state.join("talos-secrets.yaml").is_file());
    assert!(bench.sim.writes().is_empty(), "{:?}", bench.sim.writes());

    // Marked, it goes.
    std::fs::write(&marker, "").unwrap();
    let (out, text) = bench.run("destroy", &["--yes", "--purge-state"]);
    assert!(out.status.success(), "{text}");
    assert!(!state.exists(), "{text}");
}

/// Every file under the root with its contents and mode, by path relative to the root.
fn snapshot(bench: &Bench) -> BTreeMap<String, (Vec<u8>, u32)> {
    bench
        .listing()
        .into_iter()
        .filter(|p| bench.path("root").join(p).is_file())
        .map(|p| {
            let path = bench.path("root").join(&p);
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
            (p, (std::fs::read(&path).unwrap(), mode))
        })
        .collect()
}

/// The files apply wrote, between two snapshots, as plan names them: host files by their path
/// on the host, the state directory's by their full path. Apply's own records, the secrets it
/// makes and the backups it keeps are not changes plan lists.
fn files_written(
    bench: &Bench,
    before: &BTreeMap<String, (Vec<u8>, u32)>,
    after: &BTreeMap<String, (Vec<u8>, u32)>,
) -> Vec<String> {
    let state = "var/lib/lab-bootstrap/";
    let records = [
        ".lab-bootstrap-state",
        "pending-actions",
        "written-files",
        "etcd-bootstrapped",
        "talos-secrets.yaml",
        "talos-admin.yaml",
        "vpn-gateway.key",
    ];
    let mut out: Vec<String> = after
        .iter()
        .filter(|(path, file)| before.get(*path) != Some(*file))
        .map(|(path, _)| path)
        .filter(|path| !path.ends_with(".bak"))
        .filter(|path| {
            // apply's own records (what each Talos node was given among them), not files
            // lab.toml renders.
            path.strip_prefix(state)
                .is_none_or(|name| !records.contains(&name) && !name.starts_with("talos-applied/"))
        })
        .map(|path| {
            let sign = if before.contains_key(path) { '~' } else { '+' };
            let shown = if path.starts_with(state) {
                bench.path("root").join(path).display().to_string()
            } else {
                format!("/{path}")
            };
            format!("{sign} file \"{shown}\"")
        })
        .collect();
    out.sort();
    out
}

/// The writing commands apply ran, as the plan lines that call for them; a command no plan
/// line calls for fails the test.
fn commands_as_plan_lines(bench: &Bench) -> Vec<String> {
    let lab: lab_bootstrap::Lab = lab_daemon::config::load(&bench.path("lab.toml")).unwrap();
    let name = |vmid: &str| {
        lab.machines
            .iter()
            .find(|m| m.vmid.to_string() == vmid)
            .map(|m| m.name.to_string())
            .unwrap()
    };
    let mut out = Vec::new();
    // Configs pushed beside the one in place and not yet checked, then checked and not yet
    // moved: a check or a move of anything else is no part of any plan line.
    let (mut unchecked, mut checked) = (Vec::new(), Vec::new());
    for command in bench.writes() {
        let words: Vec<&str> = command.split_whitespace().collect();
        let line = match words.as_slice() {
            ["pct", "push", vmid, _, staged, "--perms", _] if staged.ends_with(".new") => {
                unchecked.push(format!("{vmid} {staged}"));
                let target = staged.trim_end_matches(".new");
                format!("~ push \"{}:{target}\"", name(vmid))
            }
            ["pct", "exec", vmid, "--", program, "check", staged] => {
                let key = format!("{vmid} {staged}");
                assert!(
                    unchecked.contains(&key),
                    "apply checked {staged}, never pushed"
                );
                let installed = match name(vmid).as_str() {
                    "lb" => "/usr/local/bin/lab-lb",
                    _ => "/usr/local/bin/lab-vpn",
                };
                assert_eq!(*program, installed, "{command}");
                unchecked.retain(|k| *k != key);
                checked.push(key);
                continue;
            }
            ["pct", "exec", vmid, "--", "mv", "-f", staged, target] => {
                let key = format!("{vmid} {staged}");
                assert!(checked.contains(&key), "apply moved {staged} unchecked");
                assert_eq!(format!("{target}.new"), *staged, "{command}");
                checked.retain(|k| *k != key);
                continue;
            }
            ["systemctl", "daemon-reload"] => "~ daemon-reload \"host\"".to_owned(),
            ["sysctl", "-p", file] => format!("~ sysctl \"{file}\""),
            ["systemctl", "restart", unit] => format!("~ restart \"{unit}\""),
            ["qm", "start", vmid] => format!("~ vm \"{vmid}\""),
            ["pct", "start", vmid] => format!("~ container \"{vmid}\""),
            ["pct", "push", vmid, _, target, "--perms", _] => {
                format!("~ push \"{}:{target}\"", name(vmid))
            }
            ["pct", "exec", vmid, "--", "systemctl", "daemon-reload"] => {
                format!("~ daemon-reload \"ct {vmid}\"")
            }
            ["pct", "exec", vmid, "--", "systemctl", "restart", unit] => {
                format!("~ restart \"ct {vmid}: {unit}\"")
            }
            ["pct", "exec", vmid, "--", "systemctl", "reload-or-restart", unit] => {
                format!("~ reload \"ct {vmid}: {unit}\"")
            }
            // One install of several packages is a plan line for each.
            ["env", _, "apt-get", "-q", "-y", "--no-install-recommends", "install", packages @ ..] =>
            {
                out.extend(packages.iter().map(|p| format!("+ package \"host:{p}\"")));
                continue;
            }
            ["pct", "exec", vmid, "--", "env", _, "apt-get", "-q", "-y", "--no-install-recommends", "install", packages @ ..] =>
            {
                out.extend(
                    packages
                        .iter()
                        .map(|p| format!("+ package \"{}:{p}\"", name(vmid))),
                );
                continue;
            }
            // Parts of the lines above: enabled before a restart, directories and package lists
            // before what goes in them.
            ["systemctl", "enable", _]
            | ["pct", "exec", _, "--", "systemctl", "enable", _]
            | ["pct", "exec", _, "--", "mkdir", "-p", ..]
            | [.., "apt-get", "-q", "update"] => continue,
            _ => panic!("apply ran `{command}`, which no plan line calls for"),
        };
        out.push(line);
    }
    assert!(unchecked.is_empty(), "pushed, never checked: {unchecked:?}");
    assert!(checked.is_empty(), "checked, never moved: {checked:?}");
    out
}

/// plan, then apply: the files apply wrote are the files plan listed, and the commands it ran
/// are, in order, the rest of what plan listed.
fn assert_apply_does_what_plan_printed(bench: &Bench, scenario: &str) {
    let (_, text) = bench.run("plan", &[]);
    let planned = host_changes(&text);
    let (mut planned_files, planned_rest): (Vec<String>, Vec<String>) = planned
        .into_iter()
        .partition(|l| l.starts_with("+ file ") || l.starts_with("~ file "));
    planned_files.sort();
    let before = snapshot(bench);
    let applied = bench.apply_ok();
    let after = snapshot(bench);
    assert_eq!(
        files_written(bench, &before, &after),
        planned_files,
        "{scenario}: files\n{text}\n{applied}"
    );
    assert_eq!(
        commands_as_plan_lines(bench),
        planned_rest,
        "{scenario}: commands\n{text}\n{applied}"
    );
}

#[test]
fn apply_does_what_plan_printed() {
    let bench = Bench::new();
    assert_apply_does_what_plan_printed(&bench, "fresh host");
    assert_apply_does_what_plan_printed(&bench, "unchanged host");
    let (_, text) = bench.run("plan", &[]);
    assert!(host_changes(&text).is_empty(), "{text}");

    let edited = example().replacen(
        "roles = [\"control-plane\"]\nbalance = \"least-connections\"",
        "roles = [\"control-plane\"]\nbalance = \"round-robin\"",
        1,
    );
    assert_ne!(edited, example());
    std::fs::write(bench.path("lab.toml"), edited).unwrap();
    assert_apply_does_what_plan_printed(&bench, "a changed lb config: reloaded");

    std::fs::write(bench.path("bin/lab-vpn"), "lab-vpn build 2").unwrap();
    assert_apply_does_what_plan_printed(&bench, "a changed binary: restarted");

    std::fs::write(
        bench.path("ct/200/etc/systemd/system/lab-lb.service"),
        "# edited inside the container\n",
    )
    .unwrap();
    assert_apply_does_what_plan_printed(&bench, "a changed container unit: re-read, restarted");

    let network_unit = bench.path("root/etc/systemd/system/lab-network.service");
    std::fs::write(&network_unit, "# edited on the host\n").unwrap();
    assert_apply_does_what_plan_printed(&bench, "a changed host unit: re-read, restarted");

    let dnsmasq = bench.path("root/etc/lab/dnsmasq-vmbr2.conf");
    assert!(dnsmasq.is_file(), "{:#?}", bench.listing());
    std::fs::write(&dnsmasq, "# edited on the host\n").unwrap();
    let sysctl = bench.path("root/etc/sysctl.d/90-lab.conf");
    std::fs::set_permissions(&sysctl, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_apply_does_what_plan_printed(&bench, "a changed dnsmasq config and sysctl mode");

    std::fs::remove_file(bench.path("ct/201/usr/sbin/nft")).unwrap();
    assert_apply_does_what_plan_printed(&bench, "a package gone from a container");

    // An apply killed before its restarts: the next plan starts with what is still due.
    std::fs::write(bench.path("bin/lab-lb"), "lab-lb build 2").unwrap();
    std::fs::write(
        bench.path("fail"),
        "pct exec 200 -- systemctl restart lab-lb.service",
    )
    .unwrap();
    assert!(!bench.apply().status.success());
    assert_apply_does_what_plan_printed(&bench, "after an interrupted apply");

    // A config lab-lb refused: the next plan pushes and checks it again, and reloads.
    std::fs::write(bench.path("lab.toml"), example()).unwrap();
    std::fs::write(bench.path("refuse-200"), "lab-lb: refused\n").unwrap();
    assert!(!bench.apply().status.success());
    std::fs::remove_file(bench.path("refuse-200")).unwrap();
    assert_apply_does_what_plan_printed(&bench, "after a refused config");

    assert_apply_does_what_plan_printed(&bench, "unchanged again");
    assert!(bench.writes().is_empty(), "{:#?}", bench.writes());
}

#[test]
fn a_host_without_dnsmasq_and_nft_gets_them_installed_first() {
    let bench = Bench::new();
    for command in ["dnsmasq", "nft"] {
        std::fs::write(bench.path(&format!("host-lacks-{command}")), "").unwrap();
    }
    let (out, text) = bench.run("plan", &[]);
    assert_eq!(out.status.code(), Some(2), "{text}");
    let changes = host_changes(&text);
    assert_eq!(
        changes[..2],
        [
            "+ package \"host:dnsmasq-base\"",
            "+ package \"host:nftables\""
        ],
        "before any file: {text}"
    );
    // No apt source: a clear error, and nothing written on the host before it.
    std::fs::write(bench.path("no-apt"), "").unwrap();
    let out = bench.apply();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("installing dnsmasq-base nftables on the host failed"),
        "{err}"
    );
    assert!(!bench.path("root/etc").exists(), "{:?}", bench.listing());
    std::fs::remove_file(bench.path("no-apt")).unwrap();
    let text = bench.apply_ok();
    assert!(
        text.contains("installed dnsmasq-base nftables on the host"),
        "{text}"
    );
    let (_, text) = bench.run("plan", &[]);
    assert!(!text.contains("package \"host:"), "{text}");
}

#[test]
fn apply_installs_on_the_host_what_plan_printed() {
    let bench = Bench::new();
    std::fs::write(bench.path("host-lacks-nft"), "").unwrap();
    assert_apply_does_what_plan_printed(&bench, "host without nft");
}

#[test]
fn an_https_route_s_certificate_and_key_go_into_the_lb_key_0600_checked_by_the_real_lab_lb() {
    let bench = Bench::new();
    std::fs::copy(workspace_bin("lab-lb"), bench.path("bin/lab-lb")).unwrap();
    std::fs::write(bench.path("real-check-200"), "").unwrap();
    let certs = bench.path("certs");
    std::fs::create_dir(&certs).unwrap();
    let pair = lab_tests::certs::make_for(&certs, "apps", &["*.apps.lab"], "lab");
    let lab = example()
        + "\n[[lb.route]]\nname = \"apps\"\nlisten = \"net0\"\nport = 8443\nmode = \"https\"\n\
           roles = [\"worker\"]\ntarget_port = 80\n\
           cert = [{ cert = \"certs/apps.crt\", key = \"certs/apps.key\" }]\n";
    std::fs::write(bench.path("lab.toml"), lab).unwrap();
    bench.apply_ok();
    let writes = bench.writes();
    let key = staged(&bench, "lb/etc/lab-lb/certs/apps-0.key");
    let cert = staged(&bench, "lb/etc/lab-lb/certs/apps-0.crt");
    let at = |c: &str| {
        writes
            .iter()
            .position(|w| w == c)
            .unwrap_or_else(|| panic!("{c}\n{writes:#?}"))
    };
    let push_key = format!("pct push 200 {key} /etc/lab-lb/certs/apps-0.key --perms 600");
    let push_cert = format!("pct push 200 {cert} /etc/lab-lb/certs/apps-0.crt --perms 644");
    let check = "pct exec 200 -- /usr/local/bin/lab-lb check /etc/lab-lb/lb.toml.new";
    // In place before lab-lb checks the config naming them.
    assert!(at(&push_key) < at(check));
    assert!(at(&push_cert) < at(check));
    // Staged on the host 0600 too, and what arrived is the user's pair.
    let staged_mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(staged_mode, 0o600);
    assert_eq!(
        bench.in_container(200, "/etc/lab-lb/certs/apps-0.key"),
        std::fs::read_to_string(&pair.key).unwrap()
    );
    assert!(bench
        .in_container(200, "/etc/lab-lb/lb.toml")
        .contains("cert = \"certs/apps-0.crt\""));
    bench.apply_ok();
    assert!(bench.writes().is_empty(), "{:#?}", bench.writes());

    // A renewed certificate in the user's files is pushed alone, and lab-lb reloaded.
    let renewed = lab_tests::certs::make_for(&certs, "renewed", &["*.apps.lab"], "lab");
    std::fs::rename(renewed.cert, &pair.cert).unwrap();
    std::fs::rename(renewed.key, &pair.key).unwrap();
    bench.apply_ok();
    let writes = bench.writes();
    assert!(writes.contains(&push_key), "{writes:#?}");
    assert!(
        writes.contains(&"pct exec 200 -- systemctl reload-or-restart lab-lb.service".to_owned()),
        "{writes:#?}"
    );
}

/// The peers `lab-vpn peer add` keeps in the vpn container.
const ADDED_PEERS: &str = "/etc/lab-vpn/peers.toml";

fn phone_peer(name: &str, address: &str) -> String {
    format!(
        "# added on the gateway\n[[peer]]\nname = \"{name}\"\npublic_key = \"m9XYp+SdT1i0HAvFg2d+VIqb0LEk+0iGEwjRTtPPVFM=\"\nallowed_ips = [\"{address}/32\"]\n"
    )
}

#[test]
fn peers_added_in_the_vpn_container_and_with_lab_bootstrap_peer_add_both_survive_apply() {
    let bench = Bench::new();
    std::fs::copy(workspace_bin("lab-vpn"), bench.path("bin/lab-vpn")).unwrap();
    std::fs::write(bench.path("real-check-201"), "").unwrap();
    bench.apply_ok();
    let added = phone_peer("phone", "10.10.100.9");
    std::fs::write(bench.path(&format!("ct/201{ADDED_PEERS}")), &added).unwrap();

    // lab.toml gains two peers with `lab-bootstrap peer add`: vpn.toml changes, the added
    // peers do not.
    for args in [
        &[
            "tablet",
            "--public-key",
            "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=",
        ][..],
        &["laptop2"][..],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_lab-bootstrap"))
            .args(["peer", "add"])
            .args(args)
            .arg("--root")
            .arg(bench.path("root"))
            .arg(bench.path("lab.toml"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let client = bench.path("root/var/lib/lab-bootstrap/vpn-clients/laptop2.conf");
    let made = std::fs::read_to_string(&client).unwrap();
    assert!(made.contains("PrivateKey = "), "{made}");
    assert!(made.contains("Address = 10.10.100.4/32"), "{made}");
    let (out, text) = bench.run("plan", &[]);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("VPN peers added in the vpn container with `lab-vpn peer add` (/etc/lab-vpn/peers.toml, kept by apply):\n\n  phone 10.10.100.9/32"),
        "{text}"
    );
    assert!(!text.contains("will refuse"), "{text}");
    bench.apply_ok();
    let writes = bench.writes();
    assert!(
        !writes.iter().any(|w| w.contains(ADDED_PEERS)),
        "{writes:#?}"
    );
    assert_eq!(bench.in_container(201, ADDED_PEERS), added);
    let vpn_toml = bench.in_container(201, "/etc/lab-vpn/vpn.toml");
    assert!(
        vpn_toml.contains("peers_file = \"peers.toml\""),
        "{vpn_toml}"
    );
    assert!(vpn_toml.contains("name = \"tablet\""), "{vpn_toml}");
    assert!(vpn_toml.contains("name = \"laptop2\""), "{vpn_toml}");
    // apply keeps the client config peer add made, private key and all.
    assert_eq!(std::fs::read_to_string(&client).unwrap(), made);
    // The real lab-vpn in the container checked the new vpn.toml with the added peers.
    assert!(
        writes.contains(
            &"pct exec 201 -- /usr/local/bin/lab-vpn check /etc/lab-vpn/vpn.toml.new".to_owned()
        ),
        "{writes:#?}"
    );

    // A lab.toml peer taking the added one's address: plan says lab-vpn will refuse, and apply
    // stops at lab-vpn's check with its words, the running vpn.toml kept.
    let lab = std::fs::read_to_string(bench.path("lab.toml"))
        .unwrap()
        .replace("address = \"10.10.100.3\"", "address = \"10.10.100.9\"");
    std::fs::write(bench.path("lab.toml"), lab).unwrap();
    let (_, text) = bench.run("plan", &[]);
    assert!(
        text.contains("! lab-vpn check will refuse the new vpn.toml, and apply stop: /etc/lab-vpn/peers.toml: key `peer[0].allowed_ips[0]`: 10.10.100.9/32 overlaps 10.10.100.9/32 of vpn.toml's peer `tablet`"),
        "{text}"
    );
    let (ok, text) = apply_text(&bench);
    assert!(!ok, "{text}");
    assert!(
        text.contains("container vpn: `/usr/local/bin/lab-vpn check` refused the new /etc/lab-vpn/vpn.toml")
            && text.contains("key `peer[0].allowed_ips[0]`: 10.10.100.9/32 overlaps 10.10.100.9/32 of vpn.toml's peer `tablet`"),
        "{text}"
    );
    assert_eq!(bench.in_container(201, "/etc/lab-vpn/vpn.toml"), vpn_toml);
    assert_eq!(bench.in_container(201, ADDED_PEERS), added);
}

fn pin_kubernetes(bench: &Bench, version: &str) {
    let text = std::fs::read_to_string(bench.path("lab.toml")).unwrap();
    let pinned = match text.find("kubernetes_version = ") {
        Some(start) => {
            let end = start + text[start..].find('\n').unwrap();
            format!(
                "{}kubernetes_version = \"{version}\"{}",
                &text[..start],
                &text[end..]
            )
        }
        None => text.replacen(
            "talos_version = \"v1.13.9\"\n",
            &format!("talos_version = \"v1.13.9\"\nkubernetes_version = \"{version}\"\n"),
            1,
        ),
    };
    std::fs::write(bench.path("lab.toml"), pinned).unwrap();
}

#[test]
fn a_changed_node_config_is_planned_by_field_then_applied_workers_first_and_control_planes_one_at_a_time(
) {
    let bench = Bench::new();
    bench.apply_ok();
    // First boot counts: what each node was given is its snippet, kept 0600.
    let snippets = bench.path("root/var/lib/vz/snippets");
    for node in ["cp1", "cp2", "cp3", "w1", "w2"] {
        let record = bench.state().join(format!("talos-applied/{node}.yaml"));
        assert_eq!(
            std::fs::read(&record).unwrap(),
            std::fs::read(snippets.join(format!("lab-{node}.yaml"))).unwrap(),
            "{node}"
        );
        assert_eq!(
            std::fs::metadata(&record).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let apid = bench.apid(apid::all_ready());
    let endpoint = apid.address.to_string();
    let talos = ["--talos-endpoint", endpoint.as_str()];
    let out = bench.apply_with(&talos);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(apid.stand_in.record().applied.is_empty());

    // A changed lab.toml: the kubelet and the control planes' images. And cp1's record as if
    // its tokens had been others: masked, never printed.
    pin_kubernetes(&bench, "v1.36.2");
    let secrets = Secrets::load(&bench.state().join("talos-secrets.yaml")).unwrap();
    let cp1_record = bench.state().join("talos-applied/cp1.yaml");
    let recorded = std::fs::read_to_string(&cp1_record).unwrap();
    assert!(recorded.contains(&secrets.trustdinfo.token));
    std::fs::write(
        &cp1_record,
        recorded.replace(&secrets.trustdinfo.token, "oldtrustd.0123456789abcdef"),
    )
    .unwrap();
    let (out, text) = bench.run("plan", &talos);
    assert_eq!(out.status.code(), Some(2), "{text}");
    for line in [
        "~ cp1 (10.10.1.11): no reboot (Talos dry run: Applied configuration without a reboot (skipped in dry-run).)",
        "~ w2 (10.10.1.22): no reboot",
        "v1alpha1:",
        "+ machine.kubelet.image = ghcr.io/siderolabs/kubelet:v1.36.2",
        "+ cluster.apiServer.image = registry.k8s.io/kube-apiserver:v1.36.2",
        "~ machine.token (secret, changed)",
    ] {
        assert!(text.contains(line), "{line}\n{text}");
    }
    let masked = [
        secrets.trustdinfo.token.as_str(),
        "oldtrustd.0123456789abcdef",
        secrets.secrets.bootstraptoken.as_str(),
        secrets.cluster.secret.as_str(),
        secrets.certs.os.key.as_str(),
    ];
    for secret in masked {
        assert!(!text.contains(secret), "{secret} in\n{text}");
    }
    // A dry run changes nothing on the node.
    assert!(apid.stand_in.record().applied.is_empty());
    assert!(apid.rollout_calls().iter().all(|c| c == "HealthCheck"));

    let before = apid.rollout_calls().len();
    let out = bench.apply_with(&talos);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    for secret in masked {
        assert!(!text.contains(secret), "{secret} in\n{text}");
    }
    let expected: Vec<String> = [
        "ApplyConfiguration w1",
        "ApplyConfiguration w2",
        "HealthCheck",
        "ApplyConfiguration cp1",
        "HealthCheck",
        "ApplyConfiguration cp2",
        "HealthCheck",
        "ApplyConfiguration cp3",
        "HealthCheck",
    ]
    .map(str::to_owned)
    .to_vec();
    assert_eq!(apid.rollout_calls()[before..].to_vec(), expected, "{text}");
    // The snippets say what the nodes run, so a rebuilt VM gets it too.
    let record = apid.stand_in.record();
    for (node, config) in &record.configs {
        assert_eq!(
            &std::fs::read(snippets.join(format!("lab-{node}.yaml"))).unwrap(),
            config,
            "{node}"
        );
        assert!(String::from_utf8_lossy(config).contains("kubelet:v1.36.2"));
    }
    assert_eq!(record.configs.len(), 5);

    // Done: a second apply writes nothing and asks no node anything; plan agrees.
    let calls = apid.stand_in.record().calls.len();
    let tree = snapshot(&bench);
    let out = bench.apply_with(&talos);
    assert!(out.status.success());
    assert!(bench.writes().is_empty(), "{:#?}", bench.writes());
    assert_eq!(snapshot(&bench), tree);
    assert_eq!(apid.stand_in.record().calls.len(), calls);
    let (out, text) = bench.run("plan", &talos);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(!text.contains("Talos machine configs"), "{text}");
}

#[test]
fn plan_shows_a_reboot_for_a_changed_installer_and_the_diff_of_a_node_that_does_not_answer() {
    let bench = Bench::new();
    bench.apply_ok();
    let apid = bench.apid(apid::all_ready());
    let endpoint = apid.address.to_string();
    let talos = ["--talos-endpoint", endpoint.as_str()];
    pin_kubernetes(&bench, "v1.36.2");
    let out = bench.apply_with(&talos);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(apid.stand_in.record().applied.len(), 5);

    // Another installer (the extensions make the schematic): Talos installs it at a reboot.
    let text = std::fs::read_to_string(bench.path("lab.toml")).unwrap();
    let edited = text.replacen(
        "talos_extensions = [\"siderolabs/qemu-guest-agent\"]",
        "talos_extensions = [\"siderolabs/qemu-guest-agent\", \"siderolabs/iscsi-tools\"]",
        1,
    );
    assert_ne!(edited, text);
    std::fs::write(bench.path("lab.toml"), edited).unwrap();
    let (out, text) = bench.run("plan", &talos);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("~ cp1 (10.10.1.11): reboot (Talos dry run: Applied configuration with a reboot: machine.install changed (skipped in dry-run).)"),
        "{text}"
    );
    assert!(
        text.contains("~ machine.install.image: factory.talos.dev/"),
        "{text}"
    );

    // Nobody answering: said so, the diff still shown.
    let (out, text) = bench.run("plan", &["--talos-endpoint", NO_NODE]);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains(
            "~ w1 (10.10.1.21): unreachable, mode unknown (Talos API of 127.0.0.1:1, connect"
        ),
        "{text}"
    );
    assert!(
        text.contains("~ machine.install.image: factory.talos.dev/"),
        "{text}"
    );
}

#[test]
fn an_apply_stopped_by_an_unhealthy_cluster_goes_on_with_the_nodes_still_to_do() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, OnceLock};
    let bench = Bench::new();
    bench.apply_ok();
    // cp2's kubelet stops being ready once cp1 took its new config, until it recovers.
    let stand_in: Arc<OnceLock<lab_talos_api::stand_in::StandIn>> = Arc::default();
    let recovered = Arc::new(AtomicBool::new(false));
    let readiness = {
        let (stand_in, recovered) = (stand_in.clone(), recovered.clone());
        Arc::new(move |node: &str| {
            let cp1_changed = stand_in
                .get()
                .is_some_and(|s| s.record().configs.contains_key("cp1"));
            !(node == "10.10.2.12" && cp1_changed && !recovered.load(Ordering::SeqCst))
        })
    };
    let apid = bench.apid(readiness);
    assert!(stand_in.set(apid.stand_in.clone()).is_ok());
    let endpoint = apid.address.to_string();
    let talos = ["--talos-endpoint", endpoint.as_str(), "--wait-timeout", "3"];
    let out = bench.apply_with(&talos);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    pin_kubernetes(&bench, "v1.36.2");
    let out = bench.apply_with(&talos);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cluster health: cluster health not done after")
            && stderr.contains("not yet: 10.10.2.12")
            && stderr.contains("run it again to go on"),
        "{stderr}"
    );
    // Nothing past the unhealthy cluster: cp2 and cp3 still run what they ran.
    let applied: Vec<String> = apid.stand_in.record().configs.keys().cloned().collect();
    assert_eq!(applied, ["cp1", "w1", "w2"]);

    recovered.store(true, Ordering::SeqCst);
    let before = apid.rollout_calls().len();
    let out = bench.apply_with(&talos);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        apid.rollout_calls()[before..].to_vec(),
        [
            "HealthCheck",
            "ApplyConfiguration cp2",
            "HealthCheck",
            "ApplyConfiguration cp3",
            "HealthCheck",
        ]
    );
}
