//! `glm-tune check CONFIG [--set k=v]...`: validates everything that can be checked without
//! loading the model and lists every problem (exit code 2) or summarises what a run would use.

use trainer::config::{Experiment, ModelSource};

use super::ExperimentArgs;

/// Arguments of `glm-tune check`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    experiment: ExperimentArgs,
}

/// Runs [`Experiment::check`] and prints a summary of the valid experiment.
pub fn run(args: Args) -> anyhow::Result<()> {
    let validated = Experiment::check(&args.experiment.config, &args.experiment.overrides())?;
    let exp = validated.experiment();
    println!("{}: OK", args.experiment.config.display());
    let origin = match &validated.model.source {
        ModelSource::LocalDir => "local directory".to_owned(),
        ModelSource::HubCache { repo_id, revision } => {
            format!("Hugging Face cache, {repo_id} at {revision}")
        }
    };
    println!("  model:      {} ({origin})", validated.model.dir.display());
    let mode = match exp.pre_seq_len {
        Some(p) => format!("P-Tuning v2, pre_seq_len {p}"),
        None => "full fine-tuning".to_owned(),
    };
    let quantization = exp
        .quantization_bit
        .map_or("no quantization".to_owned(), |b| format!("int{b} base"));
    println!(
        "  method:     {mode}, {quantization}, {} on {}",
        exp.effective_precision(),
        exp.device
    );
    for (what, enabled, file) in [
        ("train", exp.do_train, &exp.train_file),
        ("eval", exp.do_eval, &exp.validation_file),
        ("predict", exp.do_predict, &exp.test_file),
    ] {
        if let (true, Some(file)) = (enabled, file) {
            println!("  {:<11} {}", format!("{what}:"), file.display());
        }
    }
    println!("  output_dir: {}", exp.output_dir.display());
    Ok(())
}
