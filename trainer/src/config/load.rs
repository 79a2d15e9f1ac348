//! Layering of an experiment with figment — defaults < TOML file < `GLM_TUNE_<KEY>` environment
//! variables < `--set key=value` (later wins) — with the provenance of every key, strict
//! unknown-key detection (file line and closest valid key) and per-key type errors, all
//! collected instead of stopping at the first.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider, Source};

use super::error::{ConfigErrors, Problem, closest_key};
use super::schema::{Experiment, ExtractError, KEYS, KeyDoc, key_doc};

/// Prefix of the environment variables that override keys (`GLM_TUNE_LEARNING_RATE`).
pub const ENV_PREFIX: &str = "GLM_TUNE_";

/// Variables with [`ENV_PREFIX`] that belong to the test tooling, not to experiments (never warned
/// about): the fixture and data roots, and the binary and workspace `.ci/gpu-check` points the
/// CLI tests at when they run on another machine.
pub const NON_KEY_ENV_VARS: &[&str] = &[
    "GLM_TUNE_FIXTURES",
    "GLM_TUNE_SHARED_DATA",
    "GLM_TUNE_BIN",
    "GLM_TUNE_WORKSPACE",
];

/// The layers above the experiment file: environment variables and `--set` arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `(name, value)` of environment variables; only names starting with [`ENV_PREFIX`] count.
    pub env: Vec<(String, String)>,
    /// `key=value` arguments in command-line order (later wins).
    pub sets: Vec<String>,
}

impl Overrides {
    /// The `GLM_TUNE_*` variables of this process plus `sets`.
    pub fn from_process_env(sets: Vec<String>) -> Overrides {
        let env = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        Overrides { env, sets }
    }
}

/// Where the value of a key came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provenance {
    /// The schema default (the original's default).
    Default,
    /// The experiment file.
    File {
        /// The experiment file.
        path: PathBuf,
        /// 1-based line of the key, when known.
        line: Option<usize>,
    },
    /// An environment variable.
    Env {
        /// Its name, e.g. `GLM_TUNE_LEARNING_RATE`.
        var: String,
    },
    /// A `--set` argument.
    Set {
        /// The argument as given, e.g. `learning_rate=1e-2`.
        arg: String,
    },
}

impl fmt::Display for Provenance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Provenance::Default => f.write_str("default"),
            Provenance::File {
                path,
                line: Some(line),
            } => write!(f, "file {}:{line}", path.display()),
            Provenance::File { path, line: None } => write!(f, "file {}", path.display()),
            Provenance::Env { var } => write!(f, "env {var}"),
            Provenance::Set { arg } => write!(f, "--set {arg}"),
        }
    }
}

/// An experiment with every key resolved from its layers (types checked, not yet validated).
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// The experiment.
    pub experiment: Experiment,
    /// The experiment file it was read from.
    pub config_path: PathBuf,
    /// Where each key's value came from, in [`KEYS`] order.
    pub provenance: Vec<Provenance>,
    /// Non-fatal findings (ignored environment variables, questionable combinations).
    pub warnings: Vec<String>,
}

impl Resolved {
    /// Where `key`'s value came from.
    pub fn provenance_of(&self, key: &str) -> Option<&Provenance> {
        KEYS.iter()
            .position(|k| k.name == key)
            .and_then(|i| self.provenance.get(i))
    }

    /// `(key, value, provenance)` for every key in [`KEYS`] order (`None` = unset).
    pub fn entries(&self) -> Vec<(&'static KeyDoc, Option<toml::Value>, &Provenance)> {
        KEYS.iter()
            .zip(self.experiment.values())
            .zip(&self.provenance)
            .map(|((k, v), p)| (k, v, p))
            .collect()
    }
}

/// A resolution that may have failed for some keys: those keys hold defaults and are listed
/// in `failed` so that validation can skip rules about them.
pub(crate) struct Partial {
    pub resolved: Resolved,
    pub problems: Vec<Problem>,
    pub failed: BTreeSet<&'static str>,
}

/// One environment variable or `--set` argument as a figment provider; its metadata source
/// (`env:NAME` / `set:ARG`) is how provenance finds it again.
struct Override {
    key: &'static str,
    value: Value,
    source: String,
}

impl Provider for Override {
    fn metadata(&self) -> Metadata {
        Metadata::from(self.source.clone(), Source::Custom(self.source.clone()))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        dict.insert(self.key.to_owned(), self.value.clone());
        Ok(Profile::Default.collect(dict))
    }
}

/// Parses an override value as a TOML value, falling back to the raw text as a string.
/// String and path keys keep the raw text unless it is a quoted TOML string, so that
/// `--set prompt_column=123` means the column named "123".
fn parse_override(key: &KeyDoc, raw: &str) -> Value {
    let textual = matches!(key.type_name, "string" | "path");
    match raw.trim().parse::<toml::Value>() {
        Ok(toml::Value::String(s)) => Value::from(s),
        Ok(v) if !textual => to_figment(v),
        _ => Value::from(raw.to_owned()),
    }
}

fn to_figment(v: toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::from(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(x) => Value::from(x),
        toml::Value::Boolean(b) => Value::from(b),
        toml::Value::Datetime(d) => Value::from(d.to_string()),
        toml::Value::Array(items) => {
            Value::from(items.into_iter().map(to_figment).collect::<Vec<_>>())
        }
        toml::Value::Table(t) => {
            let dict: Dict = t.into_iter().map(|(k, v)| (k, to_figment(v))).collect();
            Value::from(dict)
        }
    }
}

