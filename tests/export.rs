//! Integration tests of `glm-tune export`: weight-format round trips (every exported file reads
//! back equal to its source, including the original Python's checkpoint-3), the materialized
//! prefix (same past keys/values as the projection prefix), and the merged model directory
//! (HF keys, same logits as base + prefix, usable by `glm-tune chat` alone).

#[path = "support/chat_model.rs"]
mod chat_model;
#[path = "support/fixtures.rs"]
mod fixtures;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use burn::backend::Flex;
use burn::prelude::*;
use chat_model::{Shape, write_model, write_prefix};
use glm_model::io::{CheckpointDir, CheckpointFormat, RawTensor};
use glm_model::loader::{LoadOptions, load_model};
use prefix_encoder::checkpoint as prefix_checkpoint;

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

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Every tensor of `dir` in the weight format `format`, sorted by name.
fn tensors(dir: &Path, format: CheckpointFormat) -> Vec<(String, RawTensor)> {
    let ck = CheckpointDir::open_format(dir, format).unwrap();
    let mut v: Vec<(String, RawTensor)> = ck
        .tensors()
        .map(|t| (t.name.clone(), ck.read(&t.name).unwrap()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn f32s<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn checkpoints_convert_between_formats_and_read_back_equal() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let model = write_model(&t.join("model"), Shape::TINY, 1);
    let prefix = write_prefix(&t.join("prefix"), &model, 4, true, 7);

    // A prefix checkpoint (safetensors + bin + config) → bin only → safetensors only.
    let s = ok(&glm_tune(
        t,
        &[
            "export",
            "--checkpoint",
            prefix.to_str().unwrap(),
            "--to",
            "bin",
            "--out",
            "p-bin",
        ],
    ));
    assert!(s.contains("read back and checked"), "{s}");
    assert!(t.join("p-bin/pytorch_model.bin").exists() && t.join("p-bin/config.json").exists());
    assert!(!t.join("p-bin/model.safetensors").exists());
    ok(&glm_tune(
        t,
        &[
            "export",
            "--checkpoint",
            "p-bin",
            "--to",
            "safetensors",
            "--out",
            "p-st",
        ],
    ));
    let original = tensors(&prefix, CheckpointFormat::Safetensors);
    assert_eq!(
        original.len(),
        5,
        "projection prefix: embedding + trans.{{0,2}}.{{weight,bias}}"
    );
    assert_eq!(
        tensors(&t.join("p-bin"), CheckpointFormat::TorchBin),
        original
    );
    assert_eq!(
        tensors(&t.join("p-st"), CheckpointFormat::Safetensors),
        original
    );
    assert_eq!(
        fs::read(t.join("p-st/config.json")).unwrap(),
        fs::read(prefix.join("config.json")).unwrap()
    );
    // The converted checkpoint is still a loadable prefix.
    let base = glm_model::ChatGlmConfig::from_path(&model).unwrap();
    let (_, info) =
        prefix_checkpoint::load::<Flex>(&t.join("p-st"), &base, None, &Default::default()).unwrap();
    assert!(info.prefix_projection && info.pre_seq_len == 4);

    // A full model directory → pytorch_model.bin: same tensors, and chat gives the same answer.
    ok(&glm_tune(
        t,
        &[
            "export",
            "--checkpoint",
            model.to_str().unwrap(),
            "--to",
            "bin",
            "--out",
            "m-bin",
        ],
    ));
    assert_eq!(
        tensors(&t.join("m-bin"), CheckpointFormat::TorchBin),
        tensors(&model, CheckpointFormat::Safetensors)
    );
    assert!(
        t.join("m-bin/tokenizer.json").exists(),
        "tokenizer files travel with the weights"
    );
    let ask = |dir: &str| {
        ok(&glm_tune(
            t,
            &[
                "chat",
                "--model",
                dir,
                "--prompt",
                "hello",
                "--greedy",
                "--max-new-tokens",
                "5",
            ],
        ))
    };
    assert_eq!(ask("m-bin"), ask(model.to_str().unwrap()));

    // The original Python's prefix checkpoint (torch.save zip, no config.json) → safetensors.
    let golden = fixtures::root().join("ptuning/train/checkpoint-3");
    ok(&glm_tune(
        t,
        &[
            "export",
            "--checkpoint",
            golden.to_str().unwrap(),
            "--to",
            "safetensors",
            "--out",
            "golden-st",
        ],
    ));
    let want = tensors(&golden, CheckpointFormat::TorchBin);
    assert_eq!(want.len(), 1);
    assert_eq!(
        tensors(&t.join("golden-st"), CheckpointFormat::Safetensors),
        want
    );

    // Refusals: an existing non-empty --out, no --to.
    let out = glm_tune(
        t,
        &[
            "export",
            "--checkpoint",
            "p-bin",
            "--to",
            "bin",
            "--out",
            "p-st",
        ],
    );
    assert!(
        !out.status.success() && text(&out.stderr).contains("not empty"),
        "{}",
        text(&out.stderr)
    );
    let out = glm_tune(t, &["export", "--checkpoint", "p-bin", "--out", "new"]);
    assert!(
        !out.status.success() && text(&out.stderr).contains("--to safetensors"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_materialized_prefix_gives_the_projection_prefix_keys_and_values() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let model = write_model(&t.join("model"), Shape::TINY, 1);
    let prefix = write_prefix(&t.join("prefix"), &model, 4, true, 7);
    ok(&glm_tune(
        t,
        &[
            "export",
            "--materialize",
            "--checkpoint",
            prefix.to_str().unwrap(),
            "--out",
            "plain",
        ],
    ));
    let base = glm_model::ChatGlmConfig::from_path(&model).unwrap();
    let dev = Default::default();
    let (proj, _) = prefix_checkpoint::load::<Flex>(&prefix, &base, None, &dev).unwrap();
    // Loadable with prefix_projection = false (and refused with the projection on).
    let (plain, info) =
        prefix_checkpoint::load::<Flex>(&t.join("plain"), &base, Some((4, false)), &dev).unwrap();
    assert!(!info.prefix_projection && plain.trans.is_none());
    assert_eq!(plain.embedding.dims(), [4, 2 * 2 * 32]);
    let err = prefix_checkpoint::load::<Flex>(&t.join("plain"), &base, Some((4, true)), &dev)
        .unwrap_err()
        .to_string();
    assert!(err.contains("prefix_projection"), "{err}");
    let a = proj.past_key_values(2, burn::tensor::DType::F32, false);
    let b = plain.past_key_values(2, burn::tensor::DType::F32, false);
    for (x, y) in a.layers.iter().zip(&b.layers) {
        assert!(max_abs_diff(&f32s(x.key.clone()), &f32s(y.key.clone())) <= 1e-6);
        assert!(max_abs_diff(&f32s(x.value.clone()), &f32s(y.value.clone())) <= 1e-6);
    }
    // Both files hold the same single tensor.
    assert_eq!(
        tensors(&t.join("plain"), CheckpointFormat::TorchBin),
        tensors(&t.join("plain"), CheckpointFormat::Safetensors)
    );
}

#[test]
fn a_merged_model_loads_alone_and_gives_the_logits_of_base_plus_prefix() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let model = write_model(&t.join("model"), Shape::TINY, 1);
    let prefix = write_prefix(&t.join("prefix"), &model, 4, true, 7);
    ok(&glm_tune(
        t,
        &[
            "export",
            "--merge",
            "--model",
            model.to_str().unwrap(),
            "--prefix",
            prefix.to_str().unwrap(),
            "--out",
            "merged",
        ],
    ));
    let merged = t.join("merged");

    // The Hugging Face layout of ChatGLMForConditionalGeneration with pre_seq_len: every key.
    let st = tensors(&merged, CheckpointFormat::Safetensors);
    assert_eq!(
        tensors(&merged, CheckpointFormat::TorchBin),
        st,
        "both formats hold the same tensors"
    );
    let names: Vec<&str> = st.iter().map(|(n, _)| n.as_str()).collect();
    let mut want: Vec<String> = tensors(&model, CheckpointFormat::Safetensors)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    want.push("lm_head.weight".into());
    want.push("transformer.prefix_encoder.embedding.weight".into());
    for l in 0..2 {
        want.push(format!(
            "transformer.layers.{l}.attention.rotary_emb.inv_freq"
        ));
    }
    want.sort();
    assert_eq!(names, want);
    let get = |n: &str| {
        st.iter()
            .find(|(k, _)| k == n)
            .map(|(_, r)| r.clone())
            .unwrap()
    };
    assert_eq!(
        get("lm_head.weight"),
        get("transformer.word_embeddings.weight"),
        "lm_head is the tied embedding"
    );
    assert_eq!(
        get("transformer.prefix_encoder.embedding.weight").shape,
        [4, 128],
        "materialized prefix"
    );
    let pkl = fs::read(merged.join("pytorch_model.bin")).unwrap();
    assert!(
        pkl.windows(23).any(|w| w == b"collections\nOrderedDict"),
        "torch.save(model.state_dict()) container"
    );
    let cfg: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(merged.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["pre_seq_len"], 4);
    assert_eq!(cfg["prefix_projection"], false);
    assert!(cfg.get("quantization_bit").is_none(), "{cfg}");
    assert!(merged.join("tokenizer.json").exists());

    // Same logits as the base model with the (projection) prefix.
    let dev = Default::default();
    let (base_model, _) = load_model::<Flex>(&model, &LoadOptions::default(), &dev).unwrap();
    let (proj, _) =
        prefix_checkpoint::load::<Flex>(&prefix, &base_model.config, None, &dev).unwrap();
    let (merged_model, report) =
        load_model::<Flex>(&merged, &LoadOptions::default(), &dev).unwrap();
    assert_eq!(
        report.prefix_tensors,
        ["transformer.prefix_encoder.embedding.weight"]
    );
    assert_eq!(report.lm_head_tied, Some(true));
    let (merged_prefix, _) =
        prefix_checkpoint::load::<Flex>(&merged, &merged_model.config, None, &dev).unwrap();
    let (g, sop) = (
        base_model.config.gmask_token_id,
        base_model.config.bos_token_id,
    );
    let rows = vec![
        vec![100u32, 200, 300, g, sop, 400, 500],
        vec![150, 250, 350, g, sop, 450, 550],
    ];
    let dtype = burn::tensor::DType::F32;
    let a = base_model
        .forward_rows(&rows, Some(&proj.past_key_values(2, dtype, false)), &dev)
        .unwrap()
        .logits;
    let b = merged_model
        .forward_rows(
            &rows,
            Some(&merged_prefix.past_key_values(2, dtype, false)),
            &dev,
        )
        .unwrap()
        .logits;
    let (a, b) = (f32s(a), f32s(b));
    assert!(
        max_abs_diff(&a, &b) <= 1e-5,
        "logits differ by {}",
        max_abs_diff(&a, &b)
    );

    // glm-tune chat uses the merged prefix on its own.
    let args = ["--prompt", "hello", "--greedy", "--max-new-tokens", "6"];
    let out = glm_tune(t, &[&["chat", "--model", "merged"][..], &args[..]].concat());
    let merged_answer = ok(&out);
    assert!(
        text(&out.stderr).contains("loaded prefix of the merged model"),
        "{}",
        text(&out.stderr)
    );
    let separate = ok(&glm_tune(
        t,
        &[
            &[
                "chat",
                "--model",
                model.to_str().unwrap(),
                "--prefix",
                prefix.to_str().unwrap(),
            ][..],
            &args[..],
        ]
        .concat(),
    ));
    assert_eq!(merged_answer, separate);
}

#[test]
fn a_pre_quantized_model_chats_with_a_prefix_and_merges_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let model = write_model(&t.join("model"), Shape::TINY, 1);
    let prefix = write_prefix(&t.join("prefix"), &model, 4, false, 7);
    ok(&glm_tune(
        t,
        &[
            "quantize",
            "--model",
            model.to_str().unwrap(),
            "--bits",
            "4",
            "--out",
            "q4",
        ],
    ));
    let args = ["--prompt", "hello", "--greedy", "--max-new-tokens", "6"];
    let out = glm_tune(
        t,
        &[
            &[
                "chat",
                "--model",
                "q4",
                "--prefix",
                prefix.to_str().unwrap(),
            ][..],
            &args[..],
        ]
        .concat(),
    );
    let answer = ok(&out);
    assert!(!answer.trim().is_empty());
    assert!(
        text(&out.stderr).contains(", int4,"),
        "loads quantized, no flag needed: {}",
        text(&out.stderr)
    );
    // The merged directory keeps the packed weights and the base's quantization_bit.
    ok(&glm_tune(
        t,
        &[
            "export",
            "--merge",
            "--model",
            "q4",
            "--prefix",
            prefix.to_str().unwrap(),
            "--out",
            "merged-q4",
        ],
    ));
    let cfg: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(t.join("merged-q4/config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["quantization_bit"], 4);
    assert_eq!(
        tensors(&t.join("merged-q4"), CheckpointFormat::TorchBin),
        tensors(&t.join("merged-q4"), CheckpointFormat::Safetensors)
    );
    let out = glm_tune(
        t,
        &[&["chat", "--model", "merged-q4"][..], &args[..]].concat(),
    );
    assert_eq!(ok(&out), answer, "merged = base + prefix");
    assert!(
        text(&out.stderr).contains("loaded prefix of the merged model"),
        "{}",
        text(&out.stderr)
    );
}
