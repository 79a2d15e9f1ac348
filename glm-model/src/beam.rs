//! Beam search (`num_beams > 1`) as transformers 4.27 runs it: scores are summed log-softmax
//! values, 2·num_beams candidates per step, an `<eop>` candidate ranked within the top num_beams
//! closes a hypothesis (stored without the `<eop>`, scored sum / length^length_penalty with the
//! length counting the prompt), the search of a prompt ends when num_beams hypotheses exist and
//! none of the live beams can beat the worst of them, and the best hypothesis wins. With
//! `do_sample` the candidates are drawn from the warped distribution (`beam_sample`).
//!
//! All beams of one prompt share its mask and positions (ChatGLM's are prompt-determined), so
//! only the KV cache is reordered between steps.

use burn::prelude::*;
use burn::tensor::DType;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::GlmBackend;
use crate::block::KvPair;
use crate::error::GlmError;
use crate::generate::{
    DecodeState, GenerationConfig, GenerationOutput, PromptBatch, StepEvent, warp_scores,
};
use crate::layers::cast_to;
use crate::model::{ChatGlmModel, Past};

/// Finished hypotheses of one prompt (HF `BeamHypotheses`).
struct Hypotheses {
    beams: Vec<(f64, Vec<u32>)>,
    worst: f64,
    num_beams: usize,
    length_penalty: f64,
}

impl Hypotheses {
    fn new(num_beams: usize, length_penalty: f64) -> Self {
        Self {
            beams: Vec::new(),
            worst: 1e9,
            num_beams,
            length_penalty,
        }
    }

    /// `total_len` counts the prompt (with its padding) as HF's `hyp.shape[-1]` does.
    fn add(&mut self, tokens: Vec<u32>, total_len: usize, sum_logprobs: f64) {
        let score = sum_logprobs / (total_len as f64).powf(self.length_penalty);
        if self.beams.len() < self.num_beams || score > self.worst {
            self.beams.push((score, tokens));
            if self.beams.len() > self.num_beams {
                let mut order: Vec<usize> = (0..self.beams.len()).collect();
                order.sort_by(|&a, &b| self.beams[a].0.total_cmp(&self.beams[b].0));
                self.beams.remove(order[0]);
                let mut scores: Vec<f64> = self.beams.iter().map(|b| b.0).collect();
                scores.sort_by(f64::total_cmp);
                self.worst = scores[0];
            } else {
                self.worst = self.worst.min(score);
            }
        }
    }

    fn is_done(&self, best_sum_logprobs: f64, cur_len: usize) -> bool {
        self.beams.len() >= self.num_beams
            && self.worst >= best_sum_logprobs / (cur_len as f64).powf(self.length_penalty)
    }
}

fn log_softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
    let lse = max + sum.ln();
    row.iter().map(|&x| x as f64 - lse).collect()
}

