//! WireGuard keys: the types are lab-schema's (the config names them); reading key files, and
//! refusing ones others could read, is the daemon's.

pub use lab_schema::vpn::key::{decode_key, KeyError, PrivateKey, PublicKey};

/// Why a key file was refused. Messages name the file, never its content.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file, or its metadata, could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file, as shown.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Its group or others may read the file.
    #[error("{path}: readable by {who} (mode {mode:04o}); keys must be 0600 or stricter: chmod 600 {path}")]
    TooOpen {
        /// The file, as shown.
        path: String,
        /// Who besides its owner can read it: `its group`, `others` or `group and others`.
        who: &'static str,
        /// Its permission bits.
        mode: u32,
    },
    /// The file does not hold a base64 WireGuard key.
    #[error("{path}: not a WireGuard key: {problem}")]
    Malformed {
        /// The file, as shown.
        path: String,
        /// What is wrong with its content.
        problem: KeyError,
    },
}

/// Reads a key file written by `wg genkey` / `wg genpsk` (or `lab-vpn genkey`), refusing one that
/// group or others could read.
pub fn read_key_file(path: &std::path::Path) -> Result<[u8; 32], KeyFileError> {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display().to_string();
    let metadata = std::fs::metadata(path).map_err(|source| KeyFileError::Read {
        path: shown.clone(),
        source,
    })?;
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        let who = match (mode & 0o070 != 0, mode & 0o007 != 0) {
            (true, true) => "group and others",
            (true, false) => "its group",
            _ => "others",
        };
        return Err(KeyFileError::TooOpen {
            path: shown,
            who,
            mode,
        });
    }
    let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Read {
        path: shown.clone(),
        source,
    })?;
    decode_key(&text).map_err(|problem| KeyFileError::Malformed {
        path: shown,
        problem,
    })
}

#[cfg(test)]
mod key_file_tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(dir: &std::path::Path, text: &str, mode: u32) -> std::path::PathBuf {
        let path = dir.join("key");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn refuses_files_others_can_read_without_showing_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let secret = PrivateKey::generate().expose_base64();
        let path = write(dir.path(), &secret, 0o644);
        let message = read_key_file(&path).unwrap_err().to_string();
        assert!(
            message.contains("mode 0644") && message.contains("chmod 600"),
            "{message}"
        );
        assert!(!message.contains(&secret));
        let path = write(dir.path(), "not a key", 0o600);
        let message = read_key_file(&path).unwrap_err().to_string();
        assert!(!message.contains("not a key"), "{message}");
        let path = write(dir.path(), &secret, 0o600);
        assert!(read_key_file(&path).is_ok());
    }
}
