//! `[gitops]`: the Git repository Flux is bootstrapped from, once, by the manager VM.

use super::Lab;
use lab_daemon::Issues;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `[gitops]`: where Flux keeps the cluster's desired state. The manager runs
/// `flux bootstrap git --token-auth` against it on first boot, once the cluster answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gitops {
    /// The repository, `https://…` (token authentication; Flux pushes its manifests there).
    pub url: String,
    /// The branch Flux commits to and follows; `main` when unset.
    #[serde(default = "Gitops::default_branch")]
    pub branch: String,
    /// The directory of the repository for this cluster; `clusters/<cluster.name>` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The user the token authenticates as; `git` when unset (what most Git hosts accept
    /// with a personal access token).
    #[serde(default = "Gitops::default_username")]
    pub username: String,
    /// A file on the Proxmox host (relative to lab.toml) holding an access token with write
    /// access to the repository; it travels in the manager's 0600 cloud-init snippet, never
    /// in lab.toml.
    pub token_file: PathBuf,
}

impl Gitops {
    fn default_branch() -> String {
        "main".to_owned()
    }

    fn default_username() -> String {
        "git".to_owned()
    }

    /// The token, read from `token_file`, without surrounding whitespace.
    pub fn token(&self) -> std::io::Result<String> {
        std::fs::read_to_string(&self.token_file).map(|t| t.trim().to_owned())
    }
}

/// Characters a branch, path or user may hold: the first-boot script carries each as one word.
fn is_plain(text: &str, extra: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c) || extra.contains(c))
}

impl Lab {
    /// `[gitops] path`, or its default.
    pub fn gitops_path(&self) -> Option<String> {
        let gitops = self.gitops.as_ref()?;
        Some(
            gitops
                .path
                .clone()
                .unwrap_or_else(|| format!("clusters/{}", self.cluster.name)),
        )
    }

    pub(super) fn validate_gitops(&self, issues: &mut Issues) {
        let Some(gitops) = &self.gitops else {
            return;
        };
        let url_ok =
            gitops.url.strip_prefix("https://").is_some_and(|rest| {
                !rest.is_empty() && !rest.starts_with('/') && !rest.contains('@')
            }) && gitops
                .url
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"'\"`\\$".contains(&b));
        if !url_ok {
            issues.add(
                "gitops.url",
                format!(
                    "`{}` is not an https:// repository URL without credentials (the token comes from gitops.token_file)",
                    gitops.url
                ),
            );
        }
        if !is_plain(&gitops.branch, "/") || gitops.branch.starts_with('-') {
            issues.add(
                "gitops.branch",
                format!("`{}` is not a branch name", gitops.branch),
            );
        }
        if let Some(path) = &gitops.path {
            if !is_plain(path, "/") || path.starts_with('/') || path.split('/').any(|p| p == "..") {
                issues.add(
                    "gitops.path",
                    format!("`{path}` is not a relative directory of the repository"),
                );
            }
        }
        if !is_plain(&gitops.username, "@") || gitops.username.starts_with('-') {
            issues.add(
                "gitops.username",
                format!("`{}` is not a user name", gitops.username),
            );
        }
        match gitops.token() {
            Err(e) => issues.add(
                "gitops.token_file",
                format!("cannot read {}: {e}", gitops.token_file.display()),
            ),
            Ok(token) if token.is_empty() => issues.add(
                "gitops.token_file",
                format!("{} is empty", gitops.token_file.display()),
            ),
            Ok(token) if token.contains(char::is_whitespace) => issues.add(
                "gitops.token_file",
                format!(
                    "{} holds more than one word; it must hold only the token",
                    gitops.token_file.display()
                ),
            ),
            Ok(_) => {}
        }
    }
}
