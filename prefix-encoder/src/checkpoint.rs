//! Prefix checkpoints that work both ways with the Python original.
//!
//! A checkpoint directory holds `pytorch_model.bin` (a torch.save zip that `torch.load` reads,
//! keys `transformer.prefix_encoder.embedding.weight` and, with projection,
//! `transformer.prefix_encoder.trans.{0,2}.{weight,bias}`, f32 — so `ptuning/main.py
//! --ptuning_checkpoint` and `web_demo.py` load it unchanged), the same tensors as
//! `model.safetensors`, and `config.json` (base config + `pre_seq_len`, `prefix_projection`,
//! `quantization_bit`, as the original writes, plus glm-tune's fingerprints of the base model and
//! tokenizer). Loading checks every shape against the model it is meant for and refuses a
//! mismatch with both values and the fix, instead of producing garbage.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::DType;
use glm_model::ChatGlmConfig;
use glm_model::io::{CheckpointDir, RawTensor, write_safetensors, write_torch_state_dict};
use serde_json::{Map, Value};

use crate::encoder::{DEFAULT_DROPOUT, PrefixConfig, PrefixEncoder, Projection};
use crate::error::PrefixError;

/// Key prefix of the encoder in the full model's state dict.
pub const KEY_PREFIX: &str = "transformer.prefix_encoder.";

/// Fingerprint of a base model: its shape (all tensor shapes follow from it) and special ids.
pub fn base_fingerprint(config: &ChatGlmConfig) -> String {
    format!(
        "chatglm-h{}-l{}-nh{}-i{}-v{}-2d{}",
        config.hidden_size,
        config.num_layers,
        config.num_attention_heads,
        config.inner_size(),
        config.vocab_size,
        config.position_encoding_2d as u8
    )
}

/// What a prefix checkpoint says about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct PrefixCheckpointInfo {
    pub dir: PathBuf,
    pub pre_seq_len: usize,
    pub prefix_projection: bool,
    pub quantization_bit: Option<u32>,
    /// `glm_tune_base_fingerprint` (absent in checkpoints written by the Python original).
    pub base_fingerprint: Option<String>,
    /// `glm_tune_tokenizer_fingerprint`.
    pub tokenizer_fingerprint: Option<String>,
    /// The base config stored with the prefix (layers, hidden size, ...).
    pub config: ChatGlmConfig,
}

