//! Reading dataset files: JSON lines (`.json`/`.jsonl`, one object per line, as `ptuning/main.py`
//! loads them through `datasets.load_dataset("json")`) or one JSON array of objects.
//!
//! Owns: format detection, UTF-8 / JSON validation with `file:line:column` errors, column
//! extraction (`prompt_column`, `response_column`, optional `history_column`), the skip rule of the
//! original (a record whose prompt or response is empty or null is dropped — here counted in
//! [`ReadReport`] and logged), and [`peek_columns`] for `glm-tune check`.
//!
//! The whole file is read into memory once (its bytes are also hashed for the cache key); each
//! record is parsed on its own, so a single huge line costs about its own size again and never
//! more. Blank lines of a JSON-lines file are ignored (pyarrow's JSON reader does the same) and
//! counted.

use std::path::{Path, PathBuf};

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value};

use crate::error::DataError;

mod records;

use records::{Record, parse_line, type_name, walk_records};

/// Which keys of each record hold the prompt, the response and (optionally) the chat history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    /// `prompt_column` (ADGEN: `content`).
    pub prompt: String,
    /// `response_column` (ADGEN: `summary`).
    pub response: String,
    /// `history_column`: a list of `[old_query, old_response]` pairs per record.
    pub history: Option<String>,
}

/// One usable record of a dataset file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// 0-based position of the record in the file, counting skipped (empty) records: the row index
    /// `datasets` would give it. `max_*_samples` and the 1000-row eval map batches use it.
    pub index: usize,
    /// 1-based line where the record starts.
    pub line: usize,
    /// Value of the prompt column (non-empty).
    pub prompt: String,
    /// Value of the response column (non-empty).
    pub response: String,
    /// History pairs (empty without a history column, or for a null/empty list).
    pub history: Vec<(String, String)>,
}

/// How a file was laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// One JSON object per line.
    JsonLines,
    /// The whole file is one JSON array of objects.
    JsonArray,
}

/// At most this many skipped line numbers are kept in a report (the count is always complete).
pub const MAX_REPORTED_LINES: usize = 20;

/// What reading a file found besides the examples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadReport {
    /// The file read.
    pub path: PathBuf,
    /// Detected layout.
    pub format: FileFormat,
    /// Records (objects) in the file, skipped ones included.
    pub rows: usize,
    /// Records dropped because the prompt or the response was empty or null (as `main.py` does).
    pub skipped_empty: usize,
    /// The first [`MAX_REPORTED_LINES`] skipped records.
    pub skipped: Vec<Skipped>,
    /// Whitespace-only lines of a JSON-lines file (ignored, not records).
    pub blank_lines: usize,
}

/// A record dropped for an empty or null prompt/response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skipped {
    /// 0-based record index (as [`Example::index`]).
    pub index: usize,
    /// 1-based line where the record starts.
    pub line: usize,
}

