//! Every input of `fuzz/corpus/<target>/` (the seeds, and what the fuzzers found worth
//! keeping) and `fuzz/artifacts/<target>/` (crashes kept as regressions) through its target,
//! on stable: what was found once stays fixed without nightly or libFuzzer.

use std::path::{Path, PathBuf};

fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut files = Vec::new();
    for dir in ["corpus", "artifacts"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join(target)) else {
            continue;
        };
        files.extend(
            entries
                .filter_map(|e| Some(e.ok()?.path()))
                .filter(|p| p.is_file()),
        );
    }
    files.sort();
    files
}

#[test]
fn every_corpus_and_artifact_input_passes_its_target() {
    let mut failed = Vec::new();
    for (target, run) in lab_fuzz_targets::TARGETS {
        let files = inputs(target);
        assert!(!files.is_empty(), "no corpus for {target}");
        for file in files {
            let data = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            if std::panic::catch_unwind(|| run(&data)).is_err() {
                failed.push(file.display().to_string());
            }
        }
    }
    assert!(failed.is_empty(), "inputs that fail: {failed:#?}");
}
