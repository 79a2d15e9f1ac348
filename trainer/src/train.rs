//! The training loop of `glm-tune run` (`do_train`), as the original Trainer runs it: micro-batches
//! of `per_device_train_batch_size`, `gradient_accumulation_steps` of them per optimizer step,
//! `max_steps` or `num_train_epochs`, logging every `logging_steps`, checkpoints every
//! `save_steps`, exact resume, NaN/Inf guard, Ctrl-C.
//!
//! Data order: a seeded shuffle per epoch (`data_seed`, else `seed`). It cannot equal PyTorch's
//! RandomSampler stream, but the same seed gives the same order on every run and after a resume.
//! Prefix dropout draws from the backend RNG re-seeded from (seed, micro-batch index), so a
//! resumed run replays exactly the same masks.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::prelude::*;
use dataset::collate::collate_train;
use dataset::preprocess::TrainRow;
use indicatif::{ProgressBar, ProgressStyle};
use prefix_encoder::checkpoint::SaveMeta;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde_json::{Map, Value, json};

use crate::checkpoint::{self, CheckpointContents, RunPosition};
use crate::config::{Experiment, NanPolicy};
use crate::error::TrainError;
use crate::metrics::py_round;
use crate::optim::{AdamState, AdamWHf, LrSchedule, Schedule};
use crate::prepare::Prepared;
use crate::state::{TrainerState, append_log_line};
use crate::step::{GradMap, MicroBatch, Target, TrainBackend, micro_step};
use crate::update::{apply, grad_norm};

/// Outside control of a run.
#[derive(Debug, Clone, Default)]
pub struct RunHooks {
    /// Set (e.g. by a Ctrl-C handler) to stop between micro-batches.
    pub interrupt: Arc<AtomicBool>,
    /// Show the progress bar (off in tests / non-terminals).
    pub progress: bool,
    /// The command that resumes this run (shown after an interruption).
    pub resume_hint: String,
}

/// What training produced.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub global_step: u64,
    pub train_loss: f64,
    pub runtime_s: f64,
    pub samples: usize,
    pub epoch: f64,
    pub skipped_steps: u64,
    pub log: Vec<(u64, f64)>,
}

/// Step counts of a run (HF: updates per epoch = micro-batches per epoch / accumulation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    pub micro_per_epoch: u64,
    pub max_steps: u64,
    pub num_train_epochs: u64,
}

/// Work out the step plan of `exp` for `rows` training rows.
pub fn plan(exp: &Experiment, rows: usize) -> Plan {
    let micro_per_epoch = rows.div_ceil(exp.per_device_train_batch_size.max(1)) as u64;
    let updates_per_epoch =
        (micro_per_epoch / exp.gradient_accumulation_steps.max(1) as u64).max(1);
    match exp.max_steps_limit() {
        Some(s) => Plan {
            micro_per_epoch,
            max_steps: s,
            num_train_epochs: s.div_ceil(updates_per_epoch),
        },
        None => {
            let total = (exp.num_train_epochs * updates_per_epoch as f64).ceil() as u64;
            Plan {
                micro_per_epoch,
                max_steps: total.max(1),
                num_train_epochs: exp.num_train_epochs.ceil() as u64,
            }
        }
    }
}

/// The shuffled row order of `epoch`.
pub fn epoch_order(rows: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..rows).collect();
    let mut rng = StdRng::seed_from_u64(seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    order.shuffle(&mut rng);
    order
}

/// Micro-batch `index` (global, across epochs) of the run.
fn micro_batch(
    rows: &[TrainRow],
    exp: &Experiment,
    plan: &Plan,
    index: u64,
    pad: u32,
    order_cache: &mut Option<(u64, Vec<usize>)>,
) -> MicroBatch {
    let epoch = index / plan.micro_per_epoch;
    let within = (index % plan.micro_per_epoch) as usize;
    if order_cache.as_ref().map(|(e, _)| *e) != Some(epoch) {
        *order_cache = Some((
            epoch,
            epoch_order(rows.len(), exp.effective_data_seed(), epoch),
        ));
    }
    let order = &order_cache
        .as_ref()
        .map(|(_, o)| o.as_slice())
        .unwrap_or(&[]);
    let bs = exp.per_device_train_batch_size.max(1);
    let picked: Vec<&TrainRow> = order[within * bs..((within + 1) * bs).min(order.len())]
        .iter()
        .map(|&i| &rows[i])
        .collect();
    let batch = collate_train(&picked, pad);
    let s = batch.seq_len;
    MicroBatch {
        rows: batch.input_ids.chunks(s).map(<[u32]>::to_vec).collect(),
        labels: batch.labels.chunks(s).map(<[i64]>::to_vec).collect(),
    }
}

