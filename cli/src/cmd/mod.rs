//! One module per subcommand, plus the experiment arguments they share.

pub mod check;
pub mod config;
pub mod demo_data;

use std::path::PathBuf;

use trainer::config::Overrides;

/// `CONFIG [--set key=value]...`: an experiment file and its command-line overrides.
#[derive(clap::Args, Debug)]
pub struct ExperimentArgs {
    /// The experiment TOML file (relative paths inside it are relative to the current directory).
    #[arg(value_name = "CONFIG")]
    pub config: PathBuf,
    /// Override a key, e.g. `--set learning_rate=1e-2` (repeatable; later wins over earlier,
    /// over GLM_TUNE_<KEY> environment variables and over the file). VALUE is read as a TOML
    /// value, else as a string.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

impl ExperimentArgs {
    /// The overrides: `GLM_TUNE_*` environment variables and the `--set` arguments.
    pub fn overrides(&self) -> Overrides {
        Overrides::from_process_env(self.sets.clone())
    }
}
