//! Evaluation metrics of `ptuning/main.py`'s `compute_metrics` (reference §8.6): per pair of
//! already-decoded strings, ROUGE-1/2/L (rouge_chinese 1.0.3 over jieba 0.42.1 words) and
//! character-level BLEU-4 (nltk 3.10.4, method3 smoothing), each `round(score · 100, 4)`, then
//! averaged with `np.mean`; plus the `{prefix}_results.json` entries Hugging Face writes.
//!
//! One deliberate departure: the original aborts the whole evaluation with
//! `ValueError("Hypothesis is empty.")` when a prediction is empty or whitespace only (and with
//! `"Reference is empty."` for such a label). Here such a pair scores 0 on all four metrics, still
//! counts in the averages, and is tallied in [`MetricsReport::empty_predictions`] /
//! [`MetricsReport::empty_references`] so the caller can warn.

mod bleu;
mod pyfloat;
mod rouge;
mod segment;

pub use bleu::sentence_bleu4;
pub use pyfloat::{fsum, np_mean, py_isspace, py_round};
pub use rouge::{Prf, RougeDegenerate, RougeScores, rouge_scores};
pub use segment::lcut as jieba_lcut;

use serde_json::{Map, Value};

/// The four stored scores of one pair (×100, rounded to 4 decimals like the original).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PairScores {
    /// `rouge-1`.
    pub rouge1: f64,
    /// `rouge-2`.
    pub rouge2: f64,
    /// `rouge-l`.
    pub rougel: f64,
    /// `bleu-4`.
    pub bleu4: f64,
}

/// How a pair was scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairStatus {
    /// Scored as the original scores it.
    Scored,
    /// Empty or whitespace-only prediction: the original raises `Hypothesis is empty.`; scored 0.
    EmptyPrediction,
    /// Non-empty prediction, empty or whitespace-only label: the original raises
    /// `Reference is empty.`; scored 0.
    EmptyReference,
}

/// Everything computed for one pair, for tests and diagnostics.
#[derive(Debug, Clone, PartialEq)]
pub struct PairDetails<'a> {
    /// `jieba.lcut(pred)`.
    pub pred_tokens: Vec<&'a str>,
    /// `jieba.lcut(label)`.
    pub label_tokens: Vec<&'a str>,
    /// Raw ROUGE p/r/f (fractions); `None` when the original would raise.
    pub rouge: Option<RougeScores>,
    /// Raw sentence BLEU (fraction); 0 for an empty prediction.
    pub bleu: f64,
    /// The stored scores.
    pub scores: PairScores,
    /// Whether the pair was degenerate.
    pub status: PairStatus,
}

/// Score one pair with all intermediate values.
pub fn pair_details<'a>(pred: &'a str, label: &'a str) -> PairDetails<'a> {
    let pred_tokens = jieba_lcut(pred);
    let label_tokens = jieba_lcut(label);
    let rouge = rouge_scores(&pred_tokens.join(" "), &label_tokens.join(" "));
    let (rouge, status) = match rouge {
        Ok(r) => (Some(r), PairStatus::Scored),
        Err(RougeDegenerate::EmptyHypothesis) => (None, PairStatus::EmptyPrediction),
        Err(RougeDegenerate::EmptyReference) => (None, PairStatus::EmptyReference),
    };
    let bleu = match status {
        PairStatus::Scored => sentence_bleu4(label, pred),
        _ => 0.0,
    };
    let scores = match rouge {
        Some(r) => PairScores {
            rouge1: py_round(r.rouge1.f * 100.0, 4),
            rouge2: py_round(r.rouge2.f * 100.0, 4),
            rougel: py_round(r.rougel.f * 100.0, 4),
            bleu4: py_round(bleu * 100.0, 4),
        },
        None => PairScores::default(),
    };
    PairDetails {
        pred_tokens,
        label_tokens,
        rouge,
        bleu,
        scores,
        status,
    }
}

/// The stored scores of one (prediction, label) pair; 0 for a degenerate pair (see the module
/// docs).
pub fn score_pair(pred: &str, label: &str) -> PairScores {
    pair_details(pred, label).scores
}

/// Averages over all pairs, as `compute_metrics` returns them (before the key prefix).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct MetricsReport {
    /// Mean `rouge-1`.
    pub rouge1: f64,
    /// Mean `rouge-2`.
    pub rouge2: f64,
    /// Mean `rouge-l`.
    pub rougel: f64,
    /// Mean `bleu-4`.
    pub bleu4: f64,
    /// Number of pairs averaged (degenerate ones included).
    pub count: usize,
    /// Pairs whose prediction was empty or whitespace only (scored 0; fatal in the original).
    pub empty_predictions: usize,
    /// Pairs whose label was empty or whitespace only (scored 0; fatal in the original).
    pub empty_references: usize,
}

