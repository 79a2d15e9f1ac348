//! Run checkpoints `output_dir/checkpoint-N/`: the trained weights in the Python-compatible
//! layout (prefix-only `pytorch_model.bin` + `model.safetensors` + `config.json`, or the whole
//! model for full fine-tuning), the optimizer moments, scheduler and data position,
//! `trainer_state.json`, the tokenizer files and the experiment.
//!
//! A checkpoint is written into a hidden temporary directory and renamed into place, so a crash
//! or Ctrl-C never leaves a half-written `checkpoint-N`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::DType;
use glm_model::ChatGlmConfig;
use glm_model::io::{CheckpointDir, RawTensor, write_safetensors};
use serde_json::{Value, json};

use crate::error::TrainError;
use crate::optim::{AdamState, Moments};
use crate::params::{ParamMut, ParamRef, Trainable};
use crate::state::{TrainerState, write_json};

/// Everything a checkpoint stores besides the weights.
#[derive(Debug, Clone, PartialEq)]
pub struct RunPosition {
    /// Optimizer steps done.
    pub global_step: u64,
    /// Micro-batches consumed (the data position).
    pub micro_batches: u64,
    /// Scheduler steps done (= global_step, kept for clarity).
    pub scheduler_steps: u64,
}

/// Directory name of the checkpoint at `step`.
pub fn checkpoint_name(step: u64) -> String {
    format!("checkpoint-{step}")
}

/// Complete checkpoints in `output_dir`, sorted by step.
pub fn list_checkpoints(output_dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(output_dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(n) = name
                .strip_prefix("checkpoint-")
                .and_then(|s| s.parse::<u64>().ok())
                && e.path().join("trainer_state.json").exists()
            {
                out.push((n, e.path()));
            }
        }
    }
    out.sort();
    out
}

/// Flattened f32 values of every trainable parameter, by name.
pub fn param_tensors<B: Backend, T: Trainable<B>>(
    target: &T,
) -> Result<Vec<(String, RawTensor)>, TrainError> {
    let mut out = Vec::new();
    let mut err = None;
    target.for_each_param(&mut |name, p| {
        let shape = p.dims();
        let values = match &p {
            ParamRef::D1(p) => p.val().cast(DType::F32).into_data().to_vec::<f32>(),
            ParamRef::D2(p) => p.val().cast(DType::F32).into_data().to_vec::<f32>(),
        };
        match values
            .map_err(|e| format!("{e:?}"))
            .and_then(|v| RawTensor::from_f32(shape, &v).map_err(|e| e.to_string()))
        {
            Ok(raw) => out.push((name.to_string(), raw)),
            Err(e) => err = Some(TrainError::Internal(format!("reading {name}: {e}"))),
        }
    });
    match err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// Replace the trainable parameters with the tensors of `file` (names must all be present).
pub fn restore_params<B: Backend, T: Trainable<B>>(
    target: &mut T,
    dir: &Path,
    device: &B::Device,
) -> Result<(), TrainError> {
    let ckpt = CheckpointDir::open(dir)?;
    let mut err = None;
    target.for_each_param_mut(&mut |name, p| {
        if err.is_some() {
            return;
        }
        let read = ckpt.read_f32(name).map_err(TrainError::from);
        match (read, p) {
            (Ok((shape, v)), ParamMut::D1(p)) if shape == p.dims() => {
                let dtype = p.val().dtype();
                *p = Param::initialized(
                    p.id,
                    Tensor::from_data(TensorData::new(v, shape), (device, dtype)).require_grad(),
                );
            }
            (Ok((shape, v)), ParamMut::D2(p)) if shape == p.dims() => {
                let dtype = p.val().dtype();
                *p = Param::initialized(
                    p.id,
                    Tensor::from_data(TensorData::new(v, shape), (device, dtype)).require_grad(),
                );
            }
            (Ok((shape, _)), _) => {
                err = Some(TrainError::Resume {
                    path: dir.to_path_buf(),
                    reason: format!("`{name}` has shape {shape:?}, the model needs another"),
                })
            }
            (Err(e), _) => err = Some(e),
        }
    });
    err.map_or(Ok(()), Err)
}

/// Write the optimizer moments (`<name>.exp_avg` / `.exp_avg_sq`, f32) and the step.
pub fn save_optimizer<B: Backend>(path: &Path, state: &AdamState<B>) -> Result<(), TrainError> {
    let mut raws = Vec::new();
    for (name, m) in &state.moments {
        for (suffix, t) in [("exp_avg", &m.exp_avg), ("exp_avg_sq", &m.exp_avg_sq)] {
            let v: Vec<f32> = t
                .clone()
                .into_data()
                .convert::<f32>()
                .to_vec()
                .map_err(|e| TrainError::Internal(format!("{e:?}")))?;
            raws.push((
                format!("{name}.{suffix}"),
                RawTensor::from_f32(vec![v.len()], &v)
                    .map_err(|e| TrainError::Internal(e.to_string()))?,
            ));
        }
    }
    let refs: Vec<(&str, &RawTensor)> = raws.iter().map(|(n, r)| (n.as_str(), r)).collect();
    let mut meta = BTreeMap::new();
    meta.insert("step".to_string(), state.step.to_string());
    meta.insert("optimizer".to_string(), "adamw_hf".to_string());
    write_safetensors(path, &refs, &meta)?;
    Ok(())
}

/// Read what [`save_optimizer`] wrote.
pub fn load_optimizer<B: Backend>(
    path: &Path,
    device: &B::Device,
) -> Result<AdamState<B>, TrainError> {
    let file = glm_model::io::SafetensorsFile::open(path)?;
    let step = file
        .metadata()
        .get("step")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| TrainError::Resume {
            path: path.to_path_buf(),
            reason: "optimizer state has no step".into(),
        })?;
    let mut moments: BTreeMap<String, Moments<B>> = BTreeMap::new();
    let names: Vec<String> = file.tensors().iter().map(|t| t.name.clone()).collect();
    for n in names.iter().filter_map(|n| n.strip_suffix(".exp_avg")) {
        let read = |k: String| -> Result<Tensor<B, 1>, TrainError> {
            let v = file
                .read(&k)?
                .to_f32_vec()
                .map_err(|e| TrainError::Internal(e.to_string()))?;
            let len = v.len();
            Ok(Tensor::from_data(TensorData::new(v, [len]), device))
        };
        moments.insert(
            n.to_string(),
            Moments {
                exp_avg: read(format!("{n}.exp_avg"))?,
                exp_avg_sq: read(format!("{n}.exp_avg_sq"))?,
            },
        );
    }
    Ok(AdamState { step, moments })
}