/// 1-based line of byte offset `at` in `text`.
fn line_at(text: &str, at: usize) -> usize {
    text.get(..at).map_or(0, |t| t.matches('\n').count()) + 1
}

/// A short description of a figment deserialization error (what was found instead).
fn describe(e: &figment::Error) -> String {
    use figment::error::Kind;
    match &e.kind {
        Kind::InvalidType(actual, _) => format!("found {actual}"),
        Kind::InvalidValue(actual, _) => format!("{actual} is out of range"),
        Kind::Message(message) => message.clone(),
        other => other.to_string(),
    }
}

/// Resolves every key; fatal file problems (unreadable, not TOML) end it early, key problems
/// are collected.
pub(crate) fn resolve_partial(path: &Path, overrides: &Overrides) -> Result<Partial, ConfigErrors> {
    let fatal = |problem| ConfigErrors {
        path: path.to_path_buf(),
        problems: vec![problem],
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        fatal(Problem::UnreadableConfig {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    })?;
    let table = toml::de::DeTable::parse(&text).map_err(|e| {
        fatal(Problem::Syntax {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    })?;

    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let mut file_lines = Vec::new();
    for (key, _) in table.get_ref() {
        let line = line_at(&text, key.span().start);
        let name: &str = key.get_ref();
        match key_doc(name) {
            Some(doc) => file_lines.push((doc.name, line)),
            None => problems.push(Problem::UnknownKey {
                key: name.to_owned(),
                origin: format!("{} line {line}", path.display()),
                suggestion: closest_key(name),
            }),
        }
    }

    let mut fig = Figment::from(Toml::file_exact(path));
    let mut env: Vec<&(String, String)> = overrides.env.iter().collect();
    env.sort();
    for (var, raw) in env {
        let Some(suffix) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        match key_doc(&suffix.to_ascii_lowercase()) {
            Some(doc) => {
                let value = parse_override(doc, raw);
                fig = fig.merge(Override { key: doc.name, value, source: format!("env:{var}") });
            }
            None if NON_KEY_ENV_VARS.contains(&var.as_str()) => {}
            None => warnings.push(format!(
                "environment variable {var} is not an experiment key and is ignored (did you mean {}?)",
                KeyDoc::env_var(key_doc(closest_key(suffix)).unwrap_or(&KEYS[0]))
            )),
        }
    }
    for arg in &overrides.sets {
        let Some((key, raw)) = arg.split_once('=') else {
            problems.push(Problem::MalformedSet { arg: arg.clone() });
            continue;
        };
        let key = key.trim();
        match key_doc(key) {
            Some(doc) => {
                let value = parse_override(doc, raw);
                fig = fig.merge(Override {
                    key: doc.name,
                    value,
                    source: format!("set:{arg}"),
                });
            }
            None => problems.push(Problem::UnknownKey {
                key: key.to_owned(),
                origin: format!("--set {arg}"),
                suggestion: closest_key(key),
            }),
        }
    }
    // Surfaces provider errors (the file is re-read by figment's own TOML parser).
    if let Err(e) = fig.extract::<Dict>() {
        return Err(fatal(Problem::Syntax {
            path: path.to_path_buf(),
            message: e.to_string(),
        }));
    }

    let provenance: Vec<Provenance> = KEYS
        .iter()
        .map(|k| provenance_for(&fig, k.name, &file_lines))
        .collect();
    let mut failed = BTreeSet::new();
    let experiment = Experiment::extract(&fig, &mut |key, error| {
        failed.insert(key);
        let Some(doc) = key_doc(key) else { return };
        problems.push(match error {
            ExtractError::Missing => Problem::MissingKey { key: doc.name },
            ExtractError::Type(e) => Problem::WrongType {
                key: doc.name,
                expected: doc.type_name,
                origin: provenance_for(&fig, key, &file_lines).to_string(),
                detail: describe(&e),
            },
        });
    });
    Ok(Partial {
        resolved: Resolved {
            experiment,
            config_path: path.to_path_buf(),
            provenance,
            warnings,
        },
        problems,
        failed,
    })
}

fn provenance_for(fig: &Figment, key: &str, file_lines: &[(&'static str, usize)]) -> Provenance {
    let Some(metadata) = fig.find_metadata(key) else {
        return Provenance::Default;
    };
    match &metadata.source {
        Some(Source::File(path)) => Provenance::File {
            path: path.clone(),
            line: file_lines.iter().find(|(k, _)| *k == key).map(|(_, l)| *l),
        },
        Some(Source::Custom(custom)) => match custom.split_once(':') {
            Some(("env", var)) => Provenance::Env {
                var: var.to_owned(),
            },
            Some(("set", arg)) => Provenance::Set {
                arg: arg.to_owned(),
            },
            _ => Provenance::Default,
        },
        _ => Provenance::Default,
    }
}

/// Resolves the experiment in `path` with `overrides`: types and key names are checked, the
/// semantic validation of [`Experiment::load`] is not run.
pub fn resolve(path: &Path, overrides: &Overrides) -> Result<Resolved, ConfigErrors> {
    let partial = resolve_partial(path, overrides)?;
    if partial.problems.is_empty() {
        Ok(partial.resolved)
    } else {
        Err(ConfigErrors {
            path: path.to_path_buf(),
            problems: partial.problems,
        })
    }
}
