//! Attention masks and 2D position ids, derived from token ids exactly like the reference.
//!
//! Mask polarity follows the reference: **true = masked (not allowed)**. For a row with its
//! first `<sop>` at index c, position j is visible from position i iff `j <= i || j < c`: the
//! prompt and `[gMASK]` form a bidirectional block, the answer is causal.
//!
//! 2D positions [2, S]: row 0 is `k` before c and the mask token's index m for every k ≥ c
//! (all generated tokens share the mask's position); row 1 ("block position") is 0 before c
//! and `k − c + 1` from c on (`<sop>` has block position 1).

use burn::prelude::*;

use crate::config::ChatGlmConfig;
use crate::error::GlmError;

/// Host-side masks and positions of a batch, ready to become tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchInputs {
    /// B.
    pub batch: usize,
    /// S.
    pub seq: usize,
    /// [B, S, S] row-major, true = masked.
    pub mask: Vec<bool>,
    /// [B, R, S] (R = 2 with 2D positions).
    pub positions: Vec<i64>,
    /// R.
    pub position_rows: usize,
}

impl BatchInputs {
    /// Mask tensor [B, 1, S, S].
    pub fn mask_tensor<B: Backend>(&self, device: &B::Device) -> Tensor<B, 4, Bool> {
        Tensor::from_data(
            TensorData::new(self.mask.clone(), [self.batch, 1, self.seq, self.seq]),
            device,
        )
    }

    /// Position tensor [B, R, S].
    pub fn position_tensor<B: Backend>(&self, device: &B::Device) -> Tensor<B, 3, Int> {
        Tensor::from_data(
            TensorData::new(
                self.positions.clone(),
                [self.batch, self.position_rows, self.seq],
            ),
            device,
        )
    }
}

/// Index of the first `<sop>` (the context length c), as the reference's `seq.index(bos)`.
pub fn context_length(ids: &[u32], bos: u32) -> Option<usize> {
    ids.iter().position(|&t| t == bos)
}

/// The model's own mask for one sequence (`get_masks`): [S, S], true = masked.
pub fn sequence_mask(ids: &[u32], context: usize) -> Vec<bool> {
    let s = ids.len();
    let mut m = vec![false; s * s];
    for i in 0..s {
        for j in 0..s {
            m[i * s + j] = !(j <= i || j < context);
        }
    }
    m
}

/// The model's own position ids for one sequence (`get_position_ids`): (`[S]` row 0, `[S]` row 1).
///
/// The mask position m is the first `[gMASK]` if present, else the first `[MASK]` (the model's
/// priority; the tokenizer prefers `[MASK]`, see `tokenizer_position_ids`).
pub fn sequence_positions(
    ids: &[u32],
    context: usize,
    config: &ChatGlmConfig,
) -> (Vec<i64>, Vec<i64>) {
    let s = ids.len();
    let m = ids
        .iter()
        .position(|&t| t == config.gmask_token_id)
        .or_else(|| ids.iter().position(|&t| t == config.mask_token_id));
    let mut pos: Vec<i64> = (0..s as i64).collect();
    let mut block = vec![0i64; s];
    if config.position_encoding_2d {
        if let Some(m) = m {
            for p in pos.iter_mut().skip(context) {
                *p = m as i64;
            }
        }
        for (k, b) in block.iter_mut().enumerate().skip(context) {
            *b = (k - context + 1) as i64;
        }
    } else if let Some(m) = ids.iter().position(|&t| t == config.mask_token_id) {
        // 1D variant: only a `[MASK]` clamps later positions; `[gMASK]` keeps a plain arange.
        for p in pos.iter_mut().skip(context) {
            *p = m as i64;
        }
    }
    (pos, block)
}

/// Masks and positions for a batch of equal-length rows, as the model derives them when the
/// caller passes none (training). Errors when a row has no `<sop>`.
pub fn derive_inputs(rows: &[Vec<u32>], config: &ChatGlmConfig) -> Result<BatchInputs, GlmError> {
    let batch = rows.len();
    let seq = rows.first().map(Vec::len).unwrap_or(0);
    let position_rows = if config.position_encoding_2d { 2 } else { 1 };
    let mut mask = Vec::with_capacity(batch * seq * seq);
    let mut positions = Vec::with_capacity(batch * position_rows * seq);
    for (r, ids) in rows.iter().enumerate() {
        if ids.len() != seq {
            return Err(GlmError::Invalid(format!(
                "row {r} has length {} but row 0 has {seq}",
                ids.len()
            )));
        }
        let c = context_length(ids, config.bos_token_id).ok_or_else(|| {
            GlmError::Invalid(format!(
                "row {r} has no <sop> token (id {}); every input needs `[gMASK] <sop>` after the prompt",
                config.bos_token_id
            ))
        })?;
        if config.position_encoding_2d
            && !ids
                .iter()
                .any(|&t| t == config.gmask_token_id || t == config.mask_token_id)
        {
            return Err(GlmError::Invalid(format!(
                "row {r} has neither [gMASK] (id {}) nor [MASK] (id {}); the 2D positions need one before <sop>",
                config.gmask_token_id, config.mask_token_id
            )));
        }
        mask.extend(sequence_mask(ids, c));
        let (p, b) = sequence_positions(ids, c, config);
        positions.extend(p);
        if position_rows == 2 {
            positions.extend(b);
        }
    }
    Ok(BatchInputs {
        batch,
        seq,
        mask,
        positions,
        position_rows,
    })
}

/// Prepend `prefix` all-visible key columns to a mask [B, 1, S, Sk] → [B, 1, S, P + Sk].
/// Every row, pad rows included, sees the whole P-Tuning prefix.
pub fn with_prefix_columns<B: Backend>(
    mask: Tensor<B, 4, Bool>,
    prefix: usize,
) -> Tensor<B, 4, Bool> {
    if prefix == 0 {
        return mask;
    }
    let [b, one, s, _] = mask.dims();
    let device = mask.device();
    let visible = Tensor::<B, 4, Bool>::from_data(
        TensorData::new(vec![false; b * one * s * prefix], [b, one, s, prefix]),
        &device,
    );
    Tensor::cat(vec![visible, mask], 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ChatGlmConfig {
        ChatGlmConfig::chatglm_6b()
    }

    #[test]
    fn train_row_positions() {
        // prompt (3) + [gMASK] + <sop> + answer (2) + <eop> + pad
        let ids = vec![5, 6, 7, 130001, 130004, 8, 9, 130005, 3];
        let c = context_length(&ids, 130004).unwrap();
        assert_eq!(c, 4);
        let (p, b) = sequence_positions(&ids, c, &cfg());
        assert_eq!(p, vec![0, 1, 2, 3, 3, 3, 3, 3, 3]);
        assert_eq!(b, vec![0, 0, 0, 0, 1, 2, 3, 4, 5]);
        let m = sequence_mask(&ids, c);
        assert!(!m[3], "prompt is bidirectional");
        assert!(m[4 * 9 + 5], "answer is causal");
        assert!(!m[5 * 9 + 4]);
    }

    #[test]
    fn missing_sop_is_an_error() {
        let err = derive_inputs(&[vec![5, 6, 7]], &cfg()).unwrap_err();
        assert!(err.to_string().contains("<sop>"));
    }
}
