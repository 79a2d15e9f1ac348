//! Weight-only int4/int8 quantization of ChatGLM-6B linear layers, bit-exact with THUDM's
//! `quantization.py`, as a burn backend extension with fast CPU kernels and input-only gradients.
//!
//! - [`format`](mod@format): the packed format ([`QuantizedWeight`]) — quantize, pack, unpack, dequantize.
//! - [`QuantBackend`]: `quant_linear` / `frozen_linear` ops and their input gradients, implemented
//!   for `Flex` ([`flex`]), `Autodiff<B, C>` ([`autodiff`]) and, with the `cuda` or `vulkan` feature,
//!   burn's CubeCL backends (`cube`).
//! - [`generic`]: the same ops written with burn tensor ops, usable by any backend.
//! - [`kernels`]: slice-level CPU kernels (AVX2 + scalar fallback) and the reference path.
//! - [`QuantLinear`], [`DenseLinear`], [`Linear`]: the modules the model is built from.

pub mod autodiff;
pub mod backend;
#[cfg(any(feature = "cuda", feature = "vulkan"))]
pub mod cube;
mod error;
pub mod flex;
pub mod format;
pub mod generic;
pub mod kernels;
pub mod linear;

pub use backend::{QuantBackend, frozen_linear, quant_linear};
pub use error::QuantError;
pub use format::QuantizedWeight;
pub use linear::{BiasData, DenseLinear, Linear, QuantLinear};
