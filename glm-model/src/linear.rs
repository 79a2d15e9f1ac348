//! The linear layers of a GLM block: the `quant` crate's [`Linear`] — dense (torch layout
//! `[out, in]`, trainable or frozen through the frozen-linear op) or int4/int8 quantized — so a
//! quantized base drops in without `if quantized` branches in the attention or MLP code.

pub use quant::{BiasData, DenseLinear, Linear, QuantLinear};
