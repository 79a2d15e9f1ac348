//! Resident memory of a forward + backward through a frozen 4096-wide multi-layer model with f16
//! weights and f32 activations (the P-Tuning v2 situation): autodiff must not keep an f32 copy of
//! any frozen weight (the frozen-linear op keeps only the f16 handle), so the process grows by
//! the activations, not by the 2× weight size an f32 cast would add.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use burn::backend::{Autodiff, Flex};
use burn::module::{Module, ModuleMapper, Param};
use burn::prelude::*;
use burn::tensor::DType;
use glm_model::{ChatGlmConfig, ChatGlmModel, KvPair, Past, Precision};

type AD = Autodiff<Flex>;

/// Resident set size in bytes (Linux).
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Random f16 weights of the same shapes (N(0, 0.02); LayerNorm γ near 1 is irrelevant here).
struct RandomF16;
impl<B: Backend> ModuleMapper<B> for RandomF16 {
    fn map_float<const D: usize>(&mut self, p: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        p.map(|t| {
            let (shape, device) = (t.shape(), t.device());
            drop(t);
            Tensor::random(
                shape,
                burn::tensor::Distribution::Normal(0.0, 0.02),
                (&device, DType::F16),
            )
        })
    }
}

#[test]
fn frozen_f16_weights_are_not_kept_as_f32_copies_by_autodiff() {
    if !std::path::Path::new("/proc/self/statm").exists() {
        eprintln!("skipped: needs /proc/self/statm (Linux)");
        return;
    }
    let (h, layers) = (4096, 2);
    let mut cfg = ChatGlmConfig::with_shape(h, layers, 32, 4 * h, 256);
    (
        cfg.mask_token_id,
        cfg.gmask_token_id,
        cfg.bos_token_id,
        cfg.eos_token_id,
    ) = (250, 251, 252, 253);
    let dev = Default::default();
    // f32 activations over f16-stored frozen weights.
    let mut model = ChatGlmModel::<AD>::zeros(&cfg, Precision::Fp16, &dev)
        .map(&mut RandomF16)
        .no_grad();
    model.precision = Precision::Fp32;
    let weight_bytes = (layers * 12 * h * h * 2) as u64; // the compact (f16) block weights
    let (b, s, p) = (1, 64, 8);
    let past = Past {
        layers: (0..layers)
            .map(|_| {
                KvPair::new(
                    Tensor::<AD, 4>::random(
                        [b, 32, p, h / 32],
                        burn::tensor::Distribution::Default,
                        &dev,
                    )
                    .require_grad(),
                    Tensor::<AD, 4>::random(
                        [b, 32, p, h / 32],
                        burn::tensor::Distribution::Default,
                        &dev,
                    )
                    .require_grad(),
                )
            })
            .collect(),
        prefix_len: p,
    };
    let mut row: Vec<u32> = (0..s as u32 - 2).map(|i| i % 200).collect();
    row.extend([cfg.gmask_token_id, cfg.bos_token_id]);
    let before = rss();
    let peak = Arc::new(AtomicU64::new(before));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss(), Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        })
    };
    let out = model.forward_rows(&[row], Some(&past), &dev).unwrap();
    let grads = out.logits.sum().backward();
    let g = past.layers[0].key.grad(&grads).expect("prefix gradient");
    assert!(
        g.into_data()
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .any(|&x| x != 0.0)
    );
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let growth = peak.load(Ordering::Relaxed).saturating_sub(before);
    eprintln!(
        "f16 block weights {:.0} MB; RSS growth during forward+backward {:.0} MB (an f32 copy of the weights would add {:.0} MB)",
        weight_bytes as f64 / 1e6,
        growth as f64 / 1e6,
        2.0 * weight_bytes as f64 / 1e6
    );
    assert!(
        growth < weight_bytes / 2,
        "RSS grew by {growth} bytes, more than half the f16 weights ({weight_bytes})"
    );
}
