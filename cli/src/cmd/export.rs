//! `glm-tune export`: share a trained result (the work is in `trainer::export`).
//!
//! - `--checkpoint DIR --to safetensors|bin|both --out NEW`: the checkpoint's tensors in another
//!   weight format, with config.json and tokenizer files;
//! - `--materialize --checkpoint DIR --out NEW`: a projection prefix as a plain prefix;
//! - `--merge --model BASE --prefix DIR --out NEW [--to ...]`: a standalone model directory
//!   (base + prefix) that the original Python loads with `--pre_seq_len`, and `glm-tune chat
//!   --model NEW` uses with its prefix.

use std::path::PathBuf;

use anyhow::bail;
use trainer::export::{
    ExportReport, WeightFormat, convert_checkpoint, materialize_prefix, merge_prefix,
};

/// Weight formats to write.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum To {
    /// model.safetensors
    Safetensors,
    /// pytorch_model.bin (torch.load-able)
    Bin,
    /// both files
    Both,
}

impl To {
    fn formats(self) -> Vec<WeightFormat> {
        match self {
            To::Safetensors => vec![WeightFormat::Safetensors],
            To::Bin => vec![WeightFormat::TorchBin],
            To::Both => vec![WeightFormat::Safetensors, WeightFormat::TorchBin],
        }
    }
}

/// Arguments of `glm-tune export`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The checkpoint to convert or materialize (a prefix checkpoint-N, or a full model).
    #[arg(long, value_name = "DIR")]
    checkpoint: Option<PathBuf>,
    /// Weight format(s) to write (required to convert; merge default: both).
    #[arg(long, value_enum)]
    to: Option<To>,
    /// New output directory (must not exist or be empty).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Write the prefix of --checkpoint with its projection MLP applied, as a plain prefix.
    #[arg(long, conflicts_with = "merge")]
    materialize: bool,
    /// Merge --model and --prefix into one standalone model directory.
    #[arg(long, requires_all = ["model", "prefix"], conflicts_with = "checkpoint")]
    merge: bool,
    /// The base model directory (with --merge).
    #[arg(long, value_name = "DIR", requires = "merge")]
    model: Option<PathBuf>,
    /// The prefix checkpoint to merge (with --merge).
    #[arg(long, value_name = "DIR", requires = "merge")]
    prefix: Option<PathBuf>,
}

/// Export and list what was written.
pub fn run(args: Args) -> anyhow::Result<()> {
    let report = match (&args.checkpoint, args.materialize, args.merge) {
        (_, _, true) => {
            let (Some(model), Some(prefix)) = (&args.model, &args.prefix) else {
                bail!("--merge needs --model BASE and --prefix CHECKPOINT")
            };
            merge_prefix(
                model,
                prefix,
                &args.out,
                &args.to.unwrap_or(To::Both).formats(),
            )?
        }
        (Some(ck), true, false) => {
            if args.to.is_some() {
                bail!(
                    "--materialize writes both weight formats, as every prefix checkpoint; drop --to"
                );
            }
            materialize_prefix(ck, &args.out)?
        }
        (Some(ck), false, false) => {
            let Some(to) = args.to else {
                bail!("say which format to write: --to safetensors, --to bin or --to both")
            };
            convert_checkpoint(ck, &args.out, &to.formats())?
        }
        (None, _, false) => bail!(
            "nothing to export: give --checkpoint DIR (with --to or --materialize), or --merge --model BASE --prefix CHECKPOINT"
        ),
    };
    print_report(&report);
    Ok(())
}

fn print_report(report: &ExportReport) {
    for f in &report.weight_files {
        let size = std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
        println!(
            "wrote {} ({} tensors, {:.1} MB, read back and checked)",
            f.display(),
            report.tensors,
            size as f64 / 1e6
        );
    }
    for f in &report.other_files {
        println!("wrote {}", f.display());
    }
}
