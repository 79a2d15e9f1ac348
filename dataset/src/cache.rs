//! Binary cache of preprocessed rows, and the `load_or_build_*` entry points the trainer calls.
//!
//! A cache file is named by a key (SHA-256) over everything that shapes the rows: the input
//! file's content hash, the tokenizer fingerprint, columns, source prefix, lengths,
//! `ignore_pad_token_for_loss`, `max_*_samples`, the row kind (train / eval — the template rule
//! and padding differ) and the format version. A changed input therefore never maps to an old
//! file. Files are written atomically (temp file + rename); a file whose magic, version, key,
//! length or checksum does not match is reported, rebuilt and overwritten, never trusted.
//!
//! The file layout (little-endian, magic + version + key + checksum header) is in `format`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};

mod format;

use format::{CachedRow, Meta, read_cache, write_cache};

use crate::error::DataError;
use crate::preprocess::{self, DataArgs, EVAL_MAP_BATCH_SIZE, EvalRow, TrainRow};
use crate::source;
use crate::tokenizer::ChatGlmTokenizer;

/// Version of the cache layout and of the preprocessing rules; bump on any change of either.
pub const FORMAT_VERSION: u32 = 1;

/// Where (and whether) to cache preprocessed rows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CacheOptions {
    /// Cache directory; `None` disables caching.
    pub dir: Option<PathBuf>,
    /// `--overwrite_cache`: rebuild even when a valid cache file exists.
    pub overwrite_cache: bool,
}

impl CacheOptions {
    /// Caching disabled: every call preprocesses.
    pub fn disabled() -> Self {
        CacheOptions {
            dir: None,
            overwrite_cache: false,
        }
    }

    /// Cache in `dir` (created on first write).
    pub fn in_dir(dir: impl Into<PathBuf>, overwrite_cache: bool) -> Self {
        CacheOptions {
            dir: Some(dir.into()),
            overwrite_cache,
        }
    }

    /// The conventional directory: `$GLM_TUNE_CACHE` if set and non-empty, else
    /// `.glm-tune-cache` beside `output_dir` (in its parent, so several runs share it).
    pub fn default_dir(output_dir: &Path) -> PathBuf {
        match std::env::var_os("GLM_TUNE_CACHE") {
            Some(d) if !d.is_empty() => PathBuf::from(d),
            _ => match output_dir.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.join(".glm-tune-cache"),
                _ => PathBuf::from(".glm-tune-cache"),
            },
        }
    }
}

/// Which preprocessing produced the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowKind {
    /// `preprocess_function_train`.
    Train,
    /// `preprocess_function_eval` (validation and test/predict files alike).
    Eval,
}

impl RowKind {
    fn tag(self) -> u8 {
        match self {
            RowKind::Train => 0,
            RowKind::Eval => 1,
        }
    }
    fn name(self) -> &'static str {
        match self {
            RowKind::Train => "train",
            RowKind::Eval => "eval",
        }
    }
}

/// What happened with the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheStatus {
    /// No cache directory configured.
    Disabled,
    /// Rows were loaded from this file.
    Hit(PathBuf),
    /// Rows were built and written to this file.
    Built { path: PathBuf, reason: BuildReason },
    /// Rows were built but the cache file could not be written (logged as a warning).
    WriteFailed { path: PathBuf, error: String },
}

/// Why rows were built although a cache directory is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildReason {
    /// No cache file for this key yet.
    Missing,
    /// `overwrite_cache` was set.
    Overwrite,
    /// The existing file was unusable (the reason).
    Corrupt(String),
}

/// Summary of one `load_or_build_*` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetReport {
    /// The data file.
    pub path: PathBuf,
    /// Train or eval preprocessing.
    pub kind: RowKind,
    /// Records in the file (skipped ones included).
    pub rows_in_file: usize,
    /// Records selected by `max_*_samples` (all when unset).
    pub selected: usize,
    /// Selected records skipped for an empty/null prompt or response.
    pub skipped_empty: usize,
    /// Lines of the first skipped records (at most `source::MAX_REPORTED_LINES`).
    pub skipped_lines: Vec<usize>,
    /// Rows produced (= selected − skipped_empty).
    pub rows: usize,
    /// Cache outcome.
    pub cache: CacheStatus,
}

