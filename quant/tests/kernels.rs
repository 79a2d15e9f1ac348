//! Fast kernels (scalar, AVX2 and AVX-512, each one this CPU supports; GEMV and tiled GEMM,
//! forward and input gradient) against the reference path (whole-matrix dequantization + naive f64
//! matmul) on random shapes: odd row counts, M = 1..9, 17 and 32 (GEMV, in groups of 8 above 8
//! rows) and 37 (tiled GEMM), K not a multiple of the SIMD block, int4 and int8.
//! Also the packed round trip and the backend entry points with f16/bf16 activations.

mod common;

use burn::backend::Flex;
use burn::tensor::{DType, Int, Tensor, TensorData};
use common::{Rng, assert_dot_close, random_quantized};
use half::f16;
use quant::kernels::{self, Isa, PackedMatrix};
use quant::{QuantizedWeight, format};

/// Shapes (n, k): odd n, k below/above/not a multiple of 32, and large enough for the parallel
/// paths and several GEMM tiles (k > 1024).
const SHAPES: &[(usize, usize)] = &[
    (1, 2),
    (3, 30),
    (7, 34),
    (33, 64),
    (65, 98),
    (130, 2050),
    (300, 512),
];

#[test]
fn packed_round_trip_int4_and_int8() {
    let mut rng = Rng::new(1);
    for bits in [4u8, 8] {
        let qmax = (1i32 << (bits - 1)) - 1;
        let (n, k) = (5, 18);
        let q: Vec<i8> = (0..n * k)
            .map(|_| ((rng.next_u32() % (2 * qmax + 1) as u32) as i32 - qmax) as i8)
            .collect();
        let mut packed = vec![0i8; n * k * bits as usize / 8];
        for r in 0..n {
            let rb = k * bits as usize / 8;
            format::pack_row(
                &q[r * k..(r + 1) * k],
                bits,
                &mut packed[r * rb..(r + 1) * rb],
            );
        }
        if bits == 4 {
            // Nibble order: even column in the high nibble.
            assert_eq!(packed[0] as u8, ((q[0] as u8) << 4) | (q[1] as u8 & 0xF));
        }
        let w =
            QuantizedWeight::from_packed(packed.clone(), vec![f16::ONE; n], n, k, bits).unwrap();
        assert_eq!(w.unpack(), q, "int{bits} unpack(pack(q)) == q");
        assert!(
            q.iter().any(|&v| v < 0),
            "test data includes negative values"
        );
        // Dequantize with scale 1 is the integer itself.
        assert_eq!(
            w.dequantize_f32(),
            q.iter().map(|&v| v as f32).collect::<Vec<_>>()
        );
        // quantize(dequantize(q)) gives back the same bytes when a row reaches ±qmax.
        let mut wf = w.dequantize_f16();
        for r in 0..n {
            wf[r * k] = f16::from_f32(qmax as f32);
        }
        let again = QuantizedWeight::quantize(&wf, n, k, bits).unwrap();
        let mut q2 = q.clone();
        for r in 0..n {
            q2[r * k] = qmax as i8;
        }
        assert_eq!(again.unpack(), q2, "int{bits} quantize of exact integers");
    }
}

#[test]
fn forward_kernels_match_reference() {
    let mut rng = Rng::new(2);
    for bits in [4u8, 8] {
        for &(n, k) in SHAPES {
            let w = random_quantized(&mut rng, n, k, bits);
            let pm = PackedMatrix::new(bits, n, k, &w.packed, &w.scales).unwrap();
            // 9..=32 rows run the GEMV in groups of 8; 37 the tiled GEMM.
            for m in (1..=9).chain([17, 32, 37]) {
                let x = rng.vec(m * k);
                let want = kernels::reference_linear(&x, m, &pm);
                let wd = w.dequantize_f32();
                for isa in Isa::available() {
                    let mut y = vec![f32::NAN; m * n];
                    kernels::quant_linear_with(isa, &x, m, &pm, &mut y);
                    assert_dot_close(
                        &format!("fwd int{bits} {isa:?} m={m} n={n} k={k}"),
                        &y,
                        &want,
                        &x,
                        &wd,
                        m,
                        n,
                        k,
                    );
                }
            }
        }
    }
}

