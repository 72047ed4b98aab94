//! Semantic problems of a config file, collected so a user sees them all at once.

use std::fmt;

/// One semantic problem in a config file: the key it is about and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// Dotted key path as a user would write it: `listener[1].listen`.
    pub key: String,
    /// What is wrong, for a user to read.
    pub message: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key `{}`: {}", self.key, self.message)
    }
}

/// Collects every semantic problem of a config, so a user sees them all at once.
#[derive(Debug, Default)]
pub struct Issues {
    found: Vec<Invalid>,
}

impl Issues {
    /// No problems yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `key` is wrong, and why.
    pub fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.found.push(Invalid {
            key: key.into(),
            message: message.into(),
        });
    }

    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// The problems, in the order they were found.
    pub fn into_vec(self) -> Vec<Invalid> {
        self.found
    }
}
