//! `glm-tune plan CONFIG [--set k=v]...`: the memory the experiment will need, itemised, before
//! anything is loaded or even downloaded: only the model's `config.json` and the sizes of the
//! data and tokenizer files are read (a missing data file counts as empty, with a warning).

use anyhow::{Context, bail};
use trainer::config::{Experiment, HfCache, resolve_model};
use trainer::plan::{MemoryPlan, PlanInput};

use super::ExperimentArgs;

/// Arguments of `glm-tune plan`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    experiment: ExperimentArgs,
    /// Print the plan as JSON (items with bytes and phases, phase peaks, total).
    #[arg(long)]
    json: bool,
}

/// Resolve the experiment (keys and types checked) and print its memory plan.
pub fn run(args: Args) -> anyhow::Result<()> {
    let resolved = Experiment::resolve(&args.experiment.config, &args.experiment.overrides())?;
    let exp = &resolved.experiment;
    let model = resolve_model(&exp.model_name_or_path, HfCache::from_env().as_ref())?;
    if !model.dir.join("config.json").is_file() {
        bail!(
            "{}: no config.json (the plan needs the model's shape from it)",
            model.dir.display()
        );
    }
    for (on, key, file) in [
        (exp.do_train, "train_file", &exp.train_file),
        (exp.do_eval, "validation_file", &exp.validation_file),
        (exp.do_predict, "test_file", &exp.test_file),
    ] {
        if let (true, Some(f)) = (on, file)
            && !f.is_file()
        {
            tracing::warn!(
                "{key} {} does not exist: its rows are not counted",
                f.display()
            );
        }
    }
    let input = PlanInput::from_experiment(exp, &model.dir)
        .with_context(|| format!("model {}", model.dir.display()))?;
    let plan = MemoryPlan::new(&input);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        println!("{}: memory plan", args.experiment.config.display());
        print!("{}", plan.table());
    }
    Ok(())
}
