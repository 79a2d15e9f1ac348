//! `GlmError`: everything the model crate can fail with, each naming the file/tensor and the fix.

use std::path::PathBuf;

/// Errors of the glm-model crate.
#[derive(Debug, thiserror::Error)]
pub enum GlmError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `config.json` is malformed or describes an impossible model.
    #[error("{}: {message}", path.display())]
    Config { path: PathBuf, message: String },
    /// A tensor the model needs is not in the checkpoint.
    #[error("tensor `{tensor}` is missing from the checkpoint in {} (expected shape {expected:?}); is this a ChatGLM-6B checkpoint of the same size as its config.json?", dir.display())]
    MissingTensor {
        tensor: String,
        dir: PathBuf,
        expected: Vec<usize>,
    },
    /// A checkpoint tensor has another shape than the config implies.
    #[error("tensor `{tensor}` in {}: shape {found:?} does not match the {expected:?} that config.json implies; the weights and config.json come from different models", file.display())]
    ShapeMismatch {
        tensor: String,
        file: PathBuf,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    /// The checkpoint holds tensors the model does not know.
    #[error("checkpoint in {} has {} unexpected tensor(s), e.g. `{}` (from {}); it is not a ChatGLM-6B checkpoint, or it needs a newer glm-tune", dir.display(), names.len(), names.first().map(String::as_str).unwrap_or(""), file.display())]
    UnexpectedTensors {
        dir: PathBuf,
        file: PathBuf,
        names: Vec<String>,
    },
    /// A tensor has a dtype that cannot be used where it appears.
    #[error("tensor `{tensor}` in {}: dtype {dtype} cannot be used here ({what})", file.display())]
    BadDType {
        tensor: String,
        file: PathBuf,
        dtype: String,
        what: String,
    },
    /// Checkpoint file format problem (pickle/safetensors/zip).
    #[error(transparent)]
    Checkpoint(#[from] crate::io::IoError),
    /// Invalid arguments to a model call (shapes, ids).
    #[error("{0}")]
    Invalid(String),
}
