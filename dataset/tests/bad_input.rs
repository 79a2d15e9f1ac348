//! Bad dataset files: each case must give a clear error naming file:line (and what to fix), never
//! panic and never drop data silently. Also the accepted oddities (BOM, CRLF, blank lines, JSON
//! array files) and a single 100 MB line.

#[path = "../../tests/support/fixtures.rs"]
mod fixtures;

use std::io::Write;
use std::path::{Path, PathBuf};

use dataset::error::DataError;
use dataset::source::{Columns, FileFormat, peek_columns, read_examples};

fn cols() -> Columns {
    Columns {
        prompt: "content".into(),
        response: "summary".into(),
        history: None,
    }
}

fn file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn read_err(bytes: &[u8]) -> (DataError, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = file(dir.path(), "bad.json", bytes);
    let e = read_examples(&p, &cols()).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains(&p.display().to_string()),
        "message must name the file: {msg}"
    );
    (e, msg)
}

const GOOD: &str = r#"{"content": "类型#裤", "summary": "宽松的阔腿裤"}"#;

#[test]
fn malformed_line_gives_line_column_and_snippet() {
    let text = format!("{GOOD}\n{GOOD}\n{{\"content\": \"类型#裙\", \"summary\" \"短裙\"}}\n");
    let (e, msg) = read_err(text.as_bytes());
    match e {
        DataError::Json {
            line,
            column,
            snippet,
            ..
        } => {
            assert_eq!(line, 3);
            // The missing ':' is detected at the '"' of "短裙": character column 31.
            assert_eq!(column, 31, "{msg}");
            assert!(
                snippet.contains("\"summary\"") && snippet.contains("短裙"),
                "{snippet}"
            );
        }
        other => panic!("{other}"),
    }
    assert!(msg.contains(":3:31:"), "{msg}");
    // Two objects on one line, and a pretty-printed object spanning lines.
    let (e, _) = read_err(format!("{GOOD} {GOOD}\n").as_bytes());
    assert!(matches!(e, DataError::Json { line: 1, .. }), "{e}");
    let (e, msg) = read_err(b"{\n  \"content\": \"a\",\n  \"summary\": \"b\"\n}\n");
    assert!(
        matches!(e, DataError::Json { line: 1, .. }) && msg.contains("one complete JSON object"),
        "{msg}"
    );
}

#[test]
fn missing_column_lists_keys_and_suggests() {
    let text = format!("{GOOD}\n{{\"content\": \"a\", \"summry\": \"b\", \"id\": 7}}\n");
    let (e, msg) = read_err(text.as_bytes());
    match &e {
        DataError::MissingColumn {
            line,
            key,
            keys,
            suggestion,
            flag,
            ..
        } => {
            assert_eq!(
                (*line, key.as_str(), *flag),
                (2, "summary", "response_column")
            );
            assert_eq!(keys, &["content", "id", "summry"]);
            assert_eq!(suggestion.as_deref(), Some("summry"));
        }
        other => panic!("{other}"),
    }
    assert!(
        msg.contains("did you mean \"summry\"") && msg.contains("\"id\""),
        "{msg}"
    );
    // No close key: no suggestion, but the keys are listed.
    let (e, msg) = read_err(b"{\"q\": \"a\", \"summary\": \"b\"}\n");
    assert!(
        matches!(
            &e,
            DataError::MissingColumn {
                suggestion: None,
                ..
            }
        ),
        "{msg}"
    );
    assert!(msg.contains("[\"q\", \"summary\"]"), "{msg}");
}