/// Training rows of `path`, from the cache when possible (reference §7.3).
///
/// `max_samples` (`max_train_samples`) keeps the first N records of the file before
/// preprocessing, as `datasets.select(range(N))` does.
pub fn load_or_build_train(
    cache: &CacheOptions,
    tok: &ChatGlmTokenizer,
    path: &Path,
    args: &DataArgs,
    max_samples: Option<usize>,
) -> Result<(Vec<TrainRow>, DatasetReport), DataError> {
    load_or_build(
        cache,
        tok,
        path,
        args,
        max_samples,
        RowKind::Train,
        preprocess::preprocess_train,
    )
}

/// Eval/predict rows of `path`, from the cache when possible (reference §7.4).
///
/// `max_samples` is `max_eval_samples` or `max_predict_samples`.
pub fn load_or_build_eval(
    cache: &CacheOptions,
    tok: &ChatGlmTokenizer,
    path: &Path,
    args: &DataArgs,
    max_samples: Option<usize>,
) -> Result<(Vec<EvalRow>, DatasetReport), DataError> {
    load_or_build(
        cache,
        tok,
        path,
        args,
        max_samples,
        RowKind::Eval,
        preprocess::preprocess_eval,
    )
}

/// The cache file `load_or_build_*` would use for these inputs (`None` when caching is off).
pub fn cache_path(
    cache: &CacheOptions,
    tok: &ChatGlmTokenizer,
    path: &Path,
    args: &DataArgs,
    max_samples: Option<usize>,
    kind: RowKind,
) -> Result<Option<PathBuf>, DataError> {
    let Some(dir) = &cache.dir else {
        return Ok(None);
    };
    let bytes = source::read_bytes(path)?;
    let key = cache_key(&bytes, &tok.fingerprint(), args, max_samples, kind);
    Ok(Some(dir.join(file_name(path, kind, &key))))
}

/// `preprocess_train` / `preprocess_eval`.
type BuildFn<R> = fn(&ChatGlmTokenizer, &[source::Example], &DataArgs) -> Result<Vec<R>, DataError>;

fn load_or_build<R: CachedRow>(
    cache: &CacheOptions,
    tok: &ChatGlmTokenizer,
    path: &Path,
    args: &DataArgs,
    max_samples: Option<usize>,
    kind: RowKind,
    build: BuildFn<R>,
) -> Result<(Vec<R>, DatasetReport), DataError> {
    args.validate()?;
    let started = Instant::now();
    let bytes = source::read_bytes(path)?;
    let target = cache.dir.as_ref().map(|dir| {
        let key = cache_key(&bytes, &tok.fingerprint(), args, max_samples, kind);
        (dir.join(file_name(path, kind, &key)), key)
    });
    let mut reason = BuildReason::Missing;
    if let Some((file, key)) = &target {
        if cache.overwrite_cache {
            reason = BuildReason::Overwrite;
        } else if file.exists() {
            match read_cache::<R>(file, kind, key) {
                Ok((rows, meta)) => {
                    tracing::info!(file = %path.display(), cache = %file.display(), rows = rows.len(), "loaded preprocessed rows from cache");
                    let report =
                        meta.report(path, kind, rows.len(), CacheStatus::Hit(file.clone()));
                    return Ok((rows, report));
                }
                Err(why) => {
                    tracing::warn!(cache = %file.display(), reason = %why, "ignoring unusable dataset cache file; rebuilding it");
                    reason = BuildReason::Corrupt(why);
                }
            }
        }
    }

    let (examples, read) = source::parse_examples(path, &bytes, &args.columns())?;
    let selected = max_samples.map_or(read.rows, |n| n.min(read.rows));
    let chosen = preprocess::select_first(&examples, max_samples);
    let rows = build(tok, chosen, args)?;
    let skipped_lines = read
        .skipped
        .iter()
        .filter(|s| s.index < selected)
        .map(|s| s.line)
        .collect();
    let meta = Meta {
        rows_in_file: read.rows,
        selected,
        skipped_empty: selected - rows.len(),
        skipped_lines,
    };
    if rows.is_empty() {
        return Err(DataError::NoRows {
            path: path.to_path_buf(),
            selected,
            prompt_column: args.prompt_column.clone(),
            response_column: args.response_column.clone(),
        });
    }
    let status = match target {
        None => CacheStatus::Disabled,
        Some((file, key)) => match write_cache(&file, kind, &key, &meta, &rows) {
            Ok(()) => CacheStatus::Built { path: file, reason },
            Err(e) => {
                tracing::warn!(cache = %file.display(), error = %e, "could not write the dataset cache; continuing without it");
                CacheStatus::WriteFailed {
                    path: file,
                    error: e.to_string(),
                }
            }
        },
    };
    tracing::info!(
        file = %path.display(), kind = kind.name(), rows = rows.len(), skipped = meta.skipped_empty,
        seconds = started.elapsed().as_secs_f64(), "preprocessed dataset"
    );
    let report = meta.report(path, kind, rows.len(), status);
    Ok((rows, report))
}

