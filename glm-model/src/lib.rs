//! # glm-model — ChatGLM-6B in burn
//!
//! The ChatGLM-6B network (GLM blocks with 2D rotary, prefix-LM mask, α·LN residuals), generic
//! over the burn backend, exact to THUDM's `modeling_chatglm.py`, loading the real Hugging Face
//! checkpoints (`pytorch_model*.bin`, `model*.safetensors`, THUDM's int4/int8 layout).
//!
//! Module and field names follow the Hugging Face parameter names (`word_embeddings`,
//! `layers.{i}.attention.query_key_value`, `mlp.dense_h_to_4h`, ...) so weight loading is a
//! near-identity map.

pub mod backend;
pub mod beam;
pub mod block;
pub mod config;
pub mod error;
pub mod generate;
pub mod init;
pub mod io;
pub mod layers;
pub mod linear;
pub mod loader;
pub mod masks;
pub mod model;
pub mod params;
pub mod rotary;

pub use backend::GlmBackend;
pub use block::{GlmBlock, KvPair, LayerContext};
pub use config::ChatGlmConfig;
pub use error::GlmError;
pub use layers::Precision;
pub use model::{ChatGlmModel, ModelOutput, Past, causal_lm_loss, ids_tensor, labels_tensor};
