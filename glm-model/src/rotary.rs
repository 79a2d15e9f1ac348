//! 2D rotary position embedding of ChatGLM-6B and its exact rounding.
//!
//! `inv_freq[i] = f16(1 / 10000^(2i/d))` is rounded to f16 at construction in the reference, and
//! `model.float()` keeps the rounded values — so even the fp32 model uses f16-rounded
//! frequencies. In fp32 mode the angles `t·inv_freq` and cos/sin are then computed in f32; in
//! the f16 model `t`, the angle and cos/sin are each rounded to f16 as well.
//!
//! With 2D positions, channels `0..d` of each head rotate with position row 0 ("position") and
//! channels `d..2d` with row 1 ("block position"), where d = head_dim/2; within each half the
//! pairs are (j, j + d/2) ("rotate half", GPT-NeoX convention).

use burn::prelude::*;
use burn::tensor::DType;
use half::f16;

use crate::layers::cast_to;

/// Frequencies and table precision of one rotary embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct Rotary {
    inv_freq: Vec<f32>,
    half_tables: bool,
}

impl Rotary {
    /// Rotary embedding over `dim` channels (`dim` even). `half_tables` reproduces the f16
    /// model's rounding of `t`, the angle and cos/sin.
    pub fn new(dim: usize, half_tables: bool) -> Self {
        let inv_freq = (0..dim / 2)
            .map(|i| {
                let exact = 1.0f32 / 10000f32.powf((2 * i) as f32 / dim as f32);
                f16::from_f32(exact).to_f32()
            })
            .collect();
        Self {
            inv_freq,
            half_tables,
        }
    }

    /// The f16-rounded inverse frequencies (length dim/2).
    pub fn inv_freq(&self) -> &[f32] {
        &self.inv_freq
    }

    /// Rotated channels per half.
    pub fn dim(&self) -> usize {
        2 * self.inv_freq.len()
    }

    /// cos and sin tables [n, dim] for positions 0..n (`emb = concat(freqs, freqs)`).
    pub fn tables(&self, n: usize) -> (Vec<f32>, Vec<f32>) {
        let d = self.dim();
        let half = self.inv_freq.len();
        let mut cos = vec![0f32; n * d];
        let mut sin = vec![0f32; n * d];
        for t in 0..n {
            for (i, &f) in self.inv_freq.iter().enumerate() {
                let (c, s) = if self.half_tables {
                    // f16 model: t is an f16 arange, the product and cos/sin are rounded to f16.
                    let tt = f16::from_f32(t as f32).to_f32();
                    let angle = f16::from_f32(tt * f).to_f32();
                    (
                        f16::from_f32(angle.cos()).to_f32(),
                        f16::from_f32(angle.sin()).to_f32(),
                    )
                } else {
                    let angle = t as f32 * f;
                    (angle.cos(), angle.sin())
                };
                cos[t * d + i] = c;
                cos[t * d + i + half] = c;
                sin[t * d + i] = s;
                sin[t * d + i + half] = s;
            }
        }
        (cos, sin)
    }

    /// Gather the tables for `positions` [B, S] → cos, sin [B, S, 1, dim] (broadcast over heads),
    /// in `dtype`. `n` must exceed every position id.
    pub fn gather<B: Backend>(
        &self,
        positions: Tensor<B, 2, Int>,
        n: usize,
        dtype: DType,
    ) -> RotaryRows<B> {
        let device = positions.device();
        let [b, s] = positions.dims();
        let d = self.dim();
        let (cos, sin) = self.tables(n);
        let cos = Tensor::<B, 2>::from_data(TensorData::new(cos, [n, d]), &device);
        let sin = Tensor::<B, 2>::from_data(TensorData::new(sin, [n, d]), &device);
        let idx = positions.reshape([b * s]);
        let cos = cos.select(0, idx.clone()).reshape([b, s, 1, d]);
        let sin = sin.select(0, idx).reshape([b, s, 1, d]);
        RotaryRows {
            cos: cast_to(cos, dtype),
            sin: cast_to(sin, dtype),
        }
    }
}

/// cos/sin rows for one position row, [B, S, 1, dim].
#[derive(Debug, Clone)]
pub struct RotaryRows<B: Backend> {
    pub cos: Tensor<B, 4>,
    pub sin: Tensor<B, 4>,
}

impl<B: Backend> RotaryRows<B> {
    /// Rotate x [B, S, nh, dim]: y_j = x_j·cos_j − x_{j+d/2}·sin_j, y_{j+d/2} = x_{j+d/2}·cos_j + x_j·sin_j.
    pub fn apply(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let d = x.dims()[3];
        let x1 = x.clone().narrow(3, 0, d / 2);
        let x2 = x.clone().narrow(3, d / 2, d / 2);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
        x * self.cos.clone() + rotated * self.sin.clone()
    }
}

