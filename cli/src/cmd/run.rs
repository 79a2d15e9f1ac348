//! `glm-tune run CONFIG [--set k=v]...`: one experiment end to end (train, evaluate, predict) as
//! THUDM's `ptuning/main.py` does with the same flags. Ctrl-C stops between micro-batches,
//! keeps the last complete checkpoint and prints the resume command.

use std::io::IsTerminal;

use trainer::config::Experiment;
use trainer::run::run as run_experiment;
use trainer::train::RunHooks;

use super::ExperimentArgs;

/// Arguments of `glm-tune run`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    experiment: ExperimentArgs,
}

/// Validate, run, and summarise.
pub fn run(args: Args) -> anyhow::Result<()> {
    let validated = Experiment::load(&args.experiment.config, &args.experiment.overrides())?;
    let exp = validated.experiment();
    let interrupt = super::interrupt_flag();
    let mut resume = format!("glm-tune run {}", args.experiment.config.display());
    for s in &args.experiment.sets {
        if !s.starts_with("resume_from_checkpoint=") {
            resume.push_str(&format!(" --set {s}"));
        }
    }
    resume.push_str(" --set resume_from_checkpoint=true");
    let hooks = RunHooks {
        interrupt,
        progress: std::io::stderr().is_terminal(),
        resume_hint: resume,
    };
    let report = run_experiment(&validated, &hooks)?;
    if let Some(t) = &report.train {
        println!(
            "train: {} steps, train_loss {:.4}, {:.1}s",
            t.global_step, t.train_loss, t.runtime_s
        );
    }
    for (name, s) in [("eval", &report.eval), ("predict", &report.predict)] {
        if let Some(s) = s {
            println!(
                "{name}: {} samples  BLEU-4 {:.4}  ROUGE-1 {:.4}  ROUGE-2 {:.4}  ROUGE-L {:.4}",
                s.report.count, s.report.bleu4, s.report.rouge1, s.report.rouge2, s.report.rougel
            );
        }
    }
    println!("output: {}", exp.output_dir.display());
    Ok(())
}
