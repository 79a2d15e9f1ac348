//! `glm-tune predict CONFIG [--set k=v]...`: what the original's `evaluate.sh` does — base model +
//! `ptuning_checkpoint` + `test_file` → `generated_predictions.txt` (streamed, line by line) and
//! `predict_results.json` — i.e. `glm-tune run` with `do_train = false`, `do_eval = false`,
//! `do_predict = true`, `predict_with_generate = true` forced. `pre_seq_len` and
//! `prefix_projection` default to the checkpoint's own values.

use std::io::IsTerminal;

use anyhow::bail;
use prefix_encoder::checkpoint::read_info;
use trainer::config::{Experiment, Overrides};
use trainer::run::run as run_experiment;
use trainer::train::RunHooks;

use super::ExperimentArgs;

/// Arguments of `glm-tune predict`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    experiment: ExperimentArgs,
}

/// The keys `predict` forces, after every other override.
const FORCED: [&str; 4] = [
    "do_train=false",
    "do_eval=false",
    "do_predict=true",
    "predict_with_generate=true",
];

/// Resolve, fill in the prefix settings, predict, summarise.
pub fn run(args: Args) -> anyhow::Result<()> {
    let config = &args.experiment.config;
    let mut sets = args.experiment.sets.clone();
    let resolved = Experiment::resolve(config, &Overrides::from_process_env(sets.clone()))?;
    let exp = &resolved.experiment;
    match (&exp.ptuning_checkpoint, exp.pre_seq_len) {
        (Some(dir), None) if dir.is_dir() => {
            let info = read_info(dir)?;
            eprintln!(
                "prefix of {}: pre_seq_len {}, prefix_projection {} (from its config.json)",
                dir.display(),
                info.pre_seq_len,
                info.prefix_projection
            );
            sets.push(format!("pre_seq_len={}", info.pre_seq_len));
            sets.push(format!("prefix_projection={}", info.prefix_projection));
        }
        (None, Some(p)) => bail!(
            "pre_seq_len = {p} but no ptuning_checkpoint: prediction would use an untrained random prefix; set ptuning_checkpoint = \"output/<run>/checkpoint-N\" (the trained prefix), or remove pre_seq_len to predict with the base model alone"
        ),
        _ => {}
    }
    sets.extend(FORCED.iter().map(|s| s.to_string()));
    let validated = Experiment::load(config, &Overrides::from_process_env(sets.clone()))?;
    let exp = validated.experiment();
    let mut again = format!("glm-tune predict {}", config.display());
    for s in &args.experiment.sets {
        again.push_str(&format!(" --set {s}"));
    }
    let hooks = RunHooks {
        interrupt: super::interrupt_flag(),
        progress: std::io::stderr().is_terminal(),
        resume_hint: again,
    };
    let report = run_experiment(&validated, &hooks)?;
    if let Some(s) = &report.predict {
        println!(
            "predict: {} samples in {:.1}s  BLEU-4 {:.4}  ROUGE-1 {:.4}  ROUGE-2 {:.4}  ROUGE-L {:.4}",
            s.report.count,
            s.runtime_s,
            s.report.bleu4,
            s.report.rouge1,
            s.report.rouge2,
            s.report.rougel
        );
    }
    println!(
        "output: {} (generated_predictions.txt, predict_results.json)",
        exp.output_dir.display()
    );
    Ok(())
}
