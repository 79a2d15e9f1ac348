//! Random models and batches for the benchmark, created in memory (nothing is downloaded).
//!
//! Every tensor is generated directly in its stored form — packed int4/int8 bytes and f16 scales
//! for a quantized base (never a dense copy), f16 for the frozen embedding of a quantized model
//! (as the checkpoint stores it), the activation dtype otherwise — and handed to burn without an
//! intermediate copy, so the resident memory after construction is the model's own size and the
//! high-water mark of the process is not set by the initialisation.
//!
//! Values are uniform with the standard deviation of the usual N(0, 0.02) initialisation, drawn
//! from a SplitMix64 stream per 64 Ki-element chunk (reproducible whatever the thread count).

use burn::prelude::*;
use burn::tensor::DType;
use glm_model::block::{GlmBlock, Mlp, SelfAttention};
use glm_model::layers::{Embedding, LayerNorm};
use glm_model::linear::{BiasData, DenseLinear, Linear, QuantLinear};
use glm_model::{ChatGlmConfig, ChatGlmModel, GlmBackend, Precision};
use half::{bf16, f16};
use quant::QuantizedWeight;
use rayon::prelude::*;

use crate::error::TrainError;
use crate::step::MicroBatch;

/// Standard deviation of the random weights.
const STD: f32 = 0.02;
/// Elements per independently seeded chunk.
const CHUNK: usize = 1 << 16;

/// SplitMix64: a tiny, fast, well-mixed generator (one stream per chunk).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    fn symmetric(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

fn stream(seed: u64, chunk: usize) -> SplitMix {
    SplitMix(seed ^ (chunk as u64).wrapping_mul(0xD1B5_4A32_D192_ED03))
}

/// `n` values uniform with standard deviation `std`, converted by `conv`.
fn random_values<T: Send + Copy + Default>(
    n: usize,
    std: f32,
    seed: u64,
    conv: fn(f32) -> T,
) -> Vec<T> {
    // Uniform on [-a, a] has standard deviation a/√3.
    let a = std * 3f32.sqrt();
    let mut v = vec![T::default(); n];
    v.par_chunks_mut(CHUNK).enumerate().for_each(|(c, out)| {
        let mut rng = stream(seed, c);
        for x in out {
            *x = conv(rng.symmetric() * a);
        }
    });
    v
}

/// A float tensor of `shape` stored in `dtype` with random values (`std` 0 gives zeros).
fn float_tensor<B: Backend, const D: usize>(
    shape: [usize; D],
    dtype: DType,
    std: f32,
    seed: u64,
    device: &B::Device,
) -> Tensor<B, D> {
    let n = shape.iter().product();
    let data = match dtype {
        DType::F16 => TensorData::new(random_values(n, std, seed, f16::from_f32), shape),
        DType::BF16 => TensorData::new(random_values(n, std, seed, bf16::from_f32), shape),
        DType::F64 => TensorData::new(random_values(n, std, seed, f64::from), shape),
        _ => TensorData::new(random_values(n, std, seed, |x| x), shape),
    };
    Tensor::from_data(data, (device, dtype))
}

/// Random packed weights of THUDM's layout: every byte random (int4: two signed nibbles), and
/// per-row f16 scales around 0.003 so that Ŵ has roughly the initialisation's spread.
fn random_quantized(
    out: usize,
    inp: usize,
    bits: u8,
    seed: u64,
) -> Result<QuantizedWeight, TrainError> {
    let bytes = quant::format::packed_row_bytes(inp, bits) * out;
    let mut packed = vec![0i8; bytes];
    packed
        .par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, out)| {
            let mut rng = stream(seed, c);
            for chunk in out.chunks_mut(8) {
                let r = rng.next().to_le_bytes();
                for (d, s) in chunk.iter_mut().zip(r) {
                    *d = s as i8;
                }
            }
        });
    let base = if bits == 4 {
        0.02 * 3f32.sqrt() / 8.0
    } else {
        0.02 * 3f32.sqrt() / 128.0
    };
    let mut rng = stream(seed ^ 0x5CA1E, 0);
    let scales = (0..out)
        .map(|_| f16::from_f32(base * (1.0 + 0.25 * rng.symmetric())))
        .collect();
    QuantizedWeight::from_packed(packed, scales, out, inp, bits)
        .map_err(|e| TrainError::Internal(format!("synthetic quantized weight: {e}")))
}