/// Beam search over `prompts` (see the module docs). `prefix` holds one row per prompt.
pub fn beam_search<B: GlmBackend>(
    model: &ChatGlmModel<B>,
    prompts: &PromptBatch,
    prefix: Option<&Past<B>>,
    config: &GenerationConfig,
    on_step: &mut dyn FnMut(&StepEvent) -> bool,
) -> Result<GenerationOutput, GlmError> {
    let nb = config.num_beams.max(1);
    let b = prompts.ids.len();
    let l = prompts.ids.first().map(Vec::len).unwrap_or(0);
    let device = model.word_embeddings.weight.device();
    let rows = b * nb;
    // Expand every prompt to num_beams rows (row = prompt·nb + beam).
    let expand: Vec<i64> = (0..rows).map(|r| (r / nb) as i64).collect();
    let expand_idx =
        Tensor::<B, 1, Int>::from_data(TensorData::new(expand.clone(), [rows]), &device);
    let ids: Vec<i64> = (0..rows)
        .flat_map(|r| prompts.ids[r / nb].iter().map(|&t| t as i64))
        .collect();
    let mask: Vec<bool> = (0..rows)
        .flat_map(|r| {
            prompts.mask[(r / nb) * l * l..(r / nb + 1) * l * l]
                .iter()
                .copied()
        })
        .collect();
    let pos: Vec<i64> = (0..rows)
        .flat_map(|r| {
            prompts.positions[(r / nb) * 2 * l..(r / nb + 1) * 2 * l]
                .iter()
                .copied()
        })
        .collect();
    let past = prefix.map(|p| Past {
        layers: p
            .layers
            .iter()
            .map(|kv| {
                KvPair::new(
                    kv.key.clone().select(0, expand_idx.clone()),
                    kv.value.clone().select(0, expand_idx.clone()),
                )
            })
            .collect(),
        prefix_len: p.prefix_len,
    });
    let prefix_len = prefix.map(|p| p.prefix_len).unwrap_or(0);
    let mut output = model.forward(
        Tensor::from_data(TensorData::new(ids, [rows, l]), &device),
        Tensor::from_data(TensorData::new(pos.clone(), [rows, 2, l]), &device),
        Tensor::from_data(TensorData::new(mask.clone(), [rows, 1, l, l]), &device),
        past.as_ref(),
    );
    // Per prompt: the last mask row and positions (shared by its beams).
    let mut state = DecodeState::new(prompts);
    let mut beam_scores: Vec<f64> = (0..rows)
        .map(|r| if r % nb == 0 { 0.0 } else { -1e9 })
        .collect();
    let mut seqs: Vec<Vec<u32>> = vec![Vec::new(); rows];
    let mut hyps: Vec<Hypotheses> = (0..b)
        .map(|_| Hypotheses::new(nb, config.length_penalty))
        .collect();
    let mut done = vec![false; b];
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut interrupted = false;
    let steps = config.max_length.saturating_sub(l);
    for step in 0..steps {
        let [_, s, v] = output.logits.dims();
        let last =
            cast_to(output.logits.clone().narrow(1, s - 1, 1), DType::F32).reshape([rows, v]);
        let logits: Vec<f32> = last
            .into_data()
            .to_vec()
            .map_err(|e| GlmError::Invalid(format!("logits readback: {e:?}")))?;
        let limit = config.suppress_from.unwrap_or(v).min(v);
        let mut next_scores = vec![0f64; rows];
        let mut next_tokens = vec![config.pad_token_id; rows];
        let mut next_source = vec![0usize; rows];
        for p in 0..b {
            if done[p] {
                for k in 0..nb {
                    next_source[p * nb + k] = p * nb;
                }
                continue;
            }
            // Candidates (score, row, token) over all beams of this prompt.
            let mut cand: Vec<(f64, usize, u32)> = Vec::with_capacity(nb * limit);
            for k in 0..nb {
                let r = p * nb + k;
                let lp = log_softmax(&logits[r * v..r * v + limit]);
                for (t, x) in lp.iter().enumerate() {
                    cand.push((x + beam_scores[r], r, t as u32));
                }
            }
            let chosen: Vec<(f64, usize, u32)> = if config.do_sample {
                sample_candidates(&cand, 2 * nb, config, &mut rng)
            } else {
                let k = (2 * nb).min(cand.len());
                cand.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0));
                cand.truncate(k);
                cand.sort_by(|a, b| b.0.total_cmp(&a.0));
                cand
            };
            let mut filled = 0;
            for (rank, &(score, r, t)) in chosen.iter().enumerate() {
                if t == config.eos_token_id {
                    if rank >= nb {
                        continue;
                    }
                    // Closed hypothesis: the tokens so far (without <eop>), length incl. prompt.
                    hyps[p].add(seqs[r].clone(), l + seqs[r].len(), score);
                } else {
                    let dst = p * nb + filled;
                    next_scores[dst] = score;
                    next_tokens[dst] = t;
                    next_source[dst] = r;
                    filled += 1;
                }
                if filled == nb {
                    break;
                }
            }
            let best = chosen.iter().map(|c| c.0).fold(f64::NEG_INFINITY, f64::max);
            done[p] = done[p] || hyps[p].is_done(best, l + seqs[p * nb].len());
        }
        let new_seqs: Vec<Vec<u32>> = (0..rows)
            .map(|r| {
                let mut s = seqs[next_source[r]].clone();
                s.push(next_tokens[r]);
                s
            })
            .collect();
        seqs = new_seqs;
        beam_scores = next_scores;
        let tops: Vec<u32> = (0..b).map(|p| next_tokens[p * nb]).collect();
        if !on_step(&StepEvent {
            step,
            tokens: &tops,
            finished: &done,
        }) {
            interrupted = true;
            break;
        }
        if done.iter().all(|&d| d) || step + 1 == steps {
            break;
        }
        let reorder = Tensor::<B, 1, Int>::from_data(
            TensorData::new(
                next_source.iter().map(|&r| r as i64).collect::<Vec<_>>(),
                [rows],
            ),
            &device,
        );
        let layers = output
            .presents
            .into_iter()
            .map(|kv| {
                KvPair::new(
                    kv.key.select(0, reorder.clone()),
                    kv.value.select(0, reorder.clone()),
                )
            })
            .collect();
        state.advance();
        let (mask_rows, positions, sk) = state.inputs(nb);
        output = model.forward(
            Tensor::from_data(
                TensorData::new(
                    next_tokens.iter().map(|&t| t as i64).collect::<Vec<_>>(),
                    [rows, 1],
                ),
                &device,
            ),
            Tensor::from_data(TensorData::new(positions, [rows, 2, 1]), &device),
            Tensor::from_data(TensorData::new(mask_rows, [rows, 1, 1, sk]), &device),
            Some(&Past { layers, prefix_len }),
        );
    }
    // Finalize: live beams of unfinished prompts become hypotheses; the best one wins.
    let mut tokens = Vec::with_capacity(b);
    for p in 0..b {
        if !done[p] {
            for k in 0..nb {
                let r = p * nb + k;
                hyps[p].add(seqs[r].clone(), l + seqs[r].len(), beam_scores[r]);
            }
        }
        let mut best = hyps[p]
            .beams
            .iter()
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|b| b.1.clone())
            .unwrap_or_default();
        if l + best.len() < config.max_length {
            best.push(config.eos_token_id);
        }
        tokens.push(best);
    }
    let width = tokens.iter().map(Vec::len).max().unwrap_or(0);
    for t in tokens.iter_mut() {
        t.resize(width, config.pad_token_id);
    }
    Ok(GenerationOutput {
        tokens,
        step_logits: Vec::new(),
        interrupted,
    })
}

