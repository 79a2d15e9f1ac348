//! Golden test of the data pipeline against `fixtures/preprocess/` (the exact output of THUDM's
//! `ptuning/main.py` preprocessing): training ids/labels, eval ids/mask/positions/labels for the
//! 32 AdvertiseGen dev rows, and the multi-turn `history.json` case. Every row and element is
//! compared; mismatches are listed by row and index.

#[path = "../../tests/support/fixtures.rs"]
mod fixtures;

use std::path::Path;

use dataset::preprocess::{DataArgs, EvalRow, TrainRow, preprocess_eval, preprocess_train};
use dataset::source::read_examples;
use dataset::tokenizer::ChatGlmTokenizer;
use serde_json::Value;

fn tokenizer() -> ChatGlmTokenizer {
    let dir = fixtures::shared_data().join("chatglm-6b");
    ChatGlmTokenizer::from_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

/// Collects element mismatches of many arrays and fails once with a readable list.
#[derive(Default)]
struct Diff {
    lines: Vec<String>,
    count: usize,
}

impl Diff {
    fn cmp<T: PartialEq + std::fmt::Debug>(
        &mut self,
        what: &str,
        row: usize,
        got: &[T],
        want: &[T],
    ) {
        if got.len() != want.len() {
            self.count += 1;
            self.note(format!(
                "{what} row {row}: length {} != {}",
                got.len(),
                want.len()
            ));
        }
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            if g != w {
                self.count += 1;
                self.note(format!("{what} row {row} index {i}: got {g:?} want {w:?}"));
            }
        }
    }
    fn note(&mut self, s: String) {
        if self.lines.len() < 40 {
            self.lines.push(s);
        }
    }
    fn check(self) {
        assert!(
            self.count == 0,
            "{} mismatches:\n{}",
            self.count,
            self.lines.join("\n")
        );
    }
}

fn write_jsonl(dir: &Path, name: &str, rows: &[Value]) -> std::path::PathBuf {
    let path = dir.join(name);
    let text: Vec<String> = rows
        .iter()
        .map(|r| serde_json::to_string(r).unwrap())
        .collect();
    std::fs::write(&path, text.join("\n") + "\n").unwrap();
    path
}