/// Read a file's bytes, naming the file on failure.
pub fn read_bytes(path: &Path) -> Result<Vec<u8>, DataError> {
    std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Read all examples of `path`.
///
/// Records with an empty or null prompt/response are skipped and counted (a `tracing` warning
/// lists where); every other problem is an error naming `file:line`.
pub fn read_examples(
    path: &Path,
    columns: &Columns,
) -> Result<(Vec<Example>, ReadReport), DataError> {
    let bytes = read_bytes(path)?;
    parse_examples(path, &bytes, columns)
}

/// [`read_examples`] on bytes already read (`path` is only used in messages and the report).
pub fn parse_examples(
    path: &Path,
    bytes: &[u8],
    columns: &Columns,
) -> Result<(Vec<Example>, ReadReport), DataError> {
    let mut examples = Vec::new();
    let mut skipped_empty = 0usize;
    let mut skipped = Vec::new();
    let stats = walk_records(path, bytes, None, |line, record| {
        let index = examples.len() + skipped_empty;
        let (fields, text) = match record {
            // Fast path: pick the columns straight out of the line, skipping other keys unparsed;
            // on any failure re-parse as a `Value` for a precise error.
            Record::Line(text) => match fast_fields(text, columns) {
                Ok(f) => (f, Ok(text)),
                Err(_) => (
                    Fields::from_map(parse_line(path, line, text)?, columns),
                    Ok(text),
                ),
            },
            Record::Object(map) => {
                let keys: Vec<String> = map.keys().cloned().collect();
                (Fields::from_map(map, columns), Err(keys))
            }
        };
        // Only computed for a missing-column message.
        let keys = || match text {
            Ok(t) => serde_json::from_str::<Map<String, Value>>(t)
                .ok()
                .map(|m| m.keys().cloned().collect()),
            Err(keys) => Some(keys),
        };
        match extract(path, line, fields, columns, keys)? {
            Some((prompt, response, history)) => examples.push(Example {
                index,
                line,
                prompt,
                response,
                history,
            }),
            None => {
                if skipped.len() < MAX_REPORTED_LINES {
                    skipped.push(Skipped { index, line });
                }
                skipped_empty += 1;
            }
        }
        Ok(())
    })?;
    if stats.records == 0 {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    if skipped_empty > 0 {
        tracing::warn!(
            file = %path.display(),
            skipped = skipped_empty,
            of = stats.records,
            lines = ?skipped.iter().map(|s| s.line).collect::<Vec<_>>(),
            "records with an empty or null prompt/response were skipped (as ptuning/main.py does)"
        );
    }
    let report = ReadReport {
        path: path.to_path_buf(),
        format: stats.format,
        rows: stats.records,
        skipped_empty,
        skipped,
        blank_lines: stats.blank_lines,
    };
    Ok((examples, report))
}

/// The keys of the first `max_lines` records of `path`: `(line, sorted keys)` per record.
///
/// Used by `glm-tune check` to show which columns a file offers. Only the records looked at are
/// parsed and validated.
pub fn peek_columns(path: &Path, max_lines: usize) -> Result<Vec<(usize, Vec<String>)>, DataError> {
    let bytes = read_bytes(path)?;
    let mut out = Vec::new();
    let stats = walk_records(path, &bytes, Some(max_lines), |line, record| {
        let map = match record {
            Record::Line(text) => parse_line(path, line, text)?,
            Record::Object(map) => map,
        };
        out.push((line, map.keys().cloned().collect()));
        Ok(())
    })?;
    if stats.records == 0 && max_lines > 0 {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(out)
}

type Extracted = (String, String, Vec<(String, String)>);

/// The configured columns of one record; `None` = key absent.
#[derive(Default)]
struct Fields {
    prompt: Option<Value>,
    response: Option<Value>,
    history: Option<Value>,
}

impl Fields {
    fn from_map(mut map: Map<String, Value>, cols: &Columns) -> Self {
        let history = cols.history.as_ref().and_then(|h| map.remove(h));
        Fields {
            prompt: map.remove(&cols.prompt),
            response: map.remove(&cols.response),
            history,
        }
    }
}

/// Deserialize only the configured columns of a JSON line; other values are skipped unparsed.
fn fast_fields(text: &str, cols: &Columns) -> Result<Fields, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let f = FieldsSeed(cols).deserialize(&mut de)?;
    de.end()?;
    Ok(f)
}

struct FieldsSeed<'c>(&'c Columns);

impl<'de> DeserializeSeed<'de> for FieldsSeed<'_> {
    type Value = Fields;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Fields, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FieldsSeed<'_> {
    type Value = Fields;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
        let mut f = Fields::default();
        // Duplicate keys: the last one wins, as in `serde_json::Map` and Python's `json`.
        while let Some(slot) = map.next_key_seed(KeySlot(self.0))? {
            match slot {
                Slot::Prompt => f.prompt = Some(map.next_value()?),
                Slot::Response => f.response = Some(map.next_value()?),
                Slot::History => f.history = Some(map.next_value()?),
                Slot::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(f)
    }
}

enum Slot {
    Prompt,
    Response,
    History,
    Other,
}

/// Classifies a key without allocating it.
struct KeySlot<'c>(&'c Columns);

impl<'de> DeserializeSeed<'de> for KeySlot<'_> {
    type Value = Slot;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Slot, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySlot<'_> {
    type Value = Slot;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: serde::de::Error>(self, k: &str) -> Result<Slot, E> {
        Ok(if k == self.0.prompt {
            Slot::Prompt
        } else if k == self.0.response {
            Slot::Response
        } else if self.0.history.as_deref() == Some(k) {
            Slot::History
        } else {
            Slot::Other
        })
    }
}

