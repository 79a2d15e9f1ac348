//! `trainer_state.json` and `trainer_log.jsonl`: the run's log history with the original
//! Trainer's semantics (loss averaged over the optimizer steps since the last log and rounded to
//! 4 decimals, learning rate after the scheduler step, epoch as a fraction).

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::TrainError;

/// The Trainer state saved in every checkpoint and at the end (`TrainerState` of transformers).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TrainerState {
    pub best_metric: Option<f64>,
    pub best_model_checkpoint: Option<String>,
    pub epoch: f64,
    pub global_step: u64,
    pub is_hyper_param_search: bool,
    pub is_local_process_zero: bool,
    pub is_world_process_zero: bool,
    pub log_history: Vec<Map<String, Value>>,
    pub max_steps: u64,
    pub num_train_epochs: u64,
    pub total_flos: f64,
    pub trial_name: Option<String>,
    pub trial_params: Option<Value>,
}

impl TrainerState {
    /// A fresh state for a run of `max_steps` steps over `num_train_epochs` epochs.
    pub fn new(max_steps: u64, num_train_epochs: u64) -> Self {
        Self {
            is_local_process_zero: true,
            is_world_process_zero: true,
            max_steps,
            num_train_epochs,
            ..Default::default()
        }
    }

    /// Read a `trainer_state.json`.
    pub fn read(path: &Path) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| TrainError::Resume {
            path: path.to_path_buf(),
            reason: format!("trainer_state.json: {e}"),
        })
    }

    /// Write it (indent 2, sorted keys, as the original's `save_to_json`).
    pub fn write(&self, path: &Path) -> Result<(), TrainError> {
        write_json(path, &serde_json::to_value(self).unwrap_or(Value::Null))
    }
}

/// Write pretty JSON with sorted keys, atomically (temp file + rename).
pub fn write_json(path: &Path, value: &Value) -> Result<(), TrainError> {
    let sorted = sort_keys(value.clone());
    let text =
        serde_json::to_string_pretty(&sorted).map_err(|e| TrainError::Internal(e.to_string()))?;
    write_atomic(path, (text + "\n").as_bytes())
}

fn sort_keys(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut m: Vec<(String, Value)> =
                m.into_iter().map(|(k, v)| (k, sort_keys(v))).collect();
            m.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(m.into_iter().collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sort_keys).collect()),
        other => other,
    }
}

/// Write `bytes` to `path` through a temporary file in the same directory and a rename, so a
/// crash never leaves a half-written file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
        f.write_all(bytes).map_err(|e| TrainError::io(&tmp, e))?;
        f.sync_all().map_err(|e| TrainError::io(&tmp, e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| TrainError::io(path, e))
}

/// Append one JSON line to `output_dir/trainer_log.jsonl`.
pub fn append_log_line(path: &Path, entry: &Map<String, Value>) -> Result<(), TrainError> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| TrainError::io(path, e))?;
    let line = serde_json::to_string(&Value::Object(entry.clone()))
        .map_err(|e| TrainError::Internal(e.to_string()))?;
    writeln!(f, "{line}").map_err(|e| TrainError::io(path, e))
}

/// Prepare `trainer_log.jsonl` for a run that starts at `step`: keep only the lines of steps ≤
/// `step` (a resumed run keeps its history up to the checkpoint; the lines an interrupted run
/// wrote after it are logged again), i.e. a fresh run (`step` 0) starts an empty log instead of
/// appending to an earlier run's lines. Rewritten atomically (temporary file + rename).
pub fn trim_log(path: &Path, step: u64) -> Result<(), TrainError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(TrainError::io(path, e)),
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .and_then(|v| v.get("step").and_then(Value::as_u64))
                .is_some_and(|s| s <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    write_atomic(path, kept.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rerun_in_the_same_output_dir_starts_a_fresh_trainer_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trainer_log.jsonl");
        for step in [25u64, 50, 75] {
            let mut e = Map::new();
            e.insert("step".into(), step.into());
            append_log_line(&path, &e).unwrap();
        }
        trim_log(&path, 50).unwrap();
        let steps: Vec<u64> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["step"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(steps, [25, 50]);
        trim_log(&path, 0).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        trim_log(&dir.path().join("absent.jsonl"), 0).unwrap();
    }

    #[test]
    fn state_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = TrainerState::new(10, 1);
        s.global_step = 3;
        let mut e = Map::new();
        e.insert("loss".into(), 1.5.into());
        s.log_history.push(e);
        let p = dir.path().join("trainer_state.json");
        s.write(&p).unwrap();
        assert_eq!(TrainerState::read(&p).unwrap(), s);
    }
}
