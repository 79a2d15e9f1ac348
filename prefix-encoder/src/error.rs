//! `PrefixError`: prefix-encoder failures, each naming the checkpoint, both values and the fix.

use std::path::PathBuf;

/// Errors of the prefix-encoder crate.
#[derive(Debug, thiserror::Error)]
pub enum PrefixError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The checkpoint's config.json cannot be read (boxed: the model error is large and rare,
    /// and every `Result` of this crate would otherwise carry its size).
    #[error("prefix checkpoint {}: {source}", dir.display())]
    Model {
        dir: PathBuf,
        #[source]
        source: Box<glm_model::GlmError>,
    },
    /// Reading or writing tensors failed.
    #[error(transparent)]
    Checkpoint(#[from] glm_model::io::IoError),
    /// The directory is not a P-Tuning prefix checkpoint.
    #[error("{} is not a P-Tuning v2 prefix checkpoint: {reason}", dir.display())]
    NotAPrefix { dir: PathBuf, reason: String },
    /// The prefix does not fit the model/run.
    #[error("prefix checkpoint {} was trained with {what} = {checkpoint}, but this run has {what} = {run}: {fix}", dir.display())]
    Mismatch {
        dir: PathBuf,
        what: &'static str,
        checkpoint: String,
        run: String,
        fix: String,
    },
    /// A tensor is missing from the checkpoint.
    #[error("prefix checkpoint {}: tensor `{tensor}` is missing", dir.display())]
    MissingTensor { dir: PathBuf, tensor: String },
    /// A tensor has another shape than the model needs.
    #[error("prefix checkpoint {}: `{tensor}` has shape {checkpoint:?} but this model needs {expected:?}; the prefix was trained for another model or pre_seq_len", dir.display())]
    ShapeMismatch {
        dir: PathBuf,
        tensor: String,
        checkpoint: Vec<usize>,
        expected: Vec<usize>,
    },
    /// Anything else (conversions).
    #[error("{0}")]
    Invalid(String),
}
