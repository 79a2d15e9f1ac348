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
use crate::model::ChatGlmModel;
use crate::params::{ParamMut, ParamRef};

/// Standard deviation of the random initialisation.
pub const INIT_STD: f64 = 0.02;

/// A model of `config`'s shape with seeded random weights in `precision`.
pub fn random_model<B: Backend>(config: &ChatGlmConfig, precision: Precision, seed: u64, device: &B::Device) -> ChatGlmModel<B> {
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
                *p = Param::initialized(p.id, Tensor::from_data(TensorData::new(values, dims), (device, dtype)));
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
/// Hugging Face checkpoint; no `lm_head.weight`, which is tied). `config` is written as given.
pub fn save_pretrained<B: Backend>(model: &ChatGlmModel<B>, config: &ChatGlmConfig, dir: &Path, dtype: SaveDtype) -> Result<(), GlmError> {
    std::fs::create_dir_all(dir).map_err(|e| GlmError::Io { path: dir.to_path_buf(), source: e })?;
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
                SaveDtype::F16 => RawTensor::from_f16(shape, &v.iter().map(|&x| f16::from_f32(x)).collect::<Vec<_>>()),
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
    let refs: Vec<(&str, &RawTensor)> = raws.iter().map(|(n, r)| (n.as_str(), r)).collect();
    let mut meta = BTreeMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    write_safetensors(&dir.join("model.safetensors"), &refs, &meta)?;
    let mut cfg = config.clone();
    cfg.extra.insert(
        "torch_dtype".into(),
        serde_json::Value::String(match dtype {
            SaveDtype::F16 => "float16",
            SaveDtype::F32 => "float32",
        }
        .into()),
    );
    let text = serde_json::to_string_pretty(&cfg.to_json_value()).map_err(|e| GlmError::Invalid(e.to_string()))?;
    let path = dir.join("config.json");
    std::fs::write(&path, text + "\n").map_err(|e| GlmError::Io { path, source: e })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loader::{LoadOptions, load_model};
    use burn::backend::Flex;

    #[test]
    fn random_model_round_trips_through_save_and_load() {
        let cfg = ChatGlmConfig::with_shape(32, 2, 4, 64, 100);
        let dev = Default::default();
        let m = random_model::<Flex>(&cfg, Precision::Fp32, 3, &dev);
        let again = random_model::<Flex>(&cfg, Precision::Fp32, 3, &dev);
        let a: Vec<f32> = m.word_embeddings.weight.val().into_data().to_vec().unwrap();
        let b: Vec<f32> = again.word_embeddings.weight.val().into_data().to_vec().unwrap();
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
