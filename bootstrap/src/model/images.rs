//! `[images]`: where the Talos disk image, the manager's cloud image and the containers'
//! template come from, each pinned by checksum.

use super::Lab;
use lab_daemon::Issues;
use serde::{Deserialize, Serialize};

/// `[images]`: the images to fetch onto the file storage; each unset one is expected there
/// under its default name.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Images {
    /// Talos nocloud disk image: the Image Factory's for `[cluster] talos_extensions` unless
    /// it names another URL.
    #[serde(default)]
    pub talos: Option<TalosImage>,
    /// Debian generic cloud image for the manager VM.
    #[serde(default)]
    pub debian: Option<Image>,
    /// Debian LXC template for the lb and vpn containers.
    #[serde(default)]
    pub lxc_template: Option<Image>,
}

/// One image: where Proxmox downloads it from and the checksum it must match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    /// An `https://` (or `http://`) URL.
    pub url: String,
    /// Exactly one of the two, as published next to the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// SHA-512 in hex (128 digits); `sha256` is 64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha512: Option<String>,
    /// The name it is stored under; the URL's last segment when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// `[images.talos]`: the Talos disk image, by default the Image Factory's for the lab's
/// schematic and release, with the checksum the user pinned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TalosImage {
    /// Where to fetch it from; the Image Factory's nocloud image when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Exactly one of the two: the factory publishes none, so the user pins what they checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// SHA-512 in hex (128 digits); `sha256` is 64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha512: Option<String>,
    /// The name it is stored under; with `url`, the URL's last segment when unset, without it
    /// the factory image's name (release and schematic ID in it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// Why `[images.talos]` needs a checksum, where the plain "exactly one" would not say.
const TALOS_CHECKSUM: &str = "give exactly one of `sha256` and `sha512`: the Image Factory builds the image on request and publishes no checksum, so the one pinned here is the only check of what Proxmox downloads (README: pinning the Talos image)";

impl Image {
    /// The name it is stored under on the file storage: `file`, or the URL's last segment.
    pub fn file_name(&self) -> &str {
        match &self.file {
            Some(file) => file,
            None => self
                .url
                .split(['?', '#'])
                .next()
                .and_then(|u| u.rsplit('/').next())
                .unwrap_or(""),
        }
    }

    /// Proxmox's `checksum-algorithm` and `checksum`.
    pub fn checksum(&self) -> Option<(&'static str, &str)> {
        match (&self.sha256, &self.sha512) {
            (Some(sum), None) => Some(("sha256", sum)),
            (None, Some(sum)) => Some(("sha512", sum)),
            _ => None,
        }
    }
}

fn validate_image(
    image: &Image,
    key: &str,
    extensions: &[&str],
    missing_checksum: &str,
    issues: &mut Issues,
) {
    if !(image.url.starts_with("https://") || image.url.starts_with("http://")) {
        issues.add(
            format!("{key}.url"),
            format!("`{}` is not an http(s) URL", image.url),
        );
    }
    let file = image.file_name();
    let file_key = if image.file.is_some() { "file" } else { "url" };
    if file.is_empty()
        || file.starts_with('.')
        || !file
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-+".contains(c))
    {
        issues.add(
            format!("{key}.{file_key}"),
            format!("`{file}` is not a file name Proxmox storage accepts"),
        );
    } else if !extensions.iter().any(|ext| file.ends_with(ext)) {
        issues.add(
            format!("{key}.{file_key}"),
            format!("`{file}` should end with one of {}", extensions.join(", ")),
        );
    }
    match (&image.sha256, &image.sha512) {
        (Some(_), Some(_)) | (None, None) => issues.add(key.to_owned(), missing_checksum),
        (Some(sum), None) => check_hex(sum, 64, &format!("{key}.sha256"), issues),
        (None, Some(sum)) => check_hex(sum, 128, &format!("{key}.sha512"), issues),
    }
}

fn check_hex(sum: &str, len: usize, key: &str, issues: &mut Issues) {
    if sum.len() != len || !sum.chars().all(|c| c.is_ascii_hexdigit()) {
        issues.add(
            key.to_owned(),
            format!("expected {len} hexadecimal digits, found `{sum}`"),
        );
    }
}

impl Lab {
    /// `[images.talos]` with its URL and file name filled in: the Image Factory's when unset.
    pub fn talos_image(&self) -> Option<Image> {
        let talos = self.images.talos.as_ref()?;
        let factory = self.talos_factory();
        let file = match (&talos.file, &talos.url) {
            (Some(file), _) => Some(file.clone()),
            (None, Some(_)) => None,
            (None, None) => Some(factory.disk_image_file),
        };
        Some(Image {
            url: talos.url.clone().unwrap_or(factory.disk_image_url),
            sha256: talos.sha256.clone(),
            sha512: talos.sha512.clone(),
            file,
        })
    }

    pub(super) fn validate_images(&self, issues: &mut Issues) {
        let images = &self.images;
        let plain =
            "give exactly one of `sha256` and `sha512` (the download is checked against it)";
        // Proxmox's `import` content takes raw and qcow2 disks; `vztmpl` compressed tarballs.
        for (field, image, extensions, missing_checksum) in [
            (
                "talos",
                &self.talos_image(),
                &[".raw", ".qcow2", ".img"][..],
                TALOS_CHECKSUM,
            ),
            (
                "debian",
                &images.debian,
                &[".raw", ".qcow2", ".img"][..],
                plain,
            ),
            (
                "lxc_template",
                &images.lxc_template,
                &[".tar.zst", ".tar.gz", ".tar.xz"][..],
                plain,
            ),
        ] {
            if let Some(image) = image {
                validate_image(
                    image,
                    &format!("images.{field}"),
                    extensions,
                    missing_checksum,
                    issues,
                );
            }
        }
    }
}
