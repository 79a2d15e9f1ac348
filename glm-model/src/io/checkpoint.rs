//! Model-directory view: finds the checkpoint files of a Hugging Face model directory
//! (`model.safetensors`, `model.safetensors.index.json` + shards, `pytorch_model.bin`,
//! `pytorch_model.bin.index.json` + shards), indexes every tensor, reads one tensor on request and
//! streams them shard by shard in file order.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use super::error::IoError;
use super::safetensors_io::SafetensorsFile;
use super::tensor::{DType, RawTensor, TensorInfo};
use super::torch_read::{TorchFile, looks_like_legacy_torch, read_up_to};

/// One file of tensors, either format.
#[derive(Debug, Clone)]
pub enum TensorFile {
    Torch(TorchFile),
    Safetensors(SafetensorsFile),
}

impl TensorFile {
    /// Open a single checkpoint file, detecting the format from its first bytes (zip → torch,
    /// otherwise safetensors; a raw pickle is reported as the legacy torch format).
    pub fn open(path: &Path) -> Result<TensorFile, IoError> {
        let f = std::fs::File::open(path).map_err(|e| IoError::io(path, e))?;
        let mut head = [0u8; 512];
        let n = read_up_to(f, &mut head).map_err(|e| IoError::io(path, e))?;
        let head = &head[..n];
        if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
            return TorchFile::open(path).map(TensorFile::Torch);
        }
        if looks_like_legacy_torch(head) {
            return Err(IoError::LegacyTorch {
                file: path.to_path_buf(),
            });
        }
        if n >= 9 && head[8] == b'{' {
            return SafetensorsFile::open(path).map(TensorFile::Safetensors);
        }
        let magic: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
        Err(IoError::UnknownFormat {
            file: path.to_path_buf(),
            magic: magic.join(" "),
        })
    }

    /// Path of the file.
    pub fn path(&self) -> &Path {
        match self {
            TensorFile::Torch(t) => t.path(),
            TensorFile::Safetensors(s) => s.path(),
        }
    }

    /// Tensors in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        match self {
            TensorFile::Torch(t) => t.tensors(),
            TensorFile::Safetensors(s) => s.tensors(),
        }
    }

    /// Metadata of one tensor.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        match self {
            TensorFile::Torch(t) => t.info(name),
            TensorFile::Safetensors(s) => s.info(name),
        }
    }

    /// Read one tensor.
    pub fn read(&self, name: &str) -> Result<RawTensor, IoError> {
        match self {
            TensorFile::Torch(t) => t.read(name),
            TensorFile::Safetensors(s) => s.read(name),
        }
    }

    /// Read every tensor in file order (small files such as prefix checkpoints).
    pub fn read_all(&self) -> Result<Vec<(String, RawTensor)>, IoError> {
        self.tensors()
            .iter()
            .map(|i| Ok((i.name.clone(), self.read(&i.name)?)))
            .collect()
    }
}

/// Which files of a model directory hold the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckpointFormat {
    /// `model.safetensors`
    Safetensors,
    /// `model.safetensors.index.json` + `model-0000N-of-0000M.safetensors`
    SafetensorsSharded,
    /// `pytorch_model.bin`
    TorchBin,
    /// `pytorch_model.bin.index.json` + `pytorch_model-0000N-of-0000M.bin`
    TorchBinSharded,
}

impl CheckpointFormat {
    /// Formats in the order `CheckpointDir::open` prefers them (as `transformers` does).
    pub const PREFERENCE: [CheckpointFormat; 4] = [
        CheckpointFormat::Safetensors,
        CheckpointFormat::SafetensorsSharded,
        CheckpointFormat::TorchBin,
        CheckpointFormat::TorchBinSharded,
    ];

    /// The file whose presence marks this format.
    pub fn file_name(self) -> &'static str {
        match self {
            CheckpointFormat::Safetensors => "model.safetensors",
            CheckpointFormat::SafetensorsSharded => "model.safetensors.index.json",
            CheckpointFormat::TorchBin => "pytorch_model.bin",
            CheckpointFormat::TorchBinSharded => "pytorch_model.bin.index.json",
        }
    }

    fn is_sharded(self) -> bool {
        matches!(
            self,
            CheckpointFormat::SafetensorsSharded | CheckpointFormat::TorchBinSharded
        )
    }
}

impl fmt::Display for CheckpointFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.file_name())
    }
}

