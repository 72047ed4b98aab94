//! [`Name`]: the names of listeners, backends, peers and machines.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The name of a listener, backend, peer or machine: short, and safe to use as a metric label,
/// a file name and a host name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);

/// Longest name accepted; also the limit of a DNS label.
pub const MAX_NAME_LEN: usize = 63;

/// Why a string is not a [`Name`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The empty string.
    #[error("a name must not be empty")]
    Empty,
    /// Longer than [`MAX_NAME_LEN`].
    #[error("name `{0}` is longer than {MAX_NAME_LEN} characters")]
    TooLong(String),
    /// A character outside letters, digits, `-`, `_` and `.`, or a bad first character.
    #[error("name `{0}` may only contain letters, digits, `-`, `_` and `.`, and must start with a letter or digit")]
    BadCharacter(String),
}

impl Name {
    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Name {
    type Error = NameError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        let first_ok = value
            .chars()
            .next()
            .map(|c| c.is_ascii_alphanumeric())
            .ok_or(NameError::Empty)?;
        if value.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong(value));
        }
        let chars_ok = value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !first_ok || !chars_ok {
            return Err(NameError::BadCharacter(value));
        }
        Ok(Self(value))
    }
}

impl std::str::FromStr for Name {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::try_from(s.to_owned())
    }
}

impl From<Name> for String {
    fn from(name: Name) -> Self {
        name.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names() {
        for ok in ["kube-apiserver", "cp1", "w_2", "ingress.https", "A1"] {
            assert!(ok.parse::<Name>().is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_names_unsafe_as_labels_or_files() {
        assert_eq!("".parse::<Name>(), Err(NameError::Empty));
        for bad in ["-lead", "has space", "a/b", "ä", ".hidden"] {
            assert!(
                matches!(bad.parse::<Name>(), Err(NameError::BadCharacter(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            "x".repeat(64).parse::<Name>(),
            Err(NameError::TooLong(_))
        ));
    }
}
