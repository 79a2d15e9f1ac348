//! Golden tests of P-Tuning v2 against the Python reference (fixtures `ptuning/`, `generate/`):
//! prefix keys/values, logits and loss with the prefix, the prefix gradient through the frozen
//! model, greedy generation with the prefix, and the original's checkpoint-3.

#[path = "../../tests/support/fixtures.rs"]
mod fixtures;

use burn::backend::{Autodiff, Flex};
use burn::module::Param;
use burn::prelude::*;
use burn::tensor::DType;
use fixtures::{Manifest, assert_close};
use glm_model::generate::{GenerationConfig, PromptBatch, generate};
use glm_model::loader::{LoadOptions, load_model};
use glm_model::{ChatGlmModel, causal_lm_loss, labels_tensor};
use prefix_encoder::checkpoint;
use prefix_encoder::{PrefixConfig, PrefixEncoder};

type B = Flex;
type AD = Autodiff<Flex>;

fn model_dir(m: &Manifest) -> std::path::PathBuf {
    m.path("model/config.json").parent().unwrap().to_path_buf()
}

fn prefix_from_init<Bk: Backend>(
    m: &Manifest,
    base: &glm_model::ChatGlmConfig,
    dev: &Bk::Device,
) -> PrefixEncoder<Bk> {
    let init = m.safetensors_f32("ptuning/prefix_init.safetensors");
    let (shape, values) = &init["transformer.prefix_encoder.embedding.weight"];
    let cfg = PrefixConfig::for_model(base, shape[0], false);
    let mut enc = cfg.init::<Bk>(0, dev);
    enc.embedding = Param::from_tensor(Tensor::from_data(
        TensorData::new(values.clone(), [shape[0], shape[1]]),
        (dev, DType::F32),
    ));
    enc
}

fn rows(v: &[i64], b: usize) -> Vec<Vec<u32>> {
    let s = v.len() / b;
    (0..b)
        .map(|r| v[r * s..(r + 1) * s].iter().map(|&x| x as u32).collect())
        .collect()
}

fn label_rows(v: &[i64], b: usize) -> Vec<Vec<i64>> {
    let s = v.len() / b;
    (0..b).map(|r| v[r * s..(r + 1) * s].to_vec()).collect()
}

