//! `<daemon> check FILE`: the example passes; bad files are refused with exit 78 and a message
//! that names the problem, never a panic.

use crate::workspace;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// The exit status of a refused config file (sysexits.h's `EX_CONFIG`).
pub const EX_CONFIG: i32 = 78;

/// The command that checks a file: `lab-lb check`, `lab-bootstrap validate`.
#[derive(Debug, Clone, Copy)]
pub struct Checker<'a> {
    /// The program.
    pub bin: &'a str,
    /// Its subcommand that takes the file: `check`, `validate`.
    pub subcommand: &'a str,
}

impl<'a> Checker<'a> {
    /// `<bin> check`, as both daemons spell it.
    pub fn daemon(bin: &'a str) -> Self {
        Self {
            bin,
            subcommand: "check",
        }
    }
}

/// Runs `checker` on `file` and returns what it did; panics if it panicked.
pub fn check(checker: Checker<'_>, file: &Path) -> Output {
    let Checker { bin, subcommand } = checker;
    let output = Command::new(bin)
        .arg(subcommand)
        .arg(file)
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("stack backtrace"),
        "{bin} check panicked:\n{stderr}"
    );
    output
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `configs/<example>` passes `check` with a one-line summary on stdout.
pub fn example_passes(checker: Checker<'_>, example: &str) {
    let path = workspace::config_path(example);
    let output = check(checker, &path);
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "{example} refused:\n{}",
        text(&output.stderr)
    );
    assert_eq!(
        stdout.lines().count(),
        1,
        "not a one-line summary: {stdout}"
    );
    assert!(
        stdout.contains(&path.display().to_string()) && stdout.contains("is valid"),
        "{stdout}"
    );
}

/// A copy of `configs/<example>` with `key` (first occurrence at the start of a line)
/// misspelt as `misspelt` exits 78 naming the key, its line and column.
pub fn misspelt_key_refused(checker: Checker<'_>, example: &str, key: &str, misspelt: &str) {
    let original = workspace::config_text(example);
    let line_index = original
        .lines()
        .position(|l| l.starts_with(&format!("{key} =")))
        .unwrap_or_else(|| panic!("configs/{example} has no line starting with `{key} =`"));
    let broken: String = original
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == line_index {
                l.replacen(key, misspelt, 1)
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join(example);
    std::fs::write(&file, broken).unwrap_or_else(|e| panic!("{e}"));
    let output = check(checker, &file);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(EX_CONFIG), "{stderr}");
    let position = format!("{}:{}:1:", file.display(), line_index + 1);
    assert!(stderr.contains(&position), "no `{position}` in:\n{stderr}");
    assert!(
        stderr.contains(&format!("unknown field `{misspelt}`")),
        "{stderr}"
    );
    assert!(
        stderr.contains("expected one of") || stderr.contains("expected `"),
        "{stderr}"
    );
}

/// `file` is refused with exit 78 and every one of `expected` in the message.
pub fn refused_with(checker: Checker<'_>, file: &Path, expected: &[&str]) {
    let output = check(checker, file);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(EX_CONFIG), "{stderr}");
    for e in expected {
        assert!(stderr.contains(e), "expected `{e}` in:\n{stderr}");
    }
}

/// `document`, written to a file named `file_name`, is refused with exit 78 and every one of
/// `expected` in the message.
pub fn document_refused_with(
    checker: Checker<'_>,
    file_name: &str,
    document: &toml_edit::DocumentMut,
    expected: &[&str],
) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join(file_name);
    std::fs::write(&file, document.to_string()).unwrap_or_else(|e| panic!("{e}"));
    refused_with(checker, &file, expected);
}

/// A file that is not TOML, an empty file and a missing file: exit 78, one clear message each.
pub fn unreadable_files_refused(checker: Checker<'_>) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cases = [
        (
            "not-toml.toml",
            Some("this is { not toml\n"),
            "not valid TOML",
        ),
        ("empty.toml", Some(""), "the file is empty"),
        (
            "missing.toml",
            None,
            "cannot read: No such file or directory",
        ),
    ];
    for (name, content, expected) in cases {
        let file = dir.path().join(name);
        if let Some(content) = content {
            std::fs::write(&file, content).unwrap_or_else(|e| panic!("{e}"));
        }
        let output = check(checker, &file);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(EX_CONFIG), "{name}: {stderr}");
        assert!(
            stderr.contains(&file.display().to_string()),
            "{name}: file not named in {stderr}"
        );
        assert!(
            stderr.contains(expected),
            "{name}: expected `{expected}` in {stderr}"
        );
    }
}

/// Starting the daemon itself on a bad file also exits 78 with the message, before serving.
pub fn run_refuses_bad_file(bin: &str) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("broken.toml");
    std::fs::write(&file, "[metrics\n").unwrap_or_else(|e| panic!("{e}"));
    let mut child = Command::new(bin)
        .arg("run")
        .arg("--config")
        .arg(&file)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while child.try_wait().ok().flatten().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let output = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(EX_CONFIG), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:1:", file.display())),
        "{stderr}"
    );
}
