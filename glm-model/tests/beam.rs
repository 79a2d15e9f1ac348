//! Beam search on the golden tiny model: with the vocabulary restricted to 3 tokens and 9 beams,
//! a 2-step search is exhaustive, so its answer must be the best of all 9 continuations scored
//! by an independent teacher-forced computation.

#[path = "../../tests/support/fixtures.rs"]
mod fixtures;

use burn::backend::Flex;
use burn::prelude::*;
use fixtures::Manifest;
use glm_model::generate::{GenerationConfig, PromptBatch, generate};
use glm_model::loader::{LoadOptions, load_model};
use glm_model::{ChatGlmModel, Past};

type B = Flex;

fn log_softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max
        + row
            .iter()
            .map(|&x| (x as f64 - max).exp())
            .sum::<f64>()
            .ln();
    row.iter().map(|&x| x as f64 - lse).collect()
}

/// Log-probability of `tokens` after prompt `p` of `prompts` (restricted to the first `v` ids).
fn score(
    model: &ChatGlmModel<B>,
    prompts: &PromptBatch,
    p: usize,
    tokens: &[u32],
    v: usize,
) -> f64 {
    let dev = Default::default();
    let l = prompts.ids[0].len();
    let ids: Vec<i64> = prompts.ids[p].iter().map(|&t| t as i64).collect();
    let mut mask_row: Vec<bool> = prompts.mask[(p * l + l - 1) * l..(p * l + l) * l].to_vec();
    let mut pos = [
        prompts.positions[p * 2 * l + l - 1],
        prompts.positions[p * 2 * l + 2 * l - 1],
    ];
    let mut out = model.forward(
        Tensor::from_data(TensorData::new(ids, [1, l]), &dev),
        Tensor::from_data(
            TensorData::new(
                prompts.positions[p * 2 * l..(p + 1) * 2 * l].to_vec(),
                [1, 2, l],
            ),
            &dev,
        ),
        Tensor::from_data(
            TensorData::new(
                prompts.mask[p * l * l..(p + 1) * l * l].to_vec(),
                [1, 1, l, l],
            ),
            &dev,
        ),
        None,
    );
    let mut total = 0.0;
    for &t in tokens {
        let s = out.logits.dims()[1];
        let row: Vec<f32> = out
            .logits
            .clone()
            .narrow(1, s - 1, 1)
            .into_data()
            .to_vec()
            .unwrap();
        total += log_softmax(&row[..v])[t as usize];
        mask_row.push(false);
        pos[1] += 1;
        let sk = mask_row.len();
        out = model.forward(
            Tensor::from_data(TensorData::new(vec![t as i64], [1, 1]), &dev),
            Tensor::from_data(TensorData::new(pos.to_vec(), [1, 2, 1]), &dev),
            Tensor::from_data(TensorData::new(mask_row.clone(), [1, 1, 1, sk]), &dev),
            Some(&Past {
                layers: out.presents,
                prefix_len: 0,
            }),
        );
    }
    total
}

#[test]
fn exhaustive_beam_search_finds_the_best_continuation() {
    let m = Manifest::load();
    let dir = m.path("model/config.json").parent().unwrap().to_path_buf();
    let model = load_model::<B>(&dir, &LoadOptions::default(), &Default::default())
        .unwrap()
        .0;
    let ids = m.npy("generate/input_ids.npy");
    let (b, l) = (ids.shape[0], ids.shape[1]);
    let raw = ids.i64();
    let prompts = PromptBatch {
        ids: (0..b)
            .map(|r| raw[r * l..(r + 1) * l].iter().map(|&x| x as u32).collect())
            .collect(),
        mask: m.npy("generate/attention_mask.npy").bool(),
        positions: m.npy("generate/position_ids.npy").i64(),
    };
    let v = 3;
    let mut cfg =
        GenerationConfig::greedy(l + 2, model.config.eos_token_id, model.config.pad_token_id);
    cfg.suppress_from = Some(v);
    cfg.num_beams = 9;
    let out = generate(&model, &prompts, None, &cfg, false, &mut |_| true).unwrap();
    for p in 0..b {
        let mut best = (f64::NEG_INFINITY, vec![]);
        for a in 0..v as u32 {
            for c in 0..v as u32 {
                let s = score(&model, &prompts, p, &[a, c], v);
                if s > best.0 {
                    best = (s, vec![a, c]);
                }
            }
        }
        assert_eq!(out.tokens[p][..2], best.1[..], "prompt {p}");
    }
    // num_beams = 1 is plain greedy.
    cfg.num_beams = 1;
    let greedy = generate(&model, &prompts, None, &cfg, false, &mut |_| true).unwrap();
    cfg.num_beams = 2;
    let again = generate(&model, &prompts, None, &cfg, false, &mut |_| true).unwrap();
    let again2 = generate(&model, &prompts, None, &cfg, false, &mut |_| true).unwrap();
    assert_eq!(again.tokens, again2.tokens, "deterministic");
    assert_eq!(greedy.tokens.len(), again.tokens.len());
}
