//! Batched generation with the KV cache, as Hugging Face `generate` (transformers 4.27) runs
//! ChatGLM: left-padded prompts with the tokenizer-built mask/positions, greedy or sampling with
//! temperature → top-k → top-p (HF's warper order), stop at `<eop>` per row, `max_length` =
//! total length (prompt incl. padding + generated).
//!
//! Incremental step semantics of the reference: only the last token is fed; its mask row is the
//! previous last row plus one visible column for itself (older rows never see it — they are not
//! recomputed); its position is [mask position, previous block position + 1].

use burn::prelude::*;
use burn::tensor::DType;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::GlmBackend;
use crate::block::KvPair;
use crate::error::GlmError;
use crate::layers::cast_to;
use crate::model::{ChatGlmModel, Past, ids_tensor};

/// Decoding settings (HF `GenerationConfig` subset with the original's meanings).
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationConfig {
    /// Total length: prompt (with its left padding) + new tokens.
    pub max_length: usize,
    /// Sample (true) or greedy (false).
    pub do_sample: bool,
    /// Logits are divided by it before top-k/top-p (1.0 = off).
    pub temperature: f32,
    /// Keep the k most likely tokens (0 = off). HF's default 50 applies to the original's eval.
    pub top_k: usize,
    /// Nucleus: keep the smallest set with cumulative probability > top_p (1.0 = off).
    pub top_p: f32,
    /// Stop a row at this id.
    pub eos_token_id: u32,
    /// Fills finished rows.
    pub pad_token_id: u32,
    /// Seed of the sampling RNG (a seeded run is reproducible).
    pub seed: u64,
    /// Ids ≥ this are never produced (rows of the embedding that no tokenizer piece has).
    pub suppress_from: Option<usize>,
    /// Beam search with this many beams when > 1 (beam sampling with `do_sample`).
    pub num_beams: usize,
    /// Exponent of the length normalisation of beam scores (HF default 1.0).
    pub length_penalty: f64,
}

impl GenerationConfig {
    /// Greedy decoding up to `max_length`.
    pub fn greedy(max_length: usize, eos_token_id: u32, pad_token_id: u32) -> Self {
        Self {
            max_length,
            do_sample: false,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            eos_token_id,
            pad_token_id,
            seed: 0,
            suppress_from: None,
            num_beams: 1,
            length_penalty: 1.0,
        }
    }
}

/// Left-padded prompts with the tokenizer-built mask and positions.
#[derive(Debug, Clone)]
pub struct PromptBatch {
    /// B rows of equal length L (left-padded).
    pub ids: Vec<Vec<u32>>,
    /// [B, L, L] row-major, true = masked.
    pub mask: Vec<bool>,
    /// [B, 2, L].
    pub positions: Vec<i64>,
}

/// Per-step notification for streaming.
#[derive(Debug, Clone)]
pub struct StepEvent<'a> {
    /// 0-based index of the generated token.
    pub step: usize,
    /// The token chosen for every row at this step (pad for finished rows).
    pub tokens: &'a [u32],
    /// Rows that have produced `<eop>` (including at this step).
    pub finished: &'a [bool],
}

/// What `generate` returns.
#[derive(Debug, Clone, Default)]
pub struct GenerationOutput {
    /// New tokens per row (eos included when produced, pad after it), all of equal length.
    pub tokens: Vec<Vec<u32>>,
    /// Raw next-token logits per step, `[steps][B·V]`, when requested.
    pub step_logits: Vec<Vec<f32>>,
    /// True when the callback stopped generation early.
    pub interrupted: bool,
}

