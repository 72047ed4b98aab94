//! The Talos image from Sidero Labs' Image Factory: the schematic `[cluster] talos_extensions`
//! make, its ID computed as the factory computes it, and the installer and disk image it names.
//! Pure: nothing here talks to the factory, so `plan` shows the same references offline.

use super::Lab;
use lab_daemon::Issues;

/// `[cluster] talos_extensions` when unset: the VMs are created with `agent=1`, which needs the
/// QEMU guest agent in the image (the stock Talos image has none).
pub const DEFAULT_TALOS_EXTENSIONS: &[&str] = &["siderolabs/qemu-guest-agent"];

/// The public Image Factory: its registry serves the installers, its HTTP frontend the images.
const FACTORY: &str = "factory.talos.dev";

/// The factory's platform for Proxmox VMs: cloud-init style configuration (our snippets).
const PLATFORM: &str = "nocloud";

/// The disk image's path under `/image/<id>/<version>/`. The factory builds any
/// `<platform>-<arch>.<format>` on request; qcow2 because Proxmox imports it as it is, while its
/// default `.raw.xz` would need a decompression `download-url` does not do for disk images.
const DISK_IMAGE: &str = "nocloud-amd64.qcow2";

/// An Image Factory schematic with only official system extensions, the part of the factory's
/// `Schematic` (siderolabs/image-factory `pkg/schematic`) this lab uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schematic {
    /// `customization.systemExtensions.officialExtensions`, in the order given: the factory
    /// hashes the list as it is, so the order is part of the ID.
    pub official_extensions: Vec<String>,
}

impl Schematic {
    /// The schematic's canonical YAML, byte for byte what the factory's `Schematic.Marshal`
    /// (go-yaml, 4-space indentation, empty fields omitted, `customization` always present)
    /// writes. Extension names are plain scalars: [`validate_extension`] allows only characters
    /// that need no quoting.
    pub fn to_yaml(&self) -> String {
        if self.official_extensions.is_empty() {
            return "customization: {}\n".to_owned();
        }
        let mut yaml =
            String::from("customization:\n    systemExtensions:\n        officialExtensions:\n");
        for extension in &self.official_extensions {
            yaml.push_str("            - ");
            yaml.push_str(extension);
            yaml.push('\n');
        }
        yaml
    }

    /// The schematic ID: SHA-256 of [`Schematic::to_yaml`] in lowercase hex, the ID the factory
    /// answers `POST /schematics` with.
    pub fn id(&self) -> String {
        ring::digest::digest(&ring::digest::SHA256, self.to_yaml().as_bytes())
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// What the lab takes from the Image Factory for a schematic and a Talos release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FactoryImage {
    /// The schematic made of `[cluster] talos_extensions`.
    pub schematic: Schematic,
    /// Its ID.
    pub schematic_id: String,
    /// The installer image: `machine.install.image` of every machine config (upgrades install
    /// it, so the extensions stay).
    pub installer: String,
    /// The nocloud disk image every Talos VM's disk is imported from.
    pub disk_image_url: String,
    /// The name the disk image is stored under on the file storage: schematic and release in
    /// it, so a change of either is a new image, never the old one under the same name.
    pub disk_image_file: String,
}

impl FactoryImage {
    /// The references for `extensions` and the Talos release `version` (`v1.13.9`).
    pub fn new(extensions: &[String], version: &str) -> Self {
        let schematic = Schematic {
            official_extensions: extensions.to_vec(),
        };
        let id = schematic.id();
        Self {
            installer: format!("{FACTORY}/{PLATFORM}-installer/{id}:{version}"),
            disk_image_url: format!("https://{FACTORY}/image/{id}/{version}/{DISK_IMAGE}"),
            disk_image_file: format!("talos-{version}-{id}-{DISK_IMAGE}"),
            schematic_id: id,
            schematic,
        }
    }
}

impl Lab {
    /// The Image Factory's installer and disk image for `[cluster] talos_extensions` and
    /// `talos_version`.
    pub fn talos_factory(&self) -> FactoryImage {
        FactoryImage::new(&self.cluster.talos_extensions, &self.cluster.talos_version)
    }

    /// `[images.talos] url` naming a factory image of another schematic or release than the
    /// installer's: the disk would lack what the installer brings, or the reverse.
    pub(super) fn validate_talos_image_url(&self, issues: &mut Issues) {
        let Some(url) = self.images.talos.as_ref().and_then(|t| t.url.as_deref()) else {
            return;
        };
        let Some(path) = url.strip_prefix(&format!("https://{FACTORY}/image/")) else {
            return;
        };
        let factory = self.talos_factory();
        let mut segments = path.split('/');
        let (id, version) = (segments.next(), segments.next());
        if id != Some(factory.schematic_id.as_str()) {
            issues.add(
                "images.talos.url",
                format!(
                    "names the factory schematic `{}`, but `cluster.talos_extensions` make `{}` (the installer's): leave `url` out to get the factory's image of the extensions",
                    id.unwrap_or(""),
                    factory.schematic_id
                ),
            );
        } else if version != Some(self.cluster.talos_version.as_str()) {
            issues.add(
                "images.talos.url",
                format!(
                    "names Talos `{}`, but `cluster.talos_version` is `{}` (the installer's): leave `url` out to get the factory's image of that release",
                    version.unwrap_or(""),
                    self.cluster.talos_version
                ),
            );
        }
    }

    pub(super) fn validate_talos_extensions(&self, issues: &mut Issues) {
        let extensions = &self.cluster.talos_extensions;
        for (index, extension) in extensions.iter().enumerate() {
            let key = format!("cluster.talos_extensions[{index}]");
            if let Err(message) = validate_extension(extension) {
                issues.add(key, message);
            } else if extensions[..index].contains(extension) {
                issues.add(key, format!("`{extension}` is listed twice"));
            }
        }
    }
}

/// An official extension is named `owner/name` (`siderolabs/qemu-guest-agent`), each part
/// lowercase letters, digits, `-`, `_` and `.`, starting with a letter or digit.
fn validate_extension(extension: &str) -> Result<(), String> {
    let part_ok = |part: &str| {
        part.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && part
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
    };
    match extension.split_once('/') {
        Some((owner, name)) if part_ok(owner) && part_ok(name) => Ok(()),
        _ => Err(format!(
            "`{extension}` is not an official Talos system extension like `siderolabs/qemu-guest-agent` (`owner/name`: lowercase letters, digits, `-`, `_`, `.`)"
        )),
    }
}
