//! Test models for the chat / predict / export tests: a small ChatGLM with the demo tokenizer
//! whose random weights are large enough that every layer (and a prefix) changes the greedy
//! answer — `init-model`'s σ = 0.02 leaves the α-scaled residual dominant, so such a model only
//! echoes its last input token. The embedding rows of the special tokens (`<eop>` included), the
//! `<|tab|>` / `<|blank_n|>` pieces and the byte pieces of the tokenizer are zero, so their logits
//! are exactly 0 and never win: answers are made of ordinary pieces and never end early (their
//! length is set by --max-new-tokens or Ctrl-C).
//!
//! Included with `#[path = "support/chat_model.rs"] mod chat_model;`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use glm_model::io::{RawTensor, write_safetensors};

/// Shape of a test model.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub vocab: usize,
}

impl Shape {
    /// Fast: answers in milliseconds.
    pub const TINY: Shape = Shape {
        hidden: 32,
        layers: 2,
        heads: 2,
        vocab: 1000,
    };
}

/// The demo tokenizer's pieces and which of them are not ordinary text (special tokens,
/// `<|...|>` pieces, `<0xNN>` byte pieces).
fn demo_vocab() -> Vec<(String, bool)> {
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(workspace().join("demo/base/tokenizer.json")).unwrap(),
    )
    .unwrap();
    let added: Vec<u64> = json["added_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_u64().unwrap())
        .collect();
    json["model"]["vocab"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(id, entry)| {
            let piece = entry[0].as_str().unwrap().to_string();
            let special = added.contains(&(id as u64))
                || piece.starts_with("<|")
                || (piece.starts_with("<0x") && piece.len() == 6);
            (piece, special)
        })
        .collect()
}

/// Workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The config.json text of `shape` with the demo tokenizer's special ids.
fn config_json(shape: Shape, vocab: &[(String, bool)]) -> String {
    let id = |piece: &str| {
        vocab
            .iter()
            .position(|(p, _)| p == piece)
            .unwrap_or_else(|| panic!("the demo tokenizer has no {piece}"))
    };
    format!(
        r#"{{"vocab_size": {v}, "hidden_size": {h}, "num_attention_heads": {nh}, "num_layers": {l},
  "inner_hidden_size": {i}, "layernorm_epsilon": 1e-05, "position_encoding_2d": true,
  "bos_token_id": {sop}, "eos_token_id": {eop}, "mask_token_id": {mask}, "gmask_token_id": {gmask},
  "pad_token_id": {pad}, "model_type": "chatglm", "max_sequence_length": 2048}}"#,
        v = shape.vocab,
        h = shape.hidden,
        nh = shape.heads,
        l = shape.layers,
        i = 2 * shape.hidden,
        sop = id("<sop>"),
        eop = id("<eop>"),
        mask = id("[MASK]"),
        gmask = id("[gMASK]"),
        pad = id("<pad>"),
    )
}

/// Deterministic uniform values in [-a, a] (SplitMix64).
fn uniform(n: usize, a: f32, seed: &mut u64) -> Vec<f32> {
    (0..n)
        .map(|_| {
            *seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = *seed;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * a
        })
        .collect()
}

/// Write the model directory `dir` (config.json, model.safetensors, the demo tokenizer.json).
pub fn write_model(dir: &Path, shape: Shape, seed: u64) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let vocab = demo_vocab();
    let shape = Shape {
        vocab: shape.vocab.max(vocab.len()),
        ..shape
    };
    let (h, inner, v) = (shape.hidden, 2 * shape.hidden, shape.vocab);
    let mut s = seed;
    // Linear weights with std ≈ sqrt(4 / fan_in): the block outputs are as large as α·LN(x).
    let lin =
        |out: usize, inp: usize, s: &mut u64| uniform(out * inp, (12.0 / inp as f32).sqrt(), s);
    let mut tensors: Vec<(String, RawTensor)> = Vec::new();
    let mut emb = uniform(v * h, 1.0, &mut s);
    for (id, _) in vocab
        .iter()
        .enumerate()
        .filter(|(_, (_, special))| *special)
    {
        emb[id * h..(id + 1) * h].iter_mut().for_each(|x| *x = 0.0);
    }
    tensors.push((
        "transformer.word_embeddings.weight".into(),
        RawTensor::from_f32(vec![v, h], &emb).unwrap(),
    ));
    for l in 0..shape.layers {
        let p = |n: &str| format!("transformer.layers.{l}.{n}");
        for ln in ["input_layernorm", "post_attention_layernorm"] {
            tensors.push((
                p(&format!("{ln}.weight")),
                RawTensor::from_f32(vec![h], &vec![1.0; h]).unwrap(),
            ));
            tensors.push((
                p(&format!("{ln}.bias")),
                RawTensor::from_f32(vec![h], &vec![0.0; h]).unwrap(),
            ));
        }
        for (name, out, inp) in [
            ("attention.query_key_value", 3 * h, h),
            ("attention.dense", h, h),
            ("mlp.dense_h_to_4h", inner, h),
            ("mlp.dense_4h_to_h", h, inner),
        ] {
            tensors.push((
                p(&format!("{name}.weight")),
                RawTensor::from_f32(vec![out, inp], &lin(out, inp, &mut s)).unwrap(),
            ));
            tensors.push((
                p(&format!("{name}.bias")),
                RawTensor::from_f32(vec![out], &uniform(out, 0.1, &mut s)).unwrap(),
            ));
        }
    }
    tensors.push((
        "transformer.final_layernorm.weight".into(),
        RawTensor::from_f32(vec![h], &vec![1.0; h]).unwrap(),
    ));
    tensors.push((
        "transformer.final_layernorm.bias".into(),
        RawTensor::from_f32(vec![h], &vec![0.0; h]).unwrap(),
    ));
    let refs: Vec<(&str, &RawTensor)> = tensors.iter().map(|(n, r)| (n.as_str(), r)).collect();
    let mut meta = BTreeMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    write_safetensors(&dir.join("model.safetensors"), &refs, &meta).unwrap();
    std::fs::write(dir.join("config.json"), config_json(shape, &vocab)).unwrap();
    std::fs::copy(
        workspace().join("demo/base/tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    dir.to_path_buf()
}

/// Write a prefix checkpoint for a model of `shape` (N(0, 1)-like rows, the prefix-encoder crate's
/// writer: pytorch_model.bin + model.safetensors + config.json).
pub fn write_prefix(
    dir: &Path,
    model_dir: &Path,
    pre_seq_len: usize,
    projection: bool,
    seed: u64,
) -> PathBuf {
    use burn::backend::Flex;
    use prefix_encoder::PrefixConfig;
    use prefix_encoder::checkpoint::{SaveMeta, save};
    let base = glm_model::ChatGlmConfig::from_path(model_dir).unwrap();
    let encoder = PrefixConfig::for_model(&base, pre_seq_len, projection)
        .init::<Flex>(seed, &Default::default());
    save(dir, &encoder, &base, &SaveMeta::default()).unwrap();
    dir.to_path_buf()
}