/// Generate continuations of `prompts` with an optional P-Tuning prefix (per-layer keys/values,
/// [B, nh, P, hd]). `on_step` returning false stops early (e.g. Ctrl-C).
pub fn generate<B: GlmBackend>(
    model: &ChatGlmModel<B>,
    prompts: &PromptBatch,
    prefix: Option<&Past<B>>,
    config: &GenerationConfig,
    keep_step_logits: bool,
    on_step: &mut dyn FnMut(&StepEvent) -> bool,
) -> Result<GenerationOutput, GlmError> {
    let b = prompts.ids.len();
    let l = prompts.ids.first().map(Vec::len).unwrap_or(0);
    if b == 0 || l == 0 {
        return Err(GlmError::Invalid("generate: empty prompt batch".into()));
    }
    if prompts.mask.len() != b * l * l || prompts.positions.len() != b * 2 * l {
        return Err(GlmError::Invalid(format!(
            "generate: mask/positions do not match {b} prompts of length {l}"
        )));
    }
    crate::model::check_ids(&prompts.ids, model.config.vocab_size)?;
    let device = model.word_embeddings.weight.device();
    let mut out = GenerationOutput {
        tokens: vec![Vec::new(); b],
        ..Default::default()
    };
    if config.max_length <= l {
        return Ok(out);
    }
    if config.num_beams > 1 {
        return crate::beam::beam_search(model, prompts, prefix, config, on_step);
    }
    let mut rng = StdRng::seed_from_u64(config.seed);
    let prefix_len = prefix.map(|p| p.prefix_len).unwrap_or(0);

    let mut state = DecodeState::new(prompts);
    let mut finished = vec![false; b];

    let ids = ids_tensor::<B>(&prompts.ids, &device);
    let pos = Tensor::<B, 3, Int>::from_data(
        TensorData::new(prompts.positions.clone(), [b, 2, l]),
        &device,
    );
    let mask = Tensor::<B, 4, Bool>::from_data(
        TensorData::new(prompts.mask.clone(), [b, 1, l, l]),
        &device,
    );
    let mut output = model.forward(ids, pos, mask, prefix);

    for step in 0..config.max_length - l {
        let [_, s, v] = output.logits.dims();
        let last = cast_to(output.logits.clone().narrow(1, s - 1, 1), DType::F32).reshape([b, v]);
        let logits: Vec<f32> = last
            .into_data()
            .to_vec()
            .map_err(|e| GlmError::Invalid(format!("logits readback: {e:?}")))?;
        let mut tokens = Vec::with_capacity(b);
        for r in 0..b {
            let row = &logits[r * v..(r + 1) * v];
            let t = if finished[r] {
                config.pad_token_id
            } else {
                pick_token(row, config, &mut rng)
            };
            tokens.push(t);
        }
        if keep_step_logits {
            out.step_logits.push(logits);
        }
        for r in 0..b {
            out.tokens[r].push(tokens[r]);
            if tokens[r] == config.eos_token_id {
                finished[r] = true;
            }
        }
        let go_on = on_step(&StepEvent {
            step,
            tokens: &tokens,
            finished: &finished,
        });
        if !go_on {
            out.interrupted = true;
            break;
        }
        if finished.iter().all(|&f| f) || step + 1 == config.max_length - l {
            break;
        }
        state.advance();
        let (mask_rows, positions, sk) = state.inputs(1);
        let ids = Tensor::<B, 2, Int>::from_data(
            TensorData::new(tokens.iter().map(|&t| t as i64).collect::<Vec<_>>(), [b, 1]),
            &device,
        );
        let pos = Tensor::<B, 3, Int>::from_data(TensorData::new(positions, [b, 2, 1]), &device);
        let mask =
            Tensor::<B, 4, Bool>::from_data(TensorData::new(mask_rows, [b, 1, 1, sk]), &device);
        // By value, so each layer writes its new position into its cache in place.
        let past = Past {
            layers: make_room(output.presents, config.max_length - l - step - 1),
            prefix_len,
        };
        output = model.forward_owned(ids, pos, mask, Some(past));
    }
    Ok(out)
}

/// The cache as it is while it has room for the next position; else in buffers with room for
/// as many positions again as it holds (at least 16, at most the `feeds` tokens decoding may
/// still feed). Doubling copies each position O(1) times over a whole generation, where
/// concatenating copied the whole cache at every step, and a short answer does not reserve the
/// memory of a long one.
fn make_room<B: GlmBackend>(layers: Vec<KvPair<B>>, feeds: usize) -> Vec<KvPair<B>> {
    match layers.first() {
        Some(kv) if kv.room() == 0 => {
            let extra = feeds.min(kv.len().max(16));
            layers.into_iter().map(|kv| kv.with_room(extra)).collect()
        }
        _ => layers,
    }
}

/// Host-side state of every prompt's last mask row and last positions, advanced one token per
/// decoding step (shared by greedy/sampled generation and beam search).
pub(crate) struct DecodeState {
    last_row: Vec<Vec<bool>>,
    last_pos: Vec<[i64; 2]>,
}

impl DecodeState {
    /// The last mask row and positions of each prompt (prompts already validated).
    pub(crate) fn new(prompts: &PromptBatch) -> Self {
        let b = prompts.ids.len();
        let l = prompts.ids.first().map(Vec::len).unwrap_or(0);
        Self {
            last_row: (0..b)
                .map(|r| prompts.mask[(r * l + l - 1) * l..(r * l + l) * l].to_vec())
                .collect(),
            last_pos: (0..b)
                .map(|r| {
                    [
                        prompts.positions[r * 2 * l + l - 1],
                        prompts.positions[r * 2 * l + 2 * l - 1],
                    ]
                })
                .collect(),
        }
    }

    /// Next input: the new token sees one more key column; positions become [m, block + 1].
    pub(crate) fn advance(&mut self) {
        for (row, pos) in self.last_row.iter_mut().zip(&mut self.last_pos) {
            row.push(false);
            pos[1] += 1;
        }
    }

    /// The step's `[B · per, 1, 1, sk]` mask rows, `[B · per, 2, 1]` positions (row r, position
    /// row k at r·2 + k) and `sk`, every prompt repeated for its `per` consecutive rows (beams).
    pub(crate) fn inputs(&self, per: usize) -> (Vec<bool>, Vec<i64>, usize) {
        let sk = self.last_row[0].len();
        let rows = self.last_row.len() * per;
        let mask = (0..rows)
            .flat_map(|r| self.last_row[r / per].iter().copied())
            .collect();
        let positions = (0..rows).flat_map(|r| self.last_pos[r / per]).collect();
        (mask, positions, sk)
    }
}

