//! The size of every item of a [`MemoryPlan`], derived from what this code base allocates.
//!
//! Notation: B batch, S tokens per row, P prefix length, Sk = P + S keys, H hidden, I MLP width,
//! V vocabulary, L layers, nh heads; T = B·S rows; `a` bytes per activation element (4 for
//! fp32, 2 for fp16/bf16); KVP = B·P·2L·H, the prefix keys and values of a batch. Sizes below are
//! in elements unless a dtype is named.
//!
//! A P-Tuning v2 micro-batch with per-block recomputation (`trainer::step::micro_step`) passes
//! through these moments; the training transient is the largest of them:
//! - **prefix**: `past_key_values` with dropout keeps the dropout mask (for its backward) and the
//!   per-layer key/value copies: 2·KVP·a (3·KVP·a while they are made);
//! - **gradient-free pass**: plus the L saved block inputs (L·T·H·a) and one block's temporaries;
//! - **head**: plus the logits of the rows that have a label, N·V in f32 (the loss and its
//!   gradient are computed in place in that one buffer);
//! - **block backward**: plus one block's autodiff graph and backward temporaries, while the saved
//!   inputs shrink and the per-layer prefix gradients (up to KVP·a) grow;
//! - **prefix backward**: the prefix gradients, a running sum of the narrowed slices' gradients
//!   and one zero-padded slice (autodiff's narrow backward): 3·KVP·a on top of the prefix;
//! - **optimizer**: `adamw_hf` over plain tensors holds up to 3 f32 temporaries of the
//!   trainable size next to the parameter, its gradient and the two moments.
//!
//! One block's temporaries without autodiff (recomputation's first pass, inference): the fused
//! QKV output, the contiguous q|k copy and its half-swapped copy (3 + 2 + 2 T·H), the query,
//! keys and values with the past (T·H + 2·B·Sk·H), scores and the masked scores (2·B·nh·S·Sk);
//! the MLP holds 3 T·I. Under autodiff a block keeps for its backward: LayerNorm centred and
//! normalised inputs (2 × 2 T·H), the scaled queries (T·H), keys and values (2·B·Sk·H), the
//! softmax's exp and probabilities (2·B·nh·S·Sk) and the GELU's input, polynomial, argument
//! and sigmoid (4 T·I); the backward adds about 3 T·I of gradients.

use burn::tensor::DType;
use glm_model::ChatGlmConfig;
use prefix_encoder::PrefixConfig;

use super::{
    ForwardShape, GenerateShape, MemoryPlan, Phase, PlanInput, PlanItem, PlanNote, Target,
    TrainShape,
};
use crate::config::Device;

/// Bytes of one element of `dtype`.
pub fn dtype_bytes(dtype: DType) -> u64 {
    match dtype {
        DType::F64 | DType::I64 | DType::U64 => 8,
        DType::F16 | DType::BF16 | DType::I16 | DType::U16 => 2,
        DType::I8 | DType::U8 | DType::Bool(_) => 1,
        _ => 4,
    }
}

/// Tokenizer memory per byte of its file (measured: the 2.7 MB `ice_text.model` takes 44 MB
/// once parsed into pieces, scores and the lookup trie).
pub const TOKENIZER_EXPANSION: u64 = 16;

/// Runtime baseline of the CPU process: binary, shared libraries and the main thread (measured
/// 6.5 MB at start), plus per worker thread its stack and glibc arena.
pub const CPU_BASELINE: u64 = 8 << 20;
/// Per worker thread (stack pages and allocator arena actually touched).
pub const CPU_PER_THREAD: u64 = 4 << 20;
/// CUDA: context, loaded kernels and the cubecl memory pools' granularity (an estimate; the
/// CPU numbers are measured, this one is not).
pub const CUDA_BASELINE: u64 = 512 << 20;

/// Shape numbers of a model, as u64.
#[derive(Debug, Clone, Copy)]
pub struct Dims {
    pub h: u64,
    pub i: u64,
    pub v: u64,
    pub l: u64,
    pub nh: u64,
}

impl Dims {
    pub fn of(cfg: &ChatGlmConfig) -> Self {
        Dims {
            h: cfg.hidden_size as u64,
            i: cfg.inner_size() as u64,
            v: cfg.vocab_size as u64,
            l: cfg.num_layers as u64,
            nh: cfg.num_attention_heads as u64,
        }
    }

    /// Weight elements of the four linears of one block.
    pub fn block_linear_elems(&self) -> u64 {
        3 * self.h * self.h + self.h * self.h + 2 * self.h * self.i
    }

