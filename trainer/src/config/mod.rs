//! The experiment configuration: one TOML file = one run, keys = the flags of THUDM's
//! `ptuning/main.py` (same names, meanings, defaults) plus documented glm-tune extensions.
//!
//! - [`schema`]: the single declaration of every key → [`Experiment`] and the [`KEYS`] table.
//! - [`load`]: figment layering (defaults < file < `GLM_TUNE_<KEY>` < `--set key=value`), the
//!   provenance of each key, unknown-key and type errors.
//! - [`validate`]: ranges, combinations, files and the `output_dir` policy.
//! - [`model_path`]: `model_name_or_path` as a directory or a Hugging Face cache entry.
//! - [`preflight`]: the deeper checks of `glm-tune check` (data columns, model files).
//! - [`render`]: `to_toml`, the `--help` key reference and the README table.
//!
//! The trainer obtains a validated experiment with [`Experiment::load`]; every problem of the
//! file, its overrides and the validation comes back at once in [`ConfigErrors`].

pub mod error;
pub mod load;
pub mod model_path;
pub mod preflight;
pub mod render;
pub mod schema;
pub mod types;
pub mod validate;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use error::{ConfigErrors, Problem};
pub use load::{ENV_PREFIX, Overrides, Provenance, Resolved};
pub use model_path::{HfCache, ModelNotFound, ModelSource, ResolvedModel, resolve_model};
pub use render::{key_reference, reference_markdown, render_value};
pub use schema::{Experiment, KEYS, KeyDoc, key_doc};
pub use types::{Device, LrSchedulerType, NanPolicy, Precision, ResumeFromCheckpoint};
pub use validate::latest_checkpoint;

/// A resolved experiment that passed validation, with its model directory.
#[derive(Debug, Clone, PartialEq)]
pub struct Validated {
    /// The experiment with the provenance of its keys and the warnings.
    pub resolved: Resolved,
    /// Where `model_name_or_path` was found.
    pub model: ResolvedModel,
}

impl Validated {
    /// The experiment.
    pub fn experiment(&self) -> &Experiment {
        &self.resolved.experiment
    }
}

impl Experiment {
    /// Resolves `path` with `overrides` (key names and types checked), without the semantic
    /// validation; what `glm-tune config` prints.
    pub fn resolve(path: &Path, overrides: &Overrides) -> Result<Resolved, ConfigErrors> {
        let resolved = load::resolve(path, overrides)?;
        for warning in &resolved.warnings {
            tracing::warn!("{warning}");
        }
        Ok(resolved)
    }

    /// Resolves and validates the experiment in `path` (the Hugging Face cache from the
    /// environment): the entry point of a run. Every problem is reported at once.
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Validated, ConfigErrors> {
        Experiment::load_with(path, overrides, HfCache::from_env().as_ref())
    }

    /// [`Experiment::load`] with an explicit Hugging Face cache.
    pub fn load_with(
        path: &Path,
        overrides: &Overrides,
        cache: Option<&HfCache>,
    ) -> Result<Validated, ConfigErrors> {
        load_and_validate(path, overrides, cache, false)
    }

    /// [`Experiment::load`] plus the checks that read inside files without loading the model:
    /// the configured columns in the first lines of each data file, and config, tokenizer and
    /// weights in the model directory (`glm-tune check`).
    pub fn check(path: &Path, overrides: &Overrides) -> Result<Validated, ConfigErrors> {
        Experiment::check_with(path, overrides, HfCache::from_env().as_ref())
    }

    /// [`Experiment::check`] with an explicit Hugging Face cache.
    pub fn check_with(
        path: &Path,
        overrides: &Overrides,
        cache: Option<&HfCache>,
    ) -> Result<Validated, ConfigErrors> {
        load_and_validate(path, overrides, cache, true)
    }
}

fn load_and_validate(
    path: &Path,
    overrides: &Overrides,
    cache: Option<&HfCache>,
    preflight: bool,
) -> Result<Validated, ConfigErrors> {
    let load::Partial {
        mut resolved,
        mut problems,
        failed,
    } = load::resolve_partial(path, overrides)?;
    let exp = &resolved.experiment;
    let validation = validate::validate(exp, cache);
    let mut found = validation.problems;
    if preflight {
        found.extend(preflight::check_data_columns(exp));
        if let Some(model) = &validation.model {
            found.extend(preflight::check_model_dir(&model.dir));
        }
    }
    // Keys that failed to resolve hold placeholders: rules about them would only add noise.
    problems.extend(
        found
            .into_iter()
            .filter(|p| p.keys().iter().all(|k| !failed.contains(k))),
    );
    resolved.warnings.extend(validation.warnings);
    for warning in &resolved.warnings {
        tracing::warn!("{warning}");
    }
    match validation.model {
        Some(model) if problems.is_empty() => Ok(Validated { resolved, model }),
        _ => Err(ConfigErrors {
            path: path.to_path_buf(),
            problems,
        }),
    }
}
