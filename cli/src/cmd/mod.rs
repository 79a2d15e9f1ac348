//! One module per subcommand, plus the experiment arguments they share.

pub mod bench;
pub mod chat;
pub mod check;
pub mod config;
pub mod demo_data;
pub mod export;
pub mod init_model;
pub mod plan;
pub mod predict;
pub mod quantize;
pub mod run;
pub mod tokenize;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use trainer::config::Overrides;

/// `CONFIG [--set key=value]...`: an experiment file and its command-line overrides.
#[derive(clap::Args, Debug)]
pub struct ExperimentArgs {
    /// The experiment TOML file (relative paths inside it are relative to the current directory).
    #[arg(value_name = "CONFIG")]
    pub config: PathBuf,
    /// Override a key, e.g. `--set learning_rate=1e-2` (repeatable; later wins over earlier,
    /// over `GLM_TUNE_<KEY>` environment variables and over the file). VALUE is read as a TOML
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

/// A flag set by Ctrl-C (SIGINT). The first Ctrl-C only sets it — long-running commands stop at
/// the next safe point; a second one while it is still set exits at once.
pub fn interrupt_flag() -> Arc<AtomicBool> {
    static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let handler_flag = flag.clone();
        let installed = ctrlc::set_handler(move || {
            if handler_flag.swap(true, Ordering::SeqCst) {
                eprintln!("\ninterrupted twice: exiting");
                std::process::exit(130);
            }
            eprintln!("\ninterrupt: stopping at the next safe point (Ctrl-C again to exit now)");
        });
        if let Err(e) = installed {
            tracing::warn!("Ctrl-C handler not installed: {e}");
        }
        flag
    })
    .clone()
}
