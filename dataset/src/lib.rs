//! Data side of glm-tune, independent of burn: the ChatGLM tokenizer (`tokenizer`) and the
//! `ptuning/main.py` data pipeline — JSON files (`source`) → train / eval rows (`preprocess`) as
//! plain `Vec`s, batching (`collate`) and the binary row cache (`cache`); errors in `error`.

pub mod cache;
pub mod collate;
pub mod demo;
pub mod error;
pub mod preprocess;
pub mod source;

pub mod tokenizer;
pub use tokenizer::{ChatGlmTokenizer, TokenizerError};
