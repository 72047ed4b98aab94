//! Where the workspace's files are, from any test binary.

use std::path::PathBuf;

/// The workspace's root directory (where `configs/` and `reference/` are).
pub fn root() -> PathBuf {
    // This crate lives in `<root>/tests`.
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(PathBuf::from).unwrap_or(here)
}

/// `configs/<name>`.
pub fn config_path(name: &str) -> PathBuf {
    root().join("configs").join(name)
}

/// The text of `configs/<name>`.
pub fn config_text(name: &str) -> String {
    let path = config_path(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `configs/<name>` as an editable TOML document, for tests that derive their config from it.
pub fn config_document(name: &str) -> toml_edit::DocumentMut {
    config_text(name)
        .parse()
        .unwrap_or_else(|e| panic!("configs/{name} is not TOML: {e}"))
}

/// `reference/<name>`: the real systems' schemas the tests validate against.
pub fn reference_path(name: &str) -> PathBuf {
    root().join("reference").join(name)
}
