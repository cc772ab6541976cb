//! `ingest validate`: check files without touching the network (and with
//! `--no-env`, without reading the environment).

use std::path::PathBuf;

use super::config_error;
use crate::config::{self, LoadOptions};

pub(super) fn validate(paths: &[PathBuf], set: &[String], no_env: bool) -> anyhow::Result<i32> {
    let mut bad = 0;
    for path in paths {
        let opts = LoadOptions {
            overrides: set,
            no_env,
            ..Default::default()
        };
        match config::load(path, &opts) {
            Ok(p) => say!(
                "ok: {} (pipeline `{}`: {}, {} transform(s), {} into {})",
                path.display(),
                p.name,
                match &p.source {
                    config::SourceConfig::Http(h) =>
                        format!("{} pagination", h.pagination.kind.name()),
                    config::SourceConfig::Files(f) =>
                        format!("files matching {}", f.paths.join(", ")),
                },
                p.transforms.len(),
                p.sink.write().name(),
                p.sink.target()
            ),
            Err(e) => {
                bad += 1;
                config_error(&e);
            }
        }
    }
    Ok(if bad > 0 { 2 } else { 0 })
}