/// What goes into a checkpoint directory.
pub struct CheckpointContents<'a> {
    pub position: RunPosition,
    pub state: &'a TrainerState,
    pub experiment_toml: &'a str,
    pub tokenizer_files: &'a [PathBuf],
    pub base_config: &'a ChatGlmConfig,
}

/// Write `dir` atomically: `write_weights` fills a temporary directory, then the rest is added
/// and the directory renamed to `dir`.
pub fn write_checkpoint<B: Backend>(
    dir: &Path,
    contents: &CheckpointContents<'_>,
    optimizer: &AdamState<B>,
    write_weights: &dyn Fn(&Path) -> Result<(), TrainError>,
) -> Result<(), TrainError> {
    let parent = dir.parent().unwrap_or(Path::new("."));
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = parent.join(format!(".{name}.partial-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    write_weights(&tmp)?;
    save_optimizer(&tmp.join("optimizer.safetensors"), optimizer)?;
    let pos = &contents.position;
    write_json(
        &tmp.join("scheduler.json"),
        &json!({ "last_epoch": pos.scheduler_steps }),
    )?;
    write_json(
        &tmp.join("rng_state.json"),
        &json!({ "micro_batches": pos.micro_batches, "global_step": pos.global_step }),
    )?;
    contents.state.write(&tmp.join("trainer_state.json"))?;
    std::fs::write(tmp.join("experiment.toml"), contents.experiment_toml)
        .map_err(|e| TrainError::io(tmp.join("experiment.toml"), e))?;
    let generation = json!({
        "_from_model_config": true,
        "bos_token_id": contents.base_config.bos_token_id,
        "eos_token_id": contents.base_config.eos_token_id,
        "pad_token_id": contents.base_config.pad_token_id,
    });
    write_json(&tmp.join("generation_config.json"), &generation)?;
    for f in contents.tokenizer_files {
        if let Some(n) = f.file_name() {
            std::fs::copy(f, tmp.join(n)).map_err(|e| TrainError::io(f, e))?;
        }
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| TrainError::io(dir, e))
}

/// Read the position stored in a checkpoint.
pub fn read_position(dir: &Path) -> Result<RunPosition, TrainError> {
    let path = dir.join("rng_state.json");
    let text = std::fs::read_to_string(&path).map_err(|e| TrainError::Resume {
        path: dir.to_path_buf(),
        reason: format!("rng_state.json: {e}"),
    })?;
    let v: Value = serde_json::from_str(&text).map_err(|e| TrainError::Resume {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let get = |k: &str| {
        v.get(k)
            .and_then(Value::as_u64)
            .ok_or_else(|| TrainError::Resume {
                path: path.clone(),
                reason: format!("no `{k}`"),
            })
    };
    let global_step = get("global_step")?;
    Ok(RunPosition {
        global_step,
        micro_batches: get("micro_batches")?,
        scheduler_steps: global_step,
    })
}

/// Delete the oldest checkpoints beyond `limit` (the original's `save_total_limit`).
pub fn rotate(output_dir: &Path, limit: Option<usize>) -> Result<(), TrainError> {
    let Some(limit) = limit else { return Ok(()) };
    let all = list_checkpoints(output_dir);
    if all.len() > limit.max(1) {
        for (_, p) in &all[..all.len() - limit.max(1)] {
            tracing::info!("deleting {} (save_total_limit = {limit})", p.display());
            std::fs::remove_dir_all(p).map_err(|e| TrainError::io(p, e))?;
        }
    }
    Ok(())
}
