//! `glm-tune export`: sharing a trained result in the formats other tools read.
//!
//! - [`convert_checkpoint`]: the tensors of a prefix (or full-model) checkpoint written again as
//!   `model.safetensors` and/or the Python-compatible `pytorch_model.bin`, with `config.json` and
//!   the tokenizer files;
//! - [`materialize_prefix`]: a `prefix_projection` prefix turned into a plain one (the
//!   [P, 2·L·H] rows computed once, `prefix_projection = false`);
//! - [`merge_prefix`]: a standalone model directory = base weights + the (materialized) prefix as
//!   `transformer.prefix_encoder.embedding.weight` + `lm_head.weight` (a copy of the tied word
//!   embedding, so Hugging Face `from_pretrained` of the original modeling code finds every key) +
//!   `config.json` with `pre_seq_len` / `prefix_projection = false` + tokenizer and code files
//!   (and the `rotary_emb.inv_freq` buffers when the base lacks them).
//!   The original Python loads it with `--pre_seq_len P` and no `--ptuning_checkpoint`.
//!
//! Every weight file is read back after writing and compared tensor by tensor (name, dtype, shape,
//! bytes). The tensors of one output are held in memory together (the writers take them at once):
//! about the size of the model for a merge.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::backend::Flex;
use burn::tensor::DType as BurnDType;
use glm_model::ChatGlmConfig;
use glm_model::io::{
    CheckpointDir, CheckpointFormat, RawTensor, TorchContainer, write_safetensors,
    write_torch_state_dict_with,
};
use prefix_encoder::checkpoint::{self as prefix_checkpoint, SaveMeta};
use prefix_encoder::{KEY_PREFIX, PrefixConfig, PrefixEncoder};

use crate::error::TrainError;

/// A weight file format to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    /// `model.safetensors` (metadata `format = pt`).
    Safetensors,
    /// `pytorch_model.bin`, a `torch.save` zip that `torch.load` reads.
    TorchBin,
}

impl WeightFormat {
    /// The file written for this format.
    pub fn file_name(self) -> &'static str {
        match self {
            WeightFormat::Safetensors => "model.safetensors",
            WeightFormat::TorchBin => "pytorch_model.bin",
        }
    }

    fn checkpoint_format(self) -> CheckpointFormat {
        match self {
            WeightFormat::Safetensors => CheckpointFormat::Safetensors,
            WeightFormat::TorchBin => CheckpointFormat::TorchBin,
        }
    }
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportReport {
    /// The output directory.
    pub dir: PathBuf,
    /// Weight files written (each read back and checked).
    pub weight_files: Vec<PathBuf>,
    /// Other files written or copied (config.json, tokenizer, code).
    pub other_files: Vec<PathBuf>,
    /// Tensors per weight file.
    pub tensors: usize,
}

/// Files copied next to the weights: tokenizer files and (for a model directory) the original's
/// code files; `config.json` is handled by each export itself.
fn is_companion_file(name: &str) -> bool {
    matches!(
        name,
        "tokenizer.json"
            | "ice_text.model"
            | "tokenizer_config.json"
            | "special_tokens_map.json"
            | "generation_config.json"
    ) || name.ends_with(".py")
}

/// Refuse an output directory that is the source or already holds files.
fn prepare_out(out: &Path, sources: &[&Path]) -> Result<(), TrainError> {
    for src in sources {
        if let (Ok(a), Ok(b)) = (out.canonicalize(), src.canonicalize())
            && a == b
        {
            return Err(TrainError::Invalid(format!(
                "--out {} is the source directory; choose a new directory",
                out.display()
            )));
        }
    }
    if let Ok(mut entries) = std::fs::read_dir(out)
        && entries.next().is_some()
    {
        return Err(TrainError::Invalid(format!(
            "--out {} already exists and is not empty; choose a new directory (exports never overwrite)",
            out.display()
        )));
    }
    std::fs::create_dir_all(out).map_err(|e| TrainError::io(out, e))
}

/// Copy the companion files of `src` (and `config.json` when `with_config`) into `out`.
fn copy_companions(src: &Path, out: &Path, with_config: bool) -> Result<Vec<PathBuf>, TrainError> {
    let mut copied = Vec::new();
    let entries = std::fs::read_dir(src).map_err(|e| TrainError::io(src, e))?;
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        if is_companion_file(&name) || (with_config && name == "config.json") {
            let to = out.join(&name);
            std::fs::copy(src.join(&name), &to).map_err(|e| TrainError::io(&to, e))?;
            copied.push(to);
        }
    }
    Ok(copied)
}