/// Train `prepared` on `rows`, writing logs and checkpoints into `output_dir`.
#[allow(clippy::too_many_arguments)]
pub fn train<B: TrainBackend>(
    exp: &Experiment,
    experiment_toml: &str,
    prepared: &mut Prepared<B>,
    rows: &[TrainRow],
    output_dir: &Path,
    resume_from: Option<PathBuf>,
    hooks: &RunHooks,
    device: &B::Device,
) -> Result<TrainSummary, TrainError> {
    let plan = plan(exp, rows.len());
    let accum = exp.gradient_accumulation_steps.max(1) as u64;
    let opt = AdamWHf {
        beta1: exp.adam_beta1,
        beta2: exp.adam_beta2,
        eps: exp.adam_epsilon,
        weight_decay: exp.weight_decay,
    };
    let kind = match exp.lr_scheduler_type.as_str() {
        "constant" => Schedule::Constant,
        "constant_with_warmup" => Schedule::ConstantWithWarmup,
        "cosine" => Schedule::Cosine,
        _ => Schedule::Linear,
    };
    let sched = LrSchedule {
        base: exp.learning_rate,
        kind,
        warmup_steps: LrSchedule::warmup(plan.max_steps, exp.warmup_steps as u64, exp.warmup_ratio),
        total_steps: plan.max_steps,
    };
    let ptuning = prepared.prefix.is_some();
    if ptuning {
        // The frozen base: no parameter of the model is tracked.
        prepared.model = prepared.model.clone().no_grad();
    }
    let mut inner = prepared.model.valid();
    let mut state = TrainerState::new(plan.max_steps, plan.num_train_epochs);
    let mut adam = AdamState::<B::InnerBackend>::default();
    let mut pos = RunPosition {
        global_step: 0,
        micro_batches: 0,
        scheduler_steps: 0,
    };

    if let Some(dir) = &resume_from {
        pos = checkpoint::read_position(dir)?;
        adam = checkpoint::load_optimizer(&dir.join("optimizer.safetensors"), device)?;
        state = TrainerState::read(&dir.join("trainer_state.json"))?;
        state.max_steps = plan.max_steps;
        match &mut prepared.prefix {
            Some(p) => checkpoint::restore_params(p, dir, device)?,
            None => {
                checkpoint::restore_params(&mut prepared.model, dir, device)?;
                inner = prepared.model.valid();
            }
        }
        tracing::info!(
            "resumed from {} at step {} ({} micro-batches consumed)",
            dir.display(),
            pos.global_step,
            pos.micro_batches
        );
    }

    let log_path = output_dir.join("trainer_log.jsonl");
    crate::state::trim_log(&log_path, pos.global_step)?;
    let pad = prepared.tokenizer.pad_id();
    let bar = progress_bar(hooks.progress, plan.max_steps, pos.global_step);
    let start = Instant::now();
    let mut order_cache = None;
    let mut tr_loss = 0f64; // sum of micro-losses / accum since the last log
    let mut total_loss = 0f64;
    let mut last_logged = pos.global_step;
    let mut tokens_done = 0u64;
    let mut skipped = 0u64;
    let mut log_points = Vec::new();
    let steps_at_start = pos.global_step;
    let tokenizer_files = prepared.tokenizer.source_files();

    while pos.global_step < plan.max_steps {
        let mut acc = GradMap::<B>::new();
        let mut step_loss = 0f64;
        for _ in 0..accum {
            if hooks.interrupt.load(Ordering::SeqCst) {
                bar.abandon();
                return Err(TrainError::Interrupted {
                    step: pos.global_step,
                    resume: hooks.resume_hint.clone(),
                });
            }
            let batch = micro_batch(rows, exp, &plan, pos.micro_batches, pad, &mut order_cache);
            tokens_done += batch.tokens() as u64;
            B::seed(
                device,
                exp.seed.wrapping_mul(0x100_0000_01B3) ^ pos.micro_batches,
            );
            let target = match &prepared.prefix {
                Some(p) => Target::Prefix(p),
                None => Target::Full,
            };
            let r = micro_step(
                &prepared.model,
                &inner,
                &target,
                &batch,
                1.0 / accum as f64,
                exp.gradient_checkpointing,
                device,
            )?;
            pos.micro_batches += 1;
            step_loss += r.loss / accum as f64;
            for (n, g) in r.grads {
                let prev = acc.remove(&n);
                acc.insert(
                    n,
                    match prev {
                        Some(p) => p + g,
                        None => g,
                    },
                );
            }
        }
        let norm = grad_norm::<B>(&acc);
        let lr = sched.lr(pos.scheduler_steps);
        let bad = if !step_loss.is_finite() {
            Some(("loss", step_loss))
        } else if !norm.is_finite() {
            Some(("gradient norm", norm))
        } else {
            None
        };
        if let Some((what, value)) = bad {
            match exp.nan_policy {
                NanPolicy::Stop => {
                    bar.abandon();
                    return Err(TrainError::NonFinite {
                        step: pos.global_step + 1,
                        what,
                        value,
                    });
                }
                NanPolicy::Skip => {
                    tracing::warn!(
                        "step {}: the {what} is {value}; skipping this optimizer step (nan_policy = \"skip\")",
                        pos.global_step + 1
                    );
                    skipped += 1;
                }
            }
        } else {
            match &mut prepared.prefix {
                Some(p) => {
                    apply(p, acc, norm, exp.max_grad_norm, &opt, &mut adam, lr);
                }
                None => {
                    apply(
                        &mut prepared.model,
                        acc,
                        norm,
                        exp.max_grad_norm,
                        &opt,
                        &mut adam,
                        lr,
                    );
                    inner = prepared.model.valid();
                }
            }
            tr_loss += step_loss;
            total_loss += step_loss;
        }
        pos.global_step += 1;
        pos.scheduler_steps += 1;
        let epoch = pos.micro_batches as f64 / plan.micro_per_epoch as f64;
        state.global_step = pos.global_step;
        state.epoch = epoch;
        let elapsed = start.elapsed().as_secs_f64();
        let tok_s = tokens_done as f64 / elapsed.max(1e-9);
        bar.set_position(pos.global_step);
        bar.set_message(format!(
            "loss {step_loss:.4}  lr {:.3e}  {tok_s:.0} tok/s",
            sched.lr(pos.scheduler_steps)
        ));

        if exp.logging_steps > 0 && pos.global_step.is_multiple_of(exp.logging_steps as u64) {
            let steps = (pos.global_step - last_logged).max(1) as f64;
            let loss = py_round(tr_loss / steps, 4);
            let mut entry = Map::new();
            entry.insert("epoch".into(), json!(py_round(epoch, 2)));
            entry.insert("learning_rate".into(), json!(sched.lr(pos.scheduler_steps)));
            entry.insert("loss".into(), json!(loss));
            entry.insert("step".into(), json!(pos.global_step));
            state.log_history.push(entry.clone());
            entry.insert("tokens_per_second".into(), json!(py_round(tok_s, 1)));
            entry.insert("elapsed_s".into(), json!(py_round(elapsed, 1)));
            entry.insert("total_steps".into(), json!(plan.max_steps));
            append_log_line(&log_path, &entry)?;
            log_points.push((pos.global_step, loss));
            note(
                &bar,
                format!(
                    "step {}/{}  loss {loss:.4}  lr {:.4e}  epoch {:.2}",
                    pos.global_step,
                    plan.max_steps,
                    sched.lr(pos.scheduler_steps),
                    epoch
                ),
            );
            tr_loss = 0.0;
            last_logged = pos.global_step;
        }

        if exp.save_steps > 0 && pos.global_step.is_multiple_of(exp.save_steps as u64) {
            let dir = output_dir.join(checkpoint::checkpoint_name(pos.global_step));
            let contents = CheckpointContents {
                position: pos.clone(),
                state: &state,
                experiment_toml,
                tokenizer_files: &tokenizer_files,
                base_config: &prepared.config,
            };
            let meta = SaveMeta {
                quantization_bit: prepared.config.quantization_bit,
                tokenizer_fingerprint: Some(prepared.tokenizer.fingerprint()),
            };
            let write_weights = |tmp: &Path| -> Result<(), TrainError> {
                match &prepared.prefix {
                    Some(p) => prefix_encoder::checkpoint::save(tmp, p, &prepared.config, &meta)
                        .map_err(TrainError::from),
                    None => save_full_model(tmp, &prepared.model, &prepared.config),
                }
            };
            checkpoint::write_checkpoint(&dir, &contents, &adam, &write_weights)?;
            note(&bar, format!("saved {}", dir.display()));
            checkpoint::rotate(output_dir, exp.save_total_limit)?;
        }
    }
    bar.finish_and_clear();
    let runtime = start.elapsed().as_secs_f64();
    let done = (pos.global_step - steps_at_start).max(1) as f64;
    let train_loss = total_loss / done;
    let summary = TrainSummary {
        global_step: pos.global_step,
        train_loss,
        runtime_s: runtime,
        samples: rows.len(),
        epoch: state.epoch,
        skipped_steps: skipped,
        log: log_points,
    };
    let mut final_entry = Map::new();
    final_entry.insert("epoch".into(), json!(py_round(state.epoch, 2)));
    final_entry.insert("step".into(), json!(pos.global_step));
    final_entry.insert("total_flos".into(), json!(0.0));
    final_entry.insert("train_loss".into(), json!(train_loss));
    final_entry.insert("train_runtime".into(), json!(py_round(runtime, 4)));
    let samples_run = (pos.global_step - steps_at_start) as f64
        * accum as f64
        * exp.per_device_train_batch_size as f64;
    final_entry.insert(
        "train_samples_per_second".into(),
        json!(py_round(samples_run / runtime.max(1e-9), 3)),
    );
    final_entry.insert(
        "train_steps_per_second".into(),
        json!(py_round(done / runtime.max(1e-9), 3)),
    );
    state.log_history.push(final_entry);
    state.write(&output_dir.join("trainer_state.json"))?;
    Ok(summary)
}

