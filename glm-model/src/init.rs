//! A randomly initialised model (for training from scratch, tests and benchmarks) and writing a
//! model directory in the Hugging Face layout (`config.json` + `model.safetensors`).
//!
//! Initialisation: every weight matrix and the embedding ~ N(0, σ) with σ = 0.02 (the usual GLM /
//! GPT initialisation; the reference's own `_init_weights` is a no-op because it always loads
//! pretrained weights), biases 0, LayerNorm γ = 1, β = 0 — drawn from a seeded RNG, so the same
//! seed gives the same model on every machine.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::DType;
use half::f16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::ChatGlmConfig;
use crate::error::GlmError;
use crate::io::{RawTensor, write_safetensors};
use crate::layers::Precision;
use crate::linear::Linear;
use crate::model::ChatGlmModel;
use crate::params::{ParamMut, ParamRef};

/// Standard deviation of the random initialisation.
pub const INIT_STD: f64 = 0.02;

/// A model of `config`'s shape with seeded random weights in `precision`.
pub fn random_model<B: Backend>(
    config: &ChatGlmConfig,
    precision: Precision,
    seed: u64,
    device: &B::Device,
) -> ChatGlmModel<B> {
    let mut model = ChatGlmModel::<B>::zeros(config, precision, device);
    let mut rng = StdRng::seed_from_u64(seed);
    let dtype = precision.dtype();
    model.for_each_param_mut(&mut |_, p| {
        match p {
            // Biases stay 0, LayerNorm γ stays 1, β 0.
            ParamMut::D1(_) => {}
            ParamMut::D2(p) => {
                let dims = p.dims();
                let n = dims[0] * dims[1];
                let values: Vec<f32> = (0..n).map(|_| normal(&mut rng) * INIT_STD as f32).collect();
                *p = Param::initialized(
                    p.id,
                    Tensor::from_data(TensorData::new(values, dims), (device, dtype)),
                );
            }
        }
    });
    model
}

fn normal(rng: &mut StdRng) -> f32 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// Storage dtype of a written model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveDtype {
    /// Like the original checkpoint (`torch_dtype: float16`).
    F16,
    /// Full precision (after full fine-tuning).
    F32,
}

