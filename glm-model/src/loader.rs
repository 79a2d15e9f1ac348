//! Build a [`ChatGlmModel`] from a Hugging Face model directory, layer by layer.
//!
//! The rename table is one rule: checkpoint key `transformer.<path>` ↔ module path `<path>`.
//! `lm_head.weight` is the tied word embedding (checked for equality, warned if different);
//! `*.rotary_emb.inv_freq` is ignored (the reference recomputes it); `transformer.prefix_encoder.*`
//! belongs to the P-Tuning prefix and is left to the prefix-encoder crate.
//!
//! Tensors are read one at a time and turned into parameters right away, so the peak memory of a
//! load is the model plus one tensor — never a second full copy.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::DType;
use half::{bf16, f16};

use crate::GlmBackend;
use crate::block::{GlmBlock, Mlp, SelfAttention};
use crate::config::ChatGlmConfig;
use crate::error::GlmError;
use crate::io::{CheckpointDir, CheckpointFormat, RawTensor};
use crate::layers::{Embedding, LayerNorm, Precision};
use crate::linear::{BiasData, DenseLinear, Linear, QuantLinear};
use crate::model::ChatGlmModel;
use quant::QuantizedWeight;

/// How to load a model directory.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Dtype of weights and activations.
    pub precision: Precision,
    /// Force one of the weight formats present in the directory (default: safetensors first).
    pub format: Option<CheckpointFormat>,
    /// Quantize the four linears of every block to 4 or 8 bits while loading (`quantization_bit`
    /// of the run). A pre-quantized checkpoint (config.json `quantization_bit`) loads quantized
    /// whatever this says, but a different bit width is an error.
    pub quantization_bit: Option<u8>,
    /// Keep `word_embeddings` in the checkpoint's f16 when the model runs in a wider precision
    /// (fp32/fp64) — for a frozen embedding only (P-Tuning v2, inference): lookups and the tied
    /// output projection convert it exactly (the same values; the head's summation order may
    /// change the last bit of a logit), and the table (1 GiB at
    /// ChatGLM-6B's 130528 × 4096) is half the f32 size. Ignored for a non-f16 checkpoint
    /// table. Default false (a trainable embedding must be in the model's precision).
    pub compact_frozen_embedding: bool,
}

/// What a load did.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub dir: PathBuf,
    pub format: CheckpointFormat,
    pub tensors: usize,
    pub seconds: f64,
    /// `Some(true)` when `lm_head.weight` was present and equal to the embedding.
    pub lm_head_tied: Option<bool>,
    /// `transformer.prefix_encoder.*` keys present (a merged P-Tuning model).
    pub prefix_tensors: Vec<String>,
}

/// Checkpoint key of a module path (`layers.0.mlp...` → `transformer.layers.0.mlp...`).
pub fn hf_key(path: &str) -> String {
    format!("transformer.{path}")
}

/// Load `dir` (config.json + weights) into a model on `device`.
pub fn load_model<B: GlmBackend>(
    dir: &Path,
    options: &LoadOptions,
    device: &B::Device,
) -> Result<(ChatGlmModel<B>, LoadReport), GlmError> {
    let config = ChatGlmConfig::from_path(dir)?;
    load_with_config(dir, &config, options, device)
}

