//! WireGuard keys as `wg` writes them: 32 bytes, standard base64.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A peer's public key. Public keys are not secret, so this type may be printed and logged.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PublicKey([u8; 32]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not base64: {0}")]
    NotBase64(String),
    #[error("a WireGuard key is 32 bytes (44 base64 characters), this one is {0} bytes")]
    WrongLength(usize),
}

impl PublicKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::str::FromStr for PublicKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = STANDARD
            .decode(s.trim())
            .map_err(|e| KeyError::NotBase64(e.to_string()))?;
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::WrongLength(bytes.len()))?;
        Ok(Self(key))
    }
}

impl TryFrom<String> for PublicKey {
    type Error = KeyError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<PublicKey> for String {
    fn from(key: PublicKey) -> Self {
        key.to_string()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&STANDARD.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_wg_format() {
        let text = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
        let key: PublicKey = text.parse().unwrap();
        assert_eq!(key.to_string(), text);
    }

    #[test]
    fn refuses_wrong_length_and_garbage() {
        assert_eq!("AAAA".parse::<PublicKey>(), Err(KeyError::WrongLength(3)));
        assert!(matches!(
            "not a key!".parse::<PublicKey>(),
            Err(KeyError::NotBase64(_))
        ));
    }
}

/// The gateway's (or a generated peer's) private key. Its `Debug` never shows the key, and the
/// only way to the text is the explicitly named [`PrivateKey::expose_base64`].
#[derive(Clone)]
pub struct PrivateKey(boringtun::x25519::StaticSecret);

impl PrivateKey {
    /// A new random key (clamped as X25519 requires), like `wg genkey`.
    pub fn generate() -> Self {
        Self(boringtun::x25519::StaticSecret::random_from_rng(
            rand_core::OsRng,
        ))
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(boringtun::x25519::StaticSecret::from(bytes))
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(*boringtun::x25519::PublicKey::from(&self.0).as_bytes())
    }

    pub fn secret(&self) -> &boringtun::x25519::StaticSecret {
        &self.0
    }

    /// The key in `wg` format, for `genkey` output and generated client configs only.
    pub fn expose_base64(&self) -> String {
        STANDARD.encode(self.0.to_bytes())
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<secret>)")
    }
}

impl std::str::FromStr for PrivateKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        decode_key(s).map(Self::from_bytes)
    }
}

/// 32 bytes from `wg`'s base64 form; the error never quotes the input (it may be a secret).
fn decode_key(text: &str) -> Result<[u8; 32], KeyError> {
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|_| KeyError::NotBase64("the text is not valid base64".to_owned()))?;
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| KeyError::WrongLength(bytes.len()))
}

/// Why a key file was refused. Messages name the file, never its content.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: readable by {who} (mode {mode:04o}); keys must be 0600 or stricter: chmod 600 {path}")]
    TooOpen {
        path: String,
        who: &'static str,
        mode: u32,
    },
    #[error("{path}: not a WireGuard key: {problem}")]
    Malformed { path: String, problem: KeyError },
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
    fn generated_keys_round_trip_and_derive_their_public_key() {
        let key = PrivateKey::generate();
        let again: PrivateKey = key.expose_base64().parse().unwrap();
        assert_eq!(again.public_key(), key.public_key());
        assert_eq!(format!("{key:?}"), "PrivateKey(<secret>)");
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
