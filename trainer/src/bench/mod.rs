//! `glm-tune bench`: P-Tuning v2 training-step, forward and decoding throughput of a random
//! model of a named shape, the process's peak memory next to the memory plan's prediction, and
//! the achieved GFLOP/s next to the backend's own f32 matmul measured in the same run.
//!
//! Phase order (the peak resident set cannot be reset, so it is read after each phase):
//! 1. the matmul probe's first round (its buffers are freed before the model exists);
//! 2. the model (packed/f16/f32 as [`synth`] builds it) and the prefix encoder;
//! 3. training steps — each preceded by one matmul round, so that throughput and matmul are
//!    measured under the same machine load and compared per round (median of the ratios);
//! 4. forward-only passes (no autodiff), then decoding at each batch size.
//!
//! The training-step peak is therefore the high-water mark after phase 3: everything before it
//! is smaller (the matmul buffers are a fraction of the model, the construction copies nothing).

pub mod flops;
pub mod memory;
pub mod report;
pub mod synth;

use std::time::Instant;

use burn::module::AutodiffModule;
use burn::prelude::*;
use glm_model::generate::{GenerationConfig, PromptBatch, generate};
use glm_model::masks::derive_inputs;
use glm_model::{ChatGlmConfig, Precision};
use prefix_encoder::PrefixConfig;

use crate::config::Device;
use crate::device::{WithBackend, dispatch};
use crate::error::TrainError;
use crate::optim::{AdamState, AdamWHf};
use crate::plan::{MemoryPlan, Phase, PlanInput};
use crate::step::{MicroBatch, Target, TrainBackend, micro_step};
use crate::update::{apply, grad_norm};

pub use report::{
    BenchReport, DecodeResult, ForwardResult, MatmulResult, MemoryResult, TrainResult,
};

use flops::BatchShape;
use memory::process_memory;

/// A named model shape of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// hidden 64, 2 layers, 4 heads, inner 256, vocab 1024 (CI smoke test).
    Tiny,
    /// hidden 1024, 4 layers, 16 heads, inner 4096, vocab 130528.
    Small,
    /// The real ChatGLM-6B: hidden 4096, 28 layers, 32 heads, inner 16384, vocab 130528.
    Chatglm6b,
}

impl Shape {
    /// Parse `tiny`, `small` or `chatglm-6b`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "tiny" => Some(Shape::Tiny),
            "small" => Some(Shape::Small),
            "chatglm-6b" | "chatglm6b" | "6b" => Some(Shape::Chatglm6b),
            _ => None,
        }
    }

    /// The name `parse` accepts.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Tiny => "tiny",
            Shape::Small => "small",
            Shape::Chatglm6b => "chatglm-6b",
        }
    }

    /// The model config. The tiny vocabulary cannot hold ChatGLM's special ids (130000+), so
    /// they keep their distance from the end of the vocabulary (130528 − id).
    pub fn config(self) -> ChatGlmConfig {
        match self {
            Shape::Tiny => {
                let mut c = ChatGlmConfig::with_shape(64, 2, 4, 256, 1024);
                let shift = |id: u32| id - 130528 + 1024;
                c.mask_token_id = shift(c.mask_token_id);
                c.gmask_token_id = shift(c.gmask_token_id);
                c.bos_token_id = shift(c.bos_token_id);
                c.eos_token_id = shift(c.eos_token_id);
                c
            }
            Shape::Small => ChatGlmConfig::with_shape(1024, 4, 16, 4096, 130528),
            Shape::Chatglm6b => ChatGlmConfig::chatglm_6b(),
        }
    }
}

/// Which phases to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Phases {
    pub train: bool,
    pub forward: bool,
    pub decode: bool,
}

impl Default for Phases {
    fn default() -> Self {
        Phases {
            train: true,
            forward: true,
            decode: true,
        }
    }
}

