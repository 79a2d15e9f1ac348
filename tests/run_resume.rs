//! Integration tests of `glm-tune run` on a tiny random model with the embedded demo tokenizer:
//! the files a run writes, exact resume (6 steps straight = 3 steps + resume for 3), the
//! output_dir policy, and Ctrl-C (nothing half-written, the resume command printed).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn glm_tune(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_glm-tune"))
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .env_remove("GLM_TUNE_CACHE")
        .output()
        .expect("glm-tune runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A tiny ChatGLM (hidden 32, 2 layers) with the demo tokenizer, written by `init-model`.
fn tiny_model(dir: &Path) -> PathBuf {
    let cfg = dir.join("tiny-config.json");
    fs::write(
        &cfg,
        r#"{"vocab_size": 1000, "hidden_size": 32, "num_attention_heads": 2, "num_layers": 2,
            "inner_hidden_size": 64, "layernorm_epsilon": 1e-05, "position_encoding_2d": true,
            "bos_token_id": 8, "eos_token_id": 9, "mask_token_id": 5, "gmask_token_id": 6,
            "pad_token_id": 3, "model_type": "chatglm"}"#,
    )
    .unwrap();
    let model = dir.join("model");
    let out = glm_tune(
        dir,
        &[
            "init-model",
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            model.to_str().unwrap(),
            "--tokenizer",
            workspace().join("demo/base").to_str().unwrap(),
            "--f32",
        ],
    );
    assert!(
        out.status.success(),
        "init-model failed: {}",
        text(&out.stderr)
    );
    model
}

fn experiment(dir: &Path, name: &str, model: &Path, output: &Path, extra: &str) -> PathBuf {
    let data = workspace().join("demo/data");
    let path = dir.join(name);
    fs::write(
        &path,
        format!(
            r#"do_train = true
train_file = "{train}"
prompt_column = "content"
response_column = "summary"
model_name_or_path = "{model}"
output_dir = "{out}"
max_source_length = 16
max_target_length = 32
max_train_samples = 64
per_device_train_batch_size = 2
gradient_accumulation_steps = 2
learning_rate = 2e-2
pre_seq_len = 4
logging_steps = 1
cache_dir = "{cache}"
{extra}
"#,
            train = data.join("train.json").display(),
            model = model.display(),
            out = output.display(),
            cache = dir.join("cache").display(),
        ),
    )
    .unwrap();
    path
}

fn prefix_values(checkpoint: &Path) -> Vec<u8> {
    // The raw f32 bytes of the prefix in model.safetensors (byte-exact comparison).
    fs::read(checkpoint.join("model.safetensors")).unwrap()
}

#[test]
fn resumed_run_continues_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let straight = tmp.path().join("straight");
    let cfg = experiment(
        tmp.path(),
        "a.toml",
        &model,
        &straight,
        "max_steps = 6\nsave_steps = 3\n",
    );
    let out = glm_tune(tmp.path(), &["run", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for f in [
        "experiment.toml",
        "trainer_log.jsonl",
        "trainer_state.json",
        "train_results.json",
        "all_results.json",
        "training_loss.png",
        "checkpoint-3/pytorch_model.bin",
        "checkpoint-3/model.safetensors",
        "checkpoint-3/config.json",
        "checkpoint-3/optimizer.safetensors",
        "checkpoint-3/trainer_state.json",
        "checkpoint-3/tokenizer.json",
        "checkpoint-6/pytorch_model.bin",
    ] {
        assert!(straight.join(f).exists(), "missing {f}");
    }
    let log = fs::read_to_string(straight.join("trainer_log.jsonl")).unwrap();
    assert_eq!(
        log.lines().count(),
        6,
        "one log line per step with logging_steps = 1"
    );
    let results: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(straight.join("train_results.json")).unwrap())
            .unwrap();
    for k in [
        "epoch",
        "train_loss",
        "train_runtime",
        "train_samples",
        "train_samples_per_second",
        "train_steps_per_second",
    ] {
        assert!(results.get(k).is_some(), "train_results.json lacks {k}");
    }
    let ck_cfg: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(straight.join("checkpoint-3/config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(ck_cfg["pre_seq_len"], 4);

    // Stop after 3 steps (keep only checkpoint-3 of an identical run), then resume for 3 more.
    let resumed = tmp.path().join("resumed");
    let cfg_b = experiment(
        tmp.path(),
        "b.toml",
        &model,
        &resumed,
        "max_steps = 6\nsave_steps = 3\n",
    );
    let out = glm_tune(tmp.path(), &["run", cfg_b.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    fs::remove_dir_all(resumed.join("checkpoint-6")).unwrap();
    let out = glm_tune(
        tmp.path(),
        &[
            "run",
            cfg_b.to_str().unwrap(),
            "--set",
            "resume_from_checkpoint=true",
            "--set",
            "overwrite_output_dir=true",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        prefix_values(&straight.join("checkpoint-6")),
        prefix_values(&resumed.join("checkpoint-6")),
        "resumed prefix differs"
    );
    assert_eq!(
        fs::read(straight.join("checkpoint-6/optimizer.safetensors")).unwrap(),
        fs::read(resumed.join("checkpoint-6/optimizer.safetensors")).unwrap(),
        "resumed optimizer state differs"
    );
}

#[test]
fn output_dir_is_never_overwritten_silently() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let out_dir = tmp.path().join("out");
    fs::create_dir_all(&out_dir).unwrap();
    fs::write(out_dir.join("precious.txt"), "keep").unwrap();
    let cfg = experiment(
        tmp.path(),
        "a.toml",
        &model,
        &out_dir,
        "max_steps = 1\nsave_steps = 1\n",
    );
    let out = glm_tune(tmp.path(), &["run", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("overwrite_output_dir"),
        "{}",
        text(&out.stderr)
    );
    assert!(out_dir.join("precious.txt").exists());
}

#[test]
fn ctrl_c_leaves_no_partial_checkpoint_and_prints_resume_command() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let out_dir = tmp.path().join("out");
    let cfg = experiment(
        tmp.path(),
        "a.toml",
        &model,
        &out_dir,
        "max_steps = 100000\nsave_steps = 2\n",
    );
    let child = Command::new(env!("CARGO_BIN_EXE_glm-tune"))
        .args(["run", cfg.to_str().unwrap()])
        .current_dir(tmp.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !out_dir.join("checkpoint-2").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("interrupted") && err.contains("resume_from_checkpoint=true"),
        "{err}"
    );
    for e in fs::read_dir(&out_dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        assert!(
            !name.contains("partial") && !name.ends_with(".tmp"),
            "leftover {name}"
        );
        if name.starts_with("checkpoint-") {
            assert!(
                e.path().join("trainer_state.json").exists(),
                "{name} is incomplete"
            );
        }
    }
}
