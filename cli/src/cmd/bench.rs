//! `glm-tune bench [--shape tiny|small|chatglm-6b] ...`: training-step, forward and decoding
//! throughput and peak memory of a random model (nothing downloaded), next to the memory plan
//! and the backend's own matmul. A table on stdout, or JSON with `--json`.

use anyhow::{Context, bail};
use glm_model::Precision;
use trainer::bench::{BenchOptions, Phases, Shape, run_bench};
use trainer::config::Device;

/// Arguments of `glm-tune bench`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model shape: `tiny` (CI), `small` (hidden 1024, 4 layers, vocab 130528) or `chatglm-6b`.
    #[arg(long, default_value = "small")]
    shape: String,
    /// Quantize the frozen base to 4 or 8 bits (random packed weights; the embedding stays f16).
    #[arg(long, value_name = "BITS")]
    quantization_bit: Option<u8>,
    /// Prefix length of P-Tuning v2 (0: no prefix, the training step is skipped).
    #[arg(long, default_value_t = 128)]
    pre_seq_len: usize,
    /// Tokens per training / forward row.
    #[arg(long, default_value_t = 128)]
    seq_len: usize,
    /// Rows per training / forward batch.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Timed training steps and forward passes (the median is reported).
    #[arg(long, default_value_t = 3)]
    steps: usize,
    /// New tokens per decoding run (0: no decoding).
    #[arg(long, default_value_t = 16)]
    decode_tokens: usize,
    /// Prompt length of the decoding runs.
    #[arg(long, default_value_t = 16)]
    decode_prompt_len: usize,
    /// Decoding batch sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    decode_batch: Vec<usize>,
    /// Activation precision: fp32 or fp16 (also the dtype of dense frozen weights).
    #[arg(long, default_value = "fp32")]
    precision: String,
    /// `cpu`, `cuda`, `cuda:N` or `vulkan` (GPU devices need a build with `--features cuda` or
    /// `--features vulkan`).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Skip the training step.
    #[arg(long)]
    no_train: bool,
    /// Skip the forward-only passes.
    #[arg(long)]
    no_forward: bool,
    /// Train without per-block recomputation (plain autodiff, more memory).
    #[arg(long)]
    no_recompute: bool,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Run the benchmark and print its report.
pub fn run(args: Args) -> anyhow::Result<()> {
    let Some(shape) = Shape::parse(&args.shape) else {
        bail!("--shape {}: expected tiny, small or chatglm-6b", args.shape);
    };
    let precision = match Precision::parse(&args.precision) {
        Some(p @ (Precision::Fp32 | Precision::Fp16 | Precision::Bf16)) => p,
        _ => bail!(
            "--precision {}: expected fp32, fp16 or bf16",
            args.precision
        ),
    };
    let device: Device = args
        .device
        .parse()
        .map_err(anyhow::Error::msg)
        .context("--device")?;
    let options = BenchOptions {
        shape,
        quantization_bit: args.quantization_bit,
        pre_seq_len: args.pre_seq_len,
        seq_len: args.seq_len,
        batch: args.batch,
        steps: args.steps,
        decode_tokens: args.decode_tokens,
        decode_prompt_len: args.decode_prompt_len,
        decode_batches: if args.decode_tokens == 0 {
            Vec::new()
        } else {
            args.decode_batch
        },
        precision,
        device,
        phases: Phases {
            train: !args.no_train,
            forward: !args.no_forward,
            decode: args.decode_tokens > 0,
        },
        recompute: !args.no_recompute,
        ..BenchOptions::default()
    };
    let report = run_bench(&options)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