    /// Output features of the four linears of one block (biases, int scales).
    pub fn block_outputs(&self) -> u64 {
        3 * self.h + self.h + self.i + self.h
    }

    /// Packed bytes of the four linears of one block at `bits`.
    pub fn block_packed_bytes(&self, bits: u8) -> u64 {
        let row = |inp: u64| quant::format::packed_row_bytes(inp as usize, bits) as u64;
        3 * self.h * row(self.h)
            + self.h * row(self.h)
            + self.i * row(self.h)
            + self.h * row(self.i)
    }
}

/// Elements of one block's temporaries without autodiff, for T rows over Sk keys.
pub fn block_inner_elems(d: &Dims, batch: u64, seq: u64, keys: u64) -> u64 {
    let t = batch * seq;
    let attention = 8 * t * d.h + 2 * batch * keys * d.h + 2 * batch * d.nh * seq * keys;
    let mlp = 3 * t * d.i + 3 * t * d.h;
    attention.max(mlp)
}

/// Elements one block keeps for its backward under autodiff.
pub fn block_saved_elems(d: &Dims, batch: u64, seq: u64, keys: u64) -> u64 {
    let t = batch * seq;
    5 * t * d.h + 2 * batch * keys * d.h + 2 * batch * d.nh * seq * keys + 4 * t * d.i
}

/// Elements of one block's autodiff graph at its peak (saved state plus backward temporaries).
pub fn block_autodiff_peak_elems(d: &Dims, batch: u64, seq: u64, keys: u64) -> u64 {
    let t = batch * seq;
    block_saved_elems(d, batch, seq, keys) + (9 * t * d.h).max(3 * t * d.i + 2 * t * d.h)
}

/// The transient peaks of one training micro-batch (bytes, beyond the parameters, gradients and
/// moments), per moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrainTransient {
    pub prefix: u64,
    pub gradient_free_pass: u64,
    pub head: u64,
    pub block_backward: u64,
    pub prefix_backward: u64,
    pub optimizer: u64,
}

impl TrainTransient {
    /// The largest moment and its name.
    pub fn peak(&self) -> (&'static str, u64) {
        [
            ("prefix keys/values", self.prefix),
            ("gradient-free pass", self.gradient_free_pass),
            ("head and loss", self.head),
            ("block backward", self.block_backward),
            ("prefix backward", self.prefix_backward),
            ("optimizer update", self.optimizer),
        ]
        .into_iter()
        .max_by_key(|&(_, b)| b)
        .unwrap_or(("none", 0))
    }

    /// The largest activation moment (everything but the optimizer update).
    pub fn activations(&self) -> u64 {
        self.prefix
            .max(self.gradient_free_pass)
            .max(self.head)
            .max(self.block_backward)
            .max(self.prefix_backward)
    }
}

/// Transients of a P-Tuning v2 micro-batch (see the module documentation); the optimizer updates
/// one parameter tensor at a time, the largest of which has `largest_param_bytes` in f32.
pub fn train_transient(
    input: &PlanInput,
    shape: &TrainShape,
    largest_param_bytes: u64,
) -> TrainTransient {
    let d = Dims::of(&input.model);
    let a = dtype_bytes(input.precision.dtype());
    let (b, s) = (shape.batch as u64, shape.seq_len as u64);
    let p = input.pre_seq_len.unwrap_or(0) as u64;
    let keys = p + s;
    let t = b * s;
    let kvp = b * p * 2 * d.l * d.h * a;
    let (past, past_peak) = if p == 0 {
        (0, 0)
    } else if input.prefix_dropout {
        (2 * kvp, 3 * kvp)
    } else {
        (kvp, kvp)
    };
    // The f32 prefix rows are cast to a narrower activation dtype first.
    let cast = if a < 4 && p > 0 {
        p * 2 * d.l * d.h * a
    } else {
        0
    };
    let saved_inputs = d.l * t * d.h * a;
    let gradient_free_pass = past + saved_inputs + block_inner_elems(&d, b, s, keys) * a;
    let n = shape.label_rows as u64;
    let logits = n * d.v * 4 + if a < 4 { n * d.v * a } else { 0 };
    // A narrower stored table is converted tile by tile: one 256 × 4096 f32 tile per thread.
    let tiles = if dtype_bytes(input.embedding_dtype) < 4 {
        input.threads as u64 * (256 * 4096 * 4)
    } else {
        0
    };
    let head = past + saved_inputs + 2 * n * d.h * 4 + logits + tiles;
    let per_layer_kv = kvp / d.l.max(1);
    let shrinking = (d.l * t * d.h * a).max(t * d.h * a + (d.l - 1) * per_layer_kv);
    let block_backward =
        past + shrinking + block_autodiff_peak_elems(&d, b, s, keys) * a + 2 * t * d.h * a;
    let prefix_backward = past + 3 * kvp;
    let optimizer = 3 * largest_param_bytes;
    TrainTransient {
        prefix: past_peak + cast,
        gradient_free_pass: gradient_free_pass + cast,
        head,
        block_backward,
        prefix_backward,
        optimizer,
    }
}

