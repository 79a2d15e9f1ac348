//! Memory behaviour under autodiff (its own test binary, one test, so that RSS readings are not
//! disturbed by other tests): the backward state of a quantized layer is the packed buffer itself
//! (a refcount), and a forward through several large int4 layers with a tracked input grows the
//! resident set by its activations plus far less than one dense f32 copy of a single layer — while the naive
//! "dequantize, then tracked matmul" does retain that copy (showing the measurement can fail).

mod common;

use std::sync::Arc;

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Tensor, TensorData};
use common::Rng;
use half::f16;
use quant::{QuantLinear, QuantizedWeight};

type AD = Autodiff<Flex>;

/// Resident set size in bytes (Linux `/proc/self/statm`).
fn rss() -> usize {
    let s = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: usize = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// References to the packed weight's storage (minus the one this call holds).
fn packed_refs(layer: &QuantLinear<AD>) -> usize {
    let prim = layer.weight.clone().into_primitive();
    Arc::strong_count(&prim.data_arc()) - 2
}

#[test]
fn autodiff_keeps_only_the_packed_handle() {
    const K: usize = 4096;
    const LAYERS: usize = 6;
    let dev = Default::default();
    let mut rng = Rng::new(20);
    let layers: Vec<QuantLinear<AD>> = (0..LAYERS)
        .map(|_| {
            // Random packed bytes are valid int4 data; quantizing 16 M weights would only slow the test.
            let packed: Vec<i8> = (0..K * K / 2).map(|_| rng.next_u32() as i8).collect();
            let scales: Vec<f16> = (0..K)
                .map(|_| f16::from_f32(1e-3 * (1.0 + rng.uniform())))
                .collect();
            let q = QuantizedWeight::from_packed(packed, scales, K, K, 4).unwrap();
            QuantLinear::from_quantized(&q, None, &dev).unwrap()
        })
        .collect();
    let dense_copy = K * K * 4;

    // 1. The saved state shares the packed buffer: one extra reference per forward, none after backward.
    let x =
        Tensor::<AD, 2>::from_data(TensorData::new(rng.vec(4 * K), [4, K]), &dev).require_grad();
    let before = packed_refs(&layers[0]);
    let y = layers[0].forward(x.clone());
    assert_eq!(
        packed_refs(&layers[0]),
        before + 1,
        "backward state holds the packed handle itself"
    );
    let g = y.sum().backward();
    assert_eq!(
        packed_refs(&layers[0]),
        before,
        "state released by backward"
    );
    assert!(x.grad(&g).is_some());

    // 2. RSS while the graph of LAYERS tracked forwards is alive.
    for rows in [4usize, 64] {
        let x = Tensor::<AD, 2>::from_data(TensorData::new(rng.vec(rows * K), [rows, K]), &dev)
            .require_grad();
        let base = rss();
        let mut h = x.clone();
        for l in &layers {
            h = l.forward(h).tanh();
        }
        let grown = rss().saturating_sub(base);
        // Legitimately retained: each layer's output and its tanh (f32 [rows, K]).
        let activations = 2 * LAYERS * rows * K * 4;
        assert!(
            grown < activations + dense_copy / 4,
            "{rows} rows: forward through {LAYERS} int4 layers grew RSS by {grown} bytes \
             (activations {activations}); one dense f32 copy is {dense_copy}"
        );
        let g = h.sum().backward();
        assert_eq!(x.grad(&g).unwrap().dims(), [rows, K]);
    }

    // 3. Control: dequantize-then-matmul keeps the f32 copy until backward.
    let x =
        Tensor::<AD, 2>::from_data(TensorData::new(rng.vec(4 * K), [4, K]), &dev).require_grad();
    let base = rss();
    let wq = layers[0].to_quantized().unwrap();
    let w = Tensor::<AD, 2>::from_data(TensorData::new(wq.dequantize_f32(), [K, K]), &dev);
    drop(wq);
    let y = x.clone().matmul(w.transpose());
    let grown = rss().saturating_sub(base);
    assert!(
        grown >= dense_copy * 9 / 10,
        "control: the naive path should retain a dense copy, grew only {grown}"
    );
    let _ = y.sum().backward();
}