/// Settings of one benchmark run.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchOptions {
    pub shape: Shape,
    /// Quantize the frozen base to 4 or 8 bits (random packed weights).
    pub quantization_bit: Option<u8>,
    /// P (0 = no prefix: the training phase is skipped).
    pub pre_seq_len: usize,
    /// S of the training and forward batches.
    pub seq_len: usize,
    /// B of the training and forward batches.
    pub batch: usize,
    /// Timed training steps (and forward passes).
    pub steps: usize,
    /// New tokens per decoding run.
    pub decode_tokens: usize,
    /// Prompt length of the decoding runs.
    pub decode_prompt_len: usize,
    /// Batch sizes of the decoding runs.
    pub decode_batches: Vec<usize>,
    /// Activation precision (and dtype of dense frozen weights).
    pub precision: Precision,
    pub device: Device,
    pub phases: Phases,
    /// Per-block recomputation in the training step (the original's gradient checkpointing).
    pub recompute: bool,
    pub seed: u64,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            shape: Shape::Small,
            quantization_bit: None,
            pre_seq_len: 128,
            seq_len: 128,
            batch: 1,
            steps: 3,
            decode_tokens: 16,
            decode_prompt_len: 16,
            decode_batches: vec![1, 8],
            precision: Precision::Fp32,
            device: Device::Cpu,
            phases: Phases::default(),
            recompute: true,
            seed: 42,
        }
    }
}

impl BenchOptions {
    /// The model config with this run's prefix and quantization.
    pub fn config(&self) -> ChatGlmConfig {
        let mut c = self.shape.config();
        c.pre_seq_len = (self.pre_seq_len > 0).then_some(self.pre_seq_len);
        c.prefix_projection = Some(false);
        c.quantization_bit = self.quantization_bit.map(u32::from);
        c
    }

    /// The memory plan of exactly what this benchmark allocates.
    pub fn plan_input(&self) -> PlanInput {
        let config = self.config();
        let train = (self.phases.train && self.pre_seq_len > 0).then(|| crate::plan::TrainShape {
            batch: self.batch,
            seq_len: self.seq_len,
            label_rows: synth::train_batch(&config, self.batch, self.seq_len, self.seed)
                .map(|b| glm_model::model::loss_rows(&b.labels).0.len())
                .unwrap_or(0),
            recompute: self.recompute,
            accumulation: 1,
        });
        let generate = (self.phases.decode && !self.decode_batches.is_empty()).then(|| {
            crate::plan::GenerateShape {
                batch: self.decode_batches.iter().copied().max().unwrap_or(1),
                prompt_len: self.decode_prompt_len,
                max_length: self.decode_prompt_len + self.decode_tokens,
                num_beams: 1,
                per_row_prefix: false,
            }
        });
        PlanInput {
            model: config,
            device: self.device,
            precision: self.precision,
            embedding_dtype: synth::embedding_dtype(self.precision, self.quantization_bit),
            quantization_bit: self.quantization_bit,
            pre_seq_len: (self.pre_seq_len > 0).then_some(self.pre_seq_len),
            prefix_projection: false,
            prefix_dropout: true,
            train,
            forward: self.phases.forward.then_some(crate::plan::ForwardShape {
                batch: self.batch,
                seq_len: self.seq_len,
            }),
            generate,
            train_file_bytes: 0,
            eval_file_bytes: 0,
            train_rows: 0,
            eval_rows: 0,
            tokenizer_bytes: 0,
            largest_checkpoint_tensor: 0,
            threads: rayon::current_num_threads(),
        }
    }

    fn validate(&self) -> Result<(), TrainError> {
        if self.batch == 0 || self.seq_len < 4 {
            return Err(TrainError::Invalid(format!(
                "--batch {} / --seq-len {}: need a batch ≥ 1 of rows of ≥ 4 tokens",
                self.batch, self.seq_len
            )));
        }
        if let Some(b) = self.quantization_bit.filter(|b| ![4, 8].contains(b)) {
            return Err(TrainError::Invalid(format!(
                "--quantization-bit {b}: use 4 or 8"
            )));
        }
        if self.decode_prompt_len < 3 {
            return Err(TrainError::Invalid(
                "the decoding prompt needs at least 3 tokens (text, [gMASK], <sop>)".into(),
            ));
        }
        Ok(())
    }
}