/// Activation bytes of the same micro-batch without recomputation: every block's graph is alive
/// at once, and the loss runs through autodiff over the full [B, S, V] logits (log-softmax,
/// gather and their backward: about 6 f32 copies).
pub fn train_without_recompute(input: &PlanInput, shape: &TrainShape) -> u64 {
    let d = Dims::of(&input.model);
    let a = dtype_bytes(input.precision.dtype());
    let (b, s) = (shape.batch as u64, shape.seq_len as u64);
    let p = input.pre_seq_len.unwrap_or(0) as u64;
    let keys = p + s;
    let kvp = b * p * 2 * d.l * d.h * a;
    let past = if input.prefix_dropout { 2 * kvp } else { kvp };
    let blocks = d.l * (block_saved_elems(&d, b, s, keys) + 2 * b * s * d.h) * a;
    let head = 6 * b * s * d.v * 4;
    past + blocks + head + block_autodiff_peak_elems(&d, b, s, keys) * a
}

/// Generation transients: (prefix copies, KV cache at the last step, prompt-forward peak).
fn generate_sizes(input: &PlanInput, g: &GenerateShape) -> (u64, u64, u64) {
    let d = Dims::of(&input.model);
    let a = dtype_bytes(input.precision.dtype());
    let rows = (g.batch * g.num_beams) as u64;
    let p = input.pre_seq_len.unwrap_or(0) as u64;
    // Per-row copies (`past_key_values(B)`), or views of the f32 encoder rows (a cast copy for
    // a narrower activation dtype).
    let prefix = if g.per_row_prefix {
        rows * p * 2 * d.l * d.h * a
    } else if a < 4 {
        p * 2 * d.l * d.h * a
    } else {
        0
    };
    let positions = p + g.max_length as u64;
    let cache = 2 * d.l * rows * positions * d.h * a;
    // Greedy/sampling writes each step into buffers with room, grown layer by layer (one
    // layer's old copy at a time) and never past the final length; beam search concatenates
    // and keeps the old cache until the step ends.
    let cache = if g.num_beams > 1 {
        2 * cache
    } else {
        cache + cache / d.l.max(1)
    };
    let lp = g.prompt_len as u64;
    let prompt_cache = 2 * d.l * rows * (p + lp) * d.h * a;
    let prompt = prompt_cache + rows * lp * d.v * a + block_inner_elems(&d, rows, lp, p + lp) * a;
    (prefix, cache, prompt)
}

fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F64 => "f64",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        _ => "f32",
    }
}

struct Builder {
    items: Vec<PlanItem>,
}

impl Builder {
    fn add(
        &mut self,
        group: &'static str,
        name: impl Into<String>,
        bytes: u64,
        phases: &[Phase],
        detail: impl Into<String>,
    ) {
        if bytes > 0 {
            self.items.push(PlanItem {
                group,
                name: name.into(),
                bytes,
                phases: phases.to_vec(),
                detail: detail.into(),
            });
        }
    }
}