/// Load the weights of `dir` into a model of `config`'s shape.
pub fn load_with_config<B: GlmBackend>(
    dir: &Path,
    config: &ChatGlmConfig,
    options: &LoadOptions,
    device: &B::Device,
) -> Result<(ChatGlmModel<B>, LoadReport), GlmError> {
    let start = Instant::now();
    let ckpt = match options.format {
        Some(f) => CheckpointDir::open_format(dir, f)?,
        None => CheckpointDir::open(dir)?,
    };
    let stored_bits = config.quantization_bit.filter(|&b| b != 0).map(|b| b as u8);
    if let (Some(stored), Some(asked)) = (stored_bits, options.quantization_bit)
        && stored != asked
    {
        return Err(GlmError::Config {
            path: dir.join("config.json"),
            message: format!(
                "the checkpoint is pre-quantized to int{stored} but int{asked} was asked; use quantization_bit = {stored} or the full-precision checkpoint"
            ),
        });
    }
    let mut loader = Loader {
        ckpt: &ckpt,
        dtype: options.precision.dtype(),
        device,
        stored_bits,
        quantize: options.quantization_bit,
    };
    let h = config.hidden_size;
    let inner = config.inner_size();
    let eps = config.layernorm_epsilon;

    let word_embeddings = if options.compact_frozen_embedding
        && matches!(options.precision.dtype(), DType::F32 | DType::F64)
    {
        let raw = loader.raw("word_embeddings.weight", &[config.vocab_size, h])?;
        // f16 → wider is exact, so a stored f16 table loses no value by staying f16.
        let dtype = if raw.dtype == crate::io::DType::F16 {
            DType::F16
        } else {
            options.precision.dtype()
        };
        let weight = raw_to_tensor(&raw, dtype, device)
            .map_err(|e| GlmError::Invalid(format!("{}: {e}", hf_key("word_embeddings.weight"))))?;
        Embedding {
            weight: Param::from_tensor(weight),
        }
    } else {
        Embedding {
            weight: loader.param("word_embeddings.weight", &[config.vocab_size, h])?,
        }
    };
    let mut layers = Vec::with_capacity(config.num_layers);
    for l in 0..config.num_layers {
        let p = |s: &str| format!("layers.{l}.{s}");
        layers.push(GlmBlock {
            input_layernorm: loader.layer_norm(&p("input_layernorm"), h, eps)?,
            attention: SelfAttention {
                query_key_value: loader.linear(&p("attention.query_key_value"), 3 * h, h)?,
                dense: loader.linear(&p("attention.dense"), h, h)?,
                num_heads: config.num_attention_heads,
                layer_id: l,
            },
            post_attention_layernorm: loader.layer_norm(&p("post_attention_layernorm"), h, eps)?,
            mlp: Mlp {
                dense_h_to_4h: loader.linear(&p("mlp.dense_h_to_4h"), inner, h)?,
                dense_4h_to_h: loader.linear(&p("mlp.dense_4h_to_h"), h, inner)?,
            },
        });
    }
    let final_layernorm = loader.layer_norm("final_layernorm", h, eps)?;

    let lm_head_tied = match ckpt.info("lm_head.weight") {
        Some(_) => {
            let head = ckpt.read("lm_head.weight")?;
            let emb = ckpt.read(&hf_key("word_embeddings.weight"))?;
            let same = head.shape == emb.shape && head.bytes == emb.bytes;
            if !same {
                tracing::warn!(
                    "{}: lm_head.weight differs from transformer.word_embeddings.weight; using the embedding as the output projection (Hugging Face ties them for ChatGLM-6B)",
                    dir.display()
                );
            }
            Some(same)
        }
        None => None,
    };

    let mut unexpected = Vec::new();
    let mut prefix_tensors = Vec::new();
    let mut unexpected_file = PathBuf::new();
    for info in ckpt.tensors() {
        let name = info.name.as_str();
        if name.ends_with(".rotary_emb.inv_freq") {
            // Recomputed at construction, as the reference's no-op state-dict hook does.
        } else if name.starts_with("transformer.prefix_encoder.") {
            prefix_tensors.push(name.to_string());
        } else if !is_model_key(name, config) {
            if unexpected.is_empty() {
                unexpected_file = info.file.clone();
            }
            unexpected.push(name.to_string());
        }
    }
    if !unexpected.is_empty() {
        return Err(GlmError::UnexpectedTensors {
            dir: dir.to_path_buf(),
            file: unexpected_file,
            names: unexpected,
        });
    }

    let mut config = config.clone();
    config.quantization_bit = stored_bits.or(options.quantization_bit).map(u32::from);
    let model = ChatGlmModel {
        word_embeddings,
        layers,
        final_layernorm,
        config,
        precision: options.precision,
    };
    let report = LoadReport {
        dir: dir.to_path_buf(),
        format: ckpt.format(),
        tensors: ckpt.len(),
        seconds: start.elapsed().as_secs_f64(),
        lm_head_tied,
        prefix_tensors,
    };
    tracing::info!(
        "loaded {} tensors from {} ({}) in {:.2}s",
        report.tensors,
        dir.display(),
        report.format,
        report.seconds
    );
    Ok((model, report))
}