/// Write `model` into `dir` as `config.json` + `model.safetensors` (keys `transformer.*`, as the
/// Hugging Face checkpoint; no `lm_head.weight`, which is tied). Quantized layers are written in
/// THUDM's pre-quantized layout and `config.json` then records `quantization_bit`, so the
/// directory loads quantized in seconds. `config` is otherwise written as given.
pub fn save_pretrained<B: Backend>(
    model: &ChatGlmModel<B>,
    config: &ChatGlmConfig,
    dir: &Path,
    dtype: SaveDtype,
) -> Result<(), GlmError> {
    std::fs::create_dir_all(dir).map_err(|e| GlmError::Io {
        path: dir.to_path_buf(),
        source: e,
    })?;
    let mut raws: Vec<(String, RawTensor)> = Vec::new();
    let mut failure = None;
    model.for_each_param(&mut |name, p| {
        let shape = p.dims();
        let values = match &p {
            ParamRef::D1(p) => p.val().cast(DType::F32).into_data().to_vec::<f32>(),
            ParamRef::D2(p) => p.val().cast(DType::F32).into_data().to_vec::<f32>(),
        };
        let raw = match values {
            Ok(v) => match dtype {
                SaveDtype::F32 => RawTensor::from_f32(shape, &v),
                SaveDtype::F16 => RawTensor::from_f16(
                    shape,
                    &v.iter().map(|&x| f16::from_f32(x)).collect::<Vec<_>>(),
                ),
            }
            .map_err(|e| GlmError::Invalid(format!("{name}: {e}"))),
            Err(e) => Err(GlmError::Invalid(format!("{name}: {e:?}"))),
        };
        match raw {
            Ok(r) => raws.push((name.to_string(), r)),
            Err(e) => failure = Some(e),
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    // Quantized linears hold no parameters: write them in THUDM's pre-quantized layout
    // (`weight` packed int8, `weight_scale` f16, `bias` f16).
    for (l, block) in model.layers.iter().enumerate() {
        for (field, lin) in [
            (
                "attention.query_key_value",
                &block.attention.query_key_value,
            ),
            ("attention.dense", &block.attention.dense),
            ("mlp.dense_h_to_4h", &block.mlp.dense_h_to_4h),
            ("mlp.dense_4h_to_h", &block.mlp.dense_4h_to_h),
        ] {
            let Linear::Quantized(q) = lin else { continue };
            let name = format!("transformer.layers.{l}.{field}");
            let err = |e: String| GlmError::Invalid(format!("{name}: {e}"));
            let w = q.to_quantized().map_err(|e| err(e.to_string()))?;
            raws.push((
                format!("{name}.weight"),
                RawTensor::from_i8(w.packed_shape().to_vec(), &w.packed)
                    .map_err(|e| err(e.to_string()))?,
            ));
            raws.push((
                format!("{name}.weight_scale"),
                RawTensor::from_f16(vec![w.out_features], &w.scales)
                    .map_err(|e| err(e.to_string()))?,
            ));
            if let Some(b) = &q.bias {
                let v: Vec<f32> = b
                    .clone()
                    .cast(DType::F32)
                    .into_data()
                    .to_vec()
                    .map_err(|e| err(format!("{e:?}")))?;
                let v16: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
                raws.push((
                    format!("{name}.bias"),
                    RawTensor::from_f16(vec![v16.len()], &v16).map_err(|e| err(e.to_string()))?,
                ));
            }
        }
    }
    let refs: Vec<(&str, &RawTensor)> = raws.iter().map(|(n, r)| (n.as_str(), r)).collect();
    let mut meta = BTreeMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    write_safetensors(&dir.join("model.safetensors"), &refs, &meta)?;
    let mut cfg = config.clone();
    if let Some(bits) = model
        .layers
        .iter()
        .find_map(|b| match &b.attention.query_key_value {
            Linear::Quantized(q) => Some(q.bits),
            Linear::Dense(_) => None,
        })
    {
        cfg.quantization_bit = Some(u32::from(bits));
        cfg.extra.insert(
            "quantization_embeddings".into(),
            serde_json::Value::Bool(false),
        );
    }
    cfg.extra.insert(
        "torch_dtype".into(),
        serde_json::Value::String(
            match dtype {
                SaveDtype::F16 => "float16",
                SaveDtype::F32 => "float32",
            }
            .into(),
        ),
    );
    let text = serde_json::to_string_pretty(&cfg.to_json_value())
        .map_err(|e| GlmError::Invalid(e.to_string()))?;
    let path = dir.join("config.json");
    std::fs::write(&path, text + "\n").map_err(|e| GlmError::Io { path, source: e })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loader::{LoadOptions, load_model};
    use burn::backend::Flex;

    /// Hidden 32, 4 heads, `layers` layers, vocabulary 50, special tokens at 44..48.
    fn small_config(layers: usize) -> ChatGlmConfig {
        let mut cfg = ChatGlmConfig::with_shape(32, layers, 4, 64, 50);
        (
            cfg.mask_token_id,
            cfg.gmask_token_id,
            cfg.bos_token_id,
            cfg.eos_token_id,
        ) = (44, 45, 46, 47);
        cfg
    }

    /// A random model of `cfg` saved as an f16 checkpoint.
    fn saved_random(cfg: &ChatGlmConfig, seed: u64) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let model = random_model::<Flex>(cfg, Precision::Fp32, seed, &Default::default());
        save_pretrained(&model, cfg, dir.path(), SaveDtype::F16).unwrap();
        dir
    }

    /// Logits of the prompt `[1, 2, 3, gMASK, BOS, 4]`, flattened.
    fn logits(model: &ChatGlmModel<Flex>, cfg: &ChatGlmConfig) -> Vec<f32> {
        let ids = vec![vec![1u32, 2, 3, cfg.gmask_token_id, cfg.bos_token_id, 4]];
        model
            .forward_rows(&ids, None, &Default::default())
            .unwrap()
            .logits
            .into_data()
            .to_vec()
            .unwrap()
    }

    #[test]
    fn quantized_model_round_trips_in_thudm_layout() {
        let cfg = small_config(1);
        let dev = Default::default();
        let dir = saved_random(&cfg, 1);
        let (q, _) = load_model::<Flex>(
            dir.path(),
            &LoadOptions {
                quantization_bit: Some(4),
                ..Default::default()
            },
            &dev,
        )
        .unwrap();
        let out = tempfile::tempdir().unwrap();
        save_pretrained(&q, &q.config, out.path(), SaveDtype::F16).unwrap();
        let ck = crate::io::CheckpointDir::open(out.path()).unwrap();
        let w = ck
            .info("transformer.layers.0.mlp.dense_h_to_4h.weight")
            .unwrap();
        assert_eq!(
            (w.dtype, w.shape.clone()),
            (crate::io::DType::I8, vec![64, 16])
        );
        assert!(ck.contains("transformer.layers.0.mlp.dense_h_to_4h.weight_scale"));
        let (back, _) = load_model::<Flex>(out.path(), &LoadOptions::default(), &dev).unwrap();
        assert_eq!(back.config.quantization_bit, Some(4));
        assert_eq!(logits(&q, &cfg), logits(&back, &cfg));
    }

    #[test]
    fn compact_frozen_embedding_keeps_f16_and_logits_agree() {
        let cfg = small_config(2);
        let dev = Default::default();
        let dir = saved_random(&cfg, 3);
        let load = |compact: bool| {
            let options = LoadOptions {
                quantization_bit: Some(4),
                compact_frozen_embedding: compact,
                ..Default::default()
            };
            load_model::<Flex>(dir.path(), &options, &dev).unwrap().0
        };
        let (wide, compact) = (load(false), load(true));
        assert_eq!(wide.word_embeddings.weight.val().dtype(), DType::F32);
        assert_eq!(compact.word_embeddings.weight.val().dtype(), DType::F16);
        let (a, b) = (logits(&wide, &cfg), logits(&compact, &cfg));
        // The same table values; only the head's summation order (f16 tiles converted by the
        // frozen op vs one f32 GEMM) may change the last bits.
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-6 + 1e-5 * x.abs(), "{x} vs {y}");
        }
    }

    #[test]
    fn random_model_round_trips_through_save_and_load() {
        let cfg = ChatGlmConfig::with_shape(32, 2, 4, 64, 100);
        let dev = Default::default();
        let m = random_model::<Flex>(&cfg, Precision::Fp32, 3, &dev);
        let again = random_model::<Flex>(&cfg, Precision::Fp32, 3, &dev);
        let a: Vec<f32> = m.word_embeddings.weight.val().into_data().to_vec().unwrap();
        let b: Vec<f32> = again
            .word_embeddings
            .weight
            .val()
            .into_data()
            .to_vec()
            .unwrap();
        assert_eq!(a, b, "seeded");
        let dir = tempfile::tempdir().unwrap();
        save_pretrained(&m, &cfg, dir.path(), SaveDtype::F32).unwrap();
        let (back, _) = load_model::<Flex>(dir.path(), &LoadOptions::default(), &dev).unwrap();
        let weight = |l: &crate::linear::Linear<Flex>| -> Vec<f32> {
            match l {
                crate::linear::Linear::Dense(d) => d.weight.val().into_data().to_vec().unwrap(),
                crate::linear::Linear::Quantized(_) => panic!("dense expected"),
            }
        };
        let c = weight(&back.layers[1].mlp.dense_4h_to_h);
        let d = weight(&m.layers[1].mlp.dense_4h_to_h);
        assert_eq!(c, d);
    }
}
