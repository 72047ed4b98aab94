//! `lab-vpn peer add | list | remove` against a running gateway: the printed client config is
//! what wg-quick users expect (wireguard-go + `wg setconf` after `wg-quick strip` connect with
//! it), its QR codes decode to the same text, and the file and the daemon follow each command.

mod support;

use lab_tests::netns::Netns;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::*;

/// The gateway's config, no peers, with the endpoint clients use.
fn gateway_text(topology: &Topology, gateway_key: &KeyPair) -> String {
    let text = topology.gateway_config(gateway_key, "").replace(
        "public_endpoint = \"192.168.1.51:51820\"",
        &format!("public_endpoint = \"{GATEWAY_UNDERLAY}:{PORT}\""),
    );
    assert!(text.contains(GATEWAY_UNDERLAY), "endpoint not set: {text}");
    text
}

/// The same, as a file in the topology's directory, for a gateway that is not running.
fn gateway_file(topology: &Topology, gateway_key: &KeyPair) -> PathBuf {
    let path = topology.dir.path().join("vpn.toml");
    std::fs::write(&path, gateway_text(topology, gateway_key)).unwrap();
    path
}

fn lab_vpn(netns: &Netns, args: &[&str]) -> Output {
    netns.command(BIN).args(args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The QR code `peer add` drew in the terminal: light-on-dark half blocks, two module rows
/// per line, decoded back to text.
fn decode_terminal_qr(stderr: &str) -> String {
    let lines: Vec<Vec<char>> = stderr
        .lines()
        .filter(|l| !l.is_empty() && l.chars().all(|c| " █▀▄".contains(c)))
        .map(|l| l.chars().collect())
        .collect();
    assert!(lines.len() > 10, "no QR code drawn:\n{stderr}");
    // A space is two dark modules (the colours are swapped for dark terminals).
    let mut modules: Vec<Vec<bool>> = Vec::new();
    for line in &lines {
        let (top, bottom): (Vec<bool>, Vec<bool>) = line
            .iter()
            .map(|c| match c {
                ' ' => (true, true),
                '▀' => (false, true),
                '▄' => (true, false),
                _ => (false, false),
            })
            .unzip();
        modules.push(top);
        modules.push(bottom);
    }
    let scale = 4;
    let (width, height) = (modules[0].len() * scale, modules.len() * scale);
    let mut image = rqrr::PreparedImage::prepare_from_bitmap(width, height, |x, y| {
        modules[y / scale].get(x / scale).copied().unwrap_or(false)
    });
    let grids = image.detect_grids();
    assert_eq!(
        grids.len(),
        1,
        "expected one QR code in the terminal output"
    );
    grids[0].decode().unwrap().1
}

fn decode_png_qr(path: &Path) -> String {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0u8; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    assert_eq!(info.color_type, png::ColorType::Grayscale);
    let width = info.width as usize;
    let mut image =
        rqrr::PreparedImage::prepare_from_greyscale(width, info.height as usize, |x, y| {
            pixels[y * width + x]
        });
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1, "expected one QR code in {}", path.display());
    grids[0].decode().unwrap().1
}

/// `Key = value` of a wg-quick config.
fn setting<'t>(config: &'t str, key: &str) -> &'t str {
    config
        .lines()
        .find_map(|l| {
            l.strip_prefix(key)?
                .trim_start()
                .strip_prefix('=')?
                .trim()
                .into()
        })
        .unwrap_or_else(|| panic!("no {key} in:\n{config}"))
}

