//! Every pipeline file shipped under pipelines/ loads and passes validation.

use crate::common;

use ingest::config::{LoadOptions, load};

fn files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
    {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
}

#[test]
fn every_shipped_pipeline_validates() {
    let mut found = Vec::new();
    files(&common::root().join("pipelines"), &mut found);
    assert!(
        found.len() >= 10,
        "only {} pipeline files found",
        found.len()
    );
    let env = |_: &str| None; // defaults only: no variable may be required
    for f in &found {
        if let Err(e) = load(
            f,
            &LoadOptions {
                overrides: &[],
                env: &env,
                no_env: false,
            },
        ) {
            panic!("{e}");
        }
    }
}