/// An indexed model directory.
#[derive(Debug, Clone)]
pub struct CheckpointDir {
    dir: PathBuf,
    format: CheckpointFormat,
    /// The file that defines the checkpoint (single file or index).
    origin: PathBuf,
    /// Shards in file order (a single file is one shard).
    shards: Vec<TensorFile>,
    /// All tensors, shard by shard, each shard in file order.
    infos: Vec<TensorInfo>,
    /// name -> (shard, index in `infos`)
    by_name: HashMap<String, (usize, usize)>,
}

impl CheckpointDir {
    /// Formats present in `dir`, in preference order.
    pub fn available_formats(dir: &Path) -> Vec<CheckpointFormat> {
        CheckpointFormat::PREFERENCE
            .into_iter()
            .filter(|f| dir.join(f.file_name()).is_file())
            .collect()
    }

    /// Open `dir` in the preferred available format (safetensors over .bin, single over sharded).
    pub fn open(dir: &Path) -> Result<CheckpointDir, IoError> {
        match CheckpointDir::available_formats(dir).first() {
            Some(&f) => CheckpointDir::open_format(dir, f),
            None => Err(no_checkpoint(dir, None)),
        }
    }

    /// Open `dir` in a specific format.
    pub fn open_format(dir: &Path, format: CheckpointFormat) -> Result<CheckpointDir, IoError> {
        let origin = dir.join(format.file_name());
        if !origin.is_file() {
            return Err(no_checkpoint(dir, Some(format)));
        }
        let shards = if format.is_sharded() {
            open_sharded(&origin)?
        } else {
            vec![TensorFile::open(&origin)?]
        };
        let mut infos = Vec::new();
        let mut by_name: HashMap<String, (usize, usize)> = HashMap::new();
        for (s, shard) in shards.iter().enumerate() {
            for info in shard.tensors() {
                if let Some(&(other, _)) = by_name.get(&info.name) {
                    return Err(IoError::Index {
                        file: origin.clone(),
                        message: format!(
                            "tensor `{}` is stored in both {} and {}",
                            info.name,
                            shards[other].path().display(),
                            shard.path().display()
                        ),
                    });
                }
                by_name.insert(info.name.clone(), (s, infos.len()));
                infos.push(info.clone());
            }
        }
        tracing::info!(dir = %dir.display(), format = %format, shards = shards.len(), tensors = infos.len(), "opened checkpoint");
        Ok(CheckpointDir {
            dir: dir.to_path_buf(),
            format,
            origin,
            shards,
            infos,
            by_name,
        })
    }

    /// The model directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The format that was opened.
    pub fn format(&self) -> CheckpointFormat {
        self.format
    }

    /// Paths of the files holding tensors, in file order.
    pub fn files(&self) -> Vec<&Path> {
        self.shards.iter().map(TensorFile::path).collect()
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.infos.len()
    }

