//! Another crate's binary, for tests that run it (`env!("CARGO_BIN_EXE_…")` only names the
//! test's own crate's). It sits in the target directory beside the test binary's `deps/`.
//! `cargo test --workspace` builds every binary before running any test.

use std::path::PathBuf;

/// The path of the workspace's binary `name` in the test's own target profile; panics if it
/// has not been built.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    // <target>/<profile>/deps/<test binary>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap_or_else(|| panic!("{} is not in <target>/<profile>/deps", exe.display()));
    let bin = profile_dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build -p {name}`, or run the workspace's tests)",
        bin.display()
    );
    bin
}