/// Run the benchmark on the backend of `options.device`.
pub fn run_bench(options: &BenchOptions) -> Result<BenchReport, TrainError> {
    options.validate()?;
    dispatch(options.device, Job { options })?
}

struct Job<'a> {
    options: &'a BenchOptions,
}

impl WithBackend for Job<'_> {
    type Output = Result<BenchReport, TrainError>;
    fn run<B: TrainBackend>(self, device: B::Device) -> Self::Output {
        run_on::<B>(self.options, &device)
    }
}

/// Seconds of one matmul round: enough repetitions of `[m, k] × [k, n]` for ~0.25 s.
struct MatmulProbe {
    m: usize,
    k: usize,
    n: usize,
}

impl MatmulProbe {
    fn flops(&self) -> f64 {
        2.0 * (self.m * self.k * self.n) as f64
    }

    /// GFLOP/s of one round; the operands live only during the round.
    fn round<B: Backend>(&self, device: &B::Device) -> f64 {
        let a = Tensor::<B, 2>::full([self.m, self.k], 0.5, device);
        let b = Tensor::<B, 2>::full([self.k, self.n], 0.25, device);
        let once = |a: &Tensor<B, 2>, b: &Tensor<B, 2>| {
            let c = a.clone().matmul(b.clone());
            let _ = B::sync(device);
            drop(c);
        };
        once(&a, &b); // warm-up: packing buffers, thread pool
        let t = Instant::now();
        let mut reps = 0usize;
        while reps < 2 || t.elapsed().as_secs_f64() < 0.25 {
            once(&a, &b);
            reps += 1;
        }
        self.flops() * reps as f64 / t.elapsed().as_secs_f64() / 1e9
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    }
}

fn peak() -> Option<u64> {
    process_memory().map(|m| m.peak)
}

fn run_on<B: TrainBackend>(
    opts: &BenchOptions,
    device: &B::Device,
) -> Result<BenchReport, TrainError> {
    let cfg = opts.config();
    let plan = MemoryPlan::new(&opts.plan_input());
    let start_memory = process_memory();
    let probe = MatmulProbe {
        m: opts.batch * opts.seq_len,
        k: cfg.hidden_size,
        n: cfg.inner_size(),
    };
    let mut matmul_rounds = vec![probe.round::<B::InnerBackend>(device)];

    let t = Instant::now();
    let model = synth::random_frozen_model::<B>(
        &cfg,
        opts.precision,
        opts.quantization_bit,
        opts.seed,
        device,
    )?;
    let inner = model.valid();
    let mut prefix = (opts.pre_seq_len > 0).then(|| {
        PrefixConfig::for_model(&cfg, opts.pre_seq_len, false).init::<B>(opts.seed, device)
    });
    let build_s = t.elapsed().as_secs_f64();
    let after_build = peak();
    tracing::info!("bench: {} model built in {build_s:.1} s", opts.shape.name());

    let shape = BatchShape {
        batch: opts.batch,
        seq: opts.seq_len,
        prefix: opts.pre_seq_len,
    };
    let mut train = None;
    if let (true, Some(prefix)) = (opts.phases.train, prefix.as_mut()) {
        let batch = synth::train_batch(&cfg, opts.batch, opts.seq_len, opts.seed)?;
        train = Some(train_phase::<B>(
            opts,
            &model,
            &inner,
            prefix,
            &batch,
            &probe,
            &mut matmul_rounds,
            shape,
            device,
        )?);
    }
    let after_train = peak();

    let mut forward = None;
    if opts.phases.forward {
        forward = Some(forward_phase::<B>(
            opts,
            &inner,
            prefix.as_ref().map(|p| p.valid()),
            &probe,
            &mut matmul_rounds,
            shape,
            device,
        )?);
    }
    let after_forward = peak();

    let mut decode = Vec::new();
    if opts.phases.decode {
        let inner_prefix = prefix.as_ref().map(|p| p.valid());
        for &b in &opts.decode_batches {
            decode.push(decode_phase::<B::InnerBackend>(
                opts,
                &inner,
                inner_prefix.as_ref(),
                b,
            )?);
        }
    }
    if matmul_rounds.len() == 1 {
        matmul_rounds.push(probe.round::<B::InnerBackend>(device));
    }
    let end = process_memory();

    let matmul = MatmulResult {
        m: probe.m,
        k: probe.k,
        n: probe.n,
        gflops: median(&matmul_rounds),
        rounds: matmul_rounds,
    };
    let predicted_train = plan.train_peak();
    let memory = MemoryResult {
        start_rss: start_memory.map(|m| m.rss),
        after_build_peak: after_build,
        after_train_peak: train.as_ref().and(after_train),
        after_forward_peak: forward.as_ref().and(after_forward),
        final_peak: end.map(|m| m.peak),
        final_rss: end.map(|m| m.rss),
        predicted_train_peak: predicted_train,
        predicted_peak: plan.total_peak(),
        predicted_forward_peak: plan.peak_of(Phase::Forward),
        predicted_generate_peak: plan.peak_of(Phase::Generate),
        // On a GPU the plan counts device memory, which the process RSS does not measure.
        train_prediction_error: match (predicted_train, train.as_ref().and(after_train)) {
            (Some(p), Some(m)) if m > 0 && plan.target == crate::plan::Target::ProcessRss => {
                Some(p as f64 / m as f64 - 1.0)
            }
            _ => None,
        },
    };
    Ok(BenchReport {
        shape: opts.shape.name().to_string(),
        hidden_size: cfg.hidden_size,
        num_layers: cfg.num_layers,
        num_heads: cfg.num_attention_heads,
        inner_size: cfg.inner_size(),
        vocab_size: cfg.vocab_size,
        quantization_bit: opts.quantization_bit,
        pre_seq_len: opts.pre_seq_len,
        seq_len: opts.seq_len,
        batch: opts.batch,
        precision: format!("{:?}", opts.precision).to_lowercase(),
        device: opts.device.to_string(),
        backend: B::name(device),
        threads: rayon::current_num_threads(),
        recompute: opts.recompute,
        build_s,
        train,
        forward,
        decode,
        matmul,
        memory,
        plan,
    })
}