#[test]
fn odd_k_int8_and_gradient_kernels_match_reference() {
    let mut rng = Rng::new(3);
    let shapes: Vec<(usize, usize, u8)> = SHAPES
        .iter()
        .map(|&(n, k)| (n, k, 4))
        .chain([(9, 33, 8), (31, 67, 8), (130, 2051, 8)])
        .collect();
    for (n, k, bits) in shapes {
        let w = random_quantized(&mut rng, n, k, bits);
        let pm = PackedMatrix::new(bits, n, k, &w.packed, &w.scales).unwrap();
        let wd = w.dequantize_f32();
        // transpose of the weight for the gradient's error bound
        let mut wt = vec![0f32; n * k];
        for r in 0..n {
            for c in 0..k {
                wt[c * n + r] = wd[r * k + c];
            }
        }
        for m in [1usize, 2, 3, 5, 8, 9, 23] {
            let x = rng.vec(m * k);
            let want = kernels::reference_linear(&x, m, &pm);
            let gy = rng.vec(m * n);
            let want_g = kernels::reference_linear_grad(&gy, m, &pm);
            for isa in Isa::available() {
                let mut y = vec![f32::NAN; m * n];
                kernels::quant_linear_with(isa, &x, m, &pm, &mut y);
                assert_dot_close(
                    &format!("fwd int{bits} {isa:?} m={m} n={n} k={k}"),
                    &y,
                    &want,
                    &x,
                    &wd,
                    m,
                    n,
                    k,
                );
                let mut gx = vec![f32::NAN; m * k];
                kernels::quant_linear_grad_with(isa, &gy, m, &pm, &mut gx);
                assert_dot_close(
                    &format!("grad int{bits} {isa:?} m={m} n={n} k={k}"),
                    &gx,
                    &want_g,
                    &gy,
                    &wt,
                    m,
                    k,
                    n,
                );
            }
        }
    }
}

#[test]
fn backend_handles_f16_and_bf16_activations() {
    let mut rng = Rng::new(4);
    let dev = Default::default();
    let (m, n, k) = (3, 45, 66);
    for bits in [4u8, 8] {
        let w = random_quantized(&mut rng, n, k, bits);
        let pm = PackedMatrix::new(bits, n, k, &w.packed, &w.scales).unwrap();
        let packed = Tensor::<Flex, 2, Int>::from_data(
            TensorData::new(w.packed.clone(), w.packed_shape()),
            (&dev, DType::I8),
        );
        let scales = Tensor::<Flex, 1>::from_data(
            TensorData::new(w.scales.clone(), [n]),
            (&dev, DType::F16),
        );
        for (dtype, m_rows) in [(DType::F16, m), (DType::BF16, m), (DType::F16, 12)] {
            let x32 = rng.vec(m_rows * k);
            let x = Tensor::<Flex, 2>::from_data(TensorData::new(x32.clone(), [m_rows, k]), &dev)
                .cast(dtype);
            // The reference sees the activations after rounding to the low-precision dtype.
            let xr = x
                .clone()
                .cast(DType::F32)
                .into_data()
                .to_vec::<f32>()
                .unwrap();
            let y = quant::quant_linear(x, packed.clone(), scales.clone(), bits);
            assert_eq!(y.dtype(), dtype, "output keeps the activation dtype");
            let y = y.cast(DType::F32).into_data().to_vec::<f32>().unwrap();
            let want = kernels::reference_linear(&xr, m_rows, &pm);
            let rel = if dtype == DType::F16 { 1e-3 } else { 8e-3 };
            for (g, w) in y.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= rel * w.abs() + 1e-3,
                    "{dtype:?} int{bits}: got {g} want {w}"
                );
            }
        }
    }
}

