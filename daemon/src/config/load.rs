//! Reading a config file into its type, refusing bad input with file, line, column and key.

use super::{line_column, locate_key, ConfigFile, Invalid, Issues};
use std::fmt;
use std::path::{Path, PathBuf};

/// Why a config file was refused. Its `Display` is the message a user sees.
#[derive(Debug)]
pub struct ConfigError {
    /// The file, as the caller named it.
    pub file: PathBuf,
    /// What is wrong with it.
    pub kind: ConfigErrorKind,
}

/// What was wrong with a refused config file.
#[derive(Debug)]
pub enum ConfigErrorKind {
    /// The file could not be read (missing, no permission, not UTF-8).
    Read(std::io::Error),
    /// The file holds nothing but whitespace.
    Empty {
        /// What the file should hold ([`ConfigFile::WHAT`]), for the message.
        what: &'static str,
    },
    /// Not TOML.
    Syntax {
        /// The line of the error, from 1.
        line: usize,
        /// Its column in characters, from 1.
        column: usize,
        /// The TOML parser's message.
        message: String,
    },
    /// TOML, but a key is unknown, missing or has the wrong type or value.
    Value {
        /// The line of the value, else of its key, from 1; 1 when neither is known.
        line: usize,
        /// Its column in characters, from 1.
        column: usize,
        /// The path of the key at fault; `None` when it is the file as a whole.
        key: Option<String>,
        /// The deserializer's message.
        message: String,
    },
    /// Every field has the right type, but together they do not make sense.
    Invalid(Vec<(Option<(usize, usize)>, Invalid)>),
}

impl ConfigError {
    /// The problems found, one per line, each starting with `file:line:column:`.
    pub fn lines(&self) -> Vec<String> {
        let file = self.file.display();
        match &self.kind {
            ConfigErrorKind::Read(e) => vec![format!("{file}: cannot read: {e}")],
            ConfigErrorKind::Empty { what } => {
                vec![format!("{file}: the file is empty; expected {what}")]
            }
            ConfigErrorKind::Syntax {
                line,
                column,
                message,
            } => vec![format!(
                "{file}:{line}:{column}: not valid TOML: {}",
                message.trim_end()
            )],
            ConfigErrorKind::Value {
                line,
                column,
                key: Some(key),
                message,
            } => vec![format!("{file}:{line}:{column}: key `{key}`: {message}")],
            ConfigErrorKind::Value {
                line,
                column,
                key: None,
                message,
            } => vec![format!("{file}:{line}:{column}: {message}")],
            ConfigErrorKind::Invalid(problems) => problems
                .iter()
                .map(|(position, invalid)| match position {
                    Some((line, column)) => format!("{file}:{line}:{column}: {invalid}"),
                    None => format!("{file}: {invalid}"),
                })
                .collect(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.lines().join("\n"))
    }
}

impl std::error::Error for ConfigError {}

/// Reads, parses and validates the config file at `path`.
pub fn load<T: ConfigFile>(path: &Path) -> Result<T, ConfigError> {
    load_checked(path, |_: &T, _: &mut Issues| {})
}

/// As [`load`], then `check_files` too: the checks that read what the file names
/// (certificates, keys), which [`ConfigFile::validate`] does not. Their problems are refused
/// the same way, each with its line.
pub fn load_checked<T: ConfigFile>(
    path: &Path,
    check_files: impl FnOnce(&T, &mut Issues),
) -> Result<T, ConfigError> {
    let source = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_owned(),
        kind: ConfigErrorKind::Read(e),
    })?;
    parse_checked(path, &source, check_files)
}

/// Parses and validates `source`; `path` only names the file in messages.
pub fn parse<T: ConfigFile>(path: &Path, source: &str) -> Result<T, ConfigError> {
    parse_checked(path, source, |_: &T, _: &mut Issues| {})
}