fn vec_of<Bk: Backend, const D: usize>(t: Tensor<Bk, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

#[test]
fn prefix_past_key_values_match_reference_order() {
    let m = Manifest::load();
    let dev = Default::default();
    let model: ChatGlmModel<B> = load_model(&model_dir(&m), &LoadOptions::default(), &dev)
        .unwrap()
        .0;
    let enc = prefix_from_init::<B>(&m, &model.config, &dev);
    let past = enc.past_key_values(1, DType::F32, false);
    // want: [L, 2, P, nh, hd]; ours per layer [B=1, nh, P, hd]
    let mut got = Vec::new();
    for kv in &past.layers {
        for t in [&kv.key, &kv.value] {
            got.extend(vec_of(t.clone().swap_dims(1, 2)));
        }
    }
    let e = m.entry("ptuning/prefix_past_key_values.npy");
    assert_close(
        "prefix kv",
        &got,
        &m.npy("ptuning/prefix_past_key_values.npy").f32(),
        e.tol(),
    );
}

#[test]
fn logits_loss_and_gradient_with_prefix() {
    let m = Manifest::load();
    let dev = Default::default();
    let model: ChatGlmModel<AD> = load_model(&model_dir(&m), &LoadOptions::default(), &dev)
        .unwrap()
        .0;
    let model = model.no_grad();
    let enc = prefix_from_init::<AD>(&m, &model.config, &dev);
    let ids = m.npy("forward/input_ids.npy");
    let b = ids.shape[0];
    let rows = rows(&ids.i64(), b);
    let past = enc.past_key_values(b, DType::F32, false);
    let out = model.forward_rows(&rows, Some(&past), &dev).unwrap();
    assert_close(
        "logits",
        &vec_of(out.logits.clone()),
        &m.npy("ptuning/logits.npy").f32(),
        m.entry("ptuning/logits.npy").tol(),
    );
    let labels = label_rows(&m.npy("forward/labels.npy").i64(), b);
    let loss = causal_lm_loss(out.logits, labels_tensor::<AD>(&labels, &dev));
    assert_close(
        "loss",
        &vec_of(loss.clone()),
        &m.npy("ptuning/loss.npy").f32(),
        m.entry("ptuning/loss.npy").tol(),
    );
    let grads = loss.backward();
    let g = enc
        .embedding
        .val()
        .grad(&grads)
        .expect("prefix has a gradient");
    let want = m.safetensors_f32("ptuning/prefix_grad.safetensors");
    let (_, want) = &want["transformer.prefix_encoder.embedding.weight"];
    assert_close(
        "prefix grad",
        &vec_of(g),
        want,
        m.entry("ptuning/prefix_grad.safetensors").tol(),
    );
    // The frozen base receives no gradient.
    assert!(model.word_embeddings.weight.val().grad(&grads).is_none());
    match &model.layers[0].attention.query_key_value {
        glm_model::linear::Linear::Dense(d) => assert!(d.weight.val().grad(&grads).is_none()),
        glm_model::linear::Linear::Quantized(_) => unreachable!("fp16 checkpoint loads dense"),
    }
}

#[test]
fn greedy_generation_with_prefix_matches_reference() {
    let m = Manifest::load();
    let dev = Default::default();
    let dir = model_dir(&m);
    let model: ChatGlmModel<B> = load_model(&dir, &LoadOptions::default(), &dev).unwrap().0;
    let ck = m
        .path("ptuning/train/checkpoint-3/pytorch_model.bin")
        .parent()
        .unwrap()
        .to_path_buf();
    let tmp = tempfile::tempdir().unwrap();
    // The reference Trainer's checkpoint has only pytorch_model.bin; give it the config.json the
    // original writes (base config + pre_seq_len) so the self-describing loader can read it.
    std::fs::copy(
        ck.join("pytorch_model.bin"),
        tmp.path().join("pytorch_model.bin"),
    )
    .unwrap();
    let mut cfg = model.config.clone();
    cfg.pre_seq_len = Some(m.raw["pre_seq_len"].as_u64().unwrap() as usize);
    cfg.prefix_projection = Some(false);
    std::fs::write(
        tmp.path().join("config.json"),
        serde_json::to_string(&cfg.to_json_value()).unwrap(),
    )
    .unwrap();
    let (enc, info) = checkpoint::load::<B>(tmp.path(), &model.config, None, &dev).unwrap();
    assert_eq!(info.pre_seq_len, 4);
    let ids = m.npy("generate/input_ids.npy");
    let (b, l) = (ids.shape[0], ids.shape[1]);
    let prompts = PromptBatch {
        ids: rows(&ids.i64(), b),
        mask: m.npy("generate/attention_mask.npy").bool(),
        positions: m.npy("generate/position_ids.npy").i64(),
    };
    let want = m.npy("generate/prefix_new_tokens.npy");
    let past = enc.past_key_values(b, DType::F32, false);
    let cfg = GenerationConfig::greedy(
        l + want.shape[1],
        model.config.eos_token_id,
        model.config.pad_token_id,
    );
    let out = generate(&model, &prompts, Some(&past), &cfg, true, &mut |_| true).unwrap();
    let got: Vec<i64> = out.tokens.iter().flatten().map(|&t| t as i64).collect();
    assert_eq!(got, want.i64());
    assert_close(
        "step logits",
        &out.step_logits.concat(),
        &m.npy("generate/prefix_step_logits.npy").f32(),
        m.entry("generate/prefix_step_logits.npy").tol(),
    );
}

#[test]
fn checkpoint_round_trip_and_python_layout() {
    let m = Manifest::load();
    let dev = Default::default();
    let base = glm_model::ChatGlmConfig::from_path(&m.path("model/config.json")).unwrap();
    for projection in [false, true] {
        let cfg = PrefixConfig::for_model(&base, 4, projection);
        let enc = cfg.init::<B>(7, &dev);
        let tmp = tempfile::tempdir().unwrap();
        checkpoint::save(
            tmp.path(),
            &enc,
            &base,
            &checkpoint::SaveMeta {
                quantization_bit: Some(4),
                tokenizer_fingerprint: Some("abc".into()),
            },
        )
        .unwrap();
        for f in ["pytorch_model.bin", "model.safetensors", "config.json"] {
            assert!(tmp.path().join(f).exists(), "{f}");
        }
        let info = checkpoint::read_info(tmp.path()).unwrap();
        assert_eq!(
            (
                info.pre_seq_len,
                info.prefix_projection,
                info.quantization_bit
            ),
            (4, projection, Some(4))
        );
        assert_eq!(
            info.base_fingerprint.as_deref(),
            Some(prefix_encoder::base_fingerprint(&base).as_str())
        );
        let (back, _) =
            checkpoint::load::<B>(tmp.path(), &base, Some((4, projection)), &dev).unwrap();
        assert_eq!(vec_of(back.rows()), vec_of(enc.rows()));
        // Both weight files hold the same tensors under the original's keys.
        for fmt in [
            glm_model::io::CheckpointFormat::TorchBin,
            glm_model::io::CheckpointFormat::Safetensors,
        ] {
            let ck = glm_model::io::CheckpointDir::open_format(tmp.path(), fmt).unwrap();
            let mut names: Vec<_> = ck.tensors().map(|t| t.name.clone()).collect();
            names.sort();
            let mut want: Vec<String> = cfg
                .parameter_shapes()
                .iter()
                .map(|(n, _)| format!("transformer.prefix_encoder.{n}"))
                .collect();
            want.sort();
            assert_eq!(names, want);
        }
    }
}

#[test]
fn mismatched_prefix_is_refused_with_both_values() {
    let m = Manifest::load();
    let dev = Default::default();
    let base = glm_model::ChatGlmConfig::from_path(&m.path("model/config.json")).unwrap();
    let enc = PrefixConfig::for_model(&base, 4, false).init::<B>(1, &dev);
    let tmp = tempfile::tempdir().unwrap();
    checkpoint::save(tmp.path(), &enc, &base, &Default::default()).unwrap();
    let err = checkpoint::load::<B>(tmp.path(), &base, Some((8, false)), &dev)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("pre_seq_len = 4") && err.contains("pre_seq_len = 8"),
        "{err}"
    );
    let err = checkpoint::load::<B>(tmp.path(), &base, Some((4, true)), &dev)
        .unwrap_err()
        .to_string();
    assert!(err.contains("prefix_projection"), "{err}");
    let mut other = base.clone();
    other.num_layers += 1;
    let err = checkpoint::load::<B>(tmp.path(), &other, None, &dev)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("num_layers = 3") && err.contains("num_layers = 4"),
        "{err}"
    );
}

#[test]
fn reads_the_original_trainers_checkpoint_values() {
    let m = Manifest::load();
    let ck = glm_model::io::CheckpointDir::open(
        m.path("ptuning/train/checkpoint-3/pytorch_model.bin")
            .parent()
            .unwrap(),
    )
    .unwrap();
    let got = ck
        .read_f32("transformer.prefix_encoder.embedding.weight")
        .unwrap()
        .1;
    let want = m.safetensors_f32("ptuning/train/params_after_step3.safetensors");
    let (_, want) = want.values().next().unwrap();
    assert_eq!(&got, want);
}
