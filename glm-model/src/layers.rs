//! Small building blocks with Hugging Face parameter names: `LayerNorm` (`weight`/`bias`),
//! `Embedding` (`weight`), the tanh-GELU, and dtype helpers.
//!
//! Precision rule of the reference (§3.9): LayerNorm statistics and softmax run in f32 even when
//! the model computes in f16/bf16; the result is cast back to the activation dtype.

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::activation::sigmoid;
use burn::tensor::{DType, FloatDType};

/// The dtype activations and frozen weights are kept in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 weights and activations (CPU, tests, full fine-tuning).
    #[default]
    Fp32,
    /// f16 weights and activations; LayerNorm/softmax statistics in f32 (the original's `model.half()`).
    Fp16,
    /// bf16 weights and activations; statistics in f32.
    Bf16,
    /// f64 everywhere (CPU): a numerical reference for checking the f32 path.
    Fp64,
}

impl Precision {
    /// The burn dtype of activations and frozen weights.
    pub fn dtype(self) -> DType {
        match self {
            Precision::Fp32 => DType::F32,
            Precision::Fp16 => DType::F16,
            Precision::Bf16 => DType::BF16,
            Precision::Fp64 => DType::F64,
        }
    }

    /// The burn float dtype of activations and frozen weights.
    pub fn float_dtype(self) -> FloatDType {
        match self {
            Precision::Fp32 => FloatDType::F32,
            Precision::Fp16 => FloatDType::F16,
            Precision::Bf16 => FloatDType::BF16,
            Precision::Fp64 => FloatDType::F64,
        }
    }

    /// Parse `fp32`/`fp16`/`bf16` (also `float32`, `float16`, `bfloat16`).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "fp32" | "float32" | "f32" => Some(Precision::Fp32),
            "fp16" | "float16" | "f16" | "half" => Some(Precision::Fp16),
            "bf16" | "bfloat16" => Some(Precision::Bf16),
            "fp64" | "float64" | "f64" => Some(Precision::Fp64),
            _ => None,
        }
    }
}

/// The dtype of statistics (LayerNorm, softmax, loss): f32, or f64 for an f64 model.
pub fn stat_dtype(dtype: DType) -> DType {
    if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// Cast `x` to `dtype` unless it already has it (a no-op keeps the autodiff graph small).
pub fn cast_to<B: Backend, const D: usize>(x: Tensor<B, D>, dtype: DType) -> Tensor<B, D> {
    if x.dtype() == dtype {
        x
    } else {
        x.cast(float_dtype(dtype))
    }
}

fn float_dtype(dtype: DType) -> FloatDType {
    match dtype {
        DType::F16 => FloatDType::F16,
        DType::BF16 => FloatDType::BF16,
        DType::F64 => FloatDType::F64,
        _ => FloatDType::F32,
    }
}

/// LayerNorm over the last axis with affine `weight`/`bias` (HF names), statistics in f32.
#[derive(Module, Debug)]
pub struct LayerNorm<B: Backend> {
    /// Scale γ, `[H]`.
    pub weight: Param<Tensor<B, 1>>,
    /// Shift β, `[H]`.
    pub bias: Param<Tensor<B, 1>>,
    /// ε (1e-5 for ChatGLM-6B).
    pub eps: f64,
}

impl<B: Backend> LayerNorm<B> {
    /// A LayerNorm of width `d` with γ = 1, β = 0.
    pub fn new(d: usize, eps: f64, dtype: DType, device: &B::Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::ones([d], (device, dtype))),
            bias: Param::from_tensor(Tensor::zeros([d], (device, dtype))),
            eps,
        }
    }

    /// x [..., H] → [..., H] in x's dtype.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let out_dtype = x.dtype();
        let stat = stat_dtype(out_dtype);
        let x = cast_to(x, stat);
        let mean = x.clone().mean_dim(D - 1);
        let centered = x - mean;
        let var = centered.clone().square().mean_dim(D - 1);
        let normed = centered * (var + self.eps).sqrt().recip();
        let w = cast_to(self.weight.val(), stat).unsqueeze::<D>();
        let b = cast_to(self.bias.val(), stat).unsqueeze::<D>();
        cast_to(normed * w + b, out_dtype)
    }
}

/// Token embedding table `weight` [V, H] (HF `word_embeddings.weight`).
#[derive(Module, Debug)]
pub struct Embedding<B: Backend> {
    /// [V, H]; also the output projection (tied lm_head).
    pub weight: Param<Tensor<B, 2>>,
}

impl<B: Backend> Embedding<B> {
    /// ids [B, S] → [B, S, H] in `dtype`.
    pub fn forward(&self, ids: Tensor<B, 2, Int>, dtype: DType) -> Tensor<B, 3> {
        let [b, s] = ids.dims();
        let rows = self.weight.val().select(0, ids.reshape([b * s]));
        let h = rows.dims()[1];
        cast_to(rows, dtype).reshape([b, s, h])
    }
}

/// GELU, tanh form: 0.5·u·(1 + tanh(√(2/π)·u·(1 + 0.044715·u²))) (no gating in ChatGLM).
///
/// Evaluated as u·σ(2√(2/π)·u·(1 + 0.044715·u²)), the same function (0.5·(1 + tanh z) = σ(2z)):
/// six elementwise ops instead of nine, and an exp instead of a tanh — this activation is the
/// widest tensor of a block, and each op is one more pass and one more autodiff node.
pub fn gelu_tanh<B: Backend, const D: usize>(u: Tensor<B, D>) -> Tensor<B, D> {
    const TWO_SQRT_2_OVER_PI: f64 = 2.0 * 0.7978845608028654;
    let z = u.clone().square() * (TWO_SQRT_2_OVER_PI * 0.044715) + TWO_SQRT_2_OVER_PI;
    u.clone() * sigmoid(u * z)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn layer_norm_matches_formula() {
        let dev = Default::default();
        let x = Tensor::<Flex, 2>::from_floats([[1.0, 2.0, 3.0, 6.0]], &dev);
        let ln = LayerNorm::<Flex>::new(4, 1e-5, DType::F32, &dev);
        let y: Vec<f32> = ln.forward(x).into_data().to_vec().unwrap();
        let mean = 3.0f32;
        let var = (4.0 + 1.0 + 0.0 + 9.0) / 4.0;
        for (i, v) in [1.0f32, 2.0, 3.0, 6.0].iter().enumerate() {
            assert!((y[i] - (v - mean) / (var + 1e-5f32).sqrt()).abs() < 1e-6);
        }
    }

    #[test]
    fn gelu_tanh_values() {
        let dev = Default::default();
        let x = Tensor::<Flex, 1>::from_floats([-1.0, 0.0, 0.5, 3.0], &dev);
        let y: Vec<f32> = gelu_tanh(x).into_data().to_vec().unwrap();
        let want =
            |u: f64| 0.5 * u * (1.0 + (0.7978845608028654 * u * (1.0 + 0.044715 * u * u)).tanh());
        for (i, u) in [-1.0, 0.0, 0.5, 3.0].iter().enumerate() {
            assert!((y[i] as f64 - want(*u)).abs() < 1e-6);
        }
    }
}