impl Meta {
    fn report(self, path: &Path, kind: RowKind, rows: usize, cache: CacheStatus) -> DatasetReport {
        DatasetReport {
            path: path.to_path_buf(),
            kind,
            rows_in_file: self.rows_in_file,
            selected: self.selected,
            skipped_empty: self.skipped_empty,
            skipped_lines: self.skipped_lines,
            rows,
            cache,
        }
    }
}

/// SHA-256 over a canonical description of every input of the rows.
fn cache_key(
    bytes: &[u8],
    tokenizer: &str,
    args: &DataArgs,
    max_samples: Option<usize>,
    kind: RowKind,
) -> [u8; 32] {
    let template = match (kind, &args.history_column) {
        (_, None) => "none",
        (RowKind::Train, Some(_)) => "always",
        (RowKind::Eval, Some(_)) => "non-empty-history",
    };
    let desc = format!(
        "glm-tune dataset cache v{FORMAT_VERSION}\nkind={}\ninput_sha256={}\ntokenizer={tokenizer:?}\n\
         prompt_column={:?}\nresponse_column={:?}\nhistory_column={:?}\ntemplate={template}\nsource_prefix={:?}\n\
         max_source_length={}\nmax_target_length={}\nval_max_target_length={}\nignore_pad_token_for_loss={}\n\
         max_samples={max_samples:?}\neval_map_batch={EVAL_MAP_BATCH_SIZE}\n",
        kind.name(),
        hex(&Sha256::digest(bytes)),
        args.prompt_column,
        args.response_column,
        args.history_column,
        args.source_prefix,
        args.max_source_length,
        args.max_target_length,
        args.eval_target_length(),
        args.ignore_pad_token_for_loss,
    );
    Sha256::digest(desc.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn file_name(path: &Path, kind: RowKind, key: &[u8; 32]) -> String {
    let stem: String = path
        .file_stem()
        .map(|s| {
            s.to_string_lossy()
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .take(40)
                .collect()
        })
        .unwrap_or_default();
    format!("{}-{stem}-{}.glmds", kind.name(), &hex(key)[..24])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_safe() {
        let name = file_name(Path::new("/x/my data.v2.json"), RowKind::Eval, &[0xab; 32]);
        assert_eq!(name, format!("eval-my_data_v2-{}.glmds", "ab".repeat(12)));
    }

    #[test]
    fn default_dir_is_beside_the_output_dir() {
        // Only meaningful without an override in the environment.
        if std::env::var_os("GLM_TUNE_CACHE").is_none() {
            assert_eq!(
                CacheOptions::default_dir(Path::new("out/run1")),
                PathBuf::from("out/.glm-tune-cache")
            );
            assert_eq!(
                CacheOptions::default_dir(Path::new("run1")),
                PathBuf::from(".glm-tune-cache")
            );
        }
    }
}
