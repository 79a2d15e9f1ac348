//! Problems found while resolving or validating an experiment, and [`ConfigErrors`], the error
//! that carries all of them at once.

use std::fmt;
use std::path::PathBuf;

use super::model_path::ModelNotFound;

/// One problem in an experiment configuration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Problem {
    /// The experiment file cannot be read.
    #[error("cannot read experiment file {}: {message}", path.display())]
    UnreadableConfig {
        /// The experiment file.
        path: PathBuf,
        /// The OS error.
        message: String,
    },
    /// The experiment file is not valid TOML.
    #[error("{} is not valid TOML: {message}", path.display())]
    Syntax {
        /// The experiment file.
        path: PathBuf,
        /// The parser's message (with line and column).
        message: String,
    },
    /// A key that the schema does not know.
    #[error(
        "unknown key `{key}` ({origin}); did you mean `{suggestion}`? (`glm-tune config --help` lists every key)"
    )]
    UnknownKey {
        /// The unknown key as written.
        key: String,
        /// Where it was written: `FILE line N`, `--set ...` or `environment variable ...`.
        origin: String,
        /// The closest valid key (edit distance).
        suggestion: &'static str,
    },
    /// A value that does not fit the key's type.
    #[error("`{key}` ({origin}) must be {expected}: {detail}")]
    WrongType {
        /// The key.
        key: &'static str,
        /// The expected type, as in the key reference.
        expected: &'static str,
        /// Where the value came from.
        origin: String,
        /// What was found instead.
        detail: String,
    },
    /// A required key is given nowhere.
    #[error(
        "missing required key `{key}`: add `{key} = ...` to the experiment file or pass `--set {key}=...`"
    )]
    MissingKey {
        /// The key.
        key: &'static str,
    },
    /// A `--set` argument without `=`.
    #[error("malformed `--set {arg}`: expected `--set key=value`")]
    MalformedSet {
        /// The argument as given.
        arg: String,
    },
    /// A value that has the right type but is not acceptable (alone or with other keys).
    #[error("`{}`: {message}", keys.join("`, `"))]
    Invalid {
        /// The keys involved, most relevant first.
        keys: Vec<&'static str>,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// `model_name_or_path` is neither a directory nor in the Hugging Face cache.
    #[error("`model_name_or_path`: {0}")]
    ModelNotFound(ModelNotFound),
}

impl Problem {
    /// Shorthand for [`Problem::Invalid`].
    pub fn invalid(keys: &[&'static str], message: impl Into<String>) -> Self {
        Problem::Invalid {
            keys: keys.to_vec(),
            message: message.into(),
        }
    }

    /// The keys this problem is about (empty for file-level problems).
    pub fn keys(&self) -> Vec<&str> {
        match self {
            Problem::UnknownKey { key, .. } => vec![key.as_str()],
            Problem::WrongType { key, .. } | Problem::MissingKey { key } => vec![key],
            Problem::Invalid { keys, .. } => keys.clone(),
            Problem::ModelNotFound(_) => vec!["model_name_or_path"],
            Problem::UnreadableConfig { .. }
            | Problem::Syntax { .. }
            | Problem::MalformedSet { .. } => {
                vec![]
            }
        }
    }
}

/// Every problem of an experiment, reported together.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigErrors {
    /// The experiment file.
    pub path: PathBuf,
    /// All problems, in the order found (file, keys, validation).
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "{} problem{} in experiment {}:",
            n,
            if n == 1 { "" } else { "s" },
            self.path.display()
        )?;
        for problem in &self.problems {
            // Multi-line problems (model search paths) stay indented under their bullet.
            write!(f, "\n  - {}", problem.to_string().replace('\n', "\n    "))?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Levenshtein distance between two keys (ASCII-insensitive to case).
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_ascii_lowercase().chars().collect();
    let b: Vec<char> = b.to_ascii_lowercase().chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = prev[j] + usize::from(ca != cb);
            cur[j + 1] = substitution.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The valid key closest to `unknown` by edit distance (first in schema order on ties).
pub(crate) fn closest_key(unknown: &str) -> &'static str {
    super::schema::KEYS
        .iter()
        .map(|k| k.name)
        .min_by_key(|name| edit_distance(unknown, name))
        .unwrap_or("model_name_or_path")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }

    #[test]
    fn suggestions() {
        assert_eq!(closest_key("learning_rte"), "learning_rate");
        assert_eq!(closest_key("pre_seq_length"), "pre_seq_len");
        assert_eq!(closest_key("quantisation_bit"), "quantization_bit");
        assert_eq!(
            closest_key("per_device_train_batchsize"),
            "per_device_train_batch_size"
        );
    }

    #[test]
    fn display_lists_every_problem() {
        let errors = ConfigErrors {
            path: "x.toml".into(),
            problems: vec![
                Problem::MissingKey { key: "output_dir" },
                Problem::invalid(&["pre_seq_len"], "must be >= 1"),
            ],
        };
        let text = errors.to_string();
        assert!(
            text.starts_with("2 problems in experiment x.toml:"),
            "{text}"
        );
        assert!(
            text.contains("\n  - missing required key `output_dir`"),
            "{text}"
        );
        assert!(text.contains("\n  - `pre_seq_len`: must be >= 1"), "{text}");
    }
}
