//! `glm-tune`: the command line of glm-tune. Each subcommand lives in `cmd/<name>.rs` as one
//! short `run` function over library code; adding one takes a `pub mod` line in `cmd/mod.rs`,
//! a variant of [`Command`] and a match arm in [`main`].
//!
//! Exit codes: 0 success, 2 invalid experiment (or command line), 1 any other failure.

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use trainer::config::{ConfigErrors, key_reference};

/// P-Tuning v2 and full fine-tuning of ChatGLM-6B (THUDM's ptuning/main.py) on burn. One TOML
/// file describes one run; its keys are the flags of the original script.
#[derive(Parser)]
#[command(name = "glm-tune", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the fully resolved experiment: every key, its value and where it came from.
    #[command(after_long_help = key_reference())]
    Config(cmd::config::Args),
    /// Validate an experiment without loading the model: keys, values, files, data columns,
    /// output_dir policy and the model directory. Lists every problem.
    #[command(after_long_help = key_reference())]
    Check(cmd::check::Args),
    /// Run one experiment end to end: train, evaluate, predict (the flags of ptuning/main.py).
    #[command(after_long_help = key_reference())]
    Run(cmd::run::Args),
    /// Print the memory a run will need, itemised (weights, trainable parameters, gradients,
    /// optimizer, activations, KV cache, data), before loading anything.
    Plan(cmd::plan::Args),
    /// Write a pre-quantized (int4/int8) copy of a model directory in THUDM's layout.
    Quantize(cmd::quantize::Args),
    /// Benchmark a random model of a named shape: P-Tuning v2 training step, forward and
    /// decoding throughput, peak memory next to the plan, GFLOP/s next to the f32 matmul.
    Bench(cmd::bench::Args),
    /// Write a randomly initialised model directory (to train from scratch).
    InitModel(cmd::init_model::Args),
    /// Print the ids and pieces of a text under a model's tokenizer.
    Tokenize(cmd::tokenize::Args),
    /// Write the embedded demo's generated data splits and tokenizer (what `demo/` holds).
    DemoData(cmd::demo_data::Args),
    /// Chat in the terminal with a model and a trained prefix (streamed answers, history,
    /// /reset, /prefix on|off), or answer one --prompt.
    Chat(cmd::chat::Args),
    /// Generate for test_file with a trained prefix and score it (what evaluate.sh does): `run`
    /// with do_predict only.
    #[command(after_long_help = key_reference())]
    Predict(cmd::predict::Args),
    /// Convert a checkpoint to safetensors / pytorch_model.bin, materialize a projection prefix,
    /// or merge base + prefix into a standalone model directory.
    Export(cmd::export::Args),
}

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Config(args) => cmd::config::run(args),
        Command::Check(args) => cmd::check::run(args),
        Command::DemoData(args) => cmd::demo_data::run(args),
        Command::Run(args) => cmd::run::run(args),
        Command::Tokenize(args) => cmd::tokenize::run(args),
        Command::InitModel(args) => cmd::init_model::run(args),
        Command::Bench(args) => cmd::bench::run(args),
        Command::Plan(args) => cmd::plan::run(args),
        Command::Quantize(args) => cmd::quantize::run(args),
        Command::Chat(args) => cmd::chat::run(args),
        Command::Predict(args) => cmd::predict::run(args),
        Command::Export(args) => cmd::export::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.downcast_ref::<ConfigErrors>().is_some() => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr; `RUST_LOG` filters (default `info`).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}
