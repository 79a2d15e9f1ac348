//! Error type of the quant crate.

use thiserror::Error;

/// Everything that can go wrong when building, validating or reading back a quantized weight.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum QuantError {
    /// Only THUDM's two formats exist: 4-bit (two values per byte) and 8-bit.
    #[error("quantization bit width {0} is not supported: use 4 or 8 (THUDM `quantization_bit`)")]
    UnsupportedBits(u8),
    /// int4 packs two input columns per byte, so the input width must be even.
    #[error("int4 quantization needs an even number of input features, got {in_features}")]
    OddInFeatures { in_features: usize },
    /// A buffer does not have the length its declared shape implies.
    #[error("{what}: expected {expected} elements for the declared shape, got {got}")]
    LengthMismatch {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// A tensor has the wrong shape.
    #[error("{what}: expected shape {expected:?}, got {got:?}")]
    ShapeMismatch {
        what: &'static str,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    /// A weight holds an infinity or NaN, which absmax quantization cannot represent.
    #[error(
        "weight value at row {row}, column {col} is not finite ({value}); fix the checkpoint before quantizing"
    )]
    NonFinite { row: usize, col: usize, value: f32 },
    /// A stored scale is an infinity or NaN (a corrupt checkpoint).
    #[error("weight_scale of row {row} is not finite ({value}); the checkpoint is corrupt")]
    NonFiniteScale { row: usize, value: f32 },
    /// A tensor has a dtype the operation cannot use.
    #[error("{what}: unsupported dtype {dtype}")]
    DType { what: &'static str, dtype: String },
    /// Reading a tensor back from the device failed.
    #[error("{what}: reading the tensor back failed: {message}")]
    Readback { what: &'static str, message: String },
}
