//! `glm-tune plan`: the memory a run will need, predicted before anything is loaded (only the
//! model directory's `config.json` and the sizes of the data and tokenizer files are read).
//!
//! The prediction is an itemised list — frozen weights in their stored form, trainable
//! parameters, gradients, AdamW moments, the transient peak of a training micro-batch, the
//! generation KV cache, tokenizer and data, the runtime baseline — where every item is tagged
//! with the phases of the run it is alive in (loading, training, forward, generation). A phase's
//! peak is the sum of its items, and the run's peak the largest phase peak. The formulas in
//! [`estimate`] follow what this code base allocates (see that module for each term); they
//! predict process RSS on the CPU backend and device memory on CUDA.

pub mod estimate;
mod render;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use burn::tensor::DType;
use glm_model::{ChatGlmConfig, Precision};
use serde::Serialize;

use crate::config::{Device, Experiment};
use crate::error::TrainError;
use estimate::dtype_bytes;

/// Shape of one training micro-batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TrainShape {
    /// B (`per_device_train_batch_size`).
    pub batch: usize,
    /// S: tokens per row (`max_source_length + max_target_length`).
    pub seq_len: usize,
    /// Rows of the logits the loss reads (positions followed by a label), at most B·(S − 1).
    pub label_rows: usize,
    /// Per-block recomputation (`gradient_checkpointing`).
    pub recompute: bool,
    /// `gradient_accumulation_steps` (> 1 keeps an accumulated gradient across micro-batches).
    pub accumulation: usize,
}

/// Shape of generation (evaluation / prediction).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GenerateShape {
    /// Prompts per batch (`per_device_eval_batch_size`).
    pub batch: usize,
    /// Longest (left-padded) prompt.
    pub prompt_len: usize,
    /// Total length, prompt included (`max_length`).
    pub max_length: usize,
    /// Beams per prompt (`num_beams`).
    pub num_beams: usize,
    /// Whether the prefix keys/values of every row are separate copies rather than views of one
    /// shared row (`past_key_values` shares them at inference; false for glm-tune's own runs).
    pub per_row_prefix: bool,
}

/// One forward pass without autodiff (the benchmark's forward phase).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ForwardShape {
    pub batch: usize,
    pub seq_len: usize,
}

/// Where the memory is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Target {
    /// Resident set of the process (CPU backend).
    ProcessRss,
    /// Device memory (CUDA, Vulkan); host memory then holds only the data and the runtime.
    DeviceMemory,
}

/// Everything the prediction depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanInput {
    /// Model shape (and `quantization_bit` of a pre-quantized checkpoint).
    pub model: ChatGlmConfig,
    pub device: Device,
    /// Activation precision (and dtype of dense frozen weights, LayerNorms and biases).
    pub precision: Precision,
    /// Storage dtype of the word embeddings (the tied output projection).
    pub embedding_dtype: DType,
    /// Packed width of the four linears of each block (None = dense).
    pub quantization_bit: Option<u8>,
    /// P-Tuning v2 prefix length (None = full fine-tuning).
    pub pre_seq_len: Option<usize>,
    pub prefix_projection: bool,
    /// Prefix dropout in training (0.1 in the original).
    pub prefix_dropout: bool,
    pub train: Option<TrainShape>,
    pub forward: Option<ForwardShape>,
    pub generate: Option<GenerateShape>,
    /// Bytes of the training data file (read whole, then tokenized).
    pub train_file_bytes: u64,
    /// Bytes of the evaluation / prediction data files.
    pub eval_file_bytes: u64,
    /// Upper bound of training rows (`max_train_samples`, else estimated from the file size).
    pub train_rows: u64,
    /// Upper bound of evaluation / prediction rows.
    pub eval_rows: u64,
    /// Bytes of the tokenizer files (`ice_text.model` or `tokenizer.json`).
    pub tokenizer_bytes: u64,
    /// Largest single tensor read while loading the checkpoint (bytes as stored), if any.
    pub largest_checkpoint_tensor: u64,
    /// Worker threads (each keeps its own allocator arena and kernel scratch).
    pub threads: usize,
}