#[test]
fn non_string_value_names_key_and_type() {
    for (value, found) in [
        ("42", "a number"),
        ("[\"a\"]", "an array"),
        ("true", "a boolean"),
        ("{}", "an object"),
    ] {
        let text = format!("{GOOD}\n{GOOD}\n{{\"content\": {value}, \"summary\": \"b\"}}\n");
        let (e, msg) = read_err(text.as_bytes());
        match e {
            DataError::WrongType {
                line,
                key,
                found: f,
                ..
            } => assert_eq!((line, key.as_str(), f), (3, "content", found)),
            other => panic!("{other}"),
        }
        assert!(msg.contains(":3:") && msg.contains(found), "{msg}");
    }
    let (e, _) = read_err(b"[\"just a string\"]");
    assert!(
        matches!(
            e,
            DataError::NotAnObject {
                line: 1,
                found: "a string",
                ..
            }
        ),
        "{e}"
    );
    let (e, _) = read_err(format!("{GOOD}\n17\n").as_bytes());
    assert!(
        matches!(
            e,
            DataError::NotAnObject {
                line: 2,
                found: "a number",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn invalid_utf8_gives_line_and_byte_offset() {
    let mut bytes = format!("{GOOD}\n").into_bytes();
    let line2 = bytes.len();
    bytes.extend_from_slice(b"{\"content\": \"ab\xff\xfe\", \"summary\": \"b\"}\n");
    let (e, msg) = read_err(&bytes);
    match e {
        DataError::InvalidUtf8 {
            line,
            byte_offset,
            byte_in_line,
            ..
        } => {
            assert_eq!((line, byte_offset, byte_in_line), (2, line2 + 15, 15));
        }
        other => panic!("{other}"),
    }
    assert!(msg.contains(":2:") && msg.contains("UTF-8"), "{msg}");
    // The same inside a JSON array file.
    let (e, _) = read_err(b"[\n{\"content\": \"\xc3\x28\", \"summary\": \"b\"}]");
    assert!(
        matches!(
            e,
            DataError::InvalidUtf8 {
                line: 2,
                byte_in_line: 13,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn gbk_file_is_recognised() {
    let gbk = fixtures::shared_data().join("advertisegen/train_first5000.gbk.json");
    let e = read_examples(&gbk, &cols()).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, DataError::InvalidUtf8 { line: 1, .. }), "{msg}");
    assert!(msg.contains("GBK") && msg.contains("iconv"), "{msg}");
}

#[test]
fn empty_files_are_errors() {
    for bytes in [
        &b""[..],
        b"\n\n  \r\n",
        b"\xEF\xBB\xBF",
        b"[]",
        b" [ \n ] \n",
    ] {
        let (e, msg) = read_err(bytes);
        assert!(matches!(e, DataError::Empty { .. }), "{bytes:?}: {msg}");
        assert!(msg.contains("no records"), "{msg}");
    }
    let dir = tempfile::tempdir().unwrap();
    let p = file(dir.path(), "empty.json", b"");
    assert!(matches!(peek_columns(&p, 5), Err(DataError::Empty { .. })));
}

#[test]
fn missing_file_names_the_path() {
    let e = read_examples(Path::new("/nonexistent/dir/train.json"), &cols()).unwrap_err();
    assert!(matches!(e, DataError::Io { .. }));
    assert!(e.to_string().contains("/nonexistent/dir/train.json"), "{e}");
}

#[test]
fn empty_and_null_values_are_skipped_and_counted() {
    let text = format!(
        "{GOOD}\n{{\"content\": \"\", \"summary\": \"b\"}}\n{{\"content\": \"a\", \"summary\": null}}\n{GOOD}\n{{\"content\": null, \"summary\": \"\"}}\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let p = file(dir.path(), "d.jsonl", text.as_bytes());
    let (ex, rep) = read_examples(&p, &cols()).unwrap();
    assert_eq!((rep.rows, rep.skipped_empty, ex.len()), (5, 3, 2));
    assert_eq!(
        rep.skipped.iter().map(|s| s.line).collect::<Vec<_>>(),
        vec![2, 3, 5]
    );
    assert_eq!((ex[1].index, ex[1].line), (3, 4));
}

#[test]
fn bom_crlf_and_array_files_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("\u{feff}{GOOD}\r\n\r\n{GOOD}\r\n");
    let p = file(dir.path(), "crlf.json", text.as_bytes());
    let (ex, rep) = read_examples(&p, &cols()).unwrap();
    assert_eq!((ex.len(), rep.blank_lines, ex[1].line), (2, 1, 3));
    assert_eq!(ex[0].response, "宽松的阔腿裤");
    let text = format!("\u{feff}[\r\n  {GOOD},\r\n  {GOOD}\r\n]\r\n");
    let p = file(dir.path(), "array.json", text.as_bytes());
    let (ex, rep) = read_examples(&p, &cols()).unwrap();
    assert_eq!(rep.format, FileFormat::JsonArray);
    assert_eq!(ex.iter().map(|e| e.line).collect::<Vec<_>>(), vec![2, 3]);
}

#[test]
fn bad_history_names_the_turn() {
    let dir = tempfile::tempdir().unwrap();
    let p = file(
        dir.path(),
        "h.json",
        "{\"content\": \"q\", \"summary\": \"r\", \"history\": [[\"a\", \"b\"], [\"c\"]]}\n"
            .as_bytes(),
    );
    let c = Columns {
        history: Some("history".into()),
        ..cols()
    };
    let e = read_examples(&p, &c).unwrap_err();
    assert!(matches!(e, DataError::BadHistory { line: 1, .. }), "{e}");
    assert!(e.to_string().contains("turn 1 has 1 elements"), "{e}");
    let p = file(dir.path(), "h2.json", GOOD.as_bytes());
    let e = read_examples(&p, &c).unwrap_err();
    assert!(
        matches!(
            &e,
            DataError::MissingColumn {
                flag: "history_column",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn peek_columns_reports_keys_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{GOOD}\n\n{{\"prompt\": \"a\", \"response\": \"b\", \"history\": []}}\n{GOOD}\nnot json at all\n"
    );
    let p = file(dir.path(), "peek.json", text.as_bytes());
    let got = peek_columns(&p, 2).unwrap();
    assert_eq!(
        got,
        vec![
            (1, vec!["content".to_string(), "summary".to_string()]),
            (
                3,
                vec!["history".into(), "prompt".into(), "response".into()]
            )
        ]
    );
    // Looking further reaches the broken line.
    assert!(matches!(
        peek_columns(&p, 10),
        Err(DataError::Json { line: 5, .. })
    ));
}

/// Peak resident memory of this process (VmHWM), when /proc is available.
fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = s
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()?;
    Some(kb * 1024)
}

#[test]
fn a_100_mb_line_is_parsed_or_rejected_quickly() {
    const SIZE: usize = 100 << 20;
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, close: bool| {
        let p = dir.path().join(name);
        let mut f = std::io::BufWriter::new(std::fs::File::create(&p).unwrap());
        writeln!(f, "{GOOD}").unwrap();
        f.write_all(b"{\"summary\": \"s\", \"content\": \"")
            .unwrap();
        let chunk = "类".repeat(1 << 18); // 768 KiB
        let mut written = 0;
        while written < SIZE {
            f.write_all(chunk.as_bytes()).unwrap();
            written += chunk.len();
        }
        if close {
            f.write_all(b"\"}").unwrap();
        }
        f.write_all(b"\n").unwrap();
        f.flush().unwrap();
        (p, written)
    };
    let start = std::time::Instant::now();
    let (p, written) = write("big.json", true);
    let (ex, rep) = read_examples(&p, &cols()).unwrap();
    assert_eq!((rep.rows, ex.len()), (2, 2));
    assert_eq!(ex[1].prompt.len(), written);
    drop(ex);

    let (p, _) = write("big_broken.json", false);
    let e = read_examples(&p, &cols()).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, DataError::Json { line: 2, .. }),
        "{}",
        &msg[..msg.len().min(500)]
    );
    assert!(
        msg.len() < 600,
        "the error must quote a short snippet, not the line ({} bytes)",
        msg.len()
    );
    assert!(start.elapsed().as_secs() < 30, "took {:?}", start.elapsed());
    if let Some(peak) = peak_rss_bytes() {
        // File bytes + one parsed copy of the value (+ the other tests of this binary).
        assert!(
            peak < 6 * written as u64,
            "peak RSS {} MB for a {} MB line",
            peak >> 20,
            written >> 20
        );
    }
}