/// Check and convert the configured columns of one record. `Ok(None)`: empty prompt or response
/// (skip). `keys` lists the record's keys, for the missing-column message.
fn extract(
    path: &Path,
    line: usize,
    fields: Fields,
    cols: &Columns,
    keys: impl FnOnce() -> Option<Vec<String>>,
) -> Result<Option<Extracted>, DataError> {
    let wanted = [
        (&fields.prompt, cols.prompt.as_str(), "prompt_column"),
        (&fields.response, cols.response.as_str(), "response_column"),
    ];
    let history = cols
        .history
        .as_deref()
        .map(|h| (&fields.history, h, "history_column"));
    for (value, key, flag) in wanted.into_iter().chain(history) {
        if value.is_none() {
            let keys = keys().unwrap_or_default();
            let suggestion = closest_key(key, &keys);
            return Err(DataError::MissingColumn {
                path: path.to_path_buf(),
                line,
                key: key.to_string(),
                flag,
                keys,
                suggestion,
            });
        }
    }
    let text = |v: Option<Value>, key: &str| -> Result<String, DataError> {
        match v {
            Some(Value::String(s)) => Ok(s),
            // `main.py` skips falsy values; null (a missing value in `datasets`) is falsy like "".
            Some(Value::Null) | None => Ok(String::new()),
            Some(other) => Err(DataError::WrongType {
                path: path.to_path_buf(),
                line,
                key: key.to_string(),
                expected: "a string",
                found: type_name(&other),
            }),
        }
    };
    let prompt = text(fields.prompt, &cols.prompt)?;
    let response = text(fields.response, &cols.response)?;
    let history = match &cols.history {
        Some(key) => parse_history(path, line, key, fields.history.unwrap_or(Value::Null))?,
        None => Vec::new(),
    };
    if prompt.is_empty() || response.is_empty() {
        return Ok(None);
    }
    Ok(Some((prompt, response, history)))
}

fn parse_history(
    path: &Path,
    line: usize,
    key: &str,
    v: Value,
) -> Result<Vec<(String, String)>, DataError> {
    let bad = |detail: String| DataError::BadHistory {
        path: path.to_path_buf(),
        line,
        key: key.to_string(),
        detail,
    };
    let items = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        other => return Err(bad(format!("found {}", type_name(&other)))),
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let pair = match item {
            Value::Array(p) if p.len() == 2 => p,
            Value::Array(p) => {
                return Err(bad(format!(
                    "turn {i} has {} elements, expected 2",
                    p.len()
                )));
            }
            other => return Err(bad(format!("turn {i} is {}", type_name(&other)))),
        };
        let mut it = pair.into_iter();
        match (it.next(), it.next()) {
            (Some(Value::String(q)), Some(Value::String(r))) => out.push((q, r)),
            (Some(q), Some(r)) => {
                return Err(bad(format!(
                    "turn {i} holds [{}, {}], expected two strings",
                    type_name(&q),
                    type_name(&r)
                )));
            }
            _ => return Err(bad(format!("turn {i} is incomplete"))),
        }
    }
    Ok(out)
}

/// The existing key closest to `want` (case-insensitive edit distance), if reasonably close.
fn closest_key(want: &str, keys: &[String]) -> Option<String> {
    let w: Vec<char> = want.to_lowercase().chars().collect();
    let limit = (w.len() / 3).max(2);
    keys.iter()
        .map(|k| {
            (
                edit_distance(&w, &k.to_lowercase().chars().collect::<Vec<_>>()),
                k,
            )
        })
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.clone())
}

