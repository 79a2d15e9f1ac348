//! Splitting a dataset file into records and turning every JSON / UTF-8 problem into a
//! `file:line:column` error with a short snippet (part of `source`).
//!
//! JSON lines are handed over as text (the caller picks the columns out); a JSON array file is
//! parsed element by element with a stream deserializer so each element keeps its start line.
//! serde_json reports positions relative to the piece it parsed and in bytes; they are mapped
//! back to file lines and character columns here.

use std::path::Path;

use serde_json::{Map, Value};

use super::FileFormat;
use crate::error::DataError;

pub(super) struct WalkStats {
    pub(super) format: FileFormat,
    pub(super) records: usize,
    pub(super) blank_lines: usize,
}

/// One record as [`walk_records`] hands it over.
pub(super) enum Record<'a> {
    /// The text of a non-blank JSON line (UTF-8 checked, not parsed yet).
    Line(&'a str),
    /// An object already parsed out of a JSON array file.
    Object(Map<String, Value>),
}

/// Call `f(line, record)` for each record (at most `limit`), in file order.
pub(super) fn walk_records(
    path: &Path,
    bytes: &[u8],
    limit: Option<usize>,
    mut f: impl FnMut(usize, Record<'_>) -> Result<(), DataError>,
) -> Result<WalkStats, DataError> {
    const BOM: &[u8] = b"\xEF\xBB\xBF";
    let body_start = if bytes.starts_with(BOM) { BOM.len() } else { 0 };
    let first = bytes[body_start..]
        .iter()
        .position(|b| !b.is_ascii_whitespace());
    let limit = limit.unwrap_or(usize::MAX);
    let mut stats = WalkStats {
        format: FileFormat::JsonLines,
        records: 0,
        blank_lines: 0,
    };
    match first.map(|i| bytes[body_start + i]) {
        None => Err(DataError::Empty {
            path: path.to_path_buf(),
        }),
        Some(b'[') => {
            stats.format = FileFormat::JsonArray;
            let text = match std::str::from_utf8(bytes) {
                Ok(t) => t,
                Err(e) => return Err(utf8_error(path, bytes, e.valid_up_to())),
            };
            walk_array(path, text, body_start, limit, &mut stats, &mut f)?;
            Ok(stats)
        }
        Some(_) => {
            let mut start = 0usize;
            let mut line = 0usize;
            while start < bytes.len() && stats.records < limit {
                line += 1;
                let end = memchr_newline(&bytes[start..]).map_or(bytes.len(), |i| start + i);
                let line_start = if line == 1 { body_start } else { start };
                let mut raw = &bytes[line_start..end];
                if let Some(stripped) = raw.strip_suffix(b"\r") {
                    raw = stripped;
                }
                let text = match std::str::from_utf8(raw) {
                    Ok(t) => t,
                    Err(e) => return Err(utf8_error(path, bytes, line_start + e.valid_up_to())),
                };
                if text
                    .trim_matches(|c: char| c.is_ascii_whitespace())
                    .is_empty()
                {
                    stats.blank_lines += 1;
                } else {
                    stats.records += 1;
                    f(line, Record::Line(text))?;
                }
                start = end + 1;
            }
            Ok(stats)
        }
    }
}

fn memchr_newline(hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == b'\n')
}

pub(super) fn parse_line(
    path: &Path,
    line: usize,
    text: &str,
) -> Result<Map<String, Value>, DataError> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(DataError::NotAnObject {
            path: path.to_path_buf(),
            line,
            found: type_name(&other),
        }),
        Err(e) => {
            // serde_json reports (line 1, bytes consumed); the offending byte is the last consumed.
            let at = e.column().saturating_sub(1).min(text.len());
            Err(json_error(path, line, text, at, &e))
        }
    }
}

