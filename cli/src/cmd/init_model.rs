//! `glm-tune init-model --config FILE --out DIR [--tokenizer DIR]`: a randomly initialised model
//! directory (config.json + model.safetensors + tokenizer files) to train from scratch.

use std::path::PathBuf;

use anyhow::Context;
use burn::backend::Flex;
use glm_model::init::{SaveDtype, random_model, save_pretrained};
use glm_model::{ChatGlmConfig, Precision};

/// Arguments of `glm-tune init-model`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A ChatGLM `config.json` giving the shape and special token ids.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Output model directory (created).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Copy the tokenizer files of this directory (ice_text.model + tokenizer_config.json, or
    /// tokenizer.json) so DIR is a complete model directory.
    #[arg(long, value_name = "DIR")]
    tokenizer: Option<PathBuf>,
    /// Seed of the initialisation.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Store the weights in f32 instead of f16.
    #[arg(long)]
    f32: bool,
}

/// Initialise and write.
pub fn run(args: Args) -> anyhow::Result<()> {
    let config = ChatGlmConfig::from_path(&args.config)?;
    let model = random_model::<Flex>(&config, Precision::Fp32, args.seed, &Default::default());
    let dtype = if args.f32 {
        SaveDtype::F32
    } else {
        SaveDtype::F16
    };
    save_pretrained(&model, &config, &args.out, dtype)?;
    if let Some(dir) = &args.tokenizer {
        let tok = dataset::ChatGlmTokenizer::from_dir(dir)?;
        for f in tok.source_files() {
            let name = f.file_name().context("tokenizer file name")?;
            std::fs::copy(&f, args.out.join(name))
                .with_context(|| format!("copying {}", f.display()))?;
        }
    }
    let params: usize = config.vocab_size * config.hidden_size
        + config.num_layers
            * (4 * config.hidden_size * config.hidden_size
                + 2 * config.hidden_size * config.inner_size());
    println!(
        "wrote {} (~{:.1} M parameters, seed {})",
        args.out.display(),
        params as f64 / 1e6,
        args.seed
    );
    Ok(())
}
