//! Row building: examples → exactly the rows `ptuning/main.py` feeds the model
//! (`preprocess_function_train` / `preprocess_function_eval`, reference §7.2–7.4, §6.3–6.4).
//!
//! Owns the prompt template ([`build_prompt`], also used by chat mode), the training rows
//! ([`TrainRow`], fixed length `max_source_length + max_target_length`, right-padded), the
//! eval/predict rows ([`EvalRow`], left-padded per 1000-example map batch, with the mask and
//! 2D position ids the ChatGLM tokenizer builds when it pads) and the arguments ([`DataArgs`]).
//!
//! Training rows carry no mask or position ids: with `padding=False` the tokenizer builds none and
//! the model derives both from the `<sop>` position (reference §3.3/§3.4). Eval rows carry them
//! because generation is fed the tokenizer-built ones.
//!
//! The pure functions on id slices ([`build_train_row`], [`build_eval_row`],
//! [`tokenizer_attention_mask`], [`tokenizer_position_ids`]) hold all the rules; the
//! `preprocess_*` functions only tokenize (in parallel with rayon, order preserved) and call them.

use rayon::prelude::*;

use crate::error::DataError;
use crate::source::{Columns, Example};
use crate::tokenizer::ChatGlmTokenizer;

/// Label value ignored by the loss (PyTorch `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// `datasets.Dataset.map(batched=True)` default batch size: eval rows are left-padded to the
/// longest row of each block of this many (input) examples.
pub const EVAL_MAP_BATCH_SIZE: usize = 1000;

/// The data flags of `ptuning/arguments.py` that shape the rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataArgs {
    /// `--prompt_column`.
    pub prompt_column: String,
    /// `--response_column`.
    pub response_column: String,
    /// `--history_column` (multi-turn template, §7.2).
    pub history_column: Option<String>,
    /// `--source_prefix`, prepended to every prompt.
    pub source_prefix: String,
    /// `--max_source_length` Ms (default 1024).
    pub max_source_length: usize,
    /// `--max_target_length` Mt (default 128).
    pub max_target_length: usize,
    /// `--val_max_target_length` (default: `max_target_length`), the eval label limit.
    pub val_max_target_length: Option<usize>,
    /// `--ignore_pad_token_for_loss` (default true): pad ids in labels become −100.
    pub ignore_pad_token_for_loss: bool,
}

impl DataArgs {
    /// The given columns with `main.py`'s defaults for everything else.
    pub fn new(prompt_column: impl Into<String>, response_column: impl Into<String>) -> Self {
        DataArgs {
            prompt_column: prompt_column.into(),
            response_column: response_column.into(),
            history_column: None,
            source_prefix: String::new(),
            max_source_length: 1024,
            max_target_length: 128,
            val_max_target_length: None,
            ignore_pad_token_for_loss: true,
        }
    }

    /// The columns to read from the data files.
    pub fn columns(&self) -> Columns {
        Columns {
            prompt: self.prompt_column.clone(),
            response: self.response_column.clone(),
            history: self.history_column.clone(),
        }
    }

    /// Eval label limit: `val_max_target_length`, else `max_target_length`.
    pub fn eval_target_length(&self) -> usize {
        self.val_max_target_length.unwrap_or(self.max_target_length)
    }

    /// Length of every training row, Ms + Mt.
    pub fn train_seq_len(&self) -> usize {
        self.max_source_length + self.max_target_length
    }

