//! `glm-tune config CONFIG [--set k=v]...`: prints every key of the resolved experiment with
//! its value and its origin (default, file, env or --set), or the resolved TOML with `--toml`.

use trainer::config::{Experiment, render_value};

use super::ExperimentArgs;

/// Arguments of `glm-tune config`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    experiment: ExperimentArgs,
    /// Print the resolved experiment as a TOML file (as saved to output_dir/experiment.toml).
    #[arg(long)]
    toml: bool,
}

/// Resolves the experiment (names and types checked) and prints it to stdout.
pub fn run(args: Args) -> anyhow::Result<()> {
    let resolved = Experiment::resolve(&args.experiment.config, &args.experiment.overrides())?;
    if args.toml {
        print!("{}", resolved.experiment.to_toml());
        return Ok(());
    }
    println!(
        "# {} resolved (default < file < env GLM_TUNE_<KEY> < --set)",
        args.experiment.config.display()
    );
    println!("{:<28} {:<40} source", "key", "value");
    for (key, value, provenance) in resolved.entries() {
        let value = value
            .as_ref()
            .map_or_else(|| "(unset)".to_owned(), render_value);
        println!("{:<28} {:<40} {provenance}", key.name, value);
    }
    Ok(())
}
