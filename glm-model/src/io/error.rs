//! [`IoError`]: every failure of checkpoint reading/writing, each message naming the file and (when
//! one is involved) the tensor, plus what to do about it.

use std::path::PathBuf;

use super::tensor::{ConvertError, DType};

/// Errors of the checkpoint I/O layer.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// The OS refused to open/read/write a file.
    #[error("{}: {source}", file.display())]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Reading one tensor's bytes failed (other than truncation).
    #[error("{}: reading tensor `{tensor}`: {source}", file.display())]
    ReadTensor {
        file: PathBuf,
        tensor: String,
        #[source]
        source: std::io::Error,
    },
    /// The zip container of a torch file cannot be parsed.
    #[error(
        "{}: not a readable zip archive ({message}); the file is truncated or corrupt — re-download or re-save it",
        file.display()
    )]
    Zip { file: PathBuf, message: String },
    /// A `torch.save` file from before PyTorch 1.6 (raw pickle stream, not a zip).
    #[error(
        "{}: legacy torch.save format (PyTorch < 1.6 or `_use_new_zipfile_serialization=False`): not supported. \
         Re-save it once in Python with `torch.save(torch.load(p, map_location=\"cpu\"), p)` or convert it to safetensors",
        file.display()
    )]
    LegacyTorch { file: PathBuf },
    /// Neither a torch zip nor a safetensors file.
    #[error(
        "{}: unknown checkpoint format (first bytes {magic}); expected a torch.save zip (.bin/.pt) or a .safetensors file",
        file.display()
    )]
    UnknownFormat { file: PathBuf, magic: String },
    /// A valid archive/pickle that is not a flat `name -> tensor` state dict.
    #[error("{}: not a state dict: {message}", file.display())]
    NotStateDict { file: PathBuf, message: String },
    /// Malformed or unsupported pickle bytecode in `data.pkl`.
    #[error("{}: data.pkl, byte {offset}: {message}", file.display())]
    Pickle {
        file: PathBuf,
        offset: usize,
        message: String,
    },
    /// `data.pkl` names a Python global outside the tensor-rebuild allowlist.
    #[error(
        "{}: data.pkl (byte {offset}) references the Python global `{module}.{name}`, which is refused: a state dict \
         must never run code. Only torch's tensor-rebuild globals are accepted (collections.OrderedDict, \
         torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter, torch.*Storage). Do not load this file \
         unless you trust its origin; a trusted file can be converted to safetensors in Python",
        file.display()
    )]
    ForbiddenGlobal {
        file: PathBuf,
        offset: usize,
        module: String,
        name: String,
    },
    /// Tensor metadata that cannot describe a valid tensor (bad strides, unsupported storage...).
    #[error("{}: tensor `{tensor}`: {message}", file.display())]
    InvalidTensor {
        file: PathBuf,
        tensor: String,
        message: String,
    },
    /// The file ends before the bytes of a tensor.
    #[error("{}: tensor `{tensor}`: file is truncated ({what}); re-download or re-save it", file.display())]
    Truncated {
        file: PathBuf,
        tensor: String,
        what: String,
    },
    /// A stored record's CRC-32 does not match the zip directory.
    #[error(
        "{}: tensor `{tensor}`: record `{record}` is corrupt (CRC-32 {found:08x}, the archive says {expected:08x}); re-download or re-save it",
        file.display()
    )]
    Corrupt {
        file: PathBuf,
        tensor: String,
        record: String,
        expected: u32,
        found: u32,
    },
    /// A storage referenced by `data.pkl` has no `data/<key>` record.
    #[error("{}: tensor `{tensor}`: storage record `{record}` is missing from the archive", file.display())]
    MissingRecord {
        file: PathBuf,
        tensor: String,
        record: String,
    },
    /// The JSON header of a safetensors file is invalid.
    #[error("{}: invalid safetensors header: {message}", file.display())]
    SafetensorsHeader { file: PathBuf, message: String },
    /// A lookup of a tensor the file/checkpoint does not hold.
    #[error("{}: tensor `{tensor}` not found ({count} tensors present{hint})", file.display())]
    TensorNotFound {
        file: PathBuf,
        tensor: String,
        count: usize,
        hint: String,
    },
    /// A shard named in an index file does not exist.
    #[error(
        "{}: the index puts tensor `{tensor}` in {}, which does not exist; the checkpoint download is incomplete",
        index.display(), shard.display()
    )]
    MissingShard {
        index: PathBuf,
        shard: PathBuf,
        tensor: String,
    },
    /// A tensor listed in an index file is not in its shard.
    #[error(
        "{}: tensor `{tensor}` is listed there by {} but the shard does not hold it; index and shards do not match",
        file.display(), index.display()
    )]
    MissingFromShard {
        file: PathBuf,
        index: PathBuf,
        tensor: String,
    },
    /// The index JSON (`*.index.json`) is malformed.
    #[error("{}: invalid index file: {message}", file.display())]
    Index { file: PathBuf, message: String },
    /// A tensor has a dtype that the caller cannot use.
    #[error("{}: tensor `{tensor}` has dtype {found}, but {wanted} is needed here", file.display())]
    WrongDType {
        file: PathBuf,
        tensor: String,
        wanted: String,
        found: DType,
    },
    /// A tensor has another shape than the caller expects.
    #[error("{}: tensor `{tensor}` has shape {found:?}, expected {expected:?}", file.display())]
    WrongShape {
        file: PathBuf,
        tensor: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    /// A conversion of a read tensor failed.
    #[error("{}: tensor `{tensor}`: {source}", file.display())]
    Convert {
        file: PathBuf,
        tensor: String,
        #[source]
        source: ConvertError,
    },
    /// A directory without any supported checkpoint file.
    #[error("{}: no checkpoint found (looked for {looked}; the directory holds: {found})", dir.display())]
    NoCheckpoint {
        dir: PathBuf,
        looked: String,
        found: String,
    },
    /// A tensor handed to a writer is invalid (length/shape mismatch, duplicate name, ...).
    #[error("{}: cannot write tensor `{tensor}`: {message}", file.display())]
    Write {
        file: PathBuf,
        tensor: String,
        message: String,
    },
}

impl IoError {
    /// Wrap an OS error for `file`.
    pub(crate) fn io(file: impl Into<PathBuf>, source: std::io::Error) -> IoError {
        IoError::Io {
            file: file.into(),
            source,
        }
    }
}