/// `train_results.json` content (the original's keys).
pub fn train_results(summary: &TrainSummary, exp: &Experiment) -> Map<String, Value> {
    let accum = exp.gradient_accumulation_steps.max(1) as f64;
    let samples_run = summary.global_step as f64 * accum * exp.per_device_train_batch_size as f64;
    let mut m = Map::new();
    m.insert("epoch".into(), json!(py_round(summary.epoch, 2)));
    m.insert("train_loss".into(), json!(summary.train_loss));
    m.insert(
        "train_runtime".into(),
        json!(py_round(summary.runtime_s, 4)),
    );
    m.insert("train_samples".into(), json!(summary.samples));
    m.insert(
        "train_samples_per_second".into(),
        json!(py_round(samples_run / summary.runtime_s.max(1e-9), 3)),
    );
    m.insert(
        "train_steps_per_second".into(),
        json!(py_round(
            summary.global_step as f64 / summary.runtime_s.max(1e-9),
            3
        )),
    );
    m
}

/// Write the whole model (full fine-tuning) as `model.safetensors` (f32) + `config.json`.
pub fn save_full_model<B: Backend>(
    dir: &Path,
    model: &glm_model::ChatGlmModel<B>,
    config: &glm_model::ChatGlmConfig,
) -> Result<(), TrainError> {
    let mut cfg = config.clone();
    cfg.pre_seq_len = None;
    cfg.prefix_projection = None;
    glm_model::init::save_pretrained(model, &cfg, dir, glm_model::init::SaveDtype::F32)?;
    Ok(())
}

/// A line above the progress bar, or a log line when there is no bar (not a terminal, CI logs):
/// the loss is visible either way, as the original prints its log dicts.
fn note(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        tracing::info!("{line}");
    } else {
        bar.println(line);
    }
}

fn progress_bar(show: bool, total: u64, at: u64) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(at);
    bar
}