/// Write `tensors` in every format of `formats` into `out`, then read each file back and check
/// it holds exactly these tensors.
pub fn write_weights(
    out: &Path,
    tensors: &[(String, RawTensor)],
    formats: &[WeightFormat],
    container: TorchContainer,
) -> Result<Vec<PathBuf>, TrainError> {
    let refs: Vec<(&str, &RawTensor)> = tensors.iter().map(|(n, r)| (n.as_str(), r)).collect();
    let mut files = Vec::new();
    for &format in formats {
        let path = out.join(format.file_name());
        match format {
            WeightFormat::Safetensors => {
                let mut meta = BTreeMap::new();
                meta.insert("format".to_string(), "pt".to_string());
                write_safetensors(&path, &refs, &meta)?;
            }
            WeightFormat::TorchBin => write_torch_state_dict_with(&path, &refs, container)?,
        }
        verify_file(out, format, tensors)?;
        files.push(path);
    }
    Ok(files)
}

/// Read the `format` file of `dir` back and compare it with `expected`.
pub fn verify_file(
    dir: &Path,
    format: WeightFormat,
    expected: &[(String, RawTensor)],
) -> Result<(), TrainError> {
    let ckpt = CheckpointDir::open_format(dir, format.checkpoint_format())?;
    let file = dir.join(format.file_name());
    if ckpt.len() != expected.len() {
        return Err(TrainError::Internal(format!(
            "{}: read back {} tensors, wrote {}",
            file.display(),
            ckpt.len(),
            expected.len()
        )));
    }
    for (name, raw) in expected {
        let back = ckpt.read(name)?;
        if back != *raw {
            return Err(TrainError::Internal(format!(
                "{}: `{name}` reads back different from what was written",
                file.display()
            )));
        }
    }
    Ok(())
}

/// Every tensor of the checkpoint directory `src` (its preferred weight format), in file order.
pub fn read_all(src: &Path) -> Result<Vec<(String, RawTensor)>, TrainError> {
    let ckpt = CheckpointDir::open(src)?;
    let mut out = Vec::with_capacity(ckpt.len());
    for item in ckpt.stream() {
        let (info, raw) = item?;
        out.push((info.name.clone(), raw));
    }
    Ok(out)
}

/// Write the tensors of checkpoint `src` as `formats` into the new directory `out`, with its
/// `config.json` and tokenizer files (training state — optimizer, trainer_state.json — is left
/// behind). The torch file is a plain `dict`, as the original Trainer writes checkpoints.
pub fn convert_checkpoint(
    src: &Path,
    out: &Path,
    formats: &[WeightFormat],
) -> Result<ExportReport, TrainError> {
    let tensors = read_all(src)?;
    prepare_out(out, &[src])?;
    let weight_files = write_weights(out, &tensors, formats, TorchContainer::Dict)?;
    let other_files = copy_companions(src, out, true)?;
    Ok(ExportReport {
        dir: out.to_path_buf(),
        weight_files,
        other_files,
        tensors: tensors.len(),
    })
}

/// The rows [P, 2·L·H] of `encoder` (the projection MLP applied when it has one) as f32.
fn encoder_rows(encoder: &PrefixEncoder<Flex>) -> Result<RawTensor, TrainError> {
    let rows = encoder.rows().cast(BurnDType::F32);
    let shape = rows.dims().to_vec();
    let values: Vec<f32> = rows
        .into_data()
        .to_vec()
        .map_err(|e| TrainError::Internal(format!("prefix rows: {e:?}")))?;
    RawTensor::from_f32(shape, &values)
        .map_err(|e| TrainError::Internal(format!("prefix rows: {e}")))
}

/// Write the prefix of checkpoint `src` as a plain prefix (`prefix_projection = false`) into
/// `out`: both weight formats, `config.json` (the checkpoint's, with the projection off) and the
/// tokenizer files. A prefix without projection is written unchanged (with a warning).
pub fn materialize_prefix(src: &Path, out: &Path) -> Result<ExportReport, TrainError> {
    let info = prefix_checkpoint::read_info(src)?;
    if !info.prefix_projection {
        tracing::warn!(
            "{} has no prefix projection: the exported prefix is the same plain prefix",
            src.display()
        );
    }
    let device = Default::default();
    let (encoder, info) = prefix_checkpoint::load::<Flex>(src, &info.config, None, &device)?;
    prepare_out(out, &[src])?;
    let meta = SaveMeta {
        quantization_bit: info.quantization_bit,
        tokenizer_fingerprint: info.tokenizer_fingerprint.clone(),
    };
    prefix_checkpoint::export_materialized(out, &encoder, &info.config, &meta)?;
    let expected = vec![(
        format!("{KEY_PREFIX}embedding.weight"),
        encoder_rows(&encoder)?,
    )];
    verify_file(out, WeightFormat::Safetensors, &expected)?;
    verify_file(out, WeightFormat::TorchBin, &expected)?;
    let mut other_files = vec![out.join("config.json")];
    other_files.extend(copy_companions(src, out, false)?);
    Ok(ExportReport {
        dir: out.to_path_buf(),
        weight_files: vec![
            out.join(WeightFormat::TorchBin.file_name()),
            out.join(WeightFormat::Safetensors.file_name()),
        ],
        other_files,
        tensors: 1,
    })
}