/// Whether `name` is a tensor of the base model of `config`.
fn is_model_key(name: &str, config: &ChatGlmConfig) -> bool {
    let Some(rest) = name.strip_prefix("transformer.") else {
        return name == "lm_head.weight";
    };
    if matches!(
        rest,
        "word_embeddings.weight" | "final_layernorm.weight" | "final_layernorm.bias"
    ) {
        return true;
    }
    let Some(rest) = rest.strip_prefix("layers.") else {
        return false;
    };
    let Some((idx, field)) = rest.split_once('.') else {
        return false;
    };
    let Ok(idx) = idx.parse::<usize>() else {
        return false;
    };
    idx < config.num_layers
        && matches!(
            field,
            "input_layernorm.weight"
                | "input_layernorm.bias"
                | "post_attention_layernorm.weight"
                | "post_attention_layernorm.bias"
                | "attention.query_key_value.weight_scale"
                | "attention.dense.weight_scale"
                | "mlp.dense_h_to_4h.weight_scale"
                | "mlp.dense_4h_to_h.weight_scale"
                | "attention.query_key_value.weight"
                | "attention.query_key_value.bias"
                | "attention.dense.weight"
                | "attention.dense.bias"
                | "mlp.dense_h_to_4h.weight"
                | "mlp.dense_h_to_4h.bias"
                | "mlp.dense_4h_to_h.weight"
                | "mlp.dense_4h_to_h.bias"
        )
}

struct Loader<'a, B: Backend> {
    ckpt: &'a CheckpointDir,
    dtype: DType,
    device: &'a B::Device,
    /// The checkpoint holds THUDM-packed weights of this width.
    stored_bits: Option<u8>,
    /// Quantize full-precision weights to this width while loading.
    quantize: Option<u8>,
}