/// HF's logits warpers in order: temperature → top-k (ties kept) → top-p (smallest set with
/// cumulative probability > top_p; the most likely token always kept). Removed entries are −∞.
pub fn warp_scores(logits: &[f32], config: &GenerationConfig) -> Vec<f32> {
    let mut scores: Vec<f32> = logits.iter().map(|&x| x / config.temperature).collect();
    let v = scores.len();
    if config.top_k > 0 && config.top_k < v {
        // Keep every score ≥ the k-th largest (ties kept, as HF's `scores < kth` removal).
        let mut sorted = scores.clone();
        sorted.select_nth_unstable_by(config.top_k - 1, |a, b| b.total_cmp(a));
        let kth = sorted[config.top_k - 1];
        for s in scores.iter_mut() {
            if *s < kth {
                *s = f32::NEG_INFINITY;
            }
        }
    }
    if config.top_p < 1.0 {
        // Ascending sort; drop tokens whose cumulative probability ≤ 1 − top_p; keep the top one.
        let mut order: Vec<usize> = (0..v).collect();
        order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
        let max = scores[order[v - 1]];
        let exps: Vec<f64> = order
            .iter()
            .map(|&i| ((scores[i] - max) as f64).exp())
            .collect();
        let total: f64 = exps.iter().sum();
        let mut cum = 0.0;
        for (rank, &i) in order.iter().enumerate() {
            cum += exps[rank] / total;
            if cum <= (1.0 - config.top_p as f64) && rank + 1 < v {
                scores[i] = f32::NEG_INFINITY;
            }
        }
    }
    scores
}

/// Choose the next token from raw logits `[V]`: argmax, or temperature → top-k → top-p → sample.
pub fn pick_token(logits: &[f32], config: &GenerationConfig, rng: &mut StdRng) -> u32 {
    let limit = config
        .suppress_from
        .unwrap_or(logits.len())
        .min(logits.len());
    let logits = &logits[..limit];
    if !config.do_sample {
        // First maximal index, as torch.argmax.
        let mut best = 0usize;
        for (i, &x) in logits.iter().enumerate() {
            if x > logits[best] || (logits[best].is_nan() && !x.is_nan()) {
                best = i;
            }
        }
        return best as u32;
    }
    let scores = warp_scores(logits, config);
    let max = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let probs: Vec<f64> = scores
        .iter()
        .map(|&s| {
            if s == f32::NEG_INFINITY {
                0.0
            } else {
                ((s - max) as f64).exp()
            }
        })
        .collect();
    let total: f64 = probs.iter().sum();
    if !total.is_finite() || total <= 0.0 {
        // All scores non-finite: fall back to the first candidate rather than panic.
        return 0;
    }
    let mut u = rng.random::<f64>() * total;
    for (i, p) in probs.iter().enumerate() {
        if *p > 0.0 {
            if u < *p {
                return i as u32;
            }
            u -= p;
        }
    }
    probs.iter().rposition(|&p| p > 0.0).unwrap_or(0) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(top_k: usize, top_p: f32) -> GenerationConfig {
        GenerationConfig {
            do_sample: true,
            top_k,
            top_p,
            temperature: 1.0,
            ..GenerationConfig::greedy(10, 2, 3)
        }
    }

    #[test]
    fn greedy_takes_first_max() {
        let mut rng = StdRng::seed_from_u64(0);
        assert_eq!(
            pick_token(
                &[0.0, 3.0, 3.0, 1.0],
                &GenerationConfig::greedy(1, 0, 0),
                &mut rng
            ),
            1
        );
    }

    #[test]
    fn top_k_one_is_greedy() {
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..20 {
            assert_eq!(pick_token(&[0.0, 1.0, 5.0, 4.9], &cfg(1, 1.0), &mut rng), 2);
        }
    }

    #[test]
    fn top_p_cuts_the_tail() {
        // probabilities ≈ [0.0003, 0.0009, 0.72, 0.27]: top_p 0.7 keeps only the top token.
        let mut rng = StdRng::seed_from_u64(2);
        for _ in 0..50 {
            assert_eq!(
                pick_token(&[-3.0, -2.0, 5.0, 4.0], &cfg(0, 0.7), &mut rng),
                2
            );
        }
        // top_p 0.9 keeps the top two.
        let mut seen = [false; 4];
        for _ in 0..200 {
            seen[pick_token(&[-3.0, -2.0, 5.0, 4.0], &cfg(0, 0.9), &mut rng) as usize] = true;
        }
        assert_eq!(seen, [false, false, true, true]);
    }

    #[test]
    fn seeded_sampling_is_reproducible() {
        let logits: Vec<f32> = (0..100).map(|i| (i as f32 * 0.37).sin()).collect();
        let run = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..20)
                .map(|_| pick_token(&logits, &cfg(50, 0.7), &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
    }

    #[test]
    fn suppressed_ids_never_win() {
        let mut c = GenerationConfig::greedy(1, 0, 0);
        c.suppress_from = Some(2);
        let mut rng = StdRng::seed_from_u64(0);
        assert_eq!(pick_token(&[0.0, 1.0, 9.0], &c, &mut rng), 1);
    }
}