#[test]
fn generic_fallback_matches_flex_kernels() {
    // The generic path (burn tensor ops only) is what the CUDA backend's frozen ops and any other
    // backend use; run it on Flex against the fast kernels.
    let mut rng = Rng::new(5);
    let dev = Default::default();
    for bits in [4u8, 8] {
        let (m, n, k) = (7, 37, 70);
        let w = random_quantized(&mut rng, n, k, bits);
        let packed = Tensor::<Flex, 2, Int>::from_data(
            TensorData::new(w.packed.clone(), w.packed_shape()),
            (&dev, DType::I8),
        );
        let scales = Tensor::<Flex, 1>::from_data(
            TensorData::new(w.scales.clone(), [n]),
            (&dev, DType::F16),
        );
        let x = Tensor::<Flex, 2>::from_data(TensorData::new(rng.vec(m * k), [m, k]), &dev);
        let gy = Tensor::<Flex, 2>::from_data(TensorData::new(rng.vec(m * n), [m, n]), &dev);
        let p = || packed.clone().into_primitive();
        let s = || scales.clone().into_primitive().tensor();
        let fast = <Flex as quant::QuantBackend>::quant_linear(
            x.clone().into_primitive().tensor(),
            p(),
            s(),
            bits,
        );
        let slow = quant::generic::quant_linear::<Flex>(
            x.clone().into_primitive().tensor(),
            p(),
            s(),
            bits,
        );
        common::assert_tensors_close("generic quant_linear", fast, slow, 1e-5);
        let fast = <Flex as quant::QuantBackend>::quant_linear_grad_input(
            gy.clone().into_primitive().tensor(),
            p(),
            s(),
            bits,
        );
        let slow = quant::generic::quant_linear_grad_input::<Flex>(
            gy.clone().into_primitive().tensor(),
            p(),
            s(),
            bits,
        );
        common::assert_tensors_close("generic quant_linear_grad_input", fast, slow, 1e-5);
        // The generic dequantization itself is exact.
        let wd = quant::generic::dequantize_rows(
            &packed,
            &scales,
            bits,
            0..n,
            burn::tensor::FloatDType::F32,
        );
        assert_eq!(
            wd.into_data().to_vec::<f32>().unwrap(),
            w.dequantize_f32(),
            "generic dequantize_rows int{bits}"
        );
        // Frozen dense with a dtype mismatch (f16 weight, f32 activations) goes through row chunks.
        let wf = Tensor::<Flex, 2>::from_data(TensorData::new(rng.vec(n * k), [n, k]), &dev)
            .cast(DType::F16);
        let fast = <Flex as quant::QuantBackend>::frozen_linear(
            x.clone().into_primitive().tensor(),
            wf.clone().into_primitive().tensor(),
        );
        let slow = quant::generic::frozen_linear::<Flex>(
            x.clone().into_primitive().tensor(),
            wf.clone().into_primitive().tensor(),
        );
        common::assert_tensors_close("generic frozen_linear", fast, slow, 1e-5);
        let fast = <Flex as quant::QuantBackend>::frozen_linear_grad_input(
            gy.clone().into_primitive().tensor(),
            wf.clone().into_primitive().tensor(),
        );
        let slow = quant::generic::frozen_linear_grad_input::<Flex>(
            gy.clone().into_primitive().tensor(),
            wf.into_primitive().tensor(),
        );
        common::assert_tensors_close("generic frozen_linear_grad_input", fast, slow, 1e-5);
    }
}