/// One linear `[out, in]`: dense in `dtype`, or packed int4/int8 with a bias in `dtype`.
fn linear<B: GlmBackend>(
    out: usize,
    inp: usize,
    dtype: DType,
    bits: Option<u8>,
    seed: u64,
    device: &B::Device,
) -> Result<Linear<B>, TrainError> {
    Ok(match bits {
        None => Linear::Dense(DenseLinear::new(
            float_tensor([out, inp], dtype, STD, seed, device),
            Some(float_tensor([out], dtype, 0.0, 0, device)),
        )),
        Some(bits) => {
            let q = random_quantized(out, inp, bits, seed)?;
            let bias = match dtype {
                DType::F16 => BiasData::F16(vec![f16::ZERO; out]),
                _ => BiasData::F32(vec![0.0; out]),
            };
            let layer = QuantLinear::from_quantized(&q, Some(bias), device)
                .map_err(|e| TrainError::Internal(format!("synthetic quantized layer: {e}")))?;
            Linear::Quantized(layer)
        }
    })
}

/// Storage dtype of the word embeddings of a benchmark model: f16 for a quantized base (the
/// checkpoint's dtype, kept compact since the base is frozen), the activation dtype otherwise.
pub fn embedding_dtype(precision: Precision, quantization_bit: Option<u8>) -> DType {
    if quantization_bit.is_some() {
        DType::F16
    } else {
        precision.dtype()
    }
}

/// A frozen (no parameter requires grad) random model of `config`'s shape.
pub fn random_frozen_model<B: GlmBackend>(
    config: &ChatGlmConfig,
    precision: Precision,
    quantization_bit: Option<u8>,
    seed: u64,
    device: &B::Device,
) -> Result<ChatGlmModel<B>, TrainError> {
    let dtype = precision.dtype();
    let (h, i, eps) = (
        config.hidden_size,
        config.inner_size(),
        config.layernorm_epsilon,
    );
    let mut layers = Vec::with_capacity(config.num_layers);
    for l in 0..config.num_layers {
        let s = seed.wrapping_add(1000 * (l as u64 + 1));
        layers.push(GlmBlock {
            input_layernorm: LayerNorm::new(h, eps, dtype, device),
            attention: SelfAttention {
                query_key_value: linear(3 * h, h, dtype, quantization_bit, s + 1, device)?,
                dense: linear(h, h, dtype, quantization_bit, s + 2, device)?,
                num_heads: config.num_attention_heads,
                layer_id: l,
            },
            post_attention_layernorm: LayerNorm::new(h, eps, dtype, device),
            mlp: Mlp {
                dense_h_to_4h: linear(i, h, dtype, quantization_bit, s + 3, device)?,
                dense_4h_to_h: linear(h, i, dtype, quantization_bit, s + 4, device)?,
            },
        });
    }
    let emb = float_tensor(
        [config.vocab_size, h],
        embedding_dtype(precision, quantization_bit),
        STD,
        seed,
        device,
    );
    let mut config = config.clone();
    config.quantization_bit = quantization_bit.map(u32::from);
    let model = ChatGlmModel {
        word_embeddings: Embedding {
            weight: burn::module::Param::from_tensor(emb),
        },
        layers,
        final_layernorm: LayerNorm::new(h, eps, dtype, device),
        config,
        precision,
    };
    Ok(model.no_grad())
}

/// Ordinary token ids of `config`: below every special id and the vocabulary size, above 4.
fn token_range(config: &ChatGlmConfig) -> (u32, u32) {
    let first_special = [
        config.mask_token_id,
        config.gmask_token_id,
        config.bos_token_id,
        config.eos_token_id,
    ]
    .into_iter()
    .min()
    .unwrap_or(u32::MAX)
    .min(config.vocab_size as u32);
    (5, first_special.max(6))
}

