//! Evaluation/prediction by generation (`do_eval` / `do_predict` with `predict_with_generate`):
//! batched generation with the KV cache over the eval preprocessing's left-padded rows, the
//! original's sampling settings (seeded here, so reproducible), `generated_predictions.txt`
//! written line by line while generating, and BLEU-4/ROUGE exactly as `compute_metrics`.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Instant;

use dataset::collate::collate_eval;
use dataset::preprocess::EvalRow;
use glm_model::GlmBackend;
use glm_model::generate::{GenerationConfig, PromptBatch, generate};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value};

use crate::config::Experiment;
use crate::error::TrainError;
use crate::metrics::{MetricsAccumulator, MetricsReport, to_results_json};
use crate::prepare::Prepared;
use crate::train::RunHooks;

/// Which split is generated (`eval_*` or `predict_*` result keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Eval,
    Predict,
}

impl Split {
    /// Key prefix of the result files.
    pub fn prefix(self) -> &'static str {
        match self {
            Split::Eval => "eval",
            Split::Predict => "predict",
        }
    }
}

/// Result of a generation pass.
#[derive(Debug, Clone)]
pub struct PredictSummary {
    pub report: MetricsReport,
    pub runtime_s: f64,
    pub samples: usize,
    /// The `*_results.json` content.
    pub results: Map<String, Value>,
    pub interrupted: bool,
}

/// The generation settings of `exp` (the original's eval defaults: sampling with top_p 0.7,
/// temperature 0.95, top-k 50, max_length = max_source_length + max_target_length + 1).
pub fn generation_config(
    exp: &Experiment,
    eos: u32,
    pad: u32,
    vocab_limit: usize,
) -> GenerationConfig {
    GenerationConfig {
        max_length: exp.generation_max_length(),
        do_sample: exp.do_sample,
        temperature: exp.temperature as f32,
        top_k: exp.top_k,
        top_p: exp.top_p as f32,
        eos_token_id: eos,
        pad_token_id: pad,
        seed: exp.seed,
        suppress_from: Some(vocab_limit),
        num_beams: exp.num_beams.max(1),
        length_penalty: 1.0,
    }
}

/// Generate for every row of `rows`, streaming `generated_predictions.txt` into `output_dir`
/// (predict only, as the original) and computing the metrics.
pub fn predict<B: GlmBackend>(
    exp: &Experiment,
    prepared: &Prepared<B>,
    rows: &[EvalRow],
    split: Split,
    output_dir: &Path,
    hooks: &RunHooks,
) -> Result<PredictSummary, TrainError> {
    let tok = &prepared.tokenizer;
    let mut gen_cfg = generation_config(
        exp,
        prepared.config.eos_token_id,
        prepared.config.pad_token_id,
        tok.vocab_size(),
    );
    let bs = exp.per_device_eval_batch_size.max(1);
    let path = output_dir.join("generated_predictions.txt");
    let mut out = match split {
        Split::Predict => Some(std::io::BufWriter::new(
            std::fs::File::create(&path).map_err(|e| TrainError::io(&path, e))?,
        )),
        Split::Eval => None,
    };
    let bar = if hooks.progress {
        ProgressBar::new(rows.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut metrics = MetricsAccumulator::new();
    let start = Instant::now();
    let mut interrupted = false;
    let dtype = prepared.model.precision.dtype();
    for (bi, chunk) in rows.chunks(bs).enumerate() {
        let refs: Vec<&EvalRow> = chunk.iter().collect();
        let batch = collate_eval(&refs, tok.pad_id());
        let l = batch.seq_len;
        let prompts = PromptBatch {
            ids: batch.input_ids.chunks(l).map(<[u32]>::to_vec).collect(),
            mask: batch.attention_mask.clone(),
            positions: batch.position_ids.clone(),
        };
        let past = prepared
            .prefix
            .as_ref()
            .map(|p| p.past_key_values(chunk.len(), dtype, false));
        // A different but reproducible sampling stream per batch.
        gen_cfg.seed = exp.seed.wrapping_add(bi as u64);
        let stop = hooks.interrupt.clone();
        let result = generate(
            &prepared.model,
            &prompts,
            past.as_ref(),
            &gen_cfg,
            false,
            &mut |_| !stop.load(Ordering::SeqCst),
        )?;
        if result.interrupted {
            interrupted = true;
            break;
        }
        for (r, row) in chunk.iter().enumerate() {
            let pred_ids: Vec<u32> = result.tokens[r].clone();
            // Labels: −100 → pad, then decode skipping special tokens (the trailing [gMASK] <sop>
            // of the eval labels vanishes), as compute_metrics does.
            let label_ids: Vec<u32> = row
                .labels
                .iter()
                .map(|&t| if t < 0 { tok.pad_id() } else { t as u32 })
                .collect();
            let pred = tok.decode(&pred_ids, true, true);
            let label = tok.decode(&label_ids, true, true);
            metrics.push(&pred, &label);
            if pred.trim().is_empty() {
                tracing::warn!(
                    "row {}: empty prediction scored 0 (the original aborts with `Hypothesis is empty.`)",
                    bi * bs + r
                );
            }
            if let Some(f) = out.as_mut() {
                writeln!(f, "{}", prediction_line(label.trim(), pred.trim()))
                    .map_err(|e| TrainError::io(&path, e))?;
                f.flush().map_err(|e| TrainError::io(&path, e))?;
            }
        }
        bar.inc(chunk.len() as u64);
        let so_far = metrics.finish();
        bar.set_message(format!(
            "BLEU-4 {:.2}  ROUGE-L {:.2}",
            so_far.bleu4, so_far.rougel
        ));
    }
    bar.finish_and_clear();
    let runtime = start.elapsed().as_secs_f64();
    let report = metrics.finish();
    if report.empty_predictions > 0 {
        tracing::warn!("{} empty prediction(s) scored 0", report.empty_predictions);
    }
    let results = to_results_json(split.prefix(), &report, runtime, report.count, bs);
    Ok(PredictSummary {
        report,
        runtime_s: runtime,
        samples: rows.len(),
        results,
        interrupted,
    })
}

/// One line of `generated_predictions.txt` exactly as the original's
/// `json.dumps({"labels": .., "predict": ..}, ensure_ascii=False)`.
pub fn prediction_line(label: &str, predict: &str) -> String {
    let q = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    format!("{{\"labels\": {}, \"predict\": {}}}", q(label), q(predict))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prediction_line_matches_python_json_dumps() {
        assert_eq!(
            prediction_line("简约\"牛仔\"", "a\nb"),
            r#"{"labels": "简约\"牛仔\"", "predict": "a\nb"}"#
        );
    }
}
