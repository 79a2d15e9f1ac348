//! The benchmark's results: a serde structure (`--json`) and its human-readable table.

use std::fmt::Write as _;

use serde::Serialize;

use crate::plan::{MemoryPlan, gib};

/// Training-step measurements.
#[derive(Debug, Clone, Serialize)]
pub struct TrainResult {
    /// Seconds of each timed step (micro-step with recomputation + optimizer update).
    pub step_s: Vec<f64>,
    pub median_step_s: f64,
    /// B·S / median step time.
    pub tokens_per_s: f64,
    /// FLOPs of one step (GEMMs: forward, recomputation, input-gradient backward), in GFLOP.
    pub gflop_per_step: f64,
    /// Achieved GFLOP/s at the median step time.
    pub gflops: f64,
    /// Median over the steps of (step GFLOP/s) / (matmul GFLOP/s of the round just before).
    pub matmul_ratio: f64,
    /// The loss of each step.
    pub losses: Vec<f64>,
}

/// Forward-only (inference, no autodiff) measurements.
#[derive(Debug, Clone, Serialize)]
pub struct ForwardResult {
    pub pass_s: Vec<f64>,
    pub median_pass_s: f64,
    pub tokens_per_s: f64,
    pub gflop_per_pass: f64,
    pub gflops: f64,
    pub matmul_ratio: f64,
}

/// Greedy decoding with the KV cache at one batch size.
#[derive(Debug, Clone, Serialize)]
pub struct DecodeResult {
    pub batch: usize,
    pub prompt_len: usize,
    /// New tokens per row.
    pub new_tokens: usize,
    /// The prompt's forward (and first token).
    pub prefill_s: f64,
    /// The incremental steps after the first token.
    pub decode_s: f64,
    /// batch · (new_tokens − 1) / decode_s.
    pub tokens_per_s: f64,
    /// Process peak after this run (bytes).
    pub peak_rss: Option<u64>,
}

/// The backend's own f32 matmul `[m, k] × [k, n]`.
#[derive(Debug, Clone, Serialize)]
pub struct MatmulResult {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    /// Median of the rounds.
    pub gflops: f64,
    pub rounds: Vec<f64>,
}

/// Resident memory (bytes) after each phase and the plan's prediction.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryResult {
    pub start_rss: Option<u64>,
    pub after_build_peak: Option<u64>,
    /// The training-step peak (VmHWM after the training phase).
    pub after_train_peak: Option<u64>,
    pub after_forward_peak: Option<u64>,
    pub final_peak: Option<u64>,
    pub final_rss: Option<u64>,
    /// The plan's training peak for this configuration.
    pub predicted_train_peak: Option<u64>,
    /// The plan's peak over every phase.
    pub predicted_peak: u64,
    /// The plan's forward-phase peak.
    pub predicted_forward_peak: Option<u64>,
    /// The plan's generation peak (the largest decoding batch).
    pub predicted_generate_peak: Option<u64>,
    /// predicted / measured − 1 for the training peak (CPU only: on a GPU the plan counts device
    /// memory, not the process RSS measured here).
    pub train_prediction_error: Option<f64>,
}

/// Everything one `glm-tune bench` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub shape: String,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub inner_size: usize,
    pub vocab_size: usize,
    pub quantization_bit: Option<u8>,
    pub pre_seq_len: usize,
    pub seq_len: usize,
    pub batch: usize,
    pub precision: String,
    pub device: String,
    pub backend: String,
    pub threads: usize,
    pub recompute: bool,
    /// Seconds to create the random model.
    pub build_s: f64,
    pub train: Option<TrainResult>,
    pub forward: Option<ForwardResult>,
    pub decode: Vec<DecodeResult>,
    pub matmul: MatmulResult,
    pub memory: MemoryResult,
    /// The memory plan of this configuration.
    pub plan: MemoryPlan,
}

fn opt_gib(v: Option<u64>) -> String {
    v.map(|b| format!("{:.2} GiB", gib(b)))
        .unwrap_or_else(|| "n/a".into())
}

