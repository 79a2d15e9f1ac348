//! Driving `glm-tune run` in the integration tests: the demo experiment with `--set` overrides,
//! and the per-step losses a run logs to `trainer_log.jsonl`.
//!
//! Included with `#[path = "support/runs.rs"] mod runs;`.
//!
//! The test binary finds the workspace and `glm-tune` where cargo built them, unless
//! `GLM_TUNE_WORKSPACE` / `GLM_TUNE_BIN` name them: `.ci/gpu-check run` sets both when the test
//! binaries run on another machine (a GPU machine without the Rust toolchain).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root (the tests run from `cli/`), or `$GLM_TUNE_WORKSPACE`.
pub fn workspace() -> PathBuf {
    match std::env::var_os("GLM_TUNE_WORKSPACE") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".."),
    }
}

/// The `glm-tune` binary under test: cargo's build of it, or `$GLM_TUNE_BIN`.
pub fn binary() -> PathBuf {
    match std::env::var_os("GLM_TUNE_BIN") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_BIN_EXE_glm-tune")),
    }
}

/// `glm-tune run configs/demo.toml --set …` from the workspace root, logging warnings only.
pub fn demo(sets: &[String]) -> Output {
    let mut cmd = Command::new(binary());
    cmd.args(["run", "configs/demo.toml"])
        .current_dir(workspace())
        .env("RUST_LOG", "warn");
    for kv in sets {
        cmd.args(["--set", kv]);
    }
    cmd.output().expect("glm-tune runs")
}

/// The `loss` of every line of `<out_dir>/trainer_log.jsonl`.
pub fn logged_losses(out_dir: &Path) -> Vec<f64> {
    let path = out_dir.join("trainer_log.jsonl");
    let log = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    log.lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"));
            v["loss"]
                .as_f64()
                .unwrap_or_else(|| panic!("no loss in {l}"))
        })
        .collect()
}