#[allow(clippy::too_many_arguments)]
fn train_phase<B: TrainBackend>(
    opts: &BenchOptions,
    model: &glm_model::ChatGlmModel<B>,
    inner: &glm_model::ChatGlmModel<B::InnerBackend>,
    prefix: &mut prefix_encoder::PrefixEncoder<B>,
    batch: &MicroBatch,
    probe: &MatmulProbe,
    matmul_rounds: &mut Vec<f64>,
    shape: BatchShape,
    device: &B::Device,
) -> Result<TrainResult, TrainError> {
    let cfg = &model.config;
    let opt = AdamWHf::default();
    let mut adam = AdamState::<B::InnerBackend>::default();
    let head_rows = glm_model::model::loss_rows(&batch.labels).0.len();
    let flop = flops::train_step_flops(cfg, shape, head_rows, opts.recompute, false);
    let mut step_s = Vec::new();
    let mut ratios = Vec::new();
    let mut losses = Vec::new();
    for step in 0..opts.steps.max(1) {
        if step > 0 {
            matmul_rounds.push(probe.round::<B::InnerBackend>(device));
        }
        let mm = *matmul_rounds.last().unwrap_or(&f64::NAN);
        B::seed(device, opts.seed.wrapping_add(step as u64));
        let t = Instant::now();
        let r = micro_step(
            model,
            inner,
            &Target::Prefix(prefix),
            batch,
            1.0,
            opts.recompute,
            device,
        )?;
        let norm = grad_norm::<B>(&r.grads);
        apply(prefix, r.grads, norm, 1.0, &opt, &mut adam, 2e-2);
        let _ = B::sync(device);
        let s = t.elapsed().as_secs_f64();
        tracing::info!(
            "bench: training step {} of {}: {s:.3} s, loss {:.4}",
            step + 1,
            opts.steps.max(1),
            r.loss
        );
        step_s.push(s);
        losses.push(r.loss);
        ratios.push(flop / s / 1e9 / mm);
    }
    let med = median(&step_s);
    Ok(TrainResult {
        step_s,
        median_step_s: med,
        tokens_per_s: (opts.batch * opts.seq_len) as f64 / med,
        gflop_per_step: flop / 1e9,
        gflops: flop / med / 1e9,
        matmul_ratio: median(&ratios),
        losses,
    })
}