/// Merge the base model `base_dir` and the prefix checkpoint `prefix_dir` into the new
/// standalone model directory `out` (see the module documentation). The torch file is an
/// `OrderedDict`, as `torch.save(model.state_dict())` writes.
pub fn merge_prefix(
    base_dir: &Path,
    prefix_dir: &Path,
    out: &Path,
    formats: &[WeightFormat],
) -> Result<ExportReport, TrainError> {
    let base = ChatGlmConfig::from_path(base_dir)?;
    let (encoder, info) =
        prefix_checkpoint::load::<Flex>(prefix_dir, &base, None, &Default::default())?;
    let rows = encoder_rows(&encoder)?;
    let embedding_key = "transformer.word_embeddings.weight";
    let prefix_key = format!("{KEY_PREFIX}embedding.weight");
    let mut tensors = Vec::new();
    let mut embedding = None;
    for (name, raw) in read_all(base_dir)? {
        if name == "lm_head.weight" {
            continue;
        }
        if name.starts_with(KEY_PREFIX) {
            tracing::warn!(
                "{}: dropping its own `{name}` (replaced by the prefix of {})",
                base_dir.display(),
                prefix_dir.display()
            );
            continue;
        }
        if name == embedding_key {
            embedding = Some(raw.clone());
        }
        tensors.push((name, raw));
    }
    let embedding = embedding.ok_or_else(|| {
        TrainError::Invalid(format!(
            "{}: no `{embedding_key}` in the base model",
            base_dir.display()
        ))
    })?;
    add_missing_inv_freq(&mut tensors, &base, embedding.dtype)?;
    tensors.push((prefix_key, rows));
    tensors.push(("lm_head.weight".to_string(), embedding));
    prepare_out(out, &[base_dir, prefix_dir])?;
    let weight_files = write_weights(out, &tensors, formats, TorchContainer::OrderedDict)?;
    // The merged config: the base's (its quantization_bit, never the prefix run's, which
    // describes on-the-fly quantization of an fp16 base), plus the prefix settings.
    let plain = PrefixConfig::for_model(&base, info.pre_seq_len, false);
    let meta = SaveMeta {
        quantization_bit: None,
        tokenizer_fingerprint: info.tokenizer_fingerprint.clone(),
    };
    prefix_checkpoint::write_config(out, &base, &plain, &meta)?;
    let mut other_files = vec![out.join("config.json")];
    other_files.extend(copy_companions(base_dir, out, false)?);
    Ok(ExportReport {
        dir: out.to_path_buf(),
        weight_files,
        other_files,
        tensors: tensors.len(),
    })
}

/// Add `transformer.layers.{l}.attention.rotary_emb.inv_freq` where the base lacks it (models
/// written by glm-tune omit this buffer; the original's state dict has it, so `from_pretrained`
/// would list it as missing). Values as the original computes them, `1 / 10000^(2i/dim)` with
/// dim = the rotary width, stored in the dtype of the word embedding (f16 for ChatGLM-6B);
/// the original ignores them on load and recomputes.
fn add_missing_inv_freq(
    tensors: &mut Vec<(String, RawTensor)>,
    base: &ChatGlmConfig,
    dtype: glm_model::io::DType,
) -> Result<(), TrainError> {
    let dim = base.rotary_dim();
    let values: Vec<f32> = (0..dim / 2)
        .map(|i| (1.0 / 10000f64.powf((2 * i) as f64 / dim as f64)) as f32)
        .collect();
    let raw = match dtype {
        glm_model::io::DType::F16 => RawTensor::from_f16(
            vec![dim / 2],
            &values
                .iter()
                .map(|&x| half::f16::from_f32(x))
                .collect::<Vec<_>>(),
        ),
        _ => RawTensor::from_f32(vec![dim / 2], &values),
    }
    .map_err(|e| TrainError::Internal(format!("inv_freq: {e}")))?;
    for l in 0..base.num_layers {
        let name = format!("transformer.layers.{l}.attention.rotary_emb.inv_freq");
        if !tensors.iter().any(|(n, _)| *n == name) {
            tensors.push((name, raw.clone()));
        }
    }
    Ok(())
}
