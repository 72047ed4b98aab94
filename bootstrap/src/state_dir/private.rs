//! Secret files on disk: 0700 directories, 0600 files, written atomically and never clobbered.
//!
//! `render::files` replaces files (with a backup); the state directory needs the opposite, a
//! write that refuses to replace anything, hence this small module of its own.

use std::fs::{self, DirBuilder, File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// Creates `dir` (and missing parents) as 0700; an existing directory is left as it is.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Writes `contents` to `path` (mode 0600) only if nothing is there yet, atomically: a reader
/// sees either no file or the whole file, and of two concurrent writers only one wins; the other
/// gets `ErrorKind::AlreadyExists`.
pub fn write_new_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut file = tempfile::Builder::new()
        .prefix(".tmp-")
        .permissions(Permissions::from_mode(0o600))
        .tempfile_in(dir)?;
    // The umask can only narrow 0600, but say it once more in case a default ACL widened it.
    file.as_file()
        .set_permissions(Permissions::from_mode(0o600))?;
    file.write_all(contents)?;
    file.as_file().sync_all()?;
    file.persist_noclobber(path).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()
}

/// Whether a mode lets anyone but the owner in.
pub fn is_private(mode: u32) -> bool {
    mode & 0o077 == 0
}

/// The permission bits of `path`.
pub fn mode(path: &Path) -> io::Result<u32> {
    Ok(fs::metadata(path)?.permissions().mode() & 0o7777)
}
