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
///
/// A pair made by [`KvPair::with_room`] (decoding) also holds the [B, nh, capacity, hd] buffers
/// that `key`/`value` are the first Sk positions of: the next step writes its keys/values into
/// them in place. Without room the attention concatenates, which copies the whole cache per
/// layer and step (as the original's `torch.cat` does). `key` and `value` are public to read;
/// a pair with room whose fields are replaced keeps writing into its buffers, so build a new
/// pair ([`KvPair::new`]) instead.
#[derive(Debug, Clone)]
pub struct KvPair<B: Backend> {
    pub key: Tensor<B, 4>,
    pub value: Tensor<B, 4>,
    buffers: Option<(Tensor<B, 4>, Tensor<B, 4>)>,
}

impl<B: Backend> KvPair<B> {
    /// A pair of exactly these keys and values, [B, nh, Sk, hd] each.
    pub fn new(key: Tensor<B, 4>, value: Tensor<B, 4>) -> Self {
        Self {
            key,
            value,
            buffers: None,
        }
    }

    /// Sk: number of cached positions.
    pub fn len(&self) -> usize {
        self.key.dims()[2]
    }

    /// True when no position is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Positions the next steps can add in place.
    pub fn room(&self) -> usize {
        self.buffers
            .as_ref()
            .map_or(0, |(k, _)| k.dims()[2].saturating_sub(self.len()))
    }
}

impl<B: GlmBackend> KvPair<B> {
    /// The same keys and values in buffers with `extra` more positions (one copy of the cache),
    /// so that the next steps add theirs in place. On the CPU the buffers' untouched pages are
    /// not resident: memory follows the positions actually written.
    pub fn with_room(self, extra: usize) -> Self {
        let [b, nh, len, hd] = self.key.dims();
        let room = |t: Tensor<B, 4>| {
            let buf = Tensor::<B, 4>::empty([b, nh, len + extra, hd], (&t.device(), t.dtype()));
            B::write_positions(buf, 0, t)
        };
        Self::in_buffers(room(self.key), room(self.value), len)
    }

    /// The first `len` positions of these [B, nh, capacity, hd] buffers.
    fn in_buffers(key: Tensor<B, 4>, value: Tensor<B, 4>, len: usize) -> Self {
        Self {
            key: first_positions(&key, len),
            value: first_positions(&value, len),
            buffers: Some((key, value)),
        }
    }

    /// Appends k and v ([B, nh, S, hd]) to these positions: in place when the buffers have room,
    /// else by concatenation (cast to k's dtype).
    fn extend(self, k: Tensor<B, 4>, v: Tensor<B, 4>) -> Self {
        let s = k.dims()[2];
        let len = self.len();
        match self {
            KvPair {
                key,
                value,
                buffers: Some((bk, bv)),
            } if bk.dims()[2] >= len + s => {
                // The views share the buffers' storage: released first, so that the writes
                // below happen in place (a backend copies a buffer that is still shared).
                drop((key, value));
                Self::in_buffers(
                    B::write_positions(bk, len, k),
                    B::write_positions(bv, len, v),
                    len + s,
                )
            }
            p if p.is_empty() => Self::new(k, v),
            p => Self::new(
                Tensor::cat(vec![cast_to(p.key, k.dtype()), k], 2),
                Tensor::cat(vec![cast_to(p.value, v.dtype()), v], 2),
            ),
        }
    }
}

/// The view of a buffer's first `n` positions (burn's `narrow` refuses a length of 0).
fn first_positions<B: Backend>(buf: &Tensor<B, 4>, n: usize) -> Tensor<B, 4> {
    if n == 0 {
        let [b, nh, _, hd] = buf.dims();
        Tensor::empty([b, nh, 0, hd], (&buf.device(), buf.dtype()))
    } else {
        buf.clone().narrow(2, 0, n)
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

    /// [`Self::forward`] taking `past` by value: its keys/values are extended in place when it
    /// has room ([`KvPair::with_room`]), else released as soon as they are copied into this
    /// layer's concatenation, so an incremental step never holds the old and the new cache of
    /// every layer at once.
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
        let present = match past {
            Some(p) => p.extend(k, v),
            None => KvPair::new(k, v),
        };
        let (k, v) = (present.key.clone(), present.value.clone());

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

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::tensor::Distribution;

    use super::*;

    fn rand(s: usize) -> Tensor<Flex, 4> {
        Tensor::random([2, 3, s, 4], Distribution::Default, &Default::default())
    }

    fn values(t: Tensor<Flex, 4>) -> Vec<f32> {
        t.into_data().to_vec().unwrap()
    }

    /// Growth in place, past the room (concatenation again) and after new room: always the
    /// concatenation of everything appended.
    #[test]
    fn a_cache_with_room_extends_like_concatenation() {
        let (k0, v0) = (rand(5), rand(5));
        let mut pair = KvPair::new(k0.clone(), v0.clone()).with_room(2);
        assert_eq!((pair.len(), pair.room()), (5, 2));
        let (mut want_k, mut want_v) = (k0, v0);
        for (step, s) in [1, 1, 2, 1, 3].into_iter().enumerate() {
            if step == 3 {
                pair = pair.with_room(4);
            }
            let (k, v) = (rand(s), rand(s));
            want_k = Tensor::cat(vec![want_k, k.clone()], 2);
            want_v = Tensor::cat(vec![want_v, v.clone()], 2);
            pair = pair.extend(k, v);
            assert_eq!(pair.len(), want_k.dims()[2]);
            assert_eq!(
                values(pair.key.clone()),
                values(want_k.clone()),
                "step {step}"
            );
            assert_eq!(
                values(pair.value.clone()),
                values(want_v.clone()),
                "step {step}"
            );
        }
        // 5 + 1 + 1 in the first room, + 2 by concatenation, + 1 + 3 in the second room.
        assert_eq!((pair.len(), pair.room()), (13, 0));
    }

    #[test]
    fn an_empty_cache_with_room_takes_its_first_positions() {
        let empty = KvPair::new(rand(0), rand(0)).with_room(2);
        assert_eq!((empty.len(), empty.room()), (0, 2));
        let (k, v) = (rand(2), rand(2));
        let pair = empty.extend(k.clone(), v.clone());
        assert_eq!((pair.len(), pair.room()), (2, 0));
        assert_eq!(values(pair.key), values(k));
        assert_eq!(values(pair.value), values(v));
    }
}
