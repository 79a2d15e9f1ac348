//! `ChatGlmModel`: embeddings → GLM blocks → final LayerNorm → tied output projection, plus the
//! shifted cross-entropy loss. Batch-first layout ([B, S, H]); the reference is sequence-first
//! internally, which does not change the numbers.

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn::tensor::activation::log_softmax;

use crate::GlmBackend;
use crate::block::{GlmBlock, KvPair, LayerContext, Mlp, SelfAttention};
use crate::config::ChatGlmConfig;
use crate::error::GlmError;
use crate::layers::{Embedding, LayerNorm, Precision, cast_to, stat_dtype};
use crate::linear::{DenseLinear, Linear};
use crate::masks::{derive_inputs, with_prefix_columns};
use crate::rotary::{Rotary, RotaryContext};

/// Keys/values supplied from outside: a P-Tuning v2 prefix, a KV cache, or both.
#[derive(Debug, Clone)]
pub struct Past<B: Backend> {
    /// One entry per layer, each [B, nh, Sp, hd].
    pub layers: Vec<KvPair<B>>,
    /// How many leading positions of `layers` are the always-visible prefix (P); the caller's
    /// mask does not cover them, the model prepends P false (visible) columns itself.
    pub prefix_len: usize,
}

impl<B: Backend> Past<B> {
    /// Cached positions per layer (prefix included).
    pub fn len(&self) -> usize {
        self.layers.first().map(KvPair::len).unwrap_or(0)
    }
    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Result of a forward pass.
#[derive(Debug, Clone)]
pub struct ModelOutput<B: Backend> {
    /// [B, S, V] in the activation dtype.
    pub logits: Tensor<B, 3>,
    /// Per layer keys/values including `past` (the next step's cache).
    pub presents: Vec<KvPair<B>>,
}

/// The ChatGLM-6B network (`transformer.*` of the Hugging Face checkpoint).
#[derive(Module, Debug)]
pub struct ChatGlmModel<B: Backend> {
    /// [V, H]; also the output projection (HF ties lm_head to it).
    pub word_embeddings: Embedding<B>,
    pub layers: Vec<GlmBlock<B>>,
    pub final_layernorm: LayerNorm<B>,
    #[module(skip)]
    pub config: ChatGlmConfig,
    #[module(skip)]
    pub precision: Precision,
}

impl<B: Backend> ChatGlmModel<B> {
    /// A model with zero weights (LayerNorms γ = 1) of `config`'s shape in `precision`; the
    /// loader fills it. Use [`crate::init::random_model`] for a trainable random init.
    pub fn zeros(config: &ChatGlmConfig, precision: Precision, device: &B::Device) -> Self {
        let dtype = precision.dtype();
        let h = config.hidden_size;
        let dense = |out: usize, inp: usize| -> Linear<B> {
            Linear::Dense(DenseLinear {
                weight: Param::from_tensor(Tensor::zeros([out, inp], (device, dtype))),
                bias: Some(Param::from_tensor(Tensor::zeros([out], (device, dtype)))),
            })
        };
        let layers = (0..config.num_layers)
            .map(|l| GlmBlock {
                input_layernorm: LayerNorm::new(h, config.layernorm_epsilon, dtype, device),
                attention: SelfAttention {
                    query_key_value: dense(3 * h, h),
                    dense: dense(h, h),
                    num_heads: config.num_attention_heads,
                    layer_id: l,
                },
                post_attention_layernorm: LayerNorm::new(
                    h,
                    config.layernorm_epsilon,
                    dtype,
                    device,
                ),
                mlp: Mlp {
                    dense_h_to_4h: dense(config.inner_size(), h),
                    dense_4h_to_h: dense(h, config.inner_size()),
                },
            })
            .collect();
        Self {
            word_embeddings: Embedding {
                weight: Param::from_tensor(Tensor::zeros([config.vocab_size, h], (device, dtype))),
            },
            layers,
            final_layernorm: LayerNorm::new(h, config.layernorm_epsilon, dtype, device),
            config: config.clone(),
            precision,
        }
    }
}

impl<B: GlmBackend> ChatGlmModel<B> {
    /// The rotary embedding of this config in this precision.
    pub fn rotary(&self) -> Rotary {
        Rotary::new(
            self.config.rotary_dim(),
            matches!(self.precision, Precision::Fp16 | Precision::Bf16),
        )
    }

    /// Shared per-forward state: rotary rows for `position_ids` [B, R, S] and the mask
    /// [B, 1, S, Sk] (true = masked) widened by `prefix_len` visible columns.
    pub fn layer_context(
        &self,
        position_ids: Tensor<B, 3, Int>,
        mask: Tensor<B, 4, Bool>,
        prefix_len: usize,
        max_position: usize,
    ) -> LayerContext<B> {
        let dtype = self.precision.dtype();
        let nh = self.config.num_attention_heads;
        let rotary = RotaryContext::new(
            &self.rotary(),
            position_ids,
            max_position + 1,
            dtype,
            nh,
            self.config.head_dim(),
        );
        // Repeated (not expanded) over the heads: every layer's fill then reads a contiguous mask.
        let mask = with_prefix_columns(mask, prefix_len).repeat_dim(1, nh);
        LayerContext {
            rotary,
            mask: Some(mask),
            dtype,
        }
    }

