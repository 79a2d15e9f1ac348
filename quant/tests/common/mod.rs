//! Helpers shared by the quant integration tests: a tiny deterministic RNG, random quantized
//! weights and error-bounded comparisons.
#![allow(dead_code)]

use burn::backend::flex::FlexTensor;
use burn::tensor::{DType, TensorMetadata};
use half::f16;
use quant::QuantizedWeight;

/// xorshift64* — deterministic, no dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u32(&mut self) -> u32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32
    }
    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u32() as f64 / 2f64.powi(31) - 1.0) as f32
    }
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.uniform()).collect()
    }
}

/// A quantized random weight whose rows have different magnitudes (so scales differ).
pub fn random_quantized(rng: &mut Rng, n: usize, k: usize, bits: u8) -> QuantizedWeight {
    let mut w = Vec::with_capacity(n * k);
    for r in 0..n {
        let mag = 0.01 + (r % 7) as f32 * 0.3;
        w.extend((0..k).map(|_| f16::from_f32(rng.uniform() * mag)));
    }
    QuantizedWeight::quantize(&w, n, k, bits).unwrap()
}

/// `got ≈ want` for `want[i, j] = Σ_l a[i, l] b[j, l]`, with the error bounded by
/// `2e-5 · Σ_l |a[i, l] b[j, l]| + 1e-6` (f32 accumulation of the same products).
#[allow(clippy::too_many_arguments)]
pub fn assert_dot_close(
    what: &str,
    got: &[f32],
    want: &[f32],
    a: &[f32],
    b: &[f32],
    m: usize,
    n: usize,
    k: usize,
) {
    assert_eq!(got.len(), m * n, "{what}: length");
    for i in 0..m {
        for j in 0..n {
            let mag: f64 = (0..k)
                .map(|l| (a[i * k + l] as f64 * b[j * k + l] as f64).abs())
                .sum();
            let (g, w) = (got[i * n + j] as f64, want[i * n + j] as f64);
            assert!(
                (g - w).abs() <= 2e-5 * mag + 1e-6,
                "{what}: [{i}, {j}] got {g} want {w} (Σ|ab| = {mag})"
            );
        }
    }
}

/// Element-wise closeness of two flex tensors (any float dtype), relative to the largest magnitude.
pub fn assert_tensors_close(what: &str, a: FlexTensor, b: FlexTensor, rel: f32) {
    assert_eq!(a.shape(), b.shape(), "{what}: shapes");
    assert_eq!(a.dtype(), b.dtype(), "{what}: dtypes");
    let to = |t: FlexTensor| {
        t.into_data()
            .convert_dtype(DType::F32)
            .to_vec::<f32>()
            .unwrap()
    };
    let (a, b) = (to(a), to(b));
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(
            (x - y).abs() <= rel * scale,
            "{what}: element {i}: {x} vs {y} (scale {scale})"
        );
    }
}