impl BenchReport {
    /// The results as an aligned two-column table.
    pub fn table(&self) -> String {
        let mut rows: Vec<(String, String)> = Vec::new();
        let quant = self
            .quantization_bit
            .map(|b| format!("int{b}"))
            .unwrap_or_else(|| "none".into());
        rows.push((
            "shape".into(),
            format!(
                "{} (hidden {}, {} layers, {} heads, inner {}, vocab {})",
                self.shape,
                self.hidden_size,
                self.num_layers,
                self.num_heads,
                self.inner_size,
                self.vocab_size
            ),
        ));
        rows.push((
            "run".into(),
            format!(
                "{} {} quantization {quant}, pre_seq_len {}, seq {}, batch {}, {} threads{}",
                self.backend,
                self.precision,
                self.pre_seq_len,
                self.seq_len,
                self.batch,
                self.threads,
                if self.recompute {
                    ", recomputation"
                } else {
                    ""
                }
            ),
        ));
        rows.push(("model build".into(), format!("{:.1} s", self.build_s)));
        rows.push((
            "f32 matmul".into(),
            format!(
                "{:.1} GFLOP/s  ([{}, {}] x [{}, {}], median of {} rounds)",
                self.matmul.gflops,
                self.matmul.m,
                self.matmul.k,
                self.matmul.k,
                self.matmul.n,
                self.matmul.rounds.len()
            ),
        ));
        if let Some(t) = &self.train {
            rows.push((
                "training step".into(),
                format!(
                    "{:.3} s/step, {:.1} tokens/s  (median of {})",
                    t.median_step_s,
                    t.tokens_per_s,
                    t.step_s.len()
                ),
            ));
            rows.push((
                "training GFLOP/s".into(),
                format!(
                    "{:.1}  ({:.1} GFLOP/step, {:.0} % of the matmul)",
                    t.gflops,
                    t.gflop_per_step,
                    100.0 * t.matmul_ratio
                ),
            ));
        }
        if let Some(f) = &self.forward {
            rows.push((
                "forward".into(),
                format!(
                    "{:.3} s/pass, {:.1} tokens/s",
                    f.median_pass_s, f.tokens_per_s
                ),
            ));
            rows.push((
                "forward GFLOP/s".into(),
                format!(
                    "{:.1}  ({:.0} % of the matmul)",
                    f.gflops,
                    100.0 * f.matmul_ratio
                ),
            ));
        }
        for d in &self.decode {
            rows.push((
                format!("decode batch {}", d.batch),
                format!(
                    "{:.1} tokens/s  ({} new tokens after a {}-token prompt; prefill {:.2} s)",
                    d.tokens_per_s, d.new_tokens, d.prompt_len, d.prefill_s
                ),
            ));
        }
        let m = &self.memory;
        rows.push(("peak RSS after build".into(), opt_gib(m.after_build_peak)));
        if self.train.is_some() {
            let err = m
                .train_prediction_error
                .map(|e| format!("  (plan {:+.1} %)", 100.0 * e))
                .unwrap_or_default();
            rows.push((
                "peak RSS training".into(),
                format!("{}{err}", opt_gib(m.after_train_peak)),
            ));
            rows.push((
                "plan: training peak".into(),
                opt_gib(m.predicted_train_peak),
            ));
        }
        if self.forward.is_some() {
            rows.push((
                "peak RSS after forward".into(),
                opt_gib(m.after_forward_peak),
            ));
            rows.push((
                "plan: forward peak".into(),
                opt_gib(m.predicted_forward_peak),
            ));
        }
        rows.push(("peak RSS at the end".into(), opt_gib(m.final_peak)));
        if !self.decode.is_empty() {
            rows.push((
                "plan: decoding peak".into(),
                opt_gib(m.predicted_generate_peak),
            ));
        }
        rows.push((
            "plan: peak of all phases".into(),
            opt_gib(Some(m.predicted_peak)),
        ));
        let width = rows
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for (k, v) in rows {
            let _ = writeln!(out, "{k:<width$}  {v}");
        }
        out
    }
}