    /// Reject settings the original would crash on or silently mangle.
    ///
    /// Every length must leave room for the two special tokens (`[gMASK] <sop>`) the rows append;
    /// the three columns must be different keys.
    pub fn validate(&self) -> Result<(), DataError> {
        let lens = [
            ("max_source_length", self.max_source_length),
            ("max_target_length", self.max_target_length),
            ("val_max_target_length", self.eval_target_length()),
        ];
        for (name, v) in lens {
            if v < 2 {
                return Err(DataError::InvalidArgs(format!(
                    "{name} = {v}: it must be at least 2 (room for the [gMASK] <sop> tokens)"
                )));
            }
        }
        let mut cols = vec![
            ("prompt_column", &self.prompt_column),
            ("response_column", &self.response_column),
        ];
        if let Some(h) = &self.history_column {
            cols.push(("history_column", h));
        }
        for (i, (a, ka)) in cols.iter().enumerate() {
            if ka.is_empty() {
                return Err(DataError::InvalidArgs(format!(
                    "{a} is empty; name the JSON key to read"
                )));
            }
            for (b, kb) in &cols[i + 1..] {
                if ka == kb {
                    return Err(DataError::InvalidArgs(format!(
                        "{a} and {b} are both {ka:?}; they must differ"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Token ids the rows are built from (taken from the tokenizer, never hard-coded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialIds {
    /// `<pad>` (3).
    pub pad: u32,
    /// `[MASK]` (130000).
    pub mask: u32,
    /// `[gMASK]` (130001).
    pub gmask: u32,
    /// `<sop>` = bos (130004).
    pub sop: u32,
    /// `<eop>` = eos (130005).
    pub eop: u32,
}

impl SpecialIds {
    /// The special ids of `tok`.
    pub fn of(tok: &ChatGlmTokenizer) -> Self {
        SpecialIds {
            pad: tok.pad_id(),
            mask: tok.mask_id(),
            gmask: tok.gmask_id(),
            sop: tok.sop_id(),
            eop: tok.eop_id(),
        }
    }
}

/// One training row: `input_ids` and `labels`, both of length Ms + Mt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainRow {
    /// `prompt + [gMASK, <sop>] + response + [<eop>]`, right-padded with `<pad>`.
    pub input_ids: Vec<u32>,
    /// −100 up to (excluding) the first `<sop>`, then the ids from `<sop>` on; padding is −100
    /// (or `<pad>` when `ignore_pad_token_for_loss` is off).
    pub labels: Vec<i64>,
}

/// One eval/predict row (left-padded to its map batch's longest row L).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalRow {
    /// `[pad]* + prompt[:Ms−2] + [gMASK, <sop>]`, length L.
    pub input_ids: Vec<u32>,
    /// Tokenizer-built mask `[1, L, L]` row-major, **true = masked**.
    pub attention_mask: Vec<bool>,
    /// Tokenizer-built 2D position ids `[2, L]` row-major (row 0 position, row 1 block position).
    pub position_ids: Vec<i64>,
    /// `response[:Mv−2] + [gMASK, <sop>]` (not padded; used only for the text metrics).
    pub labels: Vec<i64>,
}

impl EvalRow {
    /// L, the padded prompt length.
    pub fn seq_len(&self) -> usize {
        self.input_ids.len()
    }
}

/// The prompt text of `main.py` (reference §7.2).
///
/// With history, or when `template_when_empty` is set, the chat template
/// `"[Round {i}]\n问：{q}\n答：{r}\n"` per turn followed by `"[Round {n}]\n问：{query}\n答："`;
/// otherwise the bare query. `source_prefix` is prepended in both cases. Training sets
/// `template_when_empty` whenever a history column is configured, eval never does.
pub fn build_prompt(
    query: &str,
    history: &[(String, String)],
    source_prefix: &str,
    template_when_empty: bool,
) -> String {
    let mut prompt = String::from(source_prefix);
    if history.is_empty() && !template_when_empty {
        prompt.push_str(query);
        return prompt;
    }
    for (i, (q, r)) in history.iter().enumerate() {
        prompt.push_str(&format!("[Round {i}]\n问：{q}\n答：{r}\n"));
    }
    prompt.push_str(&format!("[Round {}]\n问：{query}\n答：", history.len()));
    prompt
}

/// The training prompt of an example (template applied whenever a history column is set).
pub fn train_prompt(ex: &Example, args: &DataArgs) -> String {
    build_prompt(
        &ex.prompt,
        &ex.history,
        &args.source_prefix,
        args.history_column.is_some(),
    )
}

/// The eval/predict prompt of an example (template only for a non-empty history).
pub fn eval_prompt(ex: &Example, args: &DataArgs) -> String {
    build_prompt(&ex.prompt, &ex.history, &args.source_prefix, false)
}

/// Training row from the prompt ids `a` and response ids `b` (no special tokens), reference §7.3.
pub fn build_train_row(a: &[u32], b: &[u32], args: &DataArgs, sp: &SpecialIds) -> TrainRow {
    let seq_len = args.train_seq_len();
    let a = &a[..a.len().min(args.max_source_length.saturating_sub(1))];
    let b = &b[..b.len().min(args.max_target_length.saturating_sub(2))];
    let mut input_ids = Vec::with_capacity(seq_len);
    input_ids.extend_from_slice(a);
    input_ids.extend_from_slice(&[sp.gmask, sp.sop]);
    input_ids.extend_from_slice(b);
    input_ids.push(sp.eop);
    // main.py: `input_ids.index(bos)` — the FIRST <sop>, which is earlier than len(a)+1 when the
    // prompt text itself contains a literal "<sop>" (an HF special token).
    let c = input_ids
        .iter()
        .position(|&t| t == sp.sop)
        .unwrap_or(a.len() + 1);
    let pad = i64::from(sp.pad);
    let mut labels = Vec::with_capacity(seq_len);
    labels.resize(c, IGNORE_INDEX);
    labels.extend(input_ids[c..].iter().map(|&t| i64::from(t)));
    input_ids.resize(seq_len.max(input_ids.len()), sp.pad);
    labels.resize(input_ids.len(), pad);
    if args.ignore_pad_token_for_loss {
        // Replaces the padding AND any literal <pad> inside the text, as the list comprehension does.
        for l in &mut labels {
            if *l == pad {
                *l = IGNORE_INDEX;
            }
        }
    }
    TrainRow { input_ids, labels }
}

/// Unpadded eval row from the prompt ids and response ids (no special tokens), reference §7.4.
///
/// Prompt: text truncated to Ms − 2 then `[gMASK] <sop>` (HF truncation keeps text + specials
/// ≤ max_length); labels: response truncated to Mv − 2 then `[gMASK] <sop>`.
pub fn build_eval_row(
    prompt: &[u32],
    response: &[u32],
    args: &DataArgs,
    sp: &SpecialIds,
) -> EvalRow {
    let input_ids = with_special(prompt, args.max_source_length, sp);
    let pad = i64::from(sp.pad);
    let labels = with_special(response, args.eval_target_length(), sp)
        .into_iter()
        .map(|t| {
            let t = i64::from(t);
            if args.ignore_pad_token_for_loss && t == pad {
                IGNORE_INDEX
            } else {
                t
            }
        })
        .collect();
    let n = input_ids.len();
    EvalRow {
        attention_mask: padded_mask(&input_ids, n, sp),
        position_ids: padded_positions(&input_ids, n, sp),
        input_ids,
        labels,
    }
}

fn with_special(text: &[u32], max_len: usize, sp: &SpecialIds) -> Vec<u32> {
    let keep = text.len().min(max_len.saturating_sub(2));
    let mut ids = Vec::with_capacity(keep + 2);
    ids.extend_from_slice(&text[..keep]);
    ids.extend_from_slice(&[sp.gmask, sp.sop]);
    ids
}

/// The tokenizer's bool mask `[1, n, n]` for an unpadded sequence (§3.3 / §6.4), true = masked.
///
/// Context length c = index of the first `<sop>` (n if absent); position (i, j) is allowed when
/// `j <= i || j < c`.
pub fn tokenizer_attention_mask(ids: &[u32], sp: &SpecialIds) -> Vec<bool> {
    padded_mask(ids, ids.len(), sp)
}

/// The tokenizer's position ids `[2, n]` for an unpadded sequence (§3.4 / §6.4).
///
/// Row 0: `arange(n)` with every index ≥ c set to the index of the first `[MASK]` if the sequence
/// has one, else of the first `[gMASK]` (left as arange if neither occurs) — note the tokenizer
/// prefers `[MASK]`, the model `[gMASK]`. Row 1: 0 before c, then 1, 2, ….
pub fn tokenizer_position_ids(ids: &[u32], sp: &SpecialIds) -> Vec<i64> {
    padded_positions(ids, ids.len(), sp)
}

fn context_length(ids: &[u32], sp: &SpecialIds) -> usize {
    ids.iter().position(|&t| t == sp.sop).unwrap_or(ids.len())
}

/// Mask of `ids` built unpadded, then left-padded to `total` with true rows and columns.
fn padded_mask(ids: &[u32], total: usize, sp: &SpecialIds) -> Vec<bool> {
    let n = ids.len();
    let d = total - n;
    let c = context_length(ids, sp);
    let mut m = vec![true; total * total];
    for i in 0..n {
        let row = &mut m[(d + i) * total + d..(d + i + 1) * total];
        for (j, cell) in row.iter_mut().enumerate() {
            *cell = !(j <= i || j < c);
        }
    }
    m
}

/// Position ids of `ids` built unpadded, then left-padded to `total` with 0 in both rows.
fn padded_positions(ids: &[u32], total: usize, sp: &SpecialIds) -> Vec<i64> {
    let n = ids.len();
    let d = total - n;
    let c = context_length(ids, sp);
    let mask_pos = ids
        .iter()
        .position(|&t| t == sp.mask)
        .or_else(|| ids.iter().position(|&t| t == sp.gmask));
    let mut p = vec![0i64; 2 * total];
    for k in 0..n {
        p[d + k] = match mask_pos {
            Some(m) if k >= c => m as i64,
            _ => k as i64,
        };
        if k >= c {
            p[total + d + k] = (k - c + 1) as i64;
        }
    }
    p
}

/// Left-pad an eval row to `len` tokens: ids with `pad`, mask rows and columns with true,
/// positions with 0 (what the tokenizer does to a batch, and what batching rows of different map
/// batches needs). A row already `len` long is unchanged.
pub fn left_pad_eval_row(row: &mut EvalRow, len: usize, pad: u32) {
    let n = row.seq_len();
    if len <= n {
        return;
    }
    let d = len - n;
    let mut ids = vec![pad; d];
    ids.extend_from_slice(&row.input_ids);
    let mut mask = vec![true; len * len];
    for i in 0..n {
        mask[(d + i) * len + d..(d + i + 1) * len]
            .copy_from_slice(&row.attention_mask[i * n..(i + 1) * n]);
    }
    let mut pos = vec![0i64; 2 * len];
    pos[d..len].copy_from_slice(&row.position_ids[..n]);
    pos[len + d..].copy_from_slice(&row.position_ids[n..]);
    row.input_ids = ids;
    row.attention_mask = mask;
    row.position_ids = pos;
}

/// The examples `datasets.select(range(n))` keeps: those among the first `max_samples` records of
/// the file (skipped empty records count, as they are rows of the original dataset). Examples are
/// in file order, as `source` returns them.
pub fn select_first(examples: &[Example], max_samples: Option<usize>) -> &[Example] {
    match max_samples {
        Some(n) => &examples[..examples.iter().take_while(|e| e.index < n).count()],
        None => examples,
    }
}

/// Training rows for `examples` (reference §7.3), in order. Runs on the current rayon pool.
pub fn preprocess_train(
    tok: &ChatGlmTokenizer,
    examples: &[Example],
    args: &DataArgs,
) -> Result<Vec<TrainRow>, DataError> {
    args.validate()?;
    let sp = SpecialIds::of(tok);
    Ok(examples
        .par_iter()
        .with_min_len(64)
        .map(|ex| {
            let a = tok.encode(&train_prompt(ex, args), false);
            let b = tok.encode(&ex.response, false);
            build_train_row(&a, &b, args, &sp)
        })
        .collect())
}

/// Eval/predict rows for `examples` (reference §7.4), in order. Runs on the current rayon pool.
///
/// Rows are left-padded to the longest row of their map batch: examples whose
/// [`Example::index`] share `index / 1000` (the skipped empty records still occupy their slots,
/// as in `datasets`). A batch is a run of consecutive examples with the same `index / 1000`.
pub fn preprocess_eval(
    tok: &ChatGlmTokenizer,
    examples: &[Example],
    args: &DataArgs,
) -> Result<Vec<EvalRow>, DataError> {
    args.validate()?;
    let sp = SpecialIds::of(tok);
    let mut rows: Vec<EvalRow> = examples
        .par_iter()
        .with_min_len(16)
        .map(|ex| {
            let a = tok.encode(&eval_prompt(ex, args), false);
            let b = tok.encode(&ex.response, false);
            build_eval_row(&a, &b, args, &sp)
        })
        .collect();
    let mut start = 0;
    while start < rows.len() {
        let batch = examples[start].index / EVAL_MAP_BATCH_SIZE;
        // At least one (examples[start] itself), so the loop always advances.
        let end = start
            + examples[start..]
                .iter()
                .take_while(|e| e.index / EVAL_MAP_BATCH_SIZE == batch)
                .count();
        let longest = rows[start..end]
            .iter()
            .map(EvalRow::seq_len)
            .max()
            .unwrap_or(0);
        rows[start..end]
            .par_iter_mut()
            .for_each(|r| left_pad_eval_row(r, longest, sp.pad));
        start = end;
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SP: SpecialIds = SpecialIds {
        pad: 3,
        mask: 130000,
        gmask: 130001,
        sop: 130004,
        eop: 130005,
    };

    fn args(ms: usize, mt: usize) -> DataArgs {
        DataArgs {
            max_source_length: ms,
            max_target_length: mt,
            ..DataArgs::new("content", "summary")
        }
    }

    #[test]
    fn prompt_template() {
        assert_eq!(build_prompt("q", &[], "P:", false), "P:q");
        assert_eq!(build_prompt("q", &[], "", true), "[Round 0]\n问：q\n答：");
        let h = vec![("a".to_string(), "b".to_string())];
        assert_eq!(
            build_prompt("q", &h, "S", false),
            "S[Round 0]\n问：a\n答：b\n[Round 1]\n问：q\n答："
        );
    }

    #[test]
    fn train_row_truncates_pads_and_masks_labels() {
        let a: Vec<u32> = (10..20).collect();
        let b: Vec<u32> = (50..60).collect();
        let r = build_train_row(&a, &b, &args(5, 6), &SP);
        assert_eq!(
            r.input_ids,
            vec![10, 11, 12, 13, 130001, 130004, 50, 51, 52, 53, 130005]
        );
        assert_eq!(
            r.labels,
            vec![-100, -100, -100, -100, -100, 130004, 50, 51, 52, 53, 130005]
        );
        let r = build_train_row(&[7], &[8, 3], &args(5, 6), &SP);
        assert_eq!(
            r.input_ids,
            vec![7, 130001, 130004, 8, 3, 130005, 3, 3, 3, 3, 3]
        );
        assert_eq!(
            r.labels,
            vec![
                -100, -100, 130004, 8, -100, 130005, -100, -100, -100, -100, -100
            ]
        );
        let keep_pad = DataArgs {
            ignore_pad_token_for_loss: false,
            ..args(5, 6)
        };
        let r = build_train_row(&[7], &[8], &keep_pad, &SP);
        assert_eq!(
            r.labels,
            vec![-100, -100, 130004, 8, 130005, 3, 3, 3, 3, 3, 3]
        );
    }

    #[test]
    fn train_labels_start_at_the_first_sop() {
        // A literal "<sop>" in the prompt text is id 130004: main.py's `.index(bos)` finds it.
        let r = build_train_row(&[7, 130004, 9], &[8], &args(8, 4), &SP);
        assert_eq!(
            &r.labels[..7],
            &[-100, 130004, 9, 130001, 130004, 8, 130005]
        );
    }

    #[test]
    fn eval_row_mask_and_positions() {
        let r = build_eval_row(&[5, 6, 7, 8], &[9, 3, 10], &args(5, 4), &SP);
        assert_eq!(r.input_ids, vec![5, 6, 7, 130001, 130004]);
        assert_eq!(r.labels, vec![9, -100, 130001, 130004]);
        assert_eq!(r.position_ids, vec![0, 1, 2, 3, 3, 0, 0, 0, 0, 1]);
        // c = 4: every row sees columns 0..4; only row 4 sees column 4.
        for i in 0..5 {
            for j in 0..5 {
                assert_eq!(r.attention_mask[i * 5 + j], !(j < 4 || j <= i), "({i},{j})");
            }
        }
        // [MASK] present: the tokenizer uses its index for positions ≥ c.
        let p = tokenizer_position_ids(&[5, 130000, 6, 130001, 130004, 11], &SP);
        assert_eq!(p, vec![0, 1, 2, 3, 1, 1, 0, 0, 0, 0, 1, 2]);
        // No <sop>: c = n, fully bidirectional, plain arange.
        assert_eq!(tokenizer_attention_mask(&[1, 2], &SP), vec![false; 4]);
        assert_eq!(tokenizer_position_ids(&[1, 2], &SP), vec![0, 1, 0, 0]);
    }

    #[test]
    fn left_padding_matches_building_padded() {
        let ids = [5, 6, 130001, 130004];
        let mut r = build_eval_row(&ids[..2], &[1], &args(8, 4), &SP);
        left_pad_eval_row(&mut r, 7, 3);
        assert_eq!(r.input_ids, vec![3, 3, 3, 5, 6, 130001, 130004]);
        assert_eq!(r.attention_mask, padded_mask(&ids, 7, &SP));
        assert_eq!(
            r.position_ids,
            vec![0, 0, 0, 0, 1, 2, 2, 0, 0, 0, 0, 0, 0, 1]
        );
        assert!(r.attention_mask[..3 * 7].iter().all(|&m| m));
        assert!((0..7).all(|i| r.attention_mask[i * 7] && r.attention_mask[i * 7 + 2]));
    }

    #[test]
    fn select_counts_skipped_records() {
        let ex = |index| Example {
            index,
            line: index + 1,
            prompt: "p".into(),
            response: "r".into(),
            history: vec![],
        };
        let all = vec![ex(0), ex(2), ex(3)];
        assert_eq!(select_first(&all, Some(3)).len(), 2);
        assert_eq!(select_first(&all, Some(0)).len(), 0);
        assert_eq!(select_first(&all, None).len(), 3);
    }

    #[test]
    fn validation() {
        assert!(args(64, 64).validate().is_ok());
        assert!(args(1, 64).validate().is_err());
        let same = DataArgs {
            history_column: Some("content".into()),
            ..args(64, 64)
        };
        assert!(
            same.validate()
                .unwrap_err()
                .to_string()
                .contains("history_column")
        );
    }
}
