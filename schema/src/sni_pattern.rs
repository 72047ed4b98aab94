//! [`SniPattern`]: the server names routes, certificates and HTTP hosts are chosen by.

/// A route's name: exact (`a.example`) or a wildcard for every name below a suffix
/// (`*.apps.lab` matches `x.apps.lab` and `a.b.apps.lab`, not `apps.lab`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SniPattern {
    /// One name, lower-case.
    Exact(String),
    /// Stored with its leading dot: `.apps.lab`.
    Suffix(String),
}

impl SniPattern {
    /// Reads a pattern as `lb.toml` writes it, case-insensitively; the error says what a
    /// pattern looks like.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let lower = pattern.to_ascii_lowercase();
        let (wildcard, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        let valid_label = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(valid_label) {
            return Err(format!(
                "`{pattern}` is not a server name like `a.example` or `*.apps.lab`"
            ));
        }
        Ok(if wildcard {
            SniPattern::Suffix(format!(".{name}"))
        } else {
            SniPattern::Exact(name.to_owned())
        })
    }

    /// Whether `server_name` is one of this pattern's names. `server_name` must already be
    /// lower-case, as lab-lb's ClientHello parser returns it.
    pub fn matches(&self, server_name: &str) -> bool {
        match self {
            SniPattern::Exact(name) => name == server_name,
            SniPattern::Suffix(suffix) => {
                server_name.len() > suffix.len() && server_name.ends_with(suffix.as_str())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_exact_and_suffix() {
        let exact = SniPattern::parse("A.example").unwrap();
        assert!(exact.matches("a.example"));
        assert!(!exact.matches("b.a.example"));
        let wildcard = SniPattern::parse("*.apps.lab").unwrap();
        assert!(wildcard.matches("b.apps.lab"));
        assert!(wildcard.matches("x.y.apps.lab"));
        assert!(!wildcard.matches("apps.lab"));
        assert!(!wildcard.matches("xapps.lab"));
        for bad in ["", "*", "a..b", "*.*.x", "a b", "a*.x"] {
            assert!(SniPattern::parse(bad).is_err(), "{bad}");
        }
    }
}