#[test]
fn decoding_is_exact_in_every_path() {
    // One-hot activations pick single weight columns (rows for the gradient): every product but one
    // is an exact zero, so each kernel must reproduce f16(scale · q) bit for bit, tails included.
    let mut rng = Rng::new(6);
    for bits in [4u8, 8] {
        for &(n, k) in &[(5usize, 70usize), (70, 2050), (9, 34), (6, 96), (4, 4160)] {
            let w = random_quantized(&mut rng, n, k, bits);
            let pm = PackedMatrix::new(bits, n, k, &w.packed, &w.scales).unwrap();
            let wd = w.dequantize_f32();
            for m in [1usize, 3, 11, 40] {
                let cols: Vec<usize> = (0..m).map(|i| (i * 31 + k - 1) % k).collect();
                let rows: Vec<usize> = (0..m).map(|i| (i * 13 + n - 1) % n).collect();
                let mut x = vec![0f32; m * k];
                let mut gy = vec![0f32; m * n];
                for i in 0..m {
                    x[i * k + cols[i]] = 1.0;
                    gy[i * n + rows[i]] = 1.0;
                }
                for isa in Isa::available() {
                    let mut y = vec![f32::NAN; m * n];
                    kernels::quant_linear_with(isa, &x, m, &pm, &mut y);
                    let mut gx = vec![f32::NAN; m * k];
                    kernels::quant_linear_grad_with(isa, &gy, m, &pm, &mut gx);
                    for i in 0..m {
                        for j in 0..n {
                            assert_eq!(
                                y[i * n + j],
                                wd[j * k + cols[i]],
                                "fwd int{bits} {isa:?} m={m} [{i},{j}]"
                            );
                        }
                        assert_eq!(
                            &gx[i * k..(i + 1) * k],
                            &wd[rows[i] * k..(rows[i] + 1) * k],
                            "grad int{bits} {isa:?} m={m} row {i}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn dense_half_gemv_matches_reference() {
    // Up to 32 rows over f16/bf16 weights take the dense GEMV (in groups of 8); 33 the tiled GEMM.
    // Shapes: k not a multiple of 8, odd n, one large enough for the parallel split, and a view
    // whose rows are strided (a column slice of a wider matrix, as a sliced tied head would be).
    use half::bf16;
    use kernels::{DenseMatrix, DenseStorage};
    let mut rng = Rng::new(21);
    for &(n, k, pad) in &[
        (1usize, 3usize, 0usize),
        (7, 37, 0),
        (33, 64, 5),
        (300, 517, 3),
    ] {
        let stride = k + pad;
        let raw = rng.vec(n * stride);
        let w16: Vec<f16> = raw.iter().map(|&v| f16::from_f32(v)).collect();
        let wb16: Vec<bf16> = raw.iter().map(|&v| bf16::from_f32(v)).collect();
        for (name, data, widened) in [
            (
                "f16",
                DenseStorage::F16(&w16),
                w16.iter().map(|v| v.to_f32()).collect::<Vec<f32>>(),
            ),
            (
                "bf16",
                DenseStorage::BF16(&wb16),
                wb16.iter().map(|v| v.to_f32()).collect::<Vec<f32>>(),
            ),
        ] {
            // The [n, k] view starts at column `pad` of each stored row.
            let view = DenseMatrix {
                data,
                n,
                k,
                offset: pad,
                row_stride: stride as isize,
                col_stride: 1,
            };
            let wk: Vec<f32> = (0..n)
                .flat_map(|r| widened[r * stride + pad..r * stride + pad + k].to_vec())
                .collect();
            for m in [1usize, 2, 3, 8, 9, 33] {
                let x = rng.vec(m * k);
                let want: Vec<f32> = (0..m * n)
                    .map(|e| {
                        let (i, j) = (e / n, e % n);
                        (0..k)
                            .map(|c| x[i * k + c] as f64 * wk[j * k + c] as f64)
                            .sum::<f64>() as f32
                    })
                    .collect();
                let mut y = vec![f32::NAN; m * n];
                kernels::dense_linear(&x, m, &view, &mut y);
                assert_dot_close(
                    &format!("dense {name} n={n} k={k} m={m}"),
                    &y,
                    &want,
                    &x,
                    &wk,
                    m,
                    n,
                    k,
                );
                if name == "f16" {
                    // f16 activations: widened, the same GEMV, rounded back to f16.
                    let x16: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
                    let xr: Vec<f32> = x16.iter().map(|v| v.to_f32()).collect();
                    let mut y16 = vec![f16::NAN; m * n];
                    kernels::dense_linear_f16(&x16, m, &view, &mut y16);
                    for (e, got) in y16.iter().enumerate() {
                        let (i, j) = (e / n, e % n);
                        let exact: f64 = (0..k)
                            .map(|c| xr[i * k + c] as f64 * wk[j * k + c] as f64)
                            .sum();
                        let mag: f64 = (0..k)
                            .map(|c| (xr[i * k + c] as f64 * wk[j * k + c] as f64).abs())
                            .sum();
                        assert!(
                            (got.to_f64() - exact).abs() <= 2e-3 * mag + 1e-3,
                            "dense f16 x f16 n={n} k={k} m={m} [{i}, {j}]: {got} vs {exact}"
                        );
                    }
                }
            }
        }
    }
}