impl<B: GlmBackend> Loader<'_, B> {
    /// Read `transformer.<path>` checking its shape.
    fn raw(&mut self, path: &str, shape: &[usize]) -> Result<RawTensor, GlmError> {
        let key = hf_key(path);
        let info = self
            .ckpt
            .info(&key)
            .ok_or_else(|| GlmError::MissingTensor {
                tensor: key.clone(),
                dir: self.ckpt.dir().to_path_buf(),
                expected: shape.to_vec(),
            })?;
        if info.shape != shape {
            return Err(GlmError::ShapeMismatch {
                tensor: key,
                file: info.file.clone(),
                expected: shape.to_vec(),
                found: info.shape.clone(),
            });
        }
        if !info.dtype.is_float() {
            return Err(GlmError::BadDType {
                tensor: key,
                file: info.file.clone(),
                dtype: info.dtype.to_string(),
                what: "a floating-point weight is expected (quantized weights need config.json `quantization_bit`)".into(),
            });
        }
        Ok(self.ckpt.read(&key)?)
    }

    fn tensor<const D: usize>(
        &mut self,
        path: &str,
        shape: &[usize],
    ) -> Result<Tensor<B, D>, GlmError> {
        let raw = self.raw(path, shape)?;
        raw_to_tensor(&raw, self.dtype, self.device)
            .map_err(|e| GlmError::Invalid(format!("{}: {e}", hf_key(path))))
    }

    fn param<const D: usize>(
        &mut self,
        path: &str,
        shape: &[usize],
    ) -> Result<Param<Tensor<B, D>>, GlmError> {
        Ok(Param::from_tensor(self.tensor(path, shape)?))
    }

    fn layer_norm(&mut self, path: &str, h: usize, eps: f64) -> Result<LayerNorm<B>, GlmError> {
        Ok(LayerNorm {
            weight: self.param(&format!("{path}.weight"), &[h])?,
            bias: self.param(&format!("{path}.bias"), &[h])?,
            eps,
        })
    }

    fn linear(&mut self, path: &str, out: usize, inp: usize) -> Result<Linear<B>, GlmError> {
        if let Some(bits) = self.stored_bits {
            return self.prequantized(path, out, inp, bits);
        }
        if let Some(bits) = self.quantize {
            // Quantize this layer right away: only one f16 weight is ever held, so the peak
            // memory of a load stays near the quantized model's size.
            let raw = self.raw(&format!("{path}.weight"), &[out, inp])?;
            let w = raw
                .to_f16_vec()
                .map_err(|e| GlmError::Invalid(format!("{}: {e}", hf_key(path))))?;
            drop(raw);
            let bias = self.bias_data(path, out)?;
            let q = QuantLinear::quantize_from_f16(&w, out, inp, bits, Some(bias), self.device)
                .map_err(|e| GlmError::Invalid(format!("{}: {e}", hf_key(path))))?;
            return Ok(Linear::Quantized(q));
        }
        Ok(Linear::Dense(DenseLinear {
            weight: self.param(&format!("{path}.weight"), &[out, inp])?,
            bias: Some(self.param(&format!("{path}.bias"), &[out])?),
        }))
    }

    /// The bias of a quantized layer, in the activation precision.
    fn bias_data(&mut self, path: &str, out: usize) -> Result<BiasData, GlmError> {
        let raw = self.raw(&format!("{path}.bias"), &[out])?;
        let err = |e: String| GlmError::Invalid(format!("{}.bias: {e}", hf_key(path)));
        Ok(match self.dtype {
            DType::F16 => BiasData::F16(raw.to_f16_vec().map_err(|e| err(e.to_string()))?),
            _ => BiasData::F32(raw.to_f32_vec().map_err(|e| err(e.to_string()))?),
        })
    }

    /// A THUDM pre-quantized layer: `weight` int8 [out, in·bits/8] + `weight_scale` f16 [out].
    fn prequantized(
        &mut self,
        path: &str,
        out: usize,
        inp: usize,
        bits: u8,
    ) -> Result<Linear<B>, GlmError> {
        let wkey = hf_key(&format!("{path}.weight"));
        let skey = hf_key(&format!("{path}.weight_scale"));
        let packed_shape = vec![out, inp * bits as usize / 8];
        let dir = self.ckpt.dir().to_path_buf();
        let winfo = self
            .ckpt
            .info(&wkey)
            .ok_or_else(|| GlmError::MissingTensor {
                tensor: wkey.clone(),
                dir: dir.clone(),
                expected: packed_shape.clone(),
            })?;
        if winfo.shape != packed_shape {
            return Err(GlmError::ShapeMismatch {
                tensor: wkey,
                file: winfo.file.clone(),
                expected: packed_shape,
                found: winfo.shape.clone(),
            });
        }
        if winfo.dtype != crate::io::DType::I8 {
            return Err(GlmError::BadDType {
                tensor: wkey,
                file: winfo.file.clone(),
                dtype: winfo.dtype.to_string(),
                what: format!(
                    "config.json says quantization_bit = {bits}, so packed int8 weights are expected"
                ),
            });
        }
        let packed = self
            .ckpt
            .read(&wkey)?
            .as_i8()
            .map_err(|e| GlmError::Invalid(format!("{wkey}: {e}")))?
            .to_vec();
        let sinfo = self
            .ckpt
            .info(&skey)
            .ok_or_else(|| GlmError::MissingTensor {
                tensor: skey.clone(),
                dir: dir.clone(),
                expected: vec![out],
            })?;
        if sinfo.shape != [out] {
            return Err(GlmError::ShapeMismatch {
                tensor: skey,
                file: sinfo.file.clone(),
                expected: vec![out],
                found: sinfo.shape.clone(),
            });
        }
        let scales = self
            .ckpt
            .read(&skey)?
            .to_f16_vec()
            .map_err(|e| GlmError::Invalid(format!("{skey}: {e}")))?;
        let q = QuantizedWeight::from_packed(packed, scales, out, inp, bits)
            .map_err(|e| GlmError::Invalid(format!("{wkey}: {e}")))?;
        let bias = self.bias_data(path, out)?;
        let layer = QuantLinear::from_quantized(&q, Some(bias), self.device)
            .map_err(|e| GlmError::Invalid(format!("{wkey}: {e}")))?;
        Ok(Linear::Quantized(layer))
    }
}

/// A floating-point checkpoint tensor as a burn tensor of `dtype` (exact f16 → f32 widening).
pub fn raw_to_tensor<B: Backend, const D: usize>(
    raw: &RawTensor,
    dtype: DType,
    device: &B::Device,
) -> Result<Tensor<B, D>, String> {
    let shape = raw.shape.clone();
    let data = match dtype {
        DType::F16 => TensorData::new(raw.to_f16_vec().map_err(|e| e.to_string())?, shape),
        DType::BF16 => {
            let v: Vec<bf16> = raw
                .to_f32_vec()
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(bf16::from_f32)
                .collect();
            TensorData::new(v, shape)
        }
        DType::F64 => TensorData::new(
            raw.to_f32_vec()
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(f64::from)
                .collect::<Vec<f64>>(),
            shape,
        ),
        _ => TensorData::new(raw.to_f32_vec().map_err(|e| e.to_string())?, shape),
    };
    Ok(Tensor::from_data(data, (device, dtype)))
}

/// f16 values of a checkpoint tensor (any float dtype), for quantization.
pub fn raw_to_f16(raw: &RawTensor) -> Result<Vec<f16>, String> {
    raw.to_f16_vec().map_err(|e| e.to_string())
}