/// Bytes per JSON line assumed when only a data file's size is known (AdvertiseGen averages
/// about 470; fewer bytes per line would mean more rows than estimated).
pub const BYTES_PER_DATA_LINE: u64 = 320;

impl PlanInput {
    /// The plan of experiment `exp` with its model in `model_dir`: reads `config.json` and the
    /// sizes of the data and tokenizer files, nothing else.
    pub fn from_experiment(exp: &Experiment, model_dir: &Path) -> Result<Self, TrainError> {
        let mut model = ChatGlmConfig::from_path(model_dir)?;
        model.pre_seq_len = exp.pre_seq_len;
        model.prefix_projection = Some(exp.prefix_projection);
        let precision = crate::prepare::model_precision(exp);
        let stored_bits = model.quantization_bit.filter(|&b| b > 0).map(|b| b as u8);
        let quantization_bit =
            stored_bits.or(exp.quantization_bit.filter(|&b| b > 0).map(|b| b as u8));
        let seq = exp.max_source_length + exp.max_target_length;
        let train = exp.do_train.then(|| {
            let batch = exp.per_device_train_batch_size.max(1);
            let per_row = if exp.ignore_pad_token_for_loss {
                exp.max_target_length
            } else {
                seq.saturating_sub(2)
            };
            TrainShape {
                batch,
                seq_len: seq,
                label_rows: batch * per_row.min(seq.saturating_sub(1)),
                recompute: exp.gradient_checkpointing,
                accumulation: exp.gradient_accumulation_steps.max(1),
            }
        });
        let generate = (exp.do_eval || exp.do_predict).then(|| GenerateShape {
            batch: exp.per_device_eval_batch_size.max(1),
            prompt_len: exp.max_source_length,
            max_length: exp.generation_max_length(),
            num_beams: exp.num_beams.max(1),
            per_row_prefix: false,
        });
        let size = |p: &Option<PathBuf>| {
            p.as_ref()
                .and_then(|p| std::fs::metadata(p).ok())
                .map(|m| m.len())
                .unwrap_or(0)
        };
        let train_file_bytes = if exp.do_train {
            size(&exp.train_file)
        } else {
            0
        };
        let mut eval_file_bytes = 0;
        let mut eval_rows = 0;
        for (on, file, max) in [
            (exp.do_eval, &exp.validation_file, exp.max_eval_samples),
            (exp.do_predict, &exp.test_file, exp.max_predict_samples),
        ] {
            if on {
                let bytes = size(file);
                eval_file_bytes = eval_file_bytes.max(bytes);
                eval_rows = eval_rows.max(estimated_rows(bytes, max));
            }
        }
        let largest = largest_tensor_bytes(&model);
        let embedding_dtype = if exp.pre_seq_len.is_some()
            && stored_embedding_dtype(&model) == DType::F16
            && dtype_bytes(precision.dtype()) > 2
        {
            DType::F16
        } else {
            precision.dtype()
        };
        Ok(PlanInput {
            model,
            device: exp.device,
            precision,
            // The loader converts the stored table to the model precision, except a frozen
            // (P-Tuning v2) f16 table, which stays f16 (`compact_frozen_embedding`).
            embedding_dtype,
            quantization_bit,
            pre_seq_len: exp.pre_seq_len,
            prefix_projection: exp.prefix_projection,
            prefix_dropout: true,
            train,
            forward: None,
            generate,
            train_file_bytes,
            eval_file_bytes,
            train_rows: estimated_rows(train_file_bytes, exp.max_train_samples),
            eval_rows,
            tokenizer_bytes: tokenizer_bytes(model_dir),
            largest_checkpoint_tensor: largest,
            threads: rayon::current_num_threads(),
        })
    }

    /// What the memory is counted in on this input's device.
    pub fn target(&self) -> Target {
        match self.device {
            Device::Cpu => Target::ProcessRss,
            Device::Cuda(_) | Device::Vulkan => Target::DeviceMemory,
        }
    }
}

/// Rows of a JSON-lines file estimated from its size (at most `max` when given).
pub fn estimated_rows(bytes: u64, max: Option<usize>) -> u64 {
    let rows = bytes.div_ceil(BYTES_PER_DATA_LINE);
    max.map(|m| rows.min(m as u64)).unwrap_or(rows)
}

