//! Checks of `glm-tune check` that look inside files without loading the model: the first lines
//! of every data file hold the configured columns, and the model directory has a config, a
//! tokenizer and weights.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use super::error::Problem;
use super::schema::Experiment;

/// How many non-empty lines of each data file are inspected.
pub const SNIFF_LINES: usize = 20;

/// Checks the first [`SNIFF_LINES`] lines of every configured data file that exists: each line
/// is a JSON object holding `prompt_column` and `response_column` as strings and, when set,
/// `history_column` as a list.
pub fn check_data_columns(exp: &Experiment) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut columns: Vec<(&'static str, &str, Shape)> = Vec::new();
    if let Some(c) = &exp.prompt_column {
        columns.push(("prompt_column", c, Shape::Text));
    }
    if let Some(c) = &exp.response_column {
        columns.push(("response_column", c, Shape::Text));
    }
    if let Some(c) = &exp.history_column {
        columns.push(("history_column", c, Shape::List));
    }
    for (key, path) in [
        ("train_file", &exp.train_file),
        ("validation_file", &exp.validation_file),
        ("test_file", &exp.test_file),
    ] {
        if let Some(path) = path.as_deref().filter(|p| p.is_file()) {
            problems.extend(sniff_file(key, path, &columns));
        }
    }
    problems
}

#[derive(Clone, Copy)]
enum Shape {
    Text,
    List,
}

fn sniff_file(
    file_key: &'static str,
    path: &Path,
    columns: &[(&'static str, &str, Shape)],
) -> Vec<Problem> {
    let at = |line: usize| format!("{} line {line}", path.display());
    let reader = match File::open(path) {
        Ok(f) => BufReader::new(f),
        Err(e) => {
            return vec![Problem::invalid(
                &[file_key],
                format!("cannot read {}: {e}", path.display()),
            )];
        }
    };
    let mut problems = Vec::new();
    let mut seen = 0;
    for (index, line) in reader.split(b'\n').enumerate() {
        let number = index + 1;
        let bytes = match line {
            Ok(bytes) => bytes,
            Err(e) => {
                problems.push(Problem::invalid(
                    &[file_key],
                    format!("cannot read {}: {e}", at(number)),
                ));
                break;
            }
        };
        let Ok(text) = std::str::from_utf8(&bytes) else {
            problems.push(Problem::invalid(&[file_key], format!("{} is not UTF-8 (GBK copies of AdvertiseGen must be converted, e.g. `iconv -f GBK -t UTF-8`)", at(number))));
            break;
        };
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        seen += 1;
        let row = match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Object(row)) => row,
            Ok(_) | Err(_) => {
                problems.push(Problem::invalid(
                    &[file_key],
                    format!(
                        "{} is not a JSON object; data files are JSON lines (one object per line)",
                        at(number)
                    ),
                ));
                break;
            }
        };
        for &(key, column, shape) in columns {
            let ok = match (row.get(column), shape) {
                (None, _) => {
                    let present: Vec<&str> = row.keys().map(String::as_str).collect();
                    problems.push(Problem::invalid(
                        &[key, file_key],
                        format!(
                            "column `{column}` is missing in {} (its keys: {})",
                            at(number),
                            present.join(", ")
                        ),
                    ));
                    false
                }
                (Some(serde_json::Value::String(_) | serde_json::Value::Null), Shape::Text) => true,
                (Some(serde_json::Value::Array(_) | serde_json::Value::Null), Shape::List) => true,
                (Some(other), Shape::Text) => {
                    problems.push(Problem::invalid(
                        &[key, file_key],
                        format!(
                            "column `{column}` in {} is {}, expected a string",
                            at(number),
                            json_kind(other)
                        ),
                    ));
                    false
                }
                (Some(other), Shape::List) => {
                    problems.push(Problem::invalid(&[key, file_key], format!("column `{column}` in {} is {}, expected a list of [query, response] pairs", at(number), json_kind(other))));
                    false
                }
            };
            if !ok {
                // One report per file is enough to fix the config.
                return problems;
            }
        }
        if seen == SNIFF_LINES {
            break;
        }
    }
    if seen == 0 && problems.is_empty() {
        problems.push(Problem::invalid(
            &[file_key],
            format!("{} has no data lines", path.display()),
        ));
    }
    problems
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a bool",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Checks that `dir` holds `config.json`, a tokenizer (`ice_text.model` or `tokenizer.json`)
/// and weights (`pytorch_model*.bin` or `model*.safetensors`; every shard named by a
/// `*.index.json` must be present, e.g. not a dangling link of an interrupted download).
pub fn check_model_dir(dir: &Path) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut missing = |what: String| {
        problems.push(Problem::invalid(
            &["model_name_or_path"],
            format!("{}: {what}", dir.display()),
        ))
    };
    if !dir.join("config.json").is_file() {
        missing("config.json is missing".into());
    }
    if !dir.join("ice_text.model").is_file() && !dir.join("tokenizer.json").is_file() {
        missing("no tokenizer (ice_text.model or tokenizer.json)".into());
    }
    // `is_file` follows links, so dangling links into an incomplete HF cache count as absent.
    let names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().is_file())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    let is_weights = |n: &str| {
        (n.starts_with("pytorch_model") && n.ends_with(".bin"))
            || (n.starts_with("model") && n.ends_with(".safetensors"))
    };
    if !names.iter().any(|n| is_weights(n)) {
        missing("no weights (pytorch_model*.bin or model*.safetensors)".into());
    }
    for index in names.iter().filter(|n| n.ends_with(".index.json")) {
        let shards = std::fs::read_to_string(dir.join(index))
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|json| {
                let map = json.get("weight_map")?.as_object()?;
                let mut shards: Vec<String> = map
                    .values()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect();
                shards.sort();
                shards.dedup();
                Some(shards)
            });
        match shards {
            Some(shards) => {
                for shard in shards.iter().filter(|s| !names.contains(s)) {
                    missing(format!("{shard} (listed in {index}) is missing"));
                }
            }
            None => missing(format!("{index} is not a weight index (no weight_map)")),
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn model_dir_contents() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let problems = check_model_dir(dir);
        assert_eq!(problems.len(), 3, "{problems:?}");

        fs::write(dir.join("config.json"), "{}").unwrap();
        fs::write(dir.join("ice_text.model"), "x").unwrap();
        fs::write(dir.join("pytorch_model-00001-of-00002.bin"), "x").unwrap();
        fs::write(
            dir.join("pytorch_model.bin.index.json"),
            r#"{"weight_map": {"a": "pytorch_model-00001-of-00002.bin", "b": "pytorch_model-00002-of-00002.bin"}}"#,
        )
        .unwrap();
        let problems = check_model_dir(dir);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].to_string().contains(
            "pytorch_model-00002-of-00002.bin (listed in pytorch_model.bin.index.json) is missing"
        ));

        fs::write(dir.join("pytorch_model-00002-of-00002.bin"), "x").unwrap();
        assert_eq!(check_model_dir(dir), vec![]);
    }
}
