//! One GLM block: self-attention with fused per-head QKV, 2D rotary, the (layer+1) scaling trick,
//! −10000 mask fill and f32 softmax; DeepNorm-style residuals on the *normalised* input (α·LN(x));
//! tanh-GELU MLP.

use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::activation::softmax;

use crate::GlmBackend;
use crate::config::ALPHA;
use crate::layers::{LayerNorm, cast_to, gelu_tanh, stat_dtype};
use crate::linear::Linear;
use crate::rotary::RotaryContext;

/// Keys and values of one layer, [B, nh, Sk, hd] each (prefix and cached tokens first).
#[derive(Debug, Clone)]
pub struct KvPair<B: Backend> {
    pub key: Tensor<B, 4>,
    pub value: Tensor<B, 4>,
}

impl<B: Backend> KvPair<B> {
    /// Sk: number of cached positions.
    pub fn len(&self) -> usize {
        self.key.dims()[2]
    }
    /// True when no position is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What every layer of one forward pass shares.
#[derive(Debug, Clone)]
pub struct LayerContext<B: Backend> {
    /// cos/sin rows for the query positions.
    pub rotary: RotaryContext<B>,
    /// [B, nh, S, Sk_total] (true = masked), already including prefix columns and repeated
    /// over the heads (a contiguous mask keeps the fill on its fast path); `None` when nothing
    /// is masked (the reference skips the fill then).
    pub mask: Option<Tensor<B, 4, Bool>>,
    /// Activation dtype.
    pub dtype: DType,
}

/// `attention.query_key_value` + `attention.dense`.
#[derive(Module, Debug)]
pub struct SelfAttention<B: Backend> {
    /// [3H, H]; output index o = h·3hd + t·hd + d (t = 0 query, 1 key, 2 value) — per head, not Q|K|V.
    pub query_key_value: Linear<B>,
    /// [H, H]; input index h·hd + d.
    pub dense: Linear<B>,
    /// nh.
    pub num_heads: usize,
    /// l (0-based); the scores are divided by √hd·(l+1) before the fill and multiplied back after.
    pub layer_id: usize,
}

impl<B: GlmBackend> SelfAttention<B> {
    /// a [B, S, H] (the LayerNorm output) → ([B, S, H], this layer's keys/values incl. `past`).
    pub fn forward(
        &self,
        a: Tensor<B, 3>,
        ctx: &LayerContext<B>,
        past: Option<&KvPair<B>>,
    ) -> (Tensor<B, 3>, KvPair<B>) {
        self.forward_owned(a, ctx, past.cloned())
    }

    /// [`Self::forward`] taking `past` by value: its keys/values are released as soon as they
    /// are copied into this layer's concatenation, so an incremental step never holds the old
    /// and the new cache of every layer at once.
    pub fn forward_owned(
        &self,
        a: Tensor<B, 3>,
        ctx: &LayerContext<B>,
        past: Option<KvPair<B>>,
    ) -> (Tensor<B, 3>, KvPair<B>) {
        let [b, s, h] = a.dims();
        let nh = self.num_heads;
        let hd = h / nh;
        // Per head the fused output is [q | k | v] (hd each): rotate q and k in one go.
        let qkv = self
            .query_key_value
            .forward(a)
            .reshape([b * s * nh, 3 * hd]);
        let qk = ctx.rotary.apply_qk(qkv.clone().narrow(1, 0, 2 * hd));
        let heads = |t: Tensor<B, 2>| t.reshape([b, s, nh, hd]).swap_dims(1, 2); // [B, nh, S, hd]
        let q = heads(qk.clone().narrow(1, 0, hd));
        let k = heads(qk.narrow(1, hd, hd));
        let v = heads(qkv.narrow(1, 2 * hd, hd));
        // Past keys (P-Tuning prefix, KV cache) are used as stored: never rotated again.
        let (k, v) = match past {
            Some(p) if !p.is_empty() => (
                Tensor::cat(vec![cast_to(p.key, k.dtype()), k], 2),
                Tensor::cat(vec![cast_to(p.value, v.dtype()), v], 2),
            ),
            _ => (k, v),
        };
        let present = KvPair {
            key: k.clone(),
            value: v.clone(),
        };

        let coeff = (self.layer_id + 1) as f64;
        let q = q.div_scalar((hd as f64).sqrt() * coeff);
        let mut scores = q.matmul(k.swap_dims(2, 3)); // [B, nh, S, Sk]
        if let Some(mask) = &ctx.mask {
            scores = scores.mask_fill(mask.clone(), -10000.0);
        }
        let scores = cast_to(scores, stat_dtype(ctx.dtype)) * coeff;
        let probs = cast_to(softmax(scores, 3), ctx.dtype);
        let out = probs.matmul(v).swap_dims(1, 2).reshape([b, s, h]);
        (self.dense.forward(out), present)
    }
}

/// `mlp.dense_h_to_4h` → tanh-GELU → `mlp.dense_4h_to_h` (no gating despite the class name GLU).
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// [4H, H].
    pub dense_h_to_4h: Linear<B>,
    /// [H, 4H].
    pub dense_4h_to_h: Linear<B>,
}

impl<B: GlmBackend> Mlp<B> {
    /// z [B, S, H] → [B, S, H].
    pub fn forward(&self, z: Tensor<B, 3>) -> Tensor<B, 3> {
        self.dense_4h_to_h
            .forward(gelu_tanh(self.dense_h_to_4h.forward(z)))
    }
}

/// `layers.{i}`.
#[derive(Module, Debug)]
pub struct GlmBlock<B: Backend> {
    pub input_layernorm: LayerNorm<B>,
    pub attention: SelfAttention<B>,
    pub post_attention_layernorm: LayerNorm<B>,
    pub mlp: Mlp<B>,
}

impl<B: GlmBackend> GlmBlock<B> {
    /// x [B, S, H] → ([B, S, H], keys/values of this layer).
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        ctx: &LayerContext<B>,
        past: Option<&KvPair<B>>,
    ) -> (Tensor<B, 3>, KvPair<B>) {
        self.forward_owned(x, ctx, past.cloned())
    }

    /// [`Self::forward`] taking `past` by value (see [`SelfAttention::forward_owned`]).
    pub fn forward_owned(
        &self,
        x: Tensor<B, 3>,
        ctx: &LayerContext<B>,
        past: Option<KvPair<B>>,
    ) -> (Tensor<B, 3>, KvPair<B>) {
        let a = self.input_layernorm.forward(x);
        let (attn, present) = self.attention.forward_owned(a.clone(), ctx, past);
        // Residuals add α·LN(x), not x (GLM-130B DeepNorm), with α = √56 for every config.
        let h1 = a * ALPHA + attn;
        let z = self.post_attention_layernorm.forward(h1);
        let mlp = self.mlp.forward(z.clone());
        (z * ALPHA + mlp, present)
    }
}