/// Streaming form of [`compute_metrics`]: push pairs as predictions arrive, then
/// [`finish`](Self::finish). Per-pair scores are kept (32 bytes each) because `np.mean` sums
/// pairwise, which needs all values.
#[derive(Debug, Clone, Default)]
pub struct MetricsAccumulator {
    rouge1: Vec<f64>,
    rouge2: Vec<f64>,
    rougel: Vec<f64>,
    bleu4: Vec<f64>,
    empty_predictions: usize,
    empty_references: usize,
}

impl MetricsAccumulator {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Score one pair, record it, and return its scores.
    pub fn push(&mut self, pred: &str, label: &str) -> PairScores {
        let d = pair_details(pred, label);
        match d.status {
            PairStatus::Scored => {}
            PairStatus::EmptyPrediction => self.empty_predictions += 1,
            PairStatus::EmptyReference => self.empty_references += 1,
        }
        let s = d.scores;
        self.rouge1.push(s.rouge1);
        self.rouge2.push(s.rouge2);
        self.rougel.push(s.rougel);
        self.bleu4.push(s.bleu4);
        s
    }

    /// Number of pairs pushed so far.
    pub fn len(&self) -> usize {
        self.bleu4.len()
    }

    /// Whether no pair was pushed.
    pub fn is_empty(&self) -> bool {
        self.bleu4.is_empty()
    }

    /// The averages (`np.mean` of each score list). With no pairs the means are 0 (NumPy would
    /// give NaN, which JSON cannot carry).
    pub fn finish(&self) -> MetricsReport {
        let mean = |v: &[f64]| if v.is_empty() { 0.0 } else { np_mean(v) };
        MetricsReport {
            rouge1: mean(&self.rouge1),
            rouge2: mean(&self.rouge2),
            rougel: mean(&self.rougel),
            bleu4: mean(&self.bleu4),
            count: self.len(),
            empty_predictions: self.empty_predictions,
            empty_references: self.empty_references,
        }
    }
}

/// `compute_metrics` over decoded predictions and labels, pairing them like Python's `zip`: if the
/// lengths differ, the extra items of the longer slice are ignored (and a warning is logged).
pub fn compute_metrics<P: AsRef<str>, L: AsRef<str>>(preds: &[P], labels: &[L]) -> MetricsReport {
    if preds.len() != labels.len() {
        tracing::warn!(
            predictions = preds.len(),
            labels = labels.len(),
            "compute_metrics: prediction and label counts differ; scoring the first {} pairs",
            preds.len().min(labels.len())
        );
    }
    let mut acc = MetricsAccumulator::new();
    for (p, l) in preds.iter().zip(labels) {
        acc.push(p.as_ref(), l.as_ref());
    }
    acc.finish()
}

/// The entries Hugging Face Trainer 4.27 writes to `{prefix}_results.json` (and merges into
/// `all_results.json`) after `evaluate` / `predict` with `main.py`'s `compute_metrics`:
///
/// - `{prefix}_rouge-1`, `{prefix}_rouge-2`, `{prefix}_rouge-l`, `{prefix}_bleu-4`: the means;
/// - `{prefix}_runtime`: `round(runtime_s, 4)`;
/// - `{prefix}_samples_per_second`: `round(samples / runtime_s, 3)`;
/// - `{prefix}_steps_per_second`: `round(ceil(samples / batch_size) / runtime_s, 3)` (HF counts
///   `ceil(num_samples / (eval_batch_size · world_size))` steps; pass that total batch size);
/// - `{prefix}_samples`: `samples` (main.py's `min(max_*_samples, len(dataset))`).
///
/// `prefix` is `"eval"` or `"predict"`. With `runtime_s <= 0` the two rates are left out (HF 4.27
/// would divide by zero). `evaluate` after training also logs `epoch` into the same dict; the
/// caller adds it when it applies. The map is key-sorted, as `json.dump(..., sort_keys=True)`.
pub fn to_results_json(
    prefix: &str,
    report: &MetricsReport,
    runtime_s: f64,
    samples: usize,
    batch_size: usize,
) -> Map<String, Value> {
    let mut m = Map::new();
    let mut put = |key: &str, v: Value| {
        m.insert(format!("{prefix}_{key}"), v);
    };
    let num = |x: f64| serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number);
    put("bleu-4", num(report.bleu4));
    put("rouge-1", num(report.rouge1));
    put("rouge-2", num(report.rouge2));
    put("rouge-l", num(report.rougel));
    put("runtime", num(py_round(runtime_s, 4)));
    put("samples", Value::from(samples));
    if runtime_s > 0.0 {
        let steps = samples.div_ceil(batch_size.max(1));
        put(
            "samples_per_second",
            num(py_round(samples as f64 / runtime_s, 3)),
        );
        put(
            "steps_per_second",
            num(py_round(steps as f64 / runtime_s, 3)),
        );
    }
    m
}

#[cfg(test)]
mod tests;