#[test]
fn a_peer_added_by_the_cli_connects_with_wireguard_go_and_the_qr_codes_hold_its_config() {
    let topology = Topology::new();
    let gateway_key = key_pair();
    let gateway = topology.start_gateway(&gateway_text(&topology, &gateway_key));
    // The daemon reloads from this file when the CLI signals it.
    let file = gateway.config_path.clone();
    let _server = topology.start_server();

    let go_interface = unique_interface("wgc");
    let client_file = topology.dir.path().join(format!("{go_interface}.conf"));
    let png = topology.dir.path().join("laptop.png");
    let added = lab_vpn(
        &topology.gateway,
        &[
            "peer",
            "add",
            "laptop",
            "--config",
            file.to_str().unwrap(),
            "--output",
            client_file.to_str().unwrap(),
            "--qr-png",
            png.to_str().unwrap(),
        ],
    );
    let stderr = text(&added.stderr);
    assert!(added.status.success(), "peer add failed: {stderr}");
    assert!(
        stderr.contains("applied to the running"),
        "not applied live: {stderr}"
    );
    let client = std::fs::read_to_string(&client_file).unwrap();
    assert_eq!(setting(&client, "Address"), format!("{CLIENT_TUNNEL}/32"));
    assert_eq!(setting(&client, "PublicKey"), gateway_key.public);
    assert_eq!(
        setting(&client, "Endpoint"),
        format!("{GATEWAY_UNDERLAY}:{PORT}")
    );
    assert_eq!(
        setting(&client, "AllowedIPs"),
        "10.10.100.0/24, 10.10.1.0/24, 10.10.2.0/24"
    );
    // The example's `dns` and `dns_search`: the lab's DNS and its domain, as wg-quick takes them.
    assert_eq!(setting(&client, "DNS"), "10.10.1.1, lab");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&client_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the client config holds a private key");
    assert_eq!(decode_png_qr(&png), client);
    assert_eq!(decode_terminal_qr(&stderr), client);

    // The file now has the peer, and still passes `check`.
    let check = Command::new(BIN).arg("check").arg(&file).output().unwrap();
    assert!(check.status.success(), "{}", text(&check.stderr));
    assert!(std::fs::read_to_string(&file)
        .unwrap()
        .contains("name = \"laptop\""));

    // What a wg-quick user does without wg-quick: strip, setconf, address, routes.
    let stripped = Command::new("wg-quick")
        .arg("strip")
        .arg(&client_file)
        .output()
        .unwrap();
    assert!(
        stripped.status.success(),
        "wg-quick strip: {}",
        text(&stripped.stderr)
    );
    let stripped_file = topology.dir.path().join("stripped.conf");
    std::fs::write(&stripped_file, &stripped.stdout).unwrap();
    let go = WireguardGo::start_named(&topology.client, &go_interface, CLIENT_TUNNEL);
    go.wg(
        &topology.client,
        &["setconf", &go.interface, stripped_file.to_str().unwrap()],
    );
    go.route(&topology.client, "10.10.100.0/24");
    go.route(&topology.client, "10.10.1.0/24");
    assert!(ping(&topology.client, GATEWAY_TUNNEL, &[]), "no ping");
    assert_eq!(
        fetch(&topology.client, SERVER).as_deref(),
        Some("behind the gateway")
    );

    // `peer list` shows it with a handshake; `peer remove` takes it out of file and daemon.
    let list = lab_vpn(
        &topology.gateway,
        &["peer", "list", "--config", file.to_str().unwrap()],
    );
    let listing = text(&list.stdout);
    let line = listing
        .lines()
        .find(|l| l.starts_with("laptop"))
        .unwrap_or_else(|| panic!("laptop not listed:\n{listing}"));
    assert!(line.contains("ago") || line.contains("now"), "{line}");
    assert!(line.contains(&format!("{CLIENT_UNDERLAY}:")), "{line}");

    let removed = lab_vpn(
        &topology.gateway,
        &[
            "peer",
            "remove",
            "laptop",
            "--config",
            file.to_str().unwrap(),
        ],
    );
    assert!(removed.status.success(), "{}", text(&removed.stderr));
    assert!(
        text(&removed.stderr).contains("applied to the running"),
        "{}",
        text(&removed.stderr)
    );
    assert!(wg_dump(&topology.gateway, &topology.interface).1.is_empty());
    assert!(!std::fs::read_to_string(&file).unwrap().contains("laptop"));
}

#[test]
fn refused_peer_commands_leave_the_file_as_it_was() {
    let topology = Topology::new();
    let gateway_key = key_pair();
    let file = gateway_file(&topology, &gateway_key);
    let config = file.to_str().unwrap();
    let first = lab_vpn(
        &topology.gateway,
        &["peer", "add", "phone", "--config", config, "--no-qr"],
    );
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(
        text(&first.stderr).contains("not running"),
        "{}",
        text(&first.stderr)
    );
    // Without --output the config goes to stdout, for a pipe or a redirect.
    assert_eq!(
        setting(&text(&first.stdout), "Address"),
        format!("{CLIENT_TUNNEL}/32")
    );
    let before = std::fs::read(&file).unwrap();

    let again = lab_vpn(
        &topology.gateway,
        &["peer", "add", "phone", "--config", config, "--no-qr"],
    );
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("a peer named `phone` already exists"),
        "{}",
        text(&again.stderr)
    );
    let taken = lab_vpn(
        &topology.gateway,
        &[
            "peer",
            "add",
            "tablet",
            "--config",
            config,
            "--no-qr",
            "--address",
            CLIENT_TUNNEL,
        ],
    );
    assert!(!taken.status.success());
    assert!(
        text(&taken.stderr).contains("overlaps"),
        "{}",
        text(&taken.stderr)
    );
    let missing = lab_vpn(
        &topology.gateway,
        &["peer", "remove", "nobody", "--config", config],
    );
    assert!(!missing.status.success());
    assert!(text(&missing.stderr).contains("no peer named `nobody`"));
    assert_eq!(std::fs::read(&file).unwrap(), before, "the file changed");

    // The next peer gets the next address, with a preshared key the client config carries.
    let second = lab_vpn(
        &topology.gateway,
        &[
            "peer",
            "add",
            "tablet",
            "--config",
            config,
            "--no-qr",
            "--preshared-key",
        ],
    );
    assert!(second.status.success(), "{}", text(&second.stderr));
    let client = text(&second.stdout);
    assert_eq!(setting(&client, "Address"), "10.10.100.3/32");
    let psk_file = topology.dir.path().join("tablet.psk");
    assert_eq!(
        std::fs::read_to_string(&psk_file).unwrap().trim(),
        setting(&client, "PresharedKey")
    );
    let check = Command::new(BIN).arg("check").arg(&file).output().unwrap();
    assert!(check.status.success(), "{}", text(&check.stderr));
}

