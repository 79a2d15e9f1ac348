//! Golden tests of the forward pass against the Python reference (fixtures `forward/`,
//! `generate/`): derived masks/positions, rotary tables, per-layer outputs, logits, loss, greedy
//! generation with the KV cache.

#[path = "../../tests/support/backend.rs"]
mod backend;
#[path = "../../tests/support/fixtures.rs"]
mod fixtures;

use burn::prelude::*;
use fixtures::{Manifest, assert_close};
use glm_model::generate::{GenerationConfig, PromptBatch, generate};
use glm_model::io::CheckpointFormat;
use glm_model::loader::{LoadOptions, load_model};
use glm_model::masks::derive_inputs;
use glm_model::rotary::Rotary;
use glm_model::{ChatGlmModel, causal_lm_loss, ids_tensor, labels_tensor};

type B = backend::TestBackend;

fn model(m: &Manifest) -> ChatGlmModel<B> {
    let dir = m.path("model/config.json").parent().unwrap().to_path_buf();
    load_model::<B>(&dir, &LoadOptions::default(), &Default::default())
        .unwrap()
        .0
}

fn rows_u32(v: &[i64], b: usize) -> Vec<Vec<u32>> {
    let s = v.len() / b;
    (0..b)
        .map(|r| v[r * s..(r + 1) * s].iter().map(|&x| x as u32).collect())
        .collect()
}

fn to_vec<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

#[test]
fn derived_masks_and_positions_are_exact() {
    let m = Manifest::load();
    let cfg = glm_model::ChatGlmConfig::from_path(&m.path("model/config.json")).unwrap();
    let ids = m.npy("forward/input_ids.npy");
    let rows = rows_u32(&ids.i64(), ids.shape[0]);
    let inputs = derive_inputs(&rows, &cfg).unwrap();
    assert_eq!(inputs.positions, m.npy("forward/position_ids.npy").i64());
    assert_eq!(inputs.mask, m.npy("forward/attention_mask.npy").bool());
}

#[test]
fn rotary_tables_match() {
    let m = Manifest::load();
    let inv = m.npy("forward/rotary_inv_freq.npy").f32();
    let r = Rotary::new(2 * inv.len(), false);
    assert_eq!(r.inv_freq(), inv.as_slice());
    let cos = m.npy("forward/rotary_cos_fp32.npy");
    let (c, s) = r.tables(cos.shape[0]);
    assert_close(
        "cos fp32",
        &c,
        &cos.f32(),
        m.entry("forward/rotary_cos_fp32.npy").tol(),
    );
    assert_close(
        "sin fp32",
        &s,
        &m.npy("forward/rotary_sin_fp32.npy").f32(),
        m.entry("forward/rotary_sin_fp32.npy").tol(),
    );
    // The f16 model's tables round t, the angle and cos/sin to f16: bit-exact.
    let rh = Rotary::new(2 * inv.len(), true);
    let (ch, sh) = rh.tables(cos.shape[0]);
    assert_eq!(ch, m.npy("forward/rotary_cos_fp16.npy").f32());
    assert_eq!(sh, m.npy("forward/rotary_sin_fp16.npy").f32());
}

#[test]
fn forward_layers_logits_and_loss_match() {
    let m = Manifest::load();
    let model = model(&m);
    let dev = Default::default();
    let ids = m.npy("forward/input_ids.npy");
    let b = ids.shape[0];
    let rows = rows_u32(&ids.i64(), b);
    let inputs = derive_inputs(&rows, &model.config).unwrap();
    let ctx = model.layer_context(
        inputs.position_tensor(&dev),
        inputs.mask_tensor(&dev),
        0,
        inputs.seq + 1,
    );
    let mut x = model.embed(ids_tensor::<B>(&rows, &dev));
    assert_close(
        "embeddings",
        &to_vec(x.clone()),
        &m.npy("forward/embeddings.npy").f32(),
        m.entry("forward/embeddings.npy").tol(),
    );
    let want_layers = m.npy("forward/layer_outputs.npy");
    let per_layer = want_layers.len() / want_layers.shape[0];
    let all = want_layers.f32();
    for (l, layer) in model.layers.iter().enumerate() {
        x = layer.forward(x, &ctx, None).0;
        assert_close(
            &format!("layer {l} output"),
            &to_vec(x.clone()),
            &all[l * per_layer..(l + 1) * per_layer],
            m.entry("forward/layer_outputs.npy").tol(),
        );
    }
    let logits = model.head(x);
    assert_close(
        "logits",
        &to_vec(logits.clone()),
        &m.npy("forward/logits.npy").f32(),
        m.entry("forward/logits.npy").tol(),
    );
    let labels = m.npy("forward/labels.npy").i64();
    let s = labels.len() / b;
    let label_rows: Vec<Vec<i64>> = (0..b)
        .map(|r| labels[r * s..(r + 1) * s].to_vec())
        .collect();
    let loss = causal_lm_loss(logits, labels_tensor::<B>(&label_rows, &dev));
    assert_close(
        "loss",
        &to_vec(loss),
        &m.npy("forward/loss.npy").f32(),
        m.entry("forward/loss.npy").tol(),
    );
}

#[test]
fn all_three_checkpoint_copies_give_identical_models() {
    let m = Manifest::load();
    let dir = m.path("model/config.json").parent().unwrap().to_path_buf();
    let dev = Default::default();
    let mut outs = Vec::new();
    for f in [
        CheckpointFormat::TorchBin,
        CheckpointFormat::TorchBinSharded,
        CheckpointFormat::Safetensors,
    ] {
        let (model, report) = load_model::<B>(
            &dir,
            &LoadOptions {
                format: Some(f),
                ..Default::default()
            },
            &dev,
        )
        .unwrap();
        assert_eq!(report.format, f);
        assert_eq!(report.lm_head_tied, Some(true));
        let ids = m.npy("forward/input_ids.npy");
        let rows = rows_u32(&ids.i64(), ids.shape[0]);
        outs.push(to_vec(
            model.forward_rows(&rows, None, &dev).unwrap().logits,
        ));
    }
    assert_eq!(outs[0], outs[1]);
    assert_eq!(outs[0], outs[2]);
}

#[test]
fn greedy_generation_matches_reference() {
    let m = Manifest::load();
    let model = model(&m);
    let ids = m.npy("generate/input_ids.npy");
    let (b, l) = (ids.shape[0], ids.shape[1]);
    let prompts = PromptBatch {
        ids: rows_u32(&ids.i64(), b),
        mask: m.npy("generate/attention_mask.npy").bool(),
        positions: m.npy("generate/position_ids.npy").i64(),
    };
    let want = m.npy("generate/no_prefix_new_tokens.npy");
    let steps = want.shape[1];
    let cfg = GenerationConfig::greedy(
        l + steps,
        model.config.eos_token_id,
        model.config.pad_token_id,
    );
    let out = generate(&model, &prompts, None, &cfg, true, &mut |_| true).unwrap();
    let got: Vec<i64> = out.tokens.iter().flatten().map(|&t| t as i64).collect();
    assert_eq!(got, want.i64(), "greedy tokens");
    let logits: Vec<f32> = out.step_logits.concat();
    assert_close(
        "step logits",
        &logits,
        &m.npy("generate/no_prefix_step_logits.npy").f32(),
        m.entry("generate/no_prefix_step_logits.npy").tol(),
    );
}
