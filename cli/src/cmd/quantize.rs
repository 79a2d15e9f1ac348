//! `glm-tune quantize --model DIR --bits 4|8 --out DIR2`: write a pre-quantized checkpoint in
//! THUDM's `chatglm-6b-int4` layout (safetensors, config.json with `quantization_bit`, tokenizer
//! files), quantizing layer by layer, so later runs load in seconds instead of re-quantizing the
//! fp16 model at every start.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use burn::backend::Flex;
use glm_model::Precision;
use glm_model::init::{SaveDtype, save_pretrained};
use glm_model::loader::{LoadOptions, load_model};

/// Arguments of `glm-tune quantize`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A full-precision model directory (config.json + weights + tokenizer).
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// 4 or 8.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(["4", "8"]))]
    bits: String,
    /// Output directory.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

/// Quantize and write.
pub fn run(args: Args) -> anyhow::Result<()> {
    let bits: u8 = args.bits.parse()?;
    let start = Instant::now();
    let options = LoadOptions {
        precision: Precision::Fp16,
        quantization_bit: Some(bits),
        ..Default::default()
    };
    let (model, _) = load_model::<Flex>(&args.model, &options, &Default::default())?;
    eprintln!(
        "quantized {} to int{bits} in {:.1}s",
        args.model.display(),
        start.elapsed().as_secs_f64()
    );
    save_pretrained(&model, &model.config, &args.out, SaveDtype::F16)?;
    let tok = dataset::ChatGlmTokenizer::from_dir(&args.model)?;
    for f in tok.source_files() {
        let name = f.file_name().context("tokenizer file name")?;
        std::fs::copy(&f, args.out.join(name))
            .with_context(|| format!("copying {}", f.display()))?;
    }
    println!(
        "wrote {} (int{bits}, {:.1}s)",
        args.out.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