fn tokenizer_bytes(dir: &Path) -> u64 {
    ["ice_text.model", "tokenizer.json"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .max()
        .unwrap_or(0)
}

/// The largest tensor a load reads at once: checkpoints are streamed tensor by tensor, and the
/// largest one is the embedding, V·H in the checkpoint's `torch_dtype` (f16 unless stated).
fn largest_tensor_bytes(cfg: &ChatGlmConfig) -> u64 {
    (cfg.vocab_size * cfg.hidden_size) as u64 * dtype_bytes(stored_embedding_dtype(cfg))
}

/// The checkpoint's float dtype from config.json `torch_dtype` (f16 unless stated).
fn stored_embedding_dtype(cfg: &ChatGlmConfig) -> DType {
    match cfg.extra.get("torch_dtype").and_then(|v| v.as_str()) {
        Some("float32") => DType::F32,
        Some("bfloat16") => DType::BF16,
        _ => DType::F16,
    }
}

/// A part of the run's memory.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanItem {
    /// `frozen weights`, `trainable`, `gradients`, `optimizer`, `activations`, `kv cache`,
    /// `data`, `runtime`.
    pub group: &'static str,
    pub name: String,
    pub bytes: u64,
    /// Phases it is alive in.
    pub phases: Vec<Phase>,
    /// How the size was obtained.
    pub detail: String,
}

/// A stretch of the run whose live memory is summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Phase {
    /// Loading the model, the tokenizer and tokenizing the data.
    Load,
    /// Training steps (micro-batches and optimizer updates).
    Train,
    /// A plain forward pass (benchmark only).
    Forward,
    /// Evaluation / prediction by generation.
    Generate,
}

impl Phase {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Load => "load",
            Phase::Train => "train",
            Phase::Forward => "forward",
            Phase::Generate => "generate",
        }
    }
}

/// A value shown for information, not part of any sum (e.g. the configuration not chosen).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanNote {
    pub name: String,
    pub bytes: u64,
}

/// The predicted memory of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryPlan {
    pub target: Target,
    pub items: Vec<PlanItem>,
    pub notes: Vec<PlanNote>,
    /// Phases that occur in this run.
    pub phases: Vec<Phase>,
    /// A one-line description of the configuration.
    pub summary: String,
}

impl MemoryPlan {
    /// Predict the memory of `input`.
    pub fn new(input: &PlanInput) -> Self {
        estimate::plan(input)
    }

    /// The items.
    pub fn items(&self) -> &[PlanItem] {
        &self.items
    }

    /// Sum of the items alive in `phase` (0 when the run has no such phase).
    pub fn phase_peak(&self, phase: Phase) -> u64 {
        if !self.phases.contains(&phase) {
            return 0;
        }
        self.items
            .iter()
            .filter(|i| i.phases.contains(&phase))
            .map(|i| i.bytes)
            .sum()
    }

    /// The peak of `phase`, if the run has that phase.
    pub fn peak_of(&self, phase: Phase) -> Option<u64> {
        self.phases.contains(&phase).then(|| self.phase_peak(phase))
    }

    /// The training peak, if the run trains.
    pub fn train_peak(&self) -> Option<u64> {
        self.peak_of(Phase::Train)
    }

    /// The largest phase peak: the memory the run needs.
    pub fn total_peak(&self) -> u64 {
        self.phases
            .iter()
            .map(|&p| self.phase_peak(p))
            .max()
            .unwrap_or(0)
    }

    /// The phase with the largest peak.
    pub fn peak_phase(&self) -> Option<Phase> {
        self.phases
            .iter()
            .copied()
            .max_by_key(|&p| self.phase_peak(p))
    }

    /// The plan as a table (see `render`).
    pub fn table(&self) -> String {
        render::table(self)
    }

    /// Log the plan (one `tracing::info` line per row), as `glm-tune run` does at start.
    pub fn log(&self) {
        for line in self.table().lines() {
            tracing::info!("{line}");
        }
    }
}

/// Bytes → GiB.
pub fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}