    /// Whether the checkpoint holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.infos.is_empty()
    }

    /// All tensors, shard by shard in file order.
    pub fn tensors(&self) -> impl Iterator<Item = &TensorInfo> {
        self.infos.iter()
    }

    /// Metadata of one tensor.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&(_, i)| &self.infos[i])
    }

    /// Whether a tensor is present.
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Read one tensor (only its bytes are read).
    pub fn read(&self, name: &str) -> Result<RawTensor, IoError> {
        match self.by_name.get(name) {
            Some(&(s, _)) => self.shards[s].read(name),
            None => Err(self.not_found(name)),
        }
    }

    /// Read one tensor, checking its dtype is one of `dtypes` and its shape equals `shape`.
    pub fn read_checked(
        &self,
        name: &str,
        dtypes: &[DType],
        shape: &[usize],
    ) -> Result<RawTensor, IoError> {
        let info = self.info(name).ok_or_else(|| self.not_found(name))?;
        if !dtypes.contains(&info.dtype) {
            let wanted: Vec<String> = dtypes.iter().map(DType::to_string).collect();
            return Err(IoError::WrongDType {
                file: info.file.clone(),
                tensor: name.to_string(),
                wanted: wanted.join(" or "),
                found: info.dtype,
            });
        }
        if info.shape != shape {
            return Err(IoError::WrongShape {
                file: info.file.clone(),
                tensor: name.to_string(),
                expected: shape.to_vec(),
                found: info.shape.clone(),
            });
        }
        self.read(name)
    }

    /// Read a floating-point tensor as f32 values (exact for f32/f16/bf16) with its shape.
    pub fn read_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), IoError> {
        let t = self.read(name)?;
        let file = self
            .info(name)
            .map(|i| i.file.clone())
            .unwrap_or_else(|| self.origin.clone());
        let v = t.to_f32_vec().map_err(|source| IoError::Convert {
            file,
            tensor: name.to_string(),
            source,
        })?;
        Ok((t.shape, v))
    }

    /// Stream every tensor, shard by shard in file order, reading one at a time: a loader can
    /// convert or quantize each tensor and drop it before the next is read.
    pub fn stream(&self) -> impl Iterator<Item = Result<(&TensorInfo, RawTensor), IoError>> + '_ {
        self.shards.iter().flat_map(|shard| {
            shard
                .tensors()
                .iter()
                .map(move |info| shard.read(&info.name).map(|t| (info, t)))
        })
    }

    fn not_found(&self, name: &str) -> IoError {
        // Point at near misses, e.g. a missing `transformer.` prefix.
        let tail = name.rsplit('.').take(3).collect::<Vec<_>>();
        let similar: Vec<&str> = self
            .infos
            .iter()
            .map(|i| i.name.as_str())
            .filter(|n| {
                n.ends_with(name)
                    || name.ends_with(n)
                    || (tail.len() == 3 && n.rsplit('.').take(3).eq(tail.iter().copied()))
            })
            .take(3)
            .collect();
        IoError::TensorNotFound {
            file: self.origin.clone(),
            tensor: name.to_string(),
            count: self.infos.len(),
            hint: if similar.is_empty() {
                String::new()
            } else {
                format!("; similar: {}", similar.join(", "))
            },
        }
    }
}

fn no_checkpoint(dir: &Path, format: Option<CheckpointFormat>) -> IoError {
    let looked = match format {
        Some(f) => f.file_name().to_string(),
        None => CheckpointFormat::PREFERENCE
            .iter()
            .map(|f| f.file_name())
            .collect::<Vec<_>>()
            .join(", "),
    };
    let found = match std::fs::read_dir(dir) {
        Ok(rd) => {
            let mut names: Vec<String> = rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            if names.is_empty() {
                "nothing".to_string()
            } else {
                names.join(", ")
            }
        }
        Err(e) => format!("cannot list it: {e}"),
    };
    IoError::NoCheckpoint {
        dir: dir.to_path_buf(),
        looked,
        found,
    }
}

/// Open the shards of an HF index (`{"metadata": {...}, "weight_map": {name: file}}`); the
/// metadata (whose `total_size` is stale in the real ChatGLM index) is ignored.
fn open_sharded(index: &Path) -> Result<Vec<TensorFile>, IoError> {
    let text = std::fs::read_to_string(index).map_err(|e| IoError::io(index, e))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| IoError::Index {
        file: index.to_path_buf(),
        message: format!("not JSON: {e}"),
    })?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| IoError::Index {
            file: index.to_path_buf(),
            message: "no `weight_map` object".into(),
        })?;
    let dir = index.parent().unwrap_or(Path::new("."));
    // file -> tensors the index puts there
    let mut by_file: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for (name, file) in map {
        let file = file.as_str().ok_or_else(|| IoError::Index {
            file: index.to_path_buf(),
            message: format!("weight_map[`{name}`] is not a file name"),
        })?;
        if file.contains('/') || file.contains('\\') || file == ".." {
            return Err(IoError::Index {
                file: index.to_path_buf(),
                message: format!("shard name `{file}` is not a plain file name"),
            });
        }
        by_file.entry(file.to_string()).or_default().push(name);
    }
    let mut shards = Vec::with_capacity(by_file.len());
    for (file, names) in by_file {
        let path = dir.join(&file);
        if !path.is_file() {
            return Err(IoError::MissingShard {
                index: index.to_path_buf(),
                shard: path,
                tensor: names[0].to_string(),
            });
        }
        let shard = TensorFile::open(&path)?;
        if let Some(missing) = names.iter().find(|n| shard.info(n).is_none()) {
            return Err(IoError::MissingFromShard {
                file: path,
                index: index.to_path_buf(),
                tensor: missing.to_string(),
            });
        }
        let extra = shard.tensors().len() - names.len().min(shard.tensors().len());
        if extra > 0 {
            tracing::warn!(shard = %path.display(), extra, "shard holds tensors that the index does not list; they are loaded too");
        }
        shards.push(shard);
    }
    Ok(shards)
}
