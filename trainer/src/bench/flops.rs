//! Floating-point operation counts of the model's matrix products (2 per multiply-add), used to
//! turn measured times into GFLOP/s.
//!
//! Only GEMMs are counted — the four linears of each block, the two attention products and the
//! tied output projection; LayerNorm, GELU, softmax, rotary and the loss are memory-bound
//! elementwise work and left out (they are < 2 % of the FLOPs at the benchmark shapes).
//!
//! A P-Tuning v2 training step with per-block recomputation does: a gradient-free forward of
//! every block, the head forward and its input-gradient backward, then per block a recomputed
//! forward and the backward. Frozen (dense or quantized) linears compute only the input gradient
//! (`g_y · W`, as many FLOPs as the forward); attention needs the gradients of both operands of
//! both products (twice its forward). No weight-gradient GEMM exists for the frozen base.

use glm_model::ChatGlmConfig;

/// Shape of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchShape {
    /// B.
    pub batch: usize,
    /// S: tokens per row.
    pub seq: usize,
    /// P: prefix (or cached) key positions in front of the S new ones.
    pub prefix: usize,
}

impl BatchShape {
    fn tokens(&self) -> f64 {
        (self.batch * self.seq) as f64
    }
}

/// The four linears of one block on `tokens` rows: 2·T·(3H·H + H·H + 2·H·I).
pub fn block_linear_flops(cfg: &ChatGlmConfig, tokens: f64) -> f64 {
    let (h, i) = (cfg.hidden_size as f64, cfg.inner_size() as f64);
    2.0 * tokens * (3.0 * h * h + h * h + 2.0 * h * i)
}

/// q·kᵀ and probs·v of one block: 2 · 2·B·S·(P+S)·H.
pub fn attention_flops(cfg: &ChatGlmConfig, shape: BatchShape) -> f64 {
    let keys = (shape.prefix + shape.seq) as f64;
    4.0 * shape.tokens() * keys * cfg.hidden_size as f64
}

/// The tied output projection: 2·T·H·V.
pub fn head_flops(cfg: &ChatGlmConfig, tokens: f64) -> f64 {
    2.0 * tokens * cfg.hidden_size as f64 * cfg.vocab_size as f64
}

/// Forward of the prefix encoder with projection (2·P·(H·H + H·2LH)); 0 without (a lookup).
pub fn prefix_forward_flops(cfg: &ChatGlmConfig, pre_seq_len: usize, projection: bool) -> f64 {
    if !projection {
        return 0.0;
    }
    let (p, h, w) = (
        pre_seq_len as f64,
        cfg.hidden_size as f64,
        cfg.prefix_row_width() as f64,
    );
    2.0 * p * (h * h + h * w)
}

/// One forward pass (logits for every position).
pub fn forward_flops(cfg: &ChatGlmConfig, shape: BatchShape) -> f64 {
    let per_block = block_linear_flops(cfg, shape.tokens()) + attention_flops(cfg, shape);
    cfg.num_layers as f64 * per_block + head_flops(cfg, shape.tokens())
}

/// One P-Tuning v2 micro-batch: forward + backward (+ recomputation), prefix encoder included
/// (its trainable projection computes weight gradients too: 3× its forward). The frozen head
/// runs (forward and input gradient) on `head_rows` rows: those with a label (see
/// `glm_model::model::loss_rows`), B·(S − 1) at most.
pub fn train_step_flops(
    cfg: &ChatGlmConfig,
    shape: BatchShape,
    head_rows: usize,
    recompute: bool,
    projection: bool,
) -> f64 {
    let lin = block_linear_flops(cfg, shape.tokens());
    let att = attention_flops(cfg, shape);
    // forward (+ recomputed forward) + input-gradient backward.
    let forwards = if recompute { 2.0 } else { 1.0 };
    let per_block = forwards * (lin + att) + lin + 2.0 * att;
    cfg.num_layers as f64 * per_block
        + 2.0 * head_flops(cfg, head_rows as f64)
        + 3.0 * prefix_forward_flops(cfg, shape.prefix, projection)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_shape_counts() {
        let cfg = ChatGlmConfig::with_shape(1024, 4, 16, 4096, 130528);
        let s = BatchShape {
            batch: 1,
            seq: 128,
            prefix: 128,
        };
        // Linears: 2·128·(4·1024² + 2·1024·4096) per block.
        let lin = 2.0 * 128.0 * (4.0 * 1048576.0 + 2.0 * 1024.0 * 4096.0);
        assert_eq!(block_linear_flops(&cfg, 128.0), lin);
        let att = 4.0 * 128.0 * 256.0 * 1024.0;
        assert_eq!(attention_flops(&cfg, s), att);
        let head = 2.0 * 128.0 * 1024.0 * 130528.0;
        assert_eq!(forward_flops(&cfg, s), 4.0 * (lin + att) + head);
        assert_eq!(
            train_step_flops(&cfg, s, 128, true, false),
            4.0 * (3.0 * lin + 4.0 * att) + 2.0 * head
        );
        assert!(
            train_step_flops(&cfg, s, 128, false, false)
                < train_step_flops(&cfg, s, 128, true, false)
        );
        assert_eq!(
            train_step_flops(&cfg, s, 64, true, false),
            4.0 * (3.0 * lin + 4.0 * att) + head
        );
    }
}
