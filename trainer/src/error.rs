//! `TrainError`: failures of a run, each saying what to do.

use std::path::PathBuf;

/// Errors of the trainer crate.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Model(#[from] glm_model::GlmError),
    #[error(transparent)]
    Checkpoint(#[from] glm_model::io::IoError),
    #[error(transparent)]
    Prefix(#[from] prefix_encoder::PrefixError),
    #[error(transparent)]
    Data(#[from] dataset::error::DataError),
    #[error(transparent)]
    Tokenizer(#[from] dataset::tokenizer::TokenizerError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigErrors),
    /// A non-finite loss or gradient norm under `nan_policy = "stop"`.
    #[error(
        "step {step}: the {what} is {value}; training stopped (the last complete checkpoint is kept). Try a lower learning_rate, `precision = \"fp32\"`, or `nan_policy = \"skip\"` to skip such steps"
    )]
    NonFinite {
        step: u64,
        what: &'static str,
        value: f64,
    },
    /// The user pressed Ctrl-C.
    #[error(
        "interrupted at step {step}; nothing half-written was left behind. Resume with: {resume}"
    )]
    Interrupted { step: u64, resume: String },
    /// A checkpoint to resume from is unusable.
    #[error("cannot resume from {}: {reason}", path.display())]
    Resume { path: PathBuf, reason: String },
    /// The requested device cannot be used.
    #[error("{0}")]
    Device(String),
    /// Invalid combination of settings discovered at run time.
    #[error("{0}")]
    Invalid(String),
    /// A bug: an invariant of the trainer did not hold.
    #[error("internal error: {0}")]
    Internal(String),
}

impl TrainError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.into(),
            source,
        }
    }
}