/// The peer lab-bootstrap wrote into vpn.toml from lab.toml.
fn admin_peer(key: &KeyPair) -> String {
    format!(
        "[[peer]]\nname = \"admin\"\npublic_key = \"{}\"\nallowed_ips = [\"{CLIENT_TUNNEL}/32\"]\n",
        key.public
    )
}

fn listed_names(netns: &Netns, config: &str) -> Vec<String> {
    let list = lab_vpn(netns, &["peer", "list", "--config", config]);
    assert!(list.status.success(), "{}", text(&list.stderr));
    text(&list.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| ["admin", "phone"].contains(n))
        .map(str::to_owned)
        .collect()
}

#[test]
fn with_a_peers_file_cli_peers_go_there_and_survive_vpn_toml_being_rewritten() {
    let topology = Topology::new();
    let gateway_key = key_pair();
    let vpn_toml = format!(
        "peers_file = \"peers.toml\"\n{}",
        topology.gateway_config(&gateway_key, &admin_peer(&key_pair()))
    );
    let mut gateway = topology.start_gateway(&vpn_toml);
    let file = gateway.config_path.clone();
    let config = file.to_str().unwrap();
    let peers_file = file.with_file_name("peers.toml");
    let phone = key_pair();
    let added = lab_vpn(
        &topology.gateway,
        &[
            "peer",
            "add",
            "phone",
            "--config",
            config,
            "--public-key",
            &phone.public,
            "--no-qr",
        ],
    );
    assert!(added.status.success(), "{}", text(&added.stderr));
    assert!(
        text(&added.stderr).contains("applied to the running"),
        "{}",
        text(&added.stderr)
    );
    // vpn.toml is as its writer left it; the peer is in the peers file, at the next address.
    assert_eq!(std::fs::read_to_string(&file).unwrap(), vpn_toml);
    let kept = std::fs::read_to_string(&peers_file).unwrap();
    assert!(kept.contains("name = \"phone\""), "{kept}");
    assert!(kept.contains("10.10.100.3/32"), "{kept}");
    assert_eq!(listed_names(&topology.gateway, config), ["admin", "phone"]);

    // vpn.toml rewritten (what apply does) and reloaded: the daemon still has both.
    let status = gateway.reload(&vpn_toml);
    assert!(!status.contains("refused"), "{status}");
    let shown = topology
        .gateway
        .command("wg")
        .args(["show", &topology.interface, "allowed-ips"])
        .output()
        .unwrap();
    assert!(
        text(&shown.stdout).contains(&format!("{}\t10.10.100.3/32", phone.public)),
        "{}{}",
        text(&shown.stdout),
        text(&shown.stderr)
    );
    assert_eq!(listed_names(&topology.gateway, config), ["admin", "phone"]);
    let check = Command::new(BIN).arg("check").arg(&file).output().unwrap();
    assert!(check.status.success(), "{}", text(&check.stderr));
    assert!(
        text(&check.stdout).contains("2 peers"),
        "{}",
        text(&check.stdout)
    );

    // vpn.toml's own peers are its writer's to remove.
    let refused = lab_vpn(
        &topology.gateway,
        &["peer", "remove", "admin", "--config", config],
    );
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("peer `admin` is one of")
            && text(&refused.stderr).contains("lab-bootstrap peer remove admin"),
        "{}",
        text(&refused.stderr)
    );

    // A peers file that clashes with vpn.toml is refused by check, naming the file and key.
    let clash = format!("{kept}\n[[peer]]\nname = \"admin\"\npublic_key = \"{}\"\nallowed_ips = [\"10.10.100.9/32\"]\n", key_pair().public);
    std::fs::write(&peers_file, clash).unwrap();
    let check = Command::new(BIN).arg("check").arg(&file).output().unwrap();
    assert_eq!(check.status.code(), Some(78));
    let stderr = text(&check.stderr);
    assert!(
        stderr.contains(&format!("{}:", peers_file.display()))
            && stderr.contains("key `peer[1].name`: peer `admin` is also vpn.toml's"),
        "{stderr}"
    );
    std::fs::write(&peers_file, &kept).unwrap();

    let removed = lab_vpn(
        &topology.gateway,
        &["peer", "remove", "phone", "--config", config],
    );
    assert!(removed.status.success(), "{}", text(&removed.stderr));
    assert_eq!(listed_names(&topology.gateway, config), ["admin"]);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), vpn_toml);
}
