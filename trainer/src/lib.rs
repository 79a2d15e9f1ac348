//! # trainer — `glm-tune run`: P-Tuning v2 / full fine-tuning of ChatGLM-6B as `ptuning/main.py`
//!
//! Wires the model, prefix, quantization and dataset crates into the original's training loop
//! (accumulation, global-norm clipping, `adamw_hf`, linear/constant/cosine schedules, per-block
//! recomputation, checkpoints that the Python original reads, exact resume) and its
//! evaluation by generation with BLEU-4/ROUGE.

pub mod bench;
pub mod chat;
pub mod chat_text;
pub mod checkpoint;
pub mod config;
pub mod device;
pub mod error;
pub mod export;
pub mod metrics;
pub mod optim;
pub mod params;
pub mod plan;
pub mod plot;
pub mod predict;
pub mod prepare;
pub mod run;
pub mod state;
pub mod step;
pub mod train;
pub mod update;

pub use error::TrainError;
