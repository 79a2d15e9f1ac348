//! End-to-end `glm-tune run` on the real vocabulary: a small random ChatGLM (the real config's
//! 130528-row vocabulary and special ids, written by `glm-tune init-model`), the real tokenizer
//! from `../shared/data/chatglm-6b` and 200 real AdvertiseGen rows, with an int4 quantized base:
//! training, checkpoints, resume and prediction, checking every output file and that the training
//! loss goes down. A random base gives near-uniform logits that a prefix alone barely moves in a
//! few steps, so this run fine-tunes the unquantized parameters (embeddings, LayerNorms — the
//! original's full fine-tuning path over a quantized model); P-Tuning v2 over an int4 base is
//! exercised by the embedded demo's test and `run_resume`.

#[path = "support/runs.rs"]
mod runs;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use runs::workspace;

fn shared_data() -> PathBuf {
    workspace().join("../shared/data")
}

fn glm_tune(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_glm-tune"))
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .output()
        .expect("glm-tune runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The first `n` lines of a JSON-lines file.
fn head(src: &Path, dst: &Path, skip: usize, n: usize) {
    let all = fs::read_to_string(src).unwrap();
    let lines: Vec<&str> = all.lines().skip(skip).take(n).collect();
    fs::write(dst, lines.join("\n") + "\n").unwrap();
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(
        &fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

#[test]
fn finetune_over_an_int4_base_with_the_real_tokenizer() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // The real config with a small body: same vocabulary and special ids.
    let mut cfg = json(&shared_data().join("chatglm-6b/config.json"));
    cfg["hidden_size"] = 64.into();
    cfg["num_layers"] = 2.into();
    cfg["num_attention_heads"] = 4.into();
    cfg["inner_hidden_size"] = 256.into();
    fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let model = dir.join("model");
    let out = glm_tune(
        dir,
        &[
            "init-model",
            "--config",
            "config.json",
            "--out",
            model.to_str().unwrap(),
            "--tokenizer",
            shared_data().join("chatglm-6b").to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    head(
        &shared_data().join("advertisegen/train_first5000.json"),
        &dir.join("train.json"),
        0,
        200,
    );
    head(
        &shared_data().join("advertisegen/dev.json"),
        &dir.join("dev.json"),
        0,
        8,
    );
    let exp = |steps: u32, extra: &str| {
        format!(
            r#"do_train = true
do_predict = true
train_file = "train.json"
test_file = "dev.json"
prompt_column = "content"
response_column = "summary"
model_name_or_path = "model"
output_dir = "out"
overwrite_output_dir = true
max_source_length = 64
max_target_length = 64
val_max_target_length = 64
per_device_train_batch_size = 2
per_device_eval_batch_size = 4
gradient_accumulation_steps = 2
predict_with_generate = true
max_steps = {steps}
logging_steps = 1
save_steps = 6
learning_rate = 1e-2
quantization_bit = 4
max_length = 80
{extra}
"#
        )
    };
    fs::write(dir.join("exp.toml"), exp(12, "")).unwrap();
    let out = glm_tune(dir, &["run", "exp.toml"]);
    assert!(out.status.success(), "run failed: {}", text(&out.stderr));
    let o = dir.join("out");
    for f in [
        "experiment.toml",
        "trainer_log.jsonl",
        "trainer_state.json",
        "train_results.json",
        "predict_results.json",
        "all_results.json",
        "generated_predictions.txt",
        "training_loss.png",
    ] {
        assert!(o.join(f).exists(), "missing {f}");
    }
    for ck in ["checkpoint-6", "checkpoint-12"] {
        for f in [
            "model.safetensors",
            "config.json",
            "optimizer.safetensors",
            "scheduler.json",
            "rng_state.json",
            "trainer_state.json",
            "generation_config.json",
            "experiment.toml",
            "ice_text.model",
            "tokenizer_config.json",
        ] {
            assert!(o.join(ck).join(f).exists(), "missing {ck}/{f}");
        }
    }
    // A full checkpoint of a quantized model is itself a pre-quantized model directory.
    let ck_cfg = json(&o.join("checkpoint-12/config.json"));
    assert_eq!(ck_cfg["quantization_bit"].as_u64(), Some(4));
    assert!(ck_cfg.get("pre_seq_len").is_none_or(|v| v.is_null()));
    // Every predicted line is the original's JSON format.
    let preds = fs::read_to_string(o.join("generated_predictions.txt")).unwrap();
    assert_eq!(preds.lines().count(), 8);
    for line in preds.lines() {
        assert!(
            line.starts_with("{\"labels\": ") && line.contains(", \"predict\": "),
            "{line}"
        );
        json_line(line);
    }
    let results = json(&o.join("predict_results.json"));
    for k in [
        "predict_bleu-4",
        "predict_rouge-1",
        "predict_rouge-2",
        "predict_rouge-l",
        "predict_runtime",
        "predict_samples",
    ] {
        assert!(results.get(k).is_some(), "predict_results.json lacks {k}");
    }
    let all = json(&o.join("all_results.json"));
    assert!(all.get("train_loss").is_some() && all.get("predict_bleu-4").is_some());
    // The loss goes down: the last logged steps below the first ones.
    let losses = runs::logged_losses(&o);
    assert_eq!(losses.len(), 12);
    let first: f64 = losses[..3].iter().sum::<f64>() / 3.0;
    let last: f64 = losses[losses.len() - 3..].iter().sum::<f64>() / 3.0;
    assert!(last < first, "loss did not go down: {losses:?}");

    // Resume from checkpoint-6 and end with the same prefix as the straight run.
    let straight = fs::read(o.join("checkpoint-12/model.safetensors")).unwrap();
    fs::remove_dir_all(o.join("checkpoint-12")).unwrap();
    fs::write(
        dir.join("resume.toml"),
        exp(12, "resume_from_checkpoint = \"out/checkpoint-6\"")
            .replace("do_predict = true", "do_predict = false"),
    )
    .unwrap();
    let out = glm_tune(dir, &["run", "resume.toml"]);
    assert!(out.status.success(), "resume failed: {}", text(&out.stderr));
    assert_eq!(
        straight,
        fs::read(o.join("checkpoint-12/model.safetensors")).unwrap(),
        "resumed run diverged"
    );
}

fn json_line(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"))
}