/// As [`parse`], then `check_files` (see [`load_checked`]).
pub fn parse_checked<T: ConfigFile>(
    path: &Path,
    source: &str,
    check_files: impl FnOnce(&T, &mut Issues),
) -> Result<T, ConfigError> {
    let refuse = |kind| ConfigError {
        file: path.to_owned(),
        kind,
    };
    if source.trim().is_empty() {
        return Err(refuse(ConfigErrorKind::Empty { what: T::WHAT }));
    }
    let deserializer = toml::Deserializer::parse(source).map_err(|e| {
        let (line, column) = e.span().map_or((1, 1), |s| line_column(source, s.start));
        refuse(ConfigErrorKind::Syntax {
            line,
            column,
            message: e.message().to_owned(),
        })
    })?;
    let mut config: T = serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = e.path().to_string();
        let key = (key != ".").then_some(key);
        let inner = e.into_inner();
        let (line, column) = inner
            .span()
            .map(|s| line_column(source, s.start))
            .or_else(|| key.as_deref().and_then(|k| locate_key(source, k)))
            .unwrap_or((1, 1));
        refuse(ConfigErrorKind::Value {
            line,
            column,
            key,
            message: inner.message().to_owned(),
        })
    })?;
    if let Some(dir) = path.parent() {
        config.resolve_paths(dir);
    }
    let mut issues = Issues::new();
    config.validate(&mut issues);
    check_files(&config, &mut issues);
    if !issues.is_empty() {
        let located = issues
            .into_vec()
            .into_iter()
            .map(|invalid| (locate_key(source, &invalid.key), invalid))
            .collect();
        return Err(refuse(ConfigErrorKind::Invalid(located)));
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Example {
        #[serde(default, rename = "listener")]
        listeners: Vec<Listener>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Listener {
        #[allow(dead_code)]
        name: String,
        port: u16,
    }

    impl ConfigFile for Example {
        const WHAT: &'static str = "an example configuration";

        fn validate(&self, issues: &mut Issues) {
            for (i, l) in self.listeners.iter().enumerate() {
                if self.listeners[..i].iter().any(|o| o.port == l.port) {
                    issues.add(format!("listener[{i}].port"), "port already used");
                }
            }
        }

        fn summary(&self) -> String {
            format!("{} listeners", self.listeners.len())
        }
    }

    fn refuse(src: &str) -> String {
        match parse::<Example>(Path::new("x.toml"), src) {
            Ok(c) => panic!("accepted {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn misspelt_key_names_key_line_and_column() {
        let msg = refuse("[[listener]]\nname = \"a\"\nprot = 1\n");
        assert!(
            msg.starts_with("x.toml:3:1: key `listener[0].prot`: unknown field `prot`"),
            "{msg}"
        );
        assert!(msg.contains("expected `name` or `port`"), "{msg}");
    }

    #[test]
    fn wrong_type_names_the_value() {
        let msg = refuse("[[listener]]\nname = \"a\"\nport = 70000\n");
        assert!(
            msg.starts_with("x.toml:3:8: key `listener[0].port`:"),
            "{msg}"
        );
    }

    #[test]
    fn semantic_problem_points_at_its_key() {
        let msg =
            refuse("[[listener]]\nname = \"a\"\nport = 1\n[[listener]]\nname = \"b\"\nport = 1\n");
        assert_eq!(msg, "x.toml:6:8: key `listener[1].port`: port already used");
    }

    #[test]
    fn not_toml_and_empty_are_named() {
        assert!(refuse("this is not toml").starts_with("x.toml:1:6: not valid TOML: "));
        assert_eq!(
            refuse(" \n"),
            "x.toml: the file is empty; expected an example configuration"
        );
    }

    #[test]
    fn missing_file_says_so() {
        let e = load::<Example>(Path::new("/nonexistent/x.toml")).err();
        let msg = e.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            msg.starts_with("/nonexistent/x.toml: cannot read: No such file"),
            "{msg}"
        );
    }
}
