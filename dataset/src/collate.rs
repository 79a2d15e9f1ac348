//! Batching rows into flat row-major arrays (what `DataCollatorForSeq2Seq` + `tokenizer.pad`
//! hand the model, reference §7.5); the trainer turns them into tensors.
//!
//! Training rows all have length Ms + Mt, so a train batch is a plain stack. Eval rows of one
//! 1000-example map batch share a length, but a batch that straddles two map batches does not:
//! those rows are left-padded to the batch maximum with `<pad>` / masked (true) rows and columns
//! / position 0, exactly as the tokenizer pads. Eval labels are ragged and are left-padded with
//! −100, as `DataCollatorForSeq2Seq` does (padding side left).

use crate::preprocess::{EvalRow, IGNORE_INDEX, TrainRow, left_pad_eval_row};

/// A stacked training batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainBatch {
    /// B.
    pub batch_size: usize,
    /// S (= Ms + Mt).
    pub seq_len: usize,
    /// `[B, S]` row-major.
    pub input_ids: Vec<u32>,
    /// `[B, S]` row-major, −100 = ignored.
    pub labels: Vec<i64>,
}

/// A padded eval/predict batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalBatch {
    /// B.
    pub batch_size: usize,
    /// L, the longest prompt in the batch.
    pub seq_len: usize,
    /// `[B, L]`, left-padded.
    pub input_ids: Vec<u32>,
    /// `[B, 1, L, L]` row-major, **true = masked**.
    pub attention_mask: Vec<bool>,
    /// `[B, 2, L]` row-major (row 0 position, row 1 block position).
    pub position_ids: Vec<i64>,
    /// Longest label row.
    pub label_len: usize,
    /// `[B, label_len]`, left-padded with −100.
    pub labels: Vec<i64>,
}

/// Stack training rows. Rows from `preprocess_train` share one length; should lengths ever
/// differ, shorter rows are right-padded (ids with `pad_id`, labels with −100), as they were built.
pub fn collate_train(rows: &[&TrainRow], pad_id: u32) -> TrainBatch {
    let seq_len = rows.iter().map(|r| r.input_ids.len()).max().unwrap_or(0);
    let mut input_ids = Vec::with_capacity(rows.len() * seq_len);
    let mut labels = Vec::with_capacity(rows.len() * seq_len);
    for r in rows {
        input_ids.extend_from_slice(&r.input_ids);
        input_ids.resize(input_ids.len() + seq_len - r.input_ids.len(), pad_id);
        let keep = r.labels.len().min(seq_len);
        labels.extend_from_slice(&r.labels[..keep]);
        labels.resize(labels.len() + seq_len - keep, IGNORE_INDEX);
    }
    TrainBatch {
        batch_size: rows.len(),
        seq_len,
        input_ids,
        labels,
    }
}

/// Pad eval rows to the batch maximum (left: `pad_id` / true / 0; labels −100) and stack them.
pub fn collate_eval(rows: &[&EvalRow], pad_id: u32) -> EvalBatch {
    let seq_len = rows.iter().map(|r| r.seq_len()).max().unwrap_or(0);
    let label_len = rows.iter().map(|r| r.labels.len()).max().unwrap_or(0);
    let b = rows.len();
    let mut batch = EvalBatch {
        batch_size: b,
        seq_len,
        input_ids: Vec::with_capacity(b * seq_len),
        attention_mask: Vec::with_capacity(b * seq_len * seq_len),
        position_ids: Vec::with_capacity(b * 2 * seq_len),
        label_len,
        labels: Vec::with_capacity(b * label_len),
    };
    for &r in rows {
        let padded;
        let r = if r.seq_len() == seq_len {
            r
        } else {
            let mut p = r.clone();
            left_pad_eval_row(&mut p, seq_len, pad_id);
            padded = p;
            &padded
        };
        batch.input_ids.extend_from_slice(&r.input_ids);
        batch.attention_mask.extend_from_slice(&r.attention_mask);
        batch.position_ids.extend_from_slice(&r.position_ids);
        batch.labels.resize(
            batch.labels.len() + label_len - r.labels.len(),
            IGNORE_INDEX,
        );
        batch.labels.extend_from_slice(&r.labels);
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preprocess::{DataArgs, SpecialIds, build_eval_row, build_train_row};

    const SP: SpecialIds = SpecialIds {
        pad: 3,
        mask: 130000,
        gmask: 130001,
        sop: 130004,
        eop: 130005,
    };

    #[test]
    fn eval_rows_of_different_lengths_are_left_padded() {
        let args = DataArgs {
            max_source_length: 8,
            max_target_length: 8,
            ..DataArgs::new("p", "r")
        };
        let long = build_eval_row(&[10, 11, 12], &[20, 21, 22], &args, &SP);
        let short = build_eval_row(&[10], &[20], &args, &SP);
        let b = collate_eval(&[&long, &short], 3);
        assert_eq!((b.batch_size, b.seq_len, b.label_len), (2, 5, 5));
        assert_eq!(&b.input_ids[5..], &[3, 3, 10, 130001, 130004]);
        assert_eq!(&b.labels[5..], &[-100, -100, 20, 130001, 130004]);
        assert_eq!(&b.position_ids[10..], &[0, 0, 0, 1, 1, 0, 0, 0, 0, 1]);
        let m = &b.attention_mask[25..];
        // Pad rows/columns (0, 1) masked; row 2 sees 2..=3 (the context), not <sop> at 4.
        assert!(m[..10].iter().all(|&x| x));
        assert_eq!(&m[10..15], &[true, true, false, false, true]);
        assert_eq!(&m[20..25], &[true, true, false, false, false]);
        assert_eq!(&b.attention_mask[..25], &long.attention_mask[..]);
    }

    #[test]
    fn train_rows_stack() {
        let args = DataArgs {
            max_source_length: 4,
            max_target_length: 4,
            ..DataArgs::new("p", "r")
        };
        let a = build_train_row(&[10], &[20], &args, &SP);
        let b = build_train_row(&[11, 12], &[21, 22], &args, &SP);
        let t = collate_train(&[&a, &b], 3);
        assert_eq!((t.batch_size, t.seq_len), (2, 8));
        assert_eq!(&t.input_ids[8..], &b.input_ids[..]);
        assert_eq!(&t.labels[..8], &a.labels[..]);
        assert_eq!(collate_train(&[], 3).input_ids.len(), 0);
    }
}