/// Parse a file that is one JSON array of objects, tracking the line where each element starts.
fn walk_array(
    path: &Path,
    text: &str,
    body_start: usize,
    limit: usize,
    stats: &mut WalkStats,
    f: &mut impl FnMut(usize, Record<'_>) -> Result<(), DataError>,
) -> Result<(), DataError> {
    let bytes = text.as_bytes();
    let skip_ws = |mut p: usize| {
        while p < bytes.len() && bytes[p].is_ascii_whitespace() {
            p += 1;
        }
        p
    };
    // `line` is the 1-based line of byte `counted`; advanced lazily as `pos` moves on.
    let (mut line, mut counted) = (1usize, 0usize);
    let mut line_of = |p: usize| {
        line += bytes[counted..p].iter().filter(|&&b| b == b'\n').count();
        counted = p;
        line
    };
    let mut pos = skip_ws(body_start) + 1; // past '['
    let mut expect_value = true; // after '[' or ','
    let mut elements = 0usize;
    loop {
        pos = skip_ws(pos);
        match bytes.get(pos) {
            Some(b']') if expect_value && elements > 0 => {
                return Err(structural(
                    path,
                    text,
                    pos,
                    "a trailing `,` before `]` is not JSON",
                ));
            }
            Some(b']') => {
                let after = skip_ws(pos + 1);
                if after < bytes.len() {
                    return Err(structural(
                        path,
                        text,
                        after,
                        "unexpected text after the closing `]`",
                    ));
                }
                return Ok(());
            }
            None => {
                return Err(structural(
                    path,
                    text,
                    bytes.len(),
                    "the array is not closed by `]`",
                ));
            }
            Some(b',') if !expect_value => {
                expect_value = true;
                pos += 1;
            }
            Some(_) if expect_value => {
                if stats.records >= limit {
                    return Ok(());
                }
                let line = line_of(pos);
                let mut stream =
                    serde_json::Deserializer::from_str(&text[pos..]).into_iter::<Value>();
                let value = match stream.next() {
                    Some(Ok(v)) => v,
                    Some(Err(e)) => return Err(json_error_at(path, text, pos, &e)),
                    None => return Err(structural(path, text, pos, "expected a value")),
                };
                pos += stream.byte_offset();
                elements += 1;
                match value {
                    Value::Object(map) => {
                        stats.records += 1;
                        f(line, Record::Object(map))?;
                    }
                    other => {
                        return Err(DataError::NotAnObject {
                            path: path.to_path_buf(),
                            line,
                            found: type_name(&other),
                        });
                    }
                }
                expect_value = false;
            }
            Some(_) => {
                return Err(structural(
                    path,
                    text,
                    pos,
                    "expected `,` or `]` between array elements",
                ));
            }
        }
    }
}

/// A serde_json error of a stream started at byte `base` of `text`, mapped to file coordinates.
fn json_error_at(path: &Path, text: &str, base: usize, e: &serde_json::Error) -> DataError {
    let rel = &text.as_bytes()[base..];
    // Start of serde_json's reported line inside `rel`.
    let mut line_start = 0usize;
    for _ in 1..e.line() {
        match memchr_newline(&rel[line_start..]) {
            Some(i) => line_start += i + 1,
            None => break,
        }
    }
    let at = (base + line_start + e.column().saturating_sub(1)).min(text.len());
    let (line, line_text, in_line) = locate(text, at);
    json_error(path, line, line_text, in_line, e)
}

fn structural(path: &Path, text: &str, at: usize, what: &str) -> DataError {
    let (line, line_text, in_line) = locate(text, at);
    DataError::Json {
        path: path.to_path_buf(),
        line,
        column: char_column(line_text, in_line),
        message: what.to_string(),
        snippet: snippet(line_text, in_line),
    }
}

/// (1-based line, text of that line, byte offset inside it) of byte `at` of `text`.
fn locate(text: &str, at: usize) -> (usize, &str, usize) {
    let b = text.as_bytes();
    let at = at.min(b.len());
    let start = b[..at]
        .iter()
        .rposition(|&c| c == b'\n')
        .map_or(0, |i| i + 1);
    let end = memchr_newline(&b[at..]).map_or(b.len(), |i| at + i);
    let line = 1 + b[..start].iter().filter(|&&c| c == b'\n').count();
    let mut line_text = &text[start..end];
    if let Some(s) = line_text.strip_suffix('\r') {
        line_text = s;
    }
    (line, line_text, (at - start).min(line_text.len()))
}

fn json_error(
    path: &Path,
    line: usize,
    line_text: &str,
    at: usize,
    e: &serde_json::Error,
) -> DataError {
    // serde_json appends " at line L column C" relative to the parsed piece; drop it, we give ours.
    let msg = e.to_string();
    let message = match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg,
    };
    DataError::Json {
        path: path.to_path_buf(),
        line,
        column: char_column(line_text, at),
        message,
        snippet: snippet(line_text, at),
    }
}

fn floor_char(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn char_column(line_text: &str, at: usize) -> usize {
    line_text[..floor_char(line_text, at)].chars().count() + 1
}

/// Up to ~30 characters either side of byte `at`, control characters escaped.
fn snippet(line_text: &str, at: usize) -> String {
    const SIDE: usize = 30;
    let at = floor_char(line_text, at);
    let before: Vec<char> = line_text[..at].chars().rev().take(SIDE + 1).collect();
    let after: Vec<char> = line_text[at..].chars().take(SIDE + 1).collect();
    let mut out = String::new();
    if before.len() > SIDE {
        out.push('…');
    }
    let esc = |c: char, out: &mut String| {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    };
    for &c in before.iter().take(SIDE).rev() {
        esc(c, &mut out);
    }
    out.push_str(" ⟨here⟩ ");
    for &c in after.iter().take(SIDE) {
        esc(c, &mut out);
    }
    if after.len() > SIDE {
        out.push('…');
    }
    out
}

fn utf8_error(path: &Path, bytes: &[u8], byte_offset: usize) -> DataError {
    let line_start = bytes[..byte_offset]
        .iter()
        .rposition(|&c| c == b'\n')
        .map_or(0, |i| i + 1);
    let line = 1 + bytes[..line_start].iter().filter(|&&c| c == b'\n').count();
    // GBK/GB18030 (the encoding of the original ADGEN download) uses lead bytes 0x81..=0xFE.
    let looks_gbk = bytes[byte_offset..]
        .iter()
        .take(64)
        .filter(|&&b| b >= 0x80)
        .count()
        >= 2
        && (0x81..=0xFE).contains(&bytes[byte_offset]);
    let hint = if looks_gbk {
        " (the file looks GBK/GB18030-encoded)".to_string()
    } else {
        String::new()
    };
    DataError::InvalidUtf8 {
        path: path.to_path_buf(),
        line,
        byte_offset,
        byte_in_line: byte_offset - line_start,
        hint,
    }
}

/// Human name of a JSON value's type, for messages.
pub(super) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippet_is_short_and_char_safe() {
        let line = "中".repeat(100);
        let s = snippet(&line, 151); // inside a 3-byte character
        assert_eq!(s.chars().filter(|&c| c == '中').count(), 60);
        assert!(s.starts_with('…') && s.ends_with('…'));
        assert_eq!(char_column(&line, 151), 51);
    }
}
