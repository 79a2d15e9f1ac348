//! `TokenizerError`: every way loading, training or saving a ChatGLM tokenizer can fail.
//!
//! Each variant names the file (and where it helps the byte offset, key or token) and says what to
//! do about it. Encoding and decoding themselves never fail: any `&str` is encodable and any id
//! list decodable (see `ChatGlmTokenizer::decode` for out-of-range ids).

use std::path::PathBuf;

/// Errors of the ChatGLM tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A file could not be opened, read or written.
    #[error("{}: {action}: {source}", path.display())]
    Io {
        path: PathBuf,
        /// What was being done (`cannot read`, `cannot write`, ...).
        action: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// The model directory holds neither `ice_text.model` nor `tokenizer.json`.
    #[error(
        "{}: no tokenizer found: expected `ice_text.model` (SentencePiece model of THUDM/chatglm-6b, with \
         `tokenizer_config.json`) or `tokenizer.json` (Hugging Face tokenizers format) in this directory",
        dir.display()
    )]
    NoModelFiles { dir: PathBuf },

    /// The SentencePiece model file is not a well-formed protobuf message.
    #[error(
        "{}: byte {offset}: malformed SentencePiece protobuf ({detail}); the file is truncated or not a \
         SentencePiece model — re-download `ice_text.model` (sha256 5e974d9a…f17e for THUDM/chatglm-6b)",
        path.display()
    )]
    Protobuf {
        path: PathBuf,
        offset: usize,
        detail: String,
    },

    /// The model parsed but its content cannot be used (missing pieces, unsupported options, ...).
    #[error("{}: {detail}", path.display())]
    InvalidModel { path: PathBuf, detail: String },

    /// `tokenizer_config.json` is not valid JSON or a key has an unusable value.
    #[error("{}: key {key:?}: {detail}", path.display())]
    Config {
        path: PathBuf,
        key: String,
        detail: String,
    },

    /// A token the ChatGLM wrapper needs is not in the vocabulary.
    #[error(
        "{}: the {role} token {token:?} is not in the vocabulary; a ChatGLM tokenizer needs it (add it as a \
         special token when training, or fix `{role}_token` in tokenizer_config.json)",
        path.display()
    )]
    MissingToken {
        path: PathBuf,
        token: String,
        role: &'static str,
    },

    /// The Hugging Face `tokenizer.json` could not be loaded or is not a Unigram tokenizer.
    #[error("{}: {detail}", path.display())]
    HfJson { path: PathBuf, detail: String },

    /// Training the demo tokenizer failed.
    #[error("training the demo tokenizer failed: {detail}")]
    Training { detail: String },
}

impl TokenizerError {
    pub(crate) fn io(
        path: impl Into<PathBuf>,
        action: &'static str,
        source: std::io::Error,
    ) -> Self {
        TokenizerError::Io {
            path: path.into(),
            action,
            source,
        }
    }

    pub(crate) fn invalid(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        TokenizerError::InvalidModel {
            path: path.into(),
            detail: detail.into(),
        }
    }
}