    /// Token embeddings: ids [B, S] → [B, S, H].
    pub fn embed(&self, input_ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.word_embeddings
            .forward(input_ids, self.precision.dtype())
    }

    /// Final LayerNorm and the tied output projection: [B, S, H] → logits [B, S, V].
    pub fn head(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        let h = self.final_layernorm.forward(hidden);
        let [b, s, d] = h.dims();
        let w = self.word_embeddings.weight.val();
        let v = w.dims()[0];
        let h = h.reshape([b * s, d]);
        let logits = if w.is_require_grad() {
            // Full fine-tuning: the tied embedding receives the output projection's gradient too.
            let dtype = h.dtype();
            h.matmul(cast_to(w, dtype).transpose())
        } else {
            // Frozen: the op keeps only the stored (f16/f32) table for the backward pass.
            quant::frozen_linear(h, w)
        };
        logits.reshape([b, s, v])
    }

    /// Full forward.
    ///
    /// - `input_ids` [B, S]
    /// - `position_ids` [B, R, S] (R = 2 with 2D positions)
    /// - `attention_mask` [B, 1, S, Sk] with Sk = cached tokens + S (true = masked), *without*
    ///   the prefix columns
    /// - `past`: prefix and/or KV cache, per layer [B, nh, P + cached, hd]
    ///
    /// Returns logits [B, S, V] and the per-layer keys/values for the next step.
    pub fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        position_ids: Tensor<B, 3, Int>,
        attention_mask: Tensor<B, 4, Bool>,
        past: Option<&Past<B>>,
    ) -> ModelOutput<B> {
        self.forward_owned(input_ids, position_ids, attention_mask, past.cloned())
    }

    /// [`Self::forward`] taking `past` by value: a cache with room ([`KvPair::with_room`]) is
    /// written in place, and otherwise each layer's old keys/values are released as soon as that
    /// layer has concatenated them, so an incremental decoding step holds one copy of the cache
    /// (plus one layer), not the old and the new cache of every layer.
    pub fn forward_owned(
        &self,
        input_ids: Tensor<B, 2, Int>,
        position_ids: Tensor<B, 3, Int>,
        attention_mask: Tensor<B, 4, Bool>,
        past: Option<Past<B>>,
    ) -> ModelOutput<B> {
        let s = input_ids.dims()[1];
        let cached = past.as_ref().map(Past::len).unwrap_or(0);
        let prefix_len = past.as_ref().map(|p| p.prefix_len).unwrap_or(0);
        let ctx = self.layer_context(position_ids, attention_mask, prefix_len, cached + s + 1);
        let mut x = self.embed(input_ids);
        let mut presents = Vec::with_capacity(self.layers.len());
        let mut past_layers = past.map(|p| p.layers.into_iter());
        for layer in &self.layers {
            let kv = past_layers.as_mut().and_then(Iterator::next);
            let (y, present) = layer.forward_owned(x, &ctx, kv);
            presents.push(present);
            x = y;
        }
        ModelOutput {
            logits: self.head(x),
            presents,
        }
    }

    /// Forward of training rows: masks and positions derived from the ids exactly as the
    /// reference does when none are given. `rows` are equal-length token id rows; `prefix` the
    /// P-Tuning keys/values (or none).
    pub fn forward_rows(
        &self,
        rows: &[Vec<u32>],
        prefix: Option<&Past<B>>,
        device: &B::Device,
    ) -> Result<ModelOutput<B>, GlmError> {
        check_ids(rows, self.config.vocab_size)?;
        let inputs = derive_inputs(rows, &self.config)?;
        let ids = ids_tensor::<B>(rows, device);
        Ok(self.forward(
            ids,
            inputs.position_tensor(device),
            inputs.mask_tensor(device),
            prefix,
        ))
    }
}

/// Every id must index a row of the embedding (an out-of-range id is a tokenizer/model mix-up).
pub fn check_ids(rows: &[Vec<u32>], vocab_size: usize) -> Result<(), GlmError> {
    for (r, row) in rows.iter().enumerate() {
        if let Some(&bad) = row.iter().find(|&&t| t as usize >= vocab_size) {
            return Err(GlmError::Invalid(format!(
                "row {r} holds token id {bad} but the model has only {vocab_size} embedding rows; the tokenizer does not belong to this model"
            )));
        }
    }
    Ok(())
}

/// Token rows → an Int tensor [B, S].
pub fn ids_tensor<B: Backend>(rows: &[Vec<u32>], device: &B::Device) -> Tensor<B, 2, Int> {
    let b = rows.len();
    let s = rows.first().map(Vec::len).unwrap_or(0);
    let flat: Vec<i64> = rows
        .iter()
        .flat_map(|r| r.iter().map(|&t| t as i64))
        .collect();
    Tensor::from_data(TensorData::new(flat, [b, s]), device)
}

