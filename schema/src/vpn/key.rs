//! WireGuard keys as `wg` writes them: 32 bytes, standard base64. Reading key files (and
//! refusing ones others can read) is the daemon's, not the schema's.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A peer's public key. Public keys are not secret, so this type may be printed and logged.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PublicKey([u8; 32]);

/// Why text is not a WireGuard key. Never quotes the text: it may be a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not standard base64.
    #[error("not base64: {0}")]
    NotBase64(String),
    /// Base64, but not of 32 bytes.
    #[error("a WireGuard key is 32 bytes (44 base64 characters), this one is {0} bytes")]
    WrongLength(usize),
}

impl PublicKey {
    /// The key of these bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::str::FromStr for PublicKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        decode_key(s).map(Self)
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
pub struct PrivateKey(x25519_dalek::StaticSecret);

impl PrivateKey {
    /// A new random key (clamped as X25519 requires), like `wg genkey`.
    pub fn generate() -> Self {
        Self(x25519_dalek::StaticSecret::random_from_rng(
            rand_core::OsRng,
        ))
    }

    /// The key of these bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(x25519_dalek::StaticSecret::from(bytes))
    }

    /// Its public key, as `wg pubkey` derives it.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(*x25519_dalek::PublicKey::from(&self.0).as_bytes())
    }

    /// The X25519 secret, for the WireGuard handshake.
    pub fn secret(&self) -> &x25519_dalek::StaticSecret {
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

/// 32 bytes from `wg`'s base64 form (surrounding whitespace ignored), for every kind of key:
/// public, private and preshared. The error never quotes the input (it may be a secret).
pub fn decode_key(text: &str) -> Result<[u8; 32], KeyError> {
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|_| KeyError::NotBase64("the text is not valid base64".to_owned()))?;
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| KeyError::WrongLength(bytes.len()))
}

#[cfg(test)]
mod private_key_tests {
    use super::*;

    #[test]
    fn generated_keys_round_trip_and_derive_their_public_key() {
        let key = PrivateKey::generate();
        let again: PrivateKey = key.expose_base64().parse().unwrap();
        assert_eq!(again.public_key(), key.public_key());
        assert_eq!(format!("{key:?}"), "PrivateKey(<secret>)");
    }
}
