//! `tracing` set up the way journald and operators want it: one line per event with structured
//! fields, no timestamps when journald adds its own, the level from the config unless `RUST_LOG`
//! says otherwise, and changeable on reload.

use crate::config::LogLevel;
use std::os::unix::fs::MetadataExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// Handle on the installed subscriber, to apply a reloaded `[log] level`.
pub struct Logging {
    filter: reload::Handle<EnvFilter, Registry>,
    /// `RUST_LOG` was set at start: it wins over the config file, now and on reloads.
    from_env: bool,
}

impl Logging {
    /// Installs the global subscriber. Call once, before anything logs.
    pub fn init(level: LogLevel) -> Self {
        let env = std::env::var("RUST_LOG")
            .ok()
            .filter(|v| !v.trim().is_empty());
        let (filter, env_error) = match env.as_deref().map(EnvFilter::try_new) {
            Some(Ok(filter)) => (filter, None),
            Some(Err(e)) => (EnvFilter::new(level.as_str()), Some(e.to_string())),
            None => (EnvFilter::new(level.as_str()), None),
        };
        let from_env = env.is_some() && env_error.is_none();
        let (filter, handle) = reload::Layer::new(filter);
        let journald = stderr_is_journal();
        let fmt = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(!journald && std::io::IsTerminal::is_terminal(&std::io::stderr()));
        // `try_init` only fails when a subscriber is already installed (tests running several
        // daemons in one process); the existing one keeps logging.
        let installed = if journald {
            tracing_subscriber::registry()
                .with(filter)
                .with(fmt.without_time())
                .try_init()
        } else {
            tracing_subscriber::registry()
                .with(filter)
                .with(fmt)
                .try_init()
        };
        if let Err(e) = installed {
            eprintln!("logging already initialised: {e}");
        }
        if let Some(e) = env_error {
            tracing::warn!(error = %e, "RUST_LOG is not a valid filter; using the config's level");
        }
        Self {
            filter: handle,
            from_env,
        }
    }

    /// Applies a reloaded `[log] level`, unless `RUST_LOG` governs.
    pub fn set_level(&self, level: LogLevel) {
        if self.from_env {
            return;
        }
        if let Err(e) = self.filter.reload(EnvFilter::new(level.as_str())) {
            tracing::warn!(error = %e, "could not change the log level");
        }
    }
}

/// systemd sets `JOURNAL_STREAM=<dev>:<inode>` for a service whose stderr is the journal; the
/// variable is inherited by children, so it only counts when stderr really is that stream.
fn stderr_is_journal() -> bool {
    let Ok(value) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    match std::fs::metadata("/proc/self/fd/2") {
        Ok(meta) => meta.dev() == dev && meta.ino() == ino,
        Err(_) => false,
    }
}

/// Text a client chose (a server name, a host, a path, an error quoting either), as a log line
/// shows it: control characters (CR and LF above all, ESC too), Unicode line separators and
/// backslashes escaped, so no client can start a line of its own or colour a terminal.
pub struct Escaped<'a>(pub &'a str);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write;
        if self
            .0
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b'\\')
        {
            return f.write_str(self.0);
        }
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') => {
                    write!(f, "{}", c.escape_default())?
                }
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Escaped;

    #[test]
    fn client_text_cannot_break_or_colour_a_log_line() {
        for (text, shown) in [
            ("/api/v1/pods?watch=1", "/api/v1/pods?watch=1"),
            ("a\r\nforged=1 \"request\"", "a\\r\\nforged=1 \"request\""),
            ("\u{1b}[31mred", "\\u{1b}[31mred"),
            ("a\\r\\n", "a\\\\r\\\\n"),
            ("line\u{2028}sep\u{85}nel", "line\\u{2028}sep\\u{85}nel"),
            ("café", "café"),
        ] {
            assert_eq!(Escaped(text).to_string(), shown, "{text:?}");
        }
    }
}