fn random_tokens(config: &ChatGlmConfig, n: usize, rng: &mut SplitMix) -> Vec<u32> {
    let (lo, hi) = token_range(config);
    (0..n)
        .map(|_| lo + (rng.next() % (hi - lo) as u64) as u32)
        .collect()
}

/// The first special id: generation never produces ids from here on (no early `<eop>`).
pub fn first_special_id(config: &ChatGlmConfig) -> usize {
    token_range(config).1 as usize
}

/// Training rows as `ptuning/main.py` builds them, `seq` tokens each: prompt, `[gMASK]`,
/// `<sop>`, answer, `<eop>`; labels −100 up to `<sop>`, the ids from there on.
pub fn train_batch(
    config: &ChatGlmConfig,
    batch: usize,
    seq: usize,
    seed: u64,
) -> Result<MicroBatch, TrainError> {
    if seq < 4 {
        return Err(TrainError::Invalid(format!(
            "--seq-len {seq} is too short: a training row needs at least 4 tokens"
        )));
    }
    let mut rng = stream(seed, 7);
    let prompt = seq / 2 - 1;
    let mut rows = Vec::with_capacity(batch);
    let mut labels = Vec::with_capacity(batch);
    for _ in 0..batch {
        let mut ids = random_tokens(config, prompt, &mut rng);
        ids.push(config.gmask_token_id);
        ids.push(config.bos_token_id);
        ids.extend(random_tokens(config, seq - prompt - 3, &mut rng));
        ids.push(config.eos_token_id);
        let context = prompt + 1;
        labels.push(
            ids.iter()
                .enumerate()
                .map(|(k, &t)| if k < context { -100 } else { t as i64 })
                .collect(),
        );
        rows.push(ids);
    }
    Ok(MicroBatch { rows, labels })
}

/// Generation prompts of `len` tokens: random prompt, `[gMASK]`, `<sop>`.
pub fn prompt_rows(config: &ChatGlmConfig, batch: usize, len: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = stream(seed, 11);
    (0..batch)
        .map(|_| {
            let mut ids = random_tokens(config, len.saturating_sub(2).max(1), &mut rng);
            ids.push(config.gmask_token_id);
            ids.push(config.bos_token_id);
            ids
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    fn tiny() -> ChatGlmConfig {
        crate::bench::Shape::Tiny.config()
    }

    #[test]
    fn quantized_model_holds_packed_weights_only() {
        let dev = Default::default();
        let m = random_frozen_model::<Flex>(&tiny(), Precision::Fp32, Some(4), 1, &dev).unwrap();
        match &m.layers[0].mlp.dense_h_to_4h {
            Linear::Quantized(q) => {
                assert_eq!(q.weight.dims(), [256, 32]);
                assert_eq!(q.bits, 4);
            }
            Linear::Dense(_) => panic!("quantized layer expected"),
        }
        assert_eq!(m.word_embeddings.weight.val().dtype(), DType::F16);
        assert!(!m.word_embeddings.weight.val().is_require_grad());
    }

    #[test]
    fn batches_follow_the_training_layout() {
        let cfg = tiny();
        let b = train_batch(&cfg, 2, 16, 3).unwrap();
        assert_eq!(b.rows.len(), 2);
        let row = &b.rows[0];
        assert_eq!(row.len(), 16);
        // 7 prompt tokens, [gMASK], <sop>, 6 answer tokens, <eop>.
        assert_eq!(row[7], cfg.gmask_token_id);
        assert_eq!(row[8], cfg.bos_token_id);
        assert_eq!(row[15], cfg.eos_token_id);
        assert_eq!(b.labels[0][7], -100);
        assert_eq!(b.labels[0][8], cfg.bos_token_id as i64);
        assert_eq!(glm_model::model::loss_rows(&b.labels).0.len(), 2 * 8);
        let limit = first_special_id(&cfg) as u32;
        assert!(row[..7].iter().all(|&t| t >= 5 && t < limit));
    }

    #[test]
    fn random_values_have_the_requested_spread() {
        let v = random_values(1 << 18, 0.02, 5, |x| x);
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / v.len() as f32;
        assert!(
            mean.abs() < 1e-3 && (var.sqrt() - 0.02).abs() < 1e-3,
            "mean {mean} std {}",
            var.sqrt()
        );
    }
}
