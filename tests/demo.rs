//! The README's first command, shortened: `glm-tune run configs/demo.toml` on the committed demo
//! base model and data, with fewer steps — the loss goes down and every output file appears.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn shortened_demo_run_learns_and_writes_its_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("demo");
    let set = |kv: String| ["--set".to_string(), kv];
    let mut args = vec!["run".to_string(), "configs/demo.toml".to_string()];
    for kv in [
        "max_steps=100".to_string(),
        "logging_steps=10".to_string(),
        "save_steps=100".to_string(),
        "max_predict_samples=16".to_string(),
        format!("output_dir={}", out_dir.display()),
        format!("cache_dir={}", tmp.path().join("cache").display()),
    ] {
        args.extend(set(kv));
    }
    let out = Command::new(env!("CARGO_BIN_EXE_glm-tune"))
        .args(&args)
        .current_dir(workspace())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("BLEU-4") && stdout.contains("ROUGE-L"),
        "{stdout}"
    );
    for f in [
        "trainer_log.jsonl",
        "train_results.json",
        "predict_results.json",
        "all_results.json",
        "generated_predictions.txt",
        "training_loss.png",
        "checkpoint-100/pytorch_model.bin",
        "checkpoint-100/config.json",
    ] {
        assert!(out_dir.join(f).exists(), "missing {f}");
    }
    let losses: Vec<f64> = fs::read_to_string(out_dir.join("trainer_log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect();
    assert_eq!(losses.len(), 10);
    // The full demo goes from about 5.2 to 1.3; a sixth of it already falls by more than one.
    assert!(
        losses[9] < losses[0] - 1.0,
        "the demo loss should fall clearly: {losses:?}"
    );
    assert_eq!(
        fs::read_to_string(out_dir.join("generated_predictions.txt"))
            .unwrap()
            .lines()
            .count(),
        16
    );
}