fn ints(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

fn flat_ints(v: &Value, out: &mut Vec<i64>) {
    match v {
        Value::Array(a) => a.iter().for_each(|x| flat_ints(x, out)),
        x => out.push(x.as_i64().unwrap()),
    }
}

fn train_ids(r: &TrainRow) -> Vec<i64> {
    r.input_ids.iter().map(|&x| i64::from(x)).collect()
}

fn eval_ids(r: &EvalRow) -> Vec<i64> {
    r.input_ids.iter().map(|&x| i64::from(x)).collect()
}

#[test]
fn adgen_rows_match_main_py() {
    let m = fixtures::Manifest::load();
    let src = m.json("preprocess/rows.json");
    let tok = tokenizer();
    let mut args = DataArgs::new(
        src["prompt_column"].as_str().unwrap(),
        src["response_column"].as_str().unwrap(),
    );
    args.max_source_length = src["max_source_length"].as_u64().unwrap() as usize;
    args.max_target_length = src["max_target_length"].as_u64().unwrap() as usize;

    let dir = tempfile::tempdir().unwrap();
    let file = write_jsonl(dir.path(), "rows.json", src["rows"].as_array().unwrap());
    let (examples, report) = read_examples(&file, &args.columns()).unwrap();
    let n = src["rows"].as_array().unwrap().len();
    assert_eq!(
        (examples.len(), report.rows, report.skipped_empty),
        (n, n, 0)
    );

    let mut diff = Diff::default();
    let train = preprocess_train(&tok, &examples, &args).unwrap();
    let (ids, labels) = (
        m.npy("preprocess/train_input_ids.npy"),
        m.npy("preprocess/train_labels.npy"),
    );
    let s = ids.shape[1];
    assert_eq!(train.len(), ids.shape[0]);
    let (ids, labels) = (ids.i64(), labels.i64());
    for (i, r) in train.iter().enumerate() {
        diff.cmp(
            "train input_ids",
            i,
            &train_ids(r),
            &ids[i * s..(i + 1) * s],
        );
        diff.cmp("train labels", i, &r.labels, &labels[i * s..(i + 1) * s]);
    }

    let eval = preprocess_eval(&tok, &examples, &args).unwrap();
    let ids = m.npy("preprocess/eval_input_ids.npy");
    let (b, l) = (ids.shape[0], ids.shape[1]);
    assert_eq!(eval.len(), b);
    let (ids, mask, pos) = (
        ids.i64(),
        m.npy("preprocess/eval_attention_mask.npy").bool(),
        m.npy("preprocess/eval_position_ids.npy").i64(),
    );
    let want_labels = m.json("preprocess/eval_labels.json");
    let want_labels = want_labels["labels"].as_array().unwrap();
    for (i, r) in eval.iter().enumerate() {
        diff.cmp("eval input_ids", i, &eval_ids(r), &ids[i * l..(i + 1) * l]);
        diff.cmp(
            "eval attention_mask",
            i,
            &r.attention_mask,
            &mask[i * l * l..(i + 1) * l * l],
        );
        diff.cmp(
            "eval position_ids",
            i,
            &r.position_ids,
            &pos[i * 2 * l..(i + 1) * 2 * l],
        );
        diff.cmp("eval labels", i, &r.labels, &ints(&want_labels[i]));
    }
    diff.check();
}

#[test]
fn history_rows_match_main_py() {
    let m = fixtures::Manifest::load();
    let h = m.json("preprocess/history.json");
    let tok = tokenizer();
    let mut args = DataArgs::new("content", "summary");
    args.history_column = Some(h["history_column"].as_str().unwrap().to_string());
    args.max_source_length = h["max_source_length"].as_u64().unwrap() as usize;
    args.max_target_length = h["max_target_length"].as_u64().unwrap() as usize;

    let dir = tempfile::tempdir().unwrap();
    let rows = h["rows"].as_array().unwrap();
    let file = write_jsonl(dir.path(), "history.jsonl", rows);
    let (examples, report) = read_examples(&file, &args.columns()).unwrap();
    let empty = rows
        .iter()
        .filter(|r| r["content"] == "" || r["summary"] == "")
        .count();
    assert!(empty > 0, "the fixture should exercise the empty-row skip");
    assert_eq!(
        (report.rows, report.skipped_empty, examples.len()),
        (rows.len(), empty, rows.len() - empty)
    );

    let mut diff = Diff::default();
    let train = preprocess_train(&tok, &examples, &args).unwrap();
    let (want_ids, want_labels) = (
        h["train_input_ids"].as_array().unwrap(),
        h["train_labels"].as_array().unwrap(),
    );
    assert_eq!(train.len(), want_ids.len());
    for (i, r) in train.iter().enumerate() {
        diff.cmp(
            "history train input_ids",
            i,
            &train_ids(r),
            &ints(&want_ids[i]),
        );
        diff.cmp("history train labels", i, &r.labels, &ints(&want_labels[i]));
    }

    let eval = preprocess_eval(&tok, &examples, &args).unwrap();
    assert_eq!(eval.len(), h["eval_input_ids"].as_array().unwrap().len());
    for (i, r) in eval.iter().enumerate() {
        diff.cmp(
            "history eval input_ids",
            i,
            &eval_ids(r),
            &ints(&h["eval_input_ids"][i]),
        );
        let (mut mask, mut pos) = (Vec::new(), Vec::new());
        flat_ints(&h["eval_attention_mask"][i], &mut mask);
        flat_ints(&h["eval_position_ids"][i], &mut pos);
        let got_mask: Vec<i64> = r.attention_mask.iter().map(|&b| i64::from(b)).collect();
        diff.cmp("history eval attention_mask", i, &got_mask, &mask);
        diff.cmp("history eval position_ids", i, &r.position_ids, &pos);
        diff.cmp(
            "history eval labels",
            i,
            &r.labels,
            &ints(&h["eval_labels"][i]),
        );
    }
    diff.check();
}

/// Reference §7.6: train row 0 of AdvertiseGen's train split, and dev row 0, spelled out.
#[test]
fn worked_examples_of_the_reference() {
    let data = fixtures::shared_data().join("advertisegen");
    let tok = tokenizer();
    let args = DataArgs {
        max_source_length: 64,
        max_target_length: 64,
        ..DataArgs::new("content", "summary")
    };
    let (train, _) = read_examples(&data.join("train_first5000.json"), &args.columns()).unwrap();
    let row = &preprocess_train(&tok, &train[..1], &args).unwrap()[0];
    assert_eq!(row.input_ids.len(), 128);
    assert_eq!(
        &row.input_ids[..23],
        &[
            5, 65421, 61, 67329, 32, 98339, 61, 72043, 32, 65347, 61, 70872, 32, 69768, 61, 68944,
            32, 67329, 64103, 61, 96914, 130001, 130004
        ]
    );
    assert_eq!(
        &row.input_ids[84..],
        &[&[63893, 130005][..], &[3; 42][..]].concat()[..]
    );
    assert!(
        row.labels[..22].iter().all(|&l| l == -100)
            && row.labels[22] == 130004
            && row.labels[85] == 130005
    );
    assert!(row.labels[86..].iter().all(|&l| l == -100));

    let (dev, _) = read_examples(&data.join("dev.json"), &args.columns()).unwrap();
    let rows = preprocess_eval(&tok, &dev, &args).unwrap();
    assert_eq!(rows.len(), 1070);
    assert!(
        rows.iter().all(|r| r.seq_len() == 64),
        "both ADGEN dev map batches pad to 64"
    );
    let r = &rows[0];
    assert!(
        r.input_ids[..30].iter().all(|&t| t == 3)
            && r.input_ids[30] == 5
            && r.input_ids[63] == 130004
    );
    let want_pos0: Vec<i64> = std::iter::repeat_n(0, 31)
        .chain(1..=32)
        .chain([32])
        .collect();
    assert_eq!(&r.position_ids[..64], &want_pos0[..]);
    assert_eq!(r.labels.len(), 50);
    assert_eq!(&r.labels[48..], &[130001, 130004]);
}

/// `datasets.map(batched=True)` pads per block of 1000 input rows (skipped empty rows included).
#[test]
fn eval_rows_pad_per_1000_example_map_batch() {
    let tok = tokenizer();
    let args = DataArgs {
        max_source_length: 64,
        max_target_length: 64,
        ..DataArgs::new("q", "a")
    };
    let dir = tempfile::tempdir().unwrap();
    let mut rows: Vec<Value> = (0..1003)
        .map(|i| serde_json::json!({"q": format!("问{i}"), "a": "答"}))
        .collect();
    rows[5] = serde_json::json!({"q": "", "a": "答"}); // skipped, but still occupies index 5
    rows[999] = serde_json::json!({"q": "一个比较长的问题，用来决定第一批的长度", "a": "答"});
    rows[1001] = serde_json::json!({"q": "第二批里最长的问题，比别的问题都长", "a": "答"});
    let file = write_jsonl(dir.path(), "batches.json", &rows);
    let (examples, report) = read_examples(&file, &args.columns()).unwrap();
    assert_eq!((report.skipped_empty, examples.len()), (1, 1002));
    let eval = preprocess_eval(&tok, &examples, &args).unwrap();
    let own_len = |q: &str| tok.encode(q, true).len();
    let first = own_len(rows[999]["q"].as_str().unwrap());
    let second = own_len(rows[1001]["q"].as_str().unwrap());
    assert_ne!(first, second);
    // examples[998] is record 999 (record 5 was skipped); examples[999..] are records 1000..
    assert!(
        eval[..999].iter().all(|r| r.seq_len() == first),
        "first map batch pads to {first}"
    );
    assert!(
        eval[999..].iter().all(|r| r.seq_len() == second),
        "second map batch pads to {second}"
    );
    assert_eq!(examples[999].index, 1000);
}