/// `beam_sample`: warp the accumulated scores, then draw `k` distinct candidates.
fn sample_candidates(
    cand: &[(f64, usize, u32)],
    k: usize,
    config: &GenerationConfig,
    rng: &mut StdRng,
) -> Vec<(f64, usize, u32)> {
    let raw: Vec<f32> = cand.iter().map(|c| c.0 as f32).collect();
    let warped = warp_scores(&raw, config);
    let max = warped.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let mut weights: Vec<f64> = warped
        .iter()
        .map(|&s| {
            if s == f32::NEG_INFINITY {
                0.0
            } else {
                ((s - max) as f64).exp()
            }
        })
        .collect();
    let mut picked = Vec::new();
    for _ in 0..k.min(weights.iter().filter(|&&w| w > 0.0).count()) {
        let total: f64 = weights.iter().sum();
        let mut u = rng.random::<f64>() * total;
        let mut idx = weights.iter().rposition(|&w| w > 0.0).unwrap_or(0);
        for (i, w) in weights.iter().enumerate() {
            if *w > 0.0 {
                if u < *w {
                    idx = i;
                    break;
                }
                u -= w;
            }
        }
        weights[idx] = 0.0;
        picked.push(cand[idx]);
    }
    picked.sort_by(|a, b| b.0.total_cmp(&a.0));
    picked
}
