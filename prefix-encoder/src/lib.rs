//! # prefix-encoder — P-Tuning v2 for a frozen GLM
//!
//! Trainable virtual keys/values in every layer of a frozen ChatGLM-6B: the `PrefixEncoder`
//! module (with or without the projection MLP), the conversion of its output into per-layer past
//! keys/values in the original's exact order, and prefix checkpoints that the Python original
//! reads and writes (`pytorch_model.bin` with `transformer.prefix_encoder.*` keys).

pub mod checkpoint;
pub mod encoder;
pub mod error;

pub use checkpoint::{KEY_PREFIX, PrefixCheckpointInfo, SaveMeta, base_fingerprint};
pub use encoder::{PrefixConfig, PrefixEncoder};
pub use error::PrefixError;
