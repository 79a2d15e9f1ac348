//! What the two quant benchmarks share: the synthetic layers and activations they time, on any
//! backend (`qmatmul` on flex, `cube` on the GPU backend).
#![allow(dead_code)]

use std::hint::black_box;

use burn::tensor::backend::{Backend, BackendTypes};
use burn::tensor::{DType, Int, Tensor, TensorData};
use half::f16;

/// One quantized layer uploaded to a device.
pub struct Layer<B: Backend> {
    pub packed: Tensor<B, 2, Int>,
    pub scales: Tensor<B, 1>,
    pub bits: u8,
    /// Packed weight bytes (what a GEMV reads).
    pub bytes: usize,
}

/// A `[n, k]` layer of pseudo-random packed bytes (an LCG from `seed`, so copies differ) and
/// row scales of different magnitudes.
pub fn layer<B: Backend>(
    n: usize,
    k: usize,
    bits: u8,
    seed: u32,
    dev: &<B as BackendTypes>::Device,
) -> Layer<B> {
    let rb = k * bits as usize / 8;
    let mut s = seed;
    let packed: Vec<i8> = (0..n * rb)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 24) as i8
        })
        .collect();
    let scales: Vec<f16> = (0..n)
        .map(|i| f16::from_f32(1e-3 * (1 + i % 7) as f32))
        .collect();
    Layer {
        packed: Tensor::from_data(TensorData::new(packed, [n, rb]), (dev, DType::I8)),
        scales: Tensor::from_data(TensorData::new(scales, [n]), (dev, DType::F16)),
        bits,
        bytes: n * rb,
    }
}

/// The distinct copies of an `[n, k]` layer a GEMV cycles through: enough (`total` bytes or more
/// in all) that the weights come from memory, not cache, or one in quick mode. `shape` (the
/// shape's index) varies the seeds between shapes.
pub fn layer_copies<B: Backend>(
    n: usize,
    k: usize,
    bits: u8,
    shape: usize,
    quick: bool,
    total: usize,
    dev: &<B as BackendTypes>::Device,
) -> Vec<Layer<B>> {
    let copies = if quick {
        1
    } else {
        total.div_ceil(n * k * bits as usize / 8)
    };
    let seed = if bits == 4 { 7 } else { 11 } + shape as u32;
    (0..copies)
        .map(|c| layer(n, k, bits, seed + 100 * c as u32, dev))
        .collect()
}

/// Deterministic `[m, k]` f32 activations in [-0.75, 0.75].
pub fn act<B: Backend>(m: usize, k: usize, dev: &<B as BackendTypes>::Device) -> Tensor<B, 2> {
    let v: Vec<f32> = (0..m * k)
        .map(|i| ((i % 97) as f32 - 48.0) / 64.0)
        .collect();
    Tensor::from_data(TensorData::new(v, [m, k]), dev)
}

/// `x · Ŵᵀ` through the layer, result discarded.
pub fn run<B: quant::QuantBackend>(l: &Layer<B>, x: &Tensor<B, 2>) {
    black_box(quant::quant_linear(
        x.clone(),
        l.packed.clone(),
        l.scales.clone(),
        l.bits,
    ));
}

/// The median of per-round measurements.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Bytes a CPU benchmark streams so that they come from DRAM and not from the last-level cache:
/// 256 MiB, or four times the L3 where that is more. Some Xeons have a 300 MiB L3, which would
/// hold most of a 256 MiB working set (a 6B int4 model streams 2.8 GB per token).
pub fn host_stream_bytes() -> usize {
    (256usize << 20).max(4 * l3_bytes())
}

/// The L3 size Linux reports for CPU 0 (0 where it reports none).
fn l3_bytes() -> usize {
    let dir = std::path::Path::new("/sys/devices/system/cpu/cpu0/cache");
    let read = |p: std::path::PathBuf| std::fs::read_to_string(p).unwrap_or_default();
    (0..8)
        .map(|i| dir.join(format!("index{i}")))
        .filter(|d| read(d.join("level")).trim() == "3")
        .map(|d| {
            let size = read(d.join("size"));
            let size = size.trim();
            let (digits, unit) = size.split_at(size.trim_end_matches(['K', 'M', 'G']).len());
            let scale = match unit {
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                _ => 1,
            };
            digits.parse::<usize>().unwrap_or(0) * scale
        })
        .max()
        .unwrap_or(0)
}
