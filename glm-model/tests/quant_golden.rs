//! The int4 model against the reference (fixtures `model_quantized/`, `quant/`): THUDM's
//! pre-quantized layout loads from `.bin` and safetensors, quantizing the fp16 checkpoint on load
//! gives the same model, and logits/loss match the reference's quantized forward.

#[path = "../../tests/support/backend.rs"]
mod backend;
#[path = "../../tests/support/fixtures.rs"]
mod fixtures;

use burn::backend::Autodiff;
use burn::prelude::*;
use fixtures::{Manifest, assert_close};
use glm_model::io::CheckpointFormat;
use glm_model::linear::Linear;
use glm_model::loader::{LoadOptions, load_model};
use glm_model::{ChatGlmModel, causal_lm_loss, labels_tensor};

type B = backend::TestBackend;

fn rows(v: &[i64], b: usize) -> Vec<Vec<u32>> {
    let s = v.len() / b;
    (0..b)
        .map(|r| v[r * s..(r + 1) * s].iter().map(|&x| x as u32).collect())
        .collect()
}

fn check_logits(m: &Manifest, model: &ChatGlmModel<B>, what: &str) {
    let dev = Default::default();
    let ids = m.npy("forward/input_ids.npy");
    let b = ids.shape[0];
    let out = model
        .forward_rows(&rows(&ids.i64(), b), None, &dev)
        .unwrap();
    let got: Vec<f32> = out.logits.clone().into_data().to_vec().unwrap();
    assert_close(
        &format!("{what} logits"),
        &got,
        &m.npy("quant/logits.npy").f32(),
        m.entry("quant/logits.npy").tol(),
    );
    let labels = m.npy("forward/labels.npy").i64();
    let s = labels.len() / b;
    let label_rows: Vec<Vec<i64>> = (0..b)
        .map(|r| labels[r * s..(r + 1) * s].to_vec())
        .collect();
    let loss: Vec<f32> = causal_lm_loss(out.logits, labels_tensor::<B>(&label_rows, &dev))
        .into_data()
        .to_vec()
        .unwrap();
    assert_close(
        &format!("{what} loss"),
        &loss,
        &m.npy("quant/loss.npy").f32(),
        m.entry("quant/loss.npy").tol(),
    );
}

#[test]
fn prequantized_checkpoint_matches_reference_logits() {
    let m = Manifest::load();
    let dir = m
        .path("model_quantized/config.json")
        .parent()
        .unwrap()
        .to_path_buf();
    for f in [CheckpointFormat::TorchBin, CheckpointFormat::Safetensors] {
        let (model, _) = load_model::<B>(
            &dir,
            &LoadOptions {
                format: Some(f),
                ..Default::default()
            },
            &Default::default(),
        )
        .unwrap();
        assert_eq!(model.config.quantization_bit, Some(4));
        for layer in &model.layers {
            for lin in [
                &layer.attention.query_key_value,
                &layer.attention.dense,
                &layer.mlp.dense_h_to_4h,
                &layer.mlp.dense_4h_to_h,
            ] {
                assert!(
                    matches!(lin, Linear::Quantized(q) if q.bits == 4),
                    "every block linear is int4"
                );
            }
        }
        check_logits(&m, &model, &format!("pre-quantized ({f})"));
    }
}

#[test]
fn quantize_on_load_matches_reference_logits() {
    let m = Manifest::load();
    let dir = m.path("model/config.json").parent().unwrap().to_path_buf();
    let (model, _) = load_model::<B>(
        &dir,
        &LoadOptions {
            quantization_bit: Some(4),
            ..Default::default()
        },
        &Default::default(),
    )
    .unwrap();
    check_logits(&m, &model, "quantized on load");
}

#[test]
fn asking_other_bits_of_a_prequantized_checkpoint_is_refused() {
    let m = Manifest::load();
    let dir = m
        .path("model_quantized/config.json")
        .parent()
        .unwrap()
        .to_path_buf();
    let err = load_model::<B>(
        &dir,
        &LoadOptions {
            quantization_bit: Some(8),
            ..Default::default()
        },
        &Default::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("int4") && err.to_string().contains("int8"),
        "{err}"
    );
}

#[test]
fn gradient_reaches_the_input_through_the_int4_model() {
    let m = Manifest::load();
    let dir = m
        .path("model_quantized/config.json")
        .parent()
        .unwrap()
        .to_path_buf();
    let dev = Default::default();
    let (model, _) = load_model::<Autodiff<B>>(&dir, &LoadOptions::default(), &dev).unwrap();
    let model = model.no_grad();
    let ids = m.npy("forward/input_ids.npy");
    let b = ids.shape[0];
    let r = rows(&ids.i64(), b);
    let inputs = glm_model::masks::derive_inputs(&r, &model.config).unwrap();
    let x = model.embed(glm_model::ids_tensor(&r, &dev)).require_grad();
    let ctx = model.layer_context(
        inputs.position_tensor(&dev),
        inputs.mask_tensor(&dev),
        0,
        inputs.seq + 1,
    );
    let mut h = x.clone();
    for layer in &model.layers {
        h = layer.forward(h, &ctx, None).0;
    }
    let grads = model.head(h).sum().backward();
    let g: Vec<f32> = x
        .grad(&grads)
        .expect("input gradient")
        .into_data()
        .to_vec()
        .unwrap();
    assert!(g.iter().all(|v| v.is_finite()) && g.iter().any(|&v| v != 0.0));
}
