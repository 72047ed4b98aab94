//! `[images]` on the node's file storage: each fetched by Proxmox itself with
//! `download-url`, checked against its checksum, and only when the storage lacks it.

use super::client::{wait_task, ApiError, ProxmoxApi};
use crate::model::{Image, Lab};
use serde_json::Value;
use std::time::Duration;

/// Images are large; Proxmox's own download task may take a while on a home uplink.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(2 * 60 * 60);
const POLL: Duration = Duration::from_millis(500);

/// One image the storage does not have yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Download {
    /// `local:import/talos-….raw`
    pub volid: String,
    /// The storage content type it lands as: `import` for disk images, `vztmpl` for the LXC
    /// template.
    pub content: &'static str,
    /// The `[images]` entry: where to fetch it from and its checksum.
    pub image: Image,
}

/// The images of lab.toml, each with the storage content type it lands as.
fn wanted(lab: &Lab) -> Vec<(&'static str, Image)> {
    let images = &lab.images;
    [
        ("import", lab.talos_image()),
        ("import", images.debian.clone()),
        ("vztmpl", images.lxc_template.clone()),
    ]
    .into_iter()
    .filter_map(|(content, image)| Some((content, image?)))
    .collect()
}

/// The images the file storage lacks (one listing of its content).
pub fn missing(api: &dyn ProxmoxApi, lab: &Lab) -> Result<Vec<Download>, ApiError> {
    let wanted = wanted(lab);
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let storage = &lab.proxmox.file_storage;
    let listing = api.get(&format!(
        "/nodes/{}/storage/{storage}/content",
        lab.proxmox.node
    ))?;
    let present: Vec<&str> = listing
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item.get("volid").and_then(Value::as_str))
        .collect();
    Ok(wanted
        .into_iter()
        .map(|(content, image)| Download {
            volid: format!("{storage}:{content}/{}", image.file_name()),
            content,
            image,
        })
        .filter(|d| !present.contains(&d.volid.as_str()))
        .collect())
}

/// Has Proxmox fetch `download` and waits until it is stored (and its checksum matched).
pub fn download(api: &dyn ProxmoxApi, lab: &Lab, download: &Download) -> Result<(), ApiError> {
    let image = &download.image;
    let mut params = vec![
        ("url".to_owned(), image.url.clone()),
        ("content".to_owned(), download.content.to_owned()),
        ("filename".to_owned(), image.file_name().to_owned()),
    ];
    if let Some((algorithm, sum)) = image.checksum() {
        params.push(("checksum-algorithm".to_owned(), algorithm.to_owned()));
        params.push(("checksum".to_owned(), sum.to_lowercase()));
    }
    let upid = api.post(
        &format!(
            "/nodes/{}/storage/{}/download-url",
            lab.proxmox.node, lab.proxmox.file_storage
        ),
        &params,
    )?;
    if let Some(upid) = upid.as_str() {
        wait_task(api, upid, DOWNLOAD_TIMEOUT, POLL)?;
    }
    Ok(())
}

/// Has Proxmox fetch `template` from its appliance index (`pveam download`) onto the file
/// storage and waits until it is stored.
pub fn download_template(api: &dyn ProxmoxApi, lab: &Lab, template: &str) -> Result<(), ApiError> {
    let params = [
        ("storage".to_owned(), lab.proxmox.file_storage.clone()),
        ("template".to_owned(), template.to_owned()),
    ];
    let upid = api.post(&format!("/nodes/{}/aplinfo", lab.proxmox.node), &params)?;
    if let Some(upid) = upid.as_str() {
        wait_task(api, upid, DOWNLOAD_TIMEOUT, POLL)?;
    }
    Ok(())
}