/// Read `config.json` of a prefix checkpoint directory.
pub fn read_info(dir: &Path) -> Result<PrefixCheckpointInfo, PrefixError> {
    let config = ChatGlmConfig::from_path(dir).map_err(|e| PrefixError::Model {
        dir: dir.to_path_buf(),
        source: Box::new(e),
    })?;
    let pre_seq_len = config.pre_seq_len.ok_or_else(|| PrefixError::NotAPrefix {
        dir: dir.to_path_buf(),
        reason: "its config.json has no `pre_seq_len`".into(),
    })?;
    let get = |k: &str| {
        config
            .extra
            .get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    Ok(PrefixCheckpointInfo {
        dir: dir.to_path_buf(),
        pre_seq_len,
        prefix_projection: config.prefix_projection.unwrap_or(false),
        quantization_bit: config.quantization_bit,
        base_fingerprint: get("glm_tune_base_fingerprint"),
        tokenizer_fingerprint: get("glm_tune_tokenizer_fingerprint"),
        config,
    })
}

/// Everything written next to the tensors.
#[derive(Debug, Clone, Default)]
pub struct SaveMeta {
    /// `quantization_bit` of the run (written into config.json as the original does).
    pub quantization_bit: Option<u32>,
    /// Tokenizer fingerprint (sha256 of its files).
    pub tokenizer_fingerprint: Option<String>,
}

/// Write `encoder` into `dir` (created if needed): pytorch_model.bin, model.safetensors, config.json.
pub fn save<B: Backend>(
    dir: &Path,
    encoder: &PrefixEncoder<B>,
    base: &ChatGlmConfig,
    meta: &SaveMeta,
) -> Result<(), PrefixError> {
    std::fs::create_dir_all(dir).map_err(|e| PrefixError::Io {
        path: dir.to_path_buf(),
        source: e,
    })?;
    let mut raws = Vec::new();
    for (name, shape, t) in encoder.named_tensors() {
        let values: Vec<f32> = t
            .cast(DType::F32)
            .into_data()
            .to_vec()
            .map_err(|e| PrefixError::Invalid(format!("reading {name}: {e:?}")))?;
        let raw = RawTensor::from_f32(shape, &values)
            .map_err(|e| PrefixError::Invalid(format!("{name}: {e}")))?;
        raws.push((format!("{KEY_PREFIX}{name}"), raw));
    }
    let refs: Vec<(&str, &RawTensor)> = raws.iter().map(|(n, r)| (n.as_str(), r)).collect();
    write_torch_state_dict(&dir.join("pytorch_model.bin"), &refs)?;
    let mut st_meta = BTreeMap::new();
    st_meta.insert("format".to_string(), "pt".to_string());
    write_safetensors(&dir.join("model.safetensors"), &refs, &st_meta)?;
    write_config(dir, base, &encoder.config, meta)
}

/// Write the checkpoint's `config.json`: the base config plus the prefix settings.
pub fn write_config(
    dir: &Path,
    base: &ChatGlmConfig,
    prefix: &PrefixConfig,
    meta: &SaveMeta,
) -> Result<(), PrefixError> {
    let mut cfg = base.clone();
    cfg.pre_seq_len = Some(prefix.pre_seq_len);
    cfg.prefix_projection = Some(prefix.prefix_projection);
    cfg.quantization_bit = meta.quantization_bit.or(base.quantization_bit);
    cfg.extra.insert(
        "architectures".into(),
        Value::Array(vec![Value::String(
            "ChatGLMForConditionalGeneration".into(),
        )]),
    );
    cfg.extra.insert(
        "glm_tune_base_fingerprint".into(),
        Value::String(base_fingerprint(base)),
    );
    if let Some(t) = &meta.tokenizer_fingerprint {
        cfg.extra.insert(
            "glm_tune_tokenizer_fingerprint".into(),
            Value::String(t.clone()),
        );
    }
    let mut map: Map<String, Value> = match cfg.to_json_value() {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    map.sort_keys();
    let text = serde_json::to_string_pretty(&Value::Object(map))
        .map_err(|e| PrefixError::Invalid(e.to_string()))?;
    let path = dir.join("config.json");
    std::fs::write(&path, text + "\n").map_err(|e| PrefixError::Io { path, source: e })
}

/// Load the prefix of `dir` for a base model `base`, checking `expected` (the run's
/// pre_seq_len / projection) against what the checkpoint holds. `expected = None` takes the
/// checkpoint's own settings (chat/predict never make users repeat them).
pub fn load<B: Backend>(
    dir: &Path,
    base: &ChatGlmConfig,
    expected: Option<(usize, bool)>,
    device: &B::Device,
) -> Result<(PrefixEncoder<B>, PrefixCheckpointInfo), PrefixError> {
    let info = read_info(dir)?;
    if let Some((p, proj)) = expected {
        if p != info.pre_seq_len {
            return Err(PrefixError::Mismatch {
                dir: dir.to_path_buf(),
                what: "pre_seq_len",
                checkpoint: info.pre_seq_len.to_string(),
                run: p.to_string(),
                fix: format!(
                    "set pre_seq_len = {} (the value the prefix was trained with)",
                    info.pre_seq_len
                ),
            });
        }
        if proj != info.prefix_projection {
            return Err(PrefixError::Mismatch {
                dir: dir.to_path_buf(),
                what: "prefix_projection",
                checkpoint: info.prefix_projection.to_string(),
                run: proj.to_string(),
                fix: format!("set prefix_projection = {}", info.prefix_projection),
            });
        }
    }
    for (what, ck, run) in [
        ("num_layers", info.config.num_layers, base.num_layers),
        ("hidden_size", info.config.hidden_size, base.hidden_size),
        (
            "num_attention_heads",
            info.config.num_attention_heads,
            base.num_attention_heads,
        ),
    ] {
        if ck != run {
            return Err(PrefixError::Mismatch {
                dir: dir.to_path_buf(),
                what,
                checkpoint: ck.to_string(),
                run: run.to_string(),
                fix: "use the base model this prefix was trained on".into(),
            });
        }
    }
    let config = PrefixConfig::for_model(base, info.pre_seq_len, info.prefix_projection);
    let ckpt = CheckpointDir::open(dir)?;
    let mut tensors = BTreeMap::new();
    for (name, shape) in config.parameter_shapes() {
        let key = format!("{KEY_PREFIX}{name}");
        let found = ckpt.info(&key).ok_or_else(|| PrefixError::MissingTensor {
            dir: dir.to_path_buf(),
            tensor: key.clone(),
        })?;
        if found.shape != shape {
            return Err(PrefixError::ShapeMismatch {
                dir: dir.to_path_buf(),
                tensor: key,
                checkpoint: found.shape.clone(),
                expected: shape,
            });
        }
        let values = ckpt
            .read(&key)?
            .to_f32_vec()
            .map_err(|e| PrefixError::Invalid(format!("{key}: {e}")))?;
        tensors.insert(
            name,
            Tensor::<B, 2>::from_data(
                TensorData::new(values, [shape[0], shape.get(1).copied().unwrap_or(1)]),
                (device, DType::F32),
            ),
        );
    }
    let extra: Vec<String> = ckpt
        .tensors()
        .map(|t| t.name.clone())
        .filter(|n| {
            n.starts_with(KEY_PREFIX)
                && !config
                    .parameter_shapes()
                    .iter()
                    .any(|(p, _)| format!("{KEY_PREFIX}{p}") == *n)
        })
        .collect();
    if !extra.is_empty() {
        return Err(PrefixError::NotAPrefix {
            dir: dir.to_path_buf(),
            reason: format!("unexpected prefix tensors {extra:?}"),
        });
    }
    let mut take = |n: &str| {
        tensors.remove(n).ok_or_else(|| PrefixError::MissingTensor {
            dir: dir.to_path_buf(),
            tensor: n.to_string(),
        })
    };
    let embedding = Param::from_tensor(take("embedding.weight")?);
    let trans = if config.prefix_projection {
        Some(Projection {
            first_weight: Param::from_tensor(take("trans.0.weight")?),
            first_bias: Param::from_tensor(take("trans.0.bias")?.reshape([config.hidden_size])),
            second_weight: Param::from_tensor(take("trans.2.weight")?),
            second_bias: Param::from_tensor(take("trans.2.bias")?.reshape([config.row_width()])),
        })
    } else {
        None
    };
    Ok((
        PrefixEncoder {
            embedding,
            trans,
            config,
            dropout_prob: DEFAULT_DROPOUT,
        },
        info,
    ))
}

/// Write a projection prefix materialised into a plain one: the [P, 2·L·H] rows computed once,
/// saved as `embedding.weight` with `prefix_projection = false` (~30× smaller for ChatGLM-6B).
pub fn export_materialized<B: Backend>(
    dir: &Path,
    encoder: &PrefixEncoder<B>,
    base: &ChatGlmConfig,
    meta: &SaveMeta,
) -> Result<(), PrefixError> {
    let rows = encoder.rows();
    let config = PrefixConfig {
        prefix_projection: false,
        ..encoder.config
    };
    let plain = PrefixEncoder {
        embedding: Param::from_tensor(rows.detach()),
        trans: None,
        config,
        dropout_prob: encoder.dropout_prob,
    };
    save(dir, &plain, base, meta)
}
