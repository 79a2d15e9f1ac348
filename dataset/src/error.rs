//! `DataError`: every way reading or preprocessing a dataset file can fail.
//!
//! Each variant names the file and, where one exists, the 1-based line (and column) so the user
//! can open the file at the right place; the messages end with what to do about it. Tokenizer
//! failures have their own type (`tokenizer::TokenizerError`); cache problems are not errors (a
//! bad cache file is rebuilt with a warning, see `cache.rs`).

use std::path::PathBuf;

/// Errors of the data pipeline (reading JSON files, validating arguments).
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file holds no records (0 bytes, only whitespace, or an empty JSON array).
    #[error("{}: the file contains no records; expected JSON lines (one object per line) or a JSON array of objects", path.display())]
    Empty { path: PathBuf },

    /// The bytes are not valid UTF-8.
    #[error(
        "{}:{line}: invalid UTF-8 at byte offset {byte_offset} of the file (byte {byte_in_line} of the line){hint}; \
         re-encode the file as UTF-8 (e.g. `iconv -f GBK -t UTF-8 in.json > out.json`)",
        path.display()
    )]
    InvalidUtf8 {
        path: PathBuf,
        line: usize,
        /// Offset of the first invalid byte from the start of the file.
        byte_offset: usize,
        /// Offset of the first invalid byte from the start of its line (0-based).
        byte_in_line: usize,
        /// Extra guess about the encoding (may be empty).
        hint: String,
    },

    /// A record is not well-formed JSON.
    #[error(
        "{}:{line}:{column}: invalid JSON: {message}\n    near: {snippet}\n    \
         each line must hold one complete JSON object (JSON lines), or the whole file one JSON array of objects",
        path.display()
    )]
    Json {
        path: PathBuf,
        line: usize,
        /// 1-based character column.
        column: usize,
        message: String,
        /// A short excerpt of the line around the error.
        snippet: String,
    },

    /// A record is valid JSON but not an object.
    #[error("{}:{line}: expected a JSON object with the dataset columns, found {found}", path.display())]
    NotAnObject {
        path: PathBuf,
        line: usize,
        found: &'static str,
    },

    /// A configured column is absent from a record.
    #[error(
        "{}:{line}: no key {key:?} (set by `{flag}`); this line has the keys [{}]{}",
        path.display(),
        keys.iter().map(|k| format!("{k:?}")).collect::<Vec<_>>().join(", "),
        suggestion.as_ref().map(|s| format!("; did you mean {s:?}? (set `{flag} = {s:?}`)")).unwrap_or_default()
    )]
    MissingColumn {
        path: PathBuf,
        line: usize,
        key: String,
        /// The option that names this column (`prompt_column`, ...).
        flag: &'static str,
        /// The keys the record does have.
        keys: Vec<String>,
        /// The closest existing key, if any is close.
        suggestion: Option<String>,
    },

    /// A column holds a value of the wrong JSON type.
    #[error("{}:{line}: key {key:?} holds {found}, expected {expected}", path.display())]
    WrongType {
        path: PathBuf,
        line: usize,
        key: String,
        expected: &'static str,
        found: &'static str,
    },

    /// The history column is not a list of `[query, response]` string pairs.
    #[error(
        "{}:{line}: key {key:?}: {detail}; the history column must be a list of [query, response] string pairs",
        path.display()
    )]
    BadHistory {
        path: PathBuf,
        line: usize,
        key: String,
        detail: String,
    },

    /// Every selected record was skipped (or `max_*_samples` is 0): nothing to train/evaluate on.
    #[error(
        "{}: no usable rows: all {selected} selected records have an empty or null {prompt_column:?} or {response_column:?}; \
         check the column names and `max_*_samples`",
        path.display()
    )]
    NoRows {
        path: PathBuf,
        selected: usize,
        prompt_column: String,
        response_column: String,
    },

    /// Inconsistent preprocessing arguments.
    #[error("invalid data arguments: {0}")]
    InvalidArgs(String),
}