fn edit_distance(a: &[char], b: &[char]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(history: bool) -> Columns {
        Columns {
            prompt: "content".into(),
            response: "summary".into(),
            history: history.then(|| "history".into()),
        }
    }

    fn parse(text: &str, c: &Columns) -> Result<(Vec<Example>, ReadReport), DataError> {
        parse_examples(Path::new("t.json"), text.as_bytes(), c)
    }

    #[test]
    fn json_lines_with_bom_crlf_blank_lines_and_skips() {
        let text = "\u{feff}{\"content\":\"a\",\"summary\":\"b\"}\r\n\r\n{\"content\":\"\",\"summary\":\"x\"}\r\n{\"content\":\"c\",\"summary\":null}\n{\"content\":\"d\",\"summary\":\"e\",\"extra\":1}";
        let (ex, rep) = parse(text, &cols(false)).unwrap();
        assert_eq!(ex.len(), 2);
        assert_eq!(
            (ex[0].index, ex[0].line, ex[0].prompt.as_str()),
            (0, 1, "a")
        );
        assert_eq!(
            (ex[1].index, ex[1].line, ex[1].response.as_str()),
            (3, 5, "e")
        );
        assert_eq!((rep.rows, rep.skipped_empty, rep.blank_lines), (4, 2, 1));
        assert_eq!(
            rep.skipped,
            vec![Skipped { index: 1, line: 3 }, Skipped { index: 2, line: 4 }]
        );
        assert_eq!(rep.format, FileFormat::JsonLines);
    }

    #[test]
    fn json_array_keeps_element_lines() {
        let text = "[\n  {\"content\": \"a\", \"summary\": \"b\"},\n\n  {\"content\": \"c\",\n   \"summary\": \"d\"}\n]\n";
        let (ex, rep) = parse(text, &cols(false)).unwrap();
        assert_eq!(rep.format, FileFormat::JsonArray);
        assert_eq!(ex.iter().map(|e| e.line).collect::<Vec<_>>(), vec![2, 4]);
        assert_eq!(ex[1].response, "d");
    }

    #[test]
    fn array_structure_errors_point_at_the_spot() {
        let e = parse(
            "[{\"content\":\"a\",\"summary\":\"b\"}\n {\"content\":\"c\",\"summary\":\"d\"}]",
            &cols(false),
        )
        .unwrap_err();
        match e {
            DataError::Json { line, column, .. } => assert_eq!((line, column), (2, 2)),
            other => panic!("{other}"),
        }
        let e = parse("[{\"content\":\"a\",\"summary\":\"b\"},\n", &cols(false)).unwrap_err();
        assert!(matches!(e, DataError::Json { line: 2, .. }), "{e}");
        let e = parse("[{\"content\":\"a\",\"summary\":\"b\"}] x", &cols(false)).unwrap_err();
        assert!(e.to_string().contains("after the closing"), "{e}");
        let e = parse("[{\"content\":\"a\",\n\"summary\":tru}]", &cols(false)).unwrap_err();
        match e {
            DataError::Json { line, column, .. } => assert_eq!((line, column), (2, 14)),
            other => panic!("{other}"),
        }
        assert!(matches!(
            parse("[ ]", &cols(false)),
            Err(DataError::Empty { .. })
        ));
        let e = parse("[{\"content\":\"a\",\"summary\":\"b\"},\n]", &cols(false)).unwrap_err();
        assert!(
            matches!(
                e,
                DataError::Json {
                    line: 2,
                    column: 1,
                    ..
                }
            ),
            "{e}"
        );
        assert!(matches!(
            parse("[1]", &cols(false)),
            Err(DataError::NotAnObject {
                line: 1,
                found: "a number",
                ..
            })
        ));
    }

    #[test]
    fn history_pairs_and_their_errors() {
        let c = cols(true);
        let (ex, _) = parse("{\"content\":\"q\",\"summary\":\"r\",\"history\":[[\"a\",\"b\"],[\"c\",\"d\"]]}\n{\"content\":\"q\",\"summary\":\"r\",\"history\":null}", &c).unwrap();
        assert_eq!(
            ex[0].history,
            vec![("a".into(), "b".into()), ("c".into(), "d".into())]
        );
        assert!(ex[1].history.is_empty());
        for bad in ["\"x\"", "[[\"a\"]]", "[[\"a\",1]]", "[\"ab\"]"] {
            let line = format!("{{\"content\":\"q\",\"summary\":\"r\",\"history\":{bad}}}");
            let e = parse(&line, &c).unwrap_err();
            assert!(
                matches!(e, DataError::BadHistory { line: 1, .. }),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn closest_key_suggestions() {
        let keys = vec!["content".to_string(), "summary".to_string()];
        assert_eq!(closest_key("summry", &keys).as_deref(), Some("summary"));
        assert_eq!(closest_key("Content", &keys).as_deref(), Some("content"));
        assert_eq!(closest_key("prompt", &keys), None);
    }
}