/// Labels rows (−100 = ignored) → an Int tensor [B, S].
pub fn labels_tensor<B: Backend>(rows: &[Vec<i64>], device: &B::Device) -> Tensor<B, 2, Int> {
    let b = rows.len();
    let s = rows.first().map(Vec::len).unwrap_or(0);
    let flat: Vec<i64> = rows.iter().flatten().copied().collect();
    Tensor::from_data(TensorData::new(flat, [b, s]), device)
}

/// The positions the shifted loss reads: flat indices `b·S + i` of every `i < S − 1` whose
/// next label `labels[b][i + 1]` is not −100, and those labels. Only these rows of the logits
/// contribute to [`causal_lm_loss`] (prompt and padding rows have no label), so a frozen head
/// need not compute the others.
pub fn loss_rows(labels: &[Vec<i64>]) -> (Vec<i64>, Vec<i64>) {
    let s = labels.first().map(Vec::len).unwrap_or(0);
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    for (b, row) in labels.iter().enumerate() {
        for (i, &t) in row.iter().enumerate().skip(1) {
            if t != -100 {
                rows.push((b * s + i - 1) as i64);
                targets.push(t);
            }
        }
    }
    (rows, targets)
}

impl<B: GlmBackend> ChatGlmModel<B> {
    /// The shifted loss through the *frozen* tied head and its gradient, without autodiff, in
    /// one pass over the logits: for normalised hidden rows `h` [N, H] (after `final_layernorm`,
    /// one row per label, see [`loss_rows`]) and their `targets` `[N]`, returns the mean
    /// cross-entropy `[1]` (NaN when N = 0, as the reference's 0/0) and `∂(loss·scale)/∂h` `[N, H]`
    /// in `h`'s dtype.
    ///
    /// With w = scale/N: `∂/∂h Σ w·(logsumexp(h·Wᵀ) − h·W[t]) = (w·softmax(h·Wᵀ))·W − w·W[t]`, so
    /// the one-hot part is a row lookup of the embedding and the [N, V] logits are only read by
    /// max, exp (in place), sum and one scaling before the input-gradient GEMM.
    pub fn frozen_head_loss_grad(
        &self,
        h: Tensor<B, 2>,
        targets: Tensor<B, 1, Int>,
        scale: f64,
    ) -> (Tensor<B, 1>, Tensor<B, 2>) {
        let [n, _] = h.dims();
        let dtype = h.dtype();
        let stat = stat_dtype(dtype);
        let w = self.word_embeddings.weight.val();
        if n == 0 {
            let device = h.device();
            return (
                Tensor::from_data(TensorData::new(vec![f32::NAN], [1]), (&device, stat)),
                h,
            );
        }
        let logits = cast_to(quant::frozen_linear(h, w.clone()), stat); // [N, V]
        let picked = logits
            .clone()
            .gather(1, targets.clone().unsqueeze_dim::<2>(1)); // [N, 1]
        let max = logits.clone().max_dim(1); // [N, 1]
        let e = (logits - max.clone()).exp(); // in place: the logits are no longer referenced
        let z = e.clone().sum_dim(1); // [N, 1]
        let loss = (z.clone().log() + max - picked).sum() / n as f64;
        let weight = scale / n as f64;
        let p = e * (z.recip() * weight); // w·softmax, in place
        let g = if w.dtype() == p.dtype() {
            // (Wᵀ·pᵀ)ᵀ: with the long V axis as the reduction, this orientation lets gemm stream
            // W without repacking it (measured 1.45× the `g_y · W` orientation at the 130528-row
            // head); transposes are views.
            w.clone().transpose().matmul(p.transpose()).transpose()
        } else {
            // A narrower stored table (f16/bf16): the frozen op converts it tile by tile.
            Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(B::frozen_linear_grad_input(
                p.into_primitive().tensor(),
                w.clone().into_primitive().tensor(),
            )))
        };
        let onehot = cast_to(w.select(0, targets), stat) * weight;
        (loss, cast_to(g - onehot, dtype))
    }
}

/// Mean shifted cross-entropy (logits[:, :-1] predict labels[:, 1:]) over labels ≠ −100,
/// computed in f32 (f64 for an f64 model). logits `[B, S, V]`, labels `[B, S]` → scalar `[1]`.
pub fn causal_lm_loss<B: Backend>(logits: Tensor<B, 3>, labels: Tensor<B, 2, Int>) -> Tensor<B, 1> {
    let [b, s, v] = logits.dims();
    let stat = stat_dtype(logits.dtype());
    let logits = cast_to(logits.narrow(1, 0, s - 1), stat).reshape([b * (s - 1), v]);
    let labels = labels.narrow(1, 1, s - 1).reshape([b * (s - 1)]);
    let valid = labels.clone().not_equal_elem(-100);
    let safe = labels.mask_fill(valid.clone().bool_not(), 0);
    let logp = log_softmax(logits, 1);
    let picked = logp
        .gather(1, safe.unsqueeze_dim::<2>(1))
        .reshape([b * (s - 1)]);
    let validf = cast_to(valid.float(), stat);
    let total = (picked * validf.clone()).sum().neg();
    total / validf.sum()
}