/// The rotary factors of one forward pass, laid out for the `[q | k]` channels of the fused QKV
/// output: one row per (batch row, position, head), `[B·S·nh, 2·hd]`.
///
/// The rotation of every d-channel block (block i uses position row i) is then three contiguous
/// elementwise ops shared by queries and keys, `y = x·cos + swap(x)·sin`, where `swap`
/// exchanges the two halves of each block and `sin` carries rotate-half's sign (−sin on the first
/// half): `(−x₂)·sin` and `x₂·(−sin)` are the same float, so this is bit-identical to
/// `x·cos + cat(−x₂, x₁)·sin`. Built once per forward and shared by all layers (the per-call
/// narrow/neg/cat of strided views and the broadcast over heads were a large part of a
/// block's non-GEMM time).
#[derive(Debug, Clone)]
pub struct RotaryContext<B: Backend> {
    /// [B·S·nh, 2·hd]: cos of each channel's angle, for q then k.
    pub cos: Tensor<B, 2>,
    /// [B·S·nh, 2·hd]: ∓sin (negative on the first half of every block), for q then k.
    pub sin: Tensor<B, 2>,
    /// d: channels per position row.
    pub dim: usize,
}

impl<B: Backend> RotaryContext<B> {
    /// Build from position ids [B, R, S] (R = 2 for 2D, 1 otherwise) for `num_heads` heads of
    /// `head_dim` channels; `n` exceeds every id. The R blocks of d channels must cover the head
    /// (R·d = hd, true for every valid ChatGLM config).
    pub fn new(
        rotary: &Rotary,
        position_ids: Tensor<B, 3, Int>,
        n: usize,
        dtype: DType,
        num_heads: usize,
        head_dim: usize,
    ) -> Self {
        let device = position_ids.device();
        let [b, r, s] = position_ids.dims();
        let d = rotary.dim();
        debug_assert_eq!(r * d, head_dim, "rotary blocks must cover the head");
        let (cos, mut sin) = rotary.tables(n);
        for row in sin.chunks_mut(d) {
            row[..d / 2].iter_mut().for_each(|v| *v = -*v);
        }
        let cos = Tensor::<B, 2>::from_data(TensorData::new(cos, [n, d]), &device);
        let sin = Tensor::<B, 2>::from_data(TensorData::new(sin, [n, d]), &device);
        let mut cos_parts = Vec::with_capacity(r);
        let mut sin_parts = Vec::with_capacity(r);
        for i in 0..r {
            let idx = position_ids.clone().narrow(1, i, 1).reshape([b * s]);
            cos_parts.push(cos.clone().select(0, idx.clone()));
            sin_parts.push(sin.clone().select(0, idx));
        }
        // [B·S, hd] → q and k side by side → one copy per head.
        let widen = |parts: Vec<Tensor<B, 2>>| {
            let head = Tensor::cat(parts, 1);
            let qk = Tensor::cat(vec![head.clone(), head], 1);
            cast_to(
                qk.unsqueeze_dim::<3>(1)
                    .repeat_dim(1, num_heads)
                    .reshape([b * s * num_heads, 2 * head_dim]),
                dtype,
            )
        };
        Self {
            cos: widen(cos_parts),
            sin: widen(sin_parts),
            dim: d,
        }
    }

    /// Rotate the query and key channels: `qk` [B·S·nh, 2·hd] (any layout) → [B·S·nh, 2·hd].
    pub fn apply_qk(&self, qk: Tensor<B, 2>) -> Tensor<B, 2> {
        let [rows, width] = qk.dims();
        let d = self.dim;
        // One contiguous copy, viewed as [blocks, 2 halves, d/2] for the swap.
        let x = qk.reshape([rows * width / d, 2, d / 2]);
        let swapped = Tensor::cat(
            vec![x.clone().narrow(1, 1, 1), x.clone().narrow(1, 0, 1)],
            1,
        )
        .reshape([rows, width]);
        x.reshape([rows, width]) * self.cos.clone() + swapped * self.sin.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inv_freq_is_f16_rounded() {
        let r = Rotary::new(8, false);
        assert_eq!(
            r.inv_freq(),
            &[1.0, 0.099_975_586, 0.010_002_136, 0.001_000_404_4]
        );
    }

    #[test]
    fn half_tables_round_angles() {
        let r = Rotary::new(64, true);
        let (cos, _) = r.tables(1001);
        // t = 1000 at frequency 1: the f16 angle grid there is 0.5 rad.
        let angle = f16::from_f32(1000.0).to_f32();
        assert_eq!(cos[1000 * 64], f16::from_f32(angle.cos()).to_f32());
    }
}
