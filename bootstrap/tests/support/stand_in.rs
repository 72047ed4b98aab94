//! The tests' stand-in for the host's programs.

/// `script` with `@DIR@` replaced by `dir`, written to `dir/stand-in` and made executable: the
/// tests' stand-in for pvesh, pct, qm and the host's programs.
pub fn stand_in_script(dir: &std::path::Path, script: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("stand-in");
    std::fs::write(&path, script.replace("@DIR@", &dir.display().to_string())).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}