fn forward_phase<B: TrainBackend>(
    opts: &BenchOptions,
    inner: &glm_model::ChatGlmModel<B::InnerBackend>,
    prefix: Option<prefix_encoder::PrefixEncoder<B::InnerBackend>>,
    probe: &MatmulProbe,
    matmul_rounds: &mut Vec<f64>,
    shape: BatchShape,
    device: &B::Device,
) -> Result<ForwardResult, TrainError> {
    let cfg = &inner.config;
    let rows = synth::train_batch(cfg, opts.batch, opts.seq_len, opts.seed ^ 1)?.rows;
    let flop = flops::forward_flops(cfg, shape);
    let dtype = inner.precision.dtype();
    let mut pass_s = Vec::new();
    let mut ratios = Vec::new();
    for _ in 0..opts.steps.max(1) {
        matmul_rounds.push(probe.round::<B::InnerBackend>(device));
        let mm = *matmul_rounds.last().unwrap_or(&f64::NAN);
        let t = Instant::now();
        let past = prefix
            .as_ref()
            .map(|p| p.past_key_values(opts.batch, dtype, false));
        let out = inner.forward_rows(&rows, past.as_ref(), device)?;
        let _ = B::InnerBackend::sync(device);
        drop(out);
        let s = t.elapsed().as_secs_f64();
        pass_s.push(s);
        ratios.push(flop / s / 1e9 / mm);
    }
    let med = median(&pass_s);
    Ok(ForwardResult {
        pass_s,
        median_pass_s: med,
        tokens_per_s: (opts.batch * opts.seq_len) as f64 / med,
        gflop_per_pass: flop / 1e9,
        gflops: flop / med / 1e9,
        matmul_ratio: median(&ratios),
    })
}

fn decode_phase<B: glm_model::GlmBackend>(
    opts: &BenchOptions,
    inner: &glm_model::ChatGlmModel<B>,
    prefix: Option<&prefix_encoder::PrefixEncoder<B>>,
    batch: usize,
) -> Result<DecodeResult, TrainError> {
    let cfg = &inner.config;
    let rows = synth::prompt_rows(cfg, batch, opts.decode_prompt_len, opts.seed ^ 2);
    let inputs = derive_inputs(&rows, cfg)?;
    let prompts = PromptBatch {
        ids: rows,
        mask: inputs.mask,
        positions: inputs.positions,
    };
    let mut gen_cfg = GenerationConfig::greedy(
        opts.decode_prompt_len + opts.decode_tokens,
        cfg.eos_token_id,
        cfg.pad_token_id,
    );
    gen_cfg.suppress_from = Some(synth::first_special_id(cfg));
    // Inference: the rows share one copy of the prefix (stride-0 views, see `past_key_values`).
    let past = prefix.map(|p| p.past_key_values(batch, inner.precision.dtype(), false));
    let start = Instant::now();
    let mut marks: Vec<f64> = Vec::new();
    let out = generate(inner, &prompts, past.as_ref(), &gen_cfg, false, &mut |_| {
        marks.push(start.elapsed().as_secs_f64());
        true
    })?;
    let produced = out.tokens.first().map(Vec::len).unwrap_or(0);
    let prefill_s = marks.first().copied().unwrap_or(f64::NAN);
    let decode_s = marks.last().copied().unwrap_or(f64::NAN) - prefill_s;
    let steps = produced.saturating_sub(1);
    Ok(DecodeResult {
        batch,
        prompt_len: opts.decode_prompt_len,
        new_tokens: produced,
        prefill_s,
        decode_s,
        tokens_per_s: if steps > 0 && decode_s > 0.0 {
            (batch * steps) as f64 / decode_s
        } else {
            f64::NAN
        },
        peak_rss: peak(),
    })
}