/// Build the plan of `input`.
pub(super) fn plan(input: &PlanInput) -> MemoryPlan {
    use Phase::*;
    let cfg = &input.model;
    let d = Dims::of(cfg);
    let act = input.precision.dtype();
    let a = dtype_bytes(act);
    let target = input.target();
    let mut phases = vec![Load];
    if input.train.is_some() {
        phases.push(Train);
    }
    if input.forward.is_some() {
        phases.push(Forward);
    }
    if input.generate.is_some() {
        phases.push(Generate);
    }
    let all: Vec<Phase> = phases.clone();
    let ptuning = input.pre_seq_len.is_some();
    let mut out = Builder { items: Vec::new() };
    let mut notes = Vec::new();

    // ---- frozen (or, for full fine-tuning, trainable) weights ----
    let weights_group = if ptuning {
        "frozen weights"
    } else {
        "trainable"
    };
    let e = dtype_bytes(input.embedding_dtype);
    out.add(
        weights_group,
        format!(
            "word_embeddings {} [{}, {}] (also the output projection)",
            dtype_name(input.embedding_dtype),
            d.v,
            d.h
        ),
        d.v * d.h * e,
        &all,
        "V·H",
    );
    let mut dense_params = d.v * d.h;
    match input.quantization_bit {
        Some(bits) => {
            out.add(
                weights_group,
                format!("{} blocks: int{bits} packed linears", d.l),
                d.l * d.block_packed_bytes(bits),
                &all,
                format!("L·Σ out·in·{bits}/8"),
            );
            out.add(
                weights_group,
                format!("{} blocks: f16 quantization scales", d.l),
                d.l * d.block_outputs() * 2,
                &all,
                "one per output row",
            );
            // The loader keeps quantized biases in f16 for an fp16 model, f32 otherwise.
            let bias = if act == DType::F16 { 2 } else { 4 };
            out.add(
                weights_group,
                format!("{} blocks: linear biases", d.l),
                d.l * d.block_outputs() * bias,
                &all,
                "L·(3H + H + I + H)",
            );
        }
        None => {
            out.add(
                weights_group,
                format!("{} blocks: dense linears {}", d.l, dtype_name(act)),
                d.l * (d.block_linear_elems() + d.block_outputs()) * a,
                &all,
                "L·(4H² + 2H·I) weights + biases",
            );
            dense_params += d.l * (d.block_linear_elems() + d.block_outputs());
        }
    }
    out.add(
        weights_group,
        format!("{} LayerNorms", 2 * d.l + 1),
        (2 * d.l + 1) * 2 * d.h * a,
        &all,
        "(2L + 1)·2H",
    );
    dense_params += (2 * d.l + 1) * 2 * d.h;

    // ---- trainable parameters, gradients, moments ----
    let (trainable_bytes, largest_param) = match input.pre_seq_len {
        Some(p) => {
            let pc = PrefixConfig::for_model(cfg, p, input.prefix_projection);
            let n = pc.num_params() as u64;
            out.add(
                "trainable",
                format!("prefix encoder f32 ({:.1} M parameters)", n as f64 / 1e6),
                n * 4,
                &all,
                if input.prefix_projection {
                    "P·H + H² + H + 2LH·H + 2LH"
                } else {
                    "P·2L·H"
                },
            );
            let largest = pc
                .parameter_shapes()
                .iter()
                .map(|(_, s)| s.iter().product::<usize>() as u64)
                .max()
                .unwrap_or(0);
            (n * 4, largest * 4)
        }
        None => (dense_params * a, d.v * d.h * 4),
    };
    if let Some(shape) = &input.train {
        let grads = if shape.accumulation > 1 { 2 } else { 1 };
        out.add(
            "gradients",
            "gradients of the trainable parameters",
            grads * trainable_bytes,
            &[Train],
            if grads > 1 {
                "accumulated + current micro-batch"
            } else {
                "f32, one per parameter"
            },
        );
        // adamw_hf keeps both moments in f32 whatever the parameter dtype.
        let moments = if ptuning {
            2 * trainable_bytes
        } else {
            2 * dense_params * 4
        };
        out.add(
            "optimizer",
            "AdamW moments (exp_avg, exp_avg_sq, f32)",
            moments,
            &[Train],
            "2 per parameter",
        );
        let transient = train_transient(input, shape, largest_param);
        let (moment, peak) = if shape.recompute {
            transient.peak()
        } else {
            let without = train_without_recompute(input, shape);
            if without > transient.optimizer {
                ("autodiff graph", without)
            } else {
                ("optimizer update", transient.optimizer)
            }
        };
        let with = transient.activations();
        let without = train_without_recompute(input, shape);
        out.add(
            "activations",
            format!(
                "training micro-batch transient ({} × {} tokens), peak at: {moment}",
                shape.batch, shape.seq_len
            ),
            peak,
            &[Train],
            format!(
                "activations {} with recomputation, {} without; optimizer update {}",
                human(with),
                human(without),
                human(transient.optimizer)
            ),
        );
        notes.push(PlanNote {
            name: format!(
                "activations per micro-batch with block recomputation{}",
                if shape.recompute { " (this run)" } else { "" }
            ),
            bytes: with,
        });
        notes.push(PlanNote {
            name: format!(
                "activations per micro-batch without recomputation{}",
                if shape.recompute { "" } else { " (this run)" }
            ),
            bytes: without,
        });
        notes.push(PlanNote {
            name: "optimizer update temporaries".into(),
            bytes: transient.optimizer,
        });
    }

    // ---- a forward pass (benchmark) ----
    if let Some(ForwardShape { batch, seq_len }) = input.forward {
        let (b, s) = (batch as u64, seq_len as u64);
        let p = input.pre_seq_len.unwrap_or(0) as u64;
        out.add(
            "activations",
            "forward: prefix keys/values",
            b * p * 2 * d.l * d.h * a,
            &[Forward],
            "B·P·2L·H",
        );
        out.add(
            "activations",
            "forward: keys/values of every layer",
            2 * d.l * b * (p + s) * d.h * a,
            &[Forward],
            "2·L·B·(P + S)·H",
        );
        out.add(
            "activations",
            "forward: logits and one block's temporaries",
            (b * s * d.v + block_inner_elems(&d, b, s, p + s)) * a,
            &[Forward],
            "B·S·V + block",
        );
    }

    // ---- generation ----
    if let Some(g) = &input.generate {
        let (prefix, cache, prompt) = generate_sizes(input, g);
        let rows = g.batch * g.num_beams;
        out.add(
            "kv cache",
            format!("generation: prefix keys/values copied for {rows} rows"),
            prefix,
            &[Generate],
            "B·P·2L·H",
        );
        let (what, bytes) = if cache >= prompt {
            (
                format!(
                    "KV cache of {rows} rows × {} positions",
                    input.pre_seq_len.unwrap_or(0) + g.max_length
                ),
                cache,
            )
        } else {
            (
                "prompt forward: cache, logits, block temporaries".into(),
                prompt,
            )
        };
        out.add(
            "kv cache",
            format!("generation: {what}"),
            bytes,
            &[Generate],
            "2·L·B·(P + max_length)·H, or the prompt step",
        );
    }

    // ---- data ----
    out.add(
        "data",
        "tokenizer",
        input.tokenizer_bytes * TOKENIZER_EXPANSION,
        &all,
        format!("{TOKENIZER_EXPANSION} × the tokenizer file"),
    );
    if let Some(shape) = &input.train {
        let row = shape.seq_len as u64 * (4 + 8) + 64;
        out.add(
            "data",
            format!("training rows (≤ {})", input.train_rows),
            input.train_rows * row,
            &[Train],
            "input_ids u32 + labels i64 per token",
        );
        out.add(
            "data",
            "reading the training file (bytes + parsed records)",
            2 * input.train_file_bytes + input.train_rows * row,
            &[Load],
            "2 × file + rows",
        );
    }
    if let Some(g) = &input.generate {
        let lp = g.prompt_len as u64;
        let row = lp * (4 + 2 * 8) + lp * lp + 8 * g.max_length as u64 + 96;
        out.add(
            "data",
            format!("evaluation rows (≤ {})", input.eval_rows),
            input.eval_rows * row,
            &[Generate],
            "ids, 2D positions, the [L, L] mask and labels",
        );
        out.add(
            "data",
            "reading the evaluation file",
            2 * input.eval_file_bytes + input.eval_rows * row,
            &[Load],
            "2 × file + rows",
        );
    }
    out.add(
        "data",
        "checkpoint loading: largest tensor as stored",
        input.largest_checkpoint_tensor,
        &[Load],
        "streamed tensor by tensor",
    );

    // ---- runtime ----
    match target {
        Target::ProcessRss => out.add(
            "runtime",
            format!(
                "binary, libraries, {} worker threads and allocator arenas",
                input.threads
            ),
            CPU_BASELINE + CPU_PER_THREAD * input.threads as u64,
            &all,
            "measured",
        ),
        Target::DeviceMemory => out.add(
            "runtime",
            "CUDA context and memory-pool granularity",
            CUDA_BASELINE,
            &all,
            "estimate",
        ),
    }

    let summary = summary(input);
    MemoryPlan {
        target,
        items: out.items,
        notes,
        phases,
        summary,
    }
}

fn summary(input: &PlanInput) -> String {
    let cfg = &input.model;
    let quant = input
        .quantization_bit
        .map(|b| format!("int{b}"))
        .unwrap_or_else(|| "no quantization".into());
    let method = match input.pre_seq_len {
        Some(p) => format!(
            "P-Tuning v2 (pre_seq_len {p}{})",
            if input.prefix_projection {
                ", projection"
            } else {
                ""
            }
        ),
        None => "full fine-tuning".into(),
    };
    let device = match input.device {
        Device::Cpu => "cpu: process RSS".to_string(),
        Device::Cuda(i) => format!("cuda:{i}: device memory"),
        Device::Vulkan => "vulkan: device memory".to_string(),
    };
    format!(
        "hidden {}, {} layers, {} heads, inner {}, vocab {}; {} {quant}; {method}; {device}",
        cfg.hidden_size,
        cfg.num_layers,
        cfg.num_attention_heads,
        cfg.inner_size(),
        cfg.vocab_size,
        dtype_name(input.precision.dtype())
    )
}

/// `1.23 GiB` / `45.6 MiB`.
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.2} GiB", b / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", b / (1u64 << 20) as f64)
    }
}
