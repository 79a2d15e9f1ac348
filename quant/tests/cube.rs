//! The cubecl kernels ([`quant::cube`]) on a real cube backend — CUDA with `--features cuda`, Vulkan
//! (Mesa's lavapipe on a machine without a GPU) with `--features vulkan` — against the CPU reference
//! path: int4 and int8, odd row counts (GEMV rows 1..=8 and the chunked GEMM above), K not a
//! multiple of the thread or vector width, every load width, f32 and f16 activations, the input
//! gradient, autodiff through the op, the frozen dense linear, and bit-exact dequantization.
#![cfg(any(feature = "cuda", feature = "vulkan"))]

mod common;

use burn::backend::Autodiff;
use burn::tensor::backend::BackendTypes;
use burn::tensor::{DType, Int, Tensor, TensorData};
use common::{Rng, assert_dot_close, random_quantized};
use half::f16;
use quant::QuantizedWeight;
use quant::kernels::{self, PackedMatrix};

#[cfg(feature = "cuda")]
type Cube = burn::backend::Cuda;
#[cfg(all(feature = "vulkan", not(feature = "cuda")))]
type Cube = burn::backend::Vulkan;

#[cfg(feature = "cuda")]
fn device() -> <Cube as BackendTypes>::Device {
    Default::default()
}

#[cfg(all(feature = "vulkan", not(feature = "cuda")))]
fn device() -> <Cube as BackendTypes>::Device {
    Default::default()
}

/// (n, k): odd n, k below and above the kernels' per-thread block, not a multiple of it, and one
/// large enough for several cubes per row and several dequantize chunks.
const SHAPES: &[(usize, usize)] = &[(1, 2), (3, 30), (7, 34), (65, 98), (130, 2050), (257, 4096)];

fn upload(w: &QuantizedWeight) -> (Tensor<Cube, 2, Int>, Tensor<Cube, 1>) {
    let dev = device();
    let packed = Tensor::<Cube, 2, Int>::from_data(
        TensorData::new(w.packed.clone(), w.packed_shape()),
        (&dev, DType::I8),
    );
    let scales = Tensor::<Cube, 1>::from_data(
        TensorData::new(w.scales.clone(), [w.out_features]),
        (&dev, DType::F16),
    );
    (packed, scales)
}

fn to_vec(t: Tensor<Cube, 2>) -> Vec<f32> {
    t.cast(DType::F32).into_data().to_vec::<f32>().unwrap()
}

#[test]
fn cube_quant_linear_matches_reference() {
    let mut rng = Rng::new(11);
    let dev = device();
    for bits in [4u8, 8] {
        for &(n, k) in SHAPES {
            let w = random_quantized(&mut rng, n, k, bits);
            let pm = PackedMatrix::new(bits, n, k, &w.packed, &w.scales).unwrap();
            let wd = w.dequantize_f32();
            let (packed, scales) = upload(&w);
            for m in [1, 2, 3, 8, 9, 37] {
                let x = rng.vec(m * k);
                let xt = Tensor::<Cube, 2>::from_data(TensorData::new(x.clone(), [m, k]), &dev);
                let y = quant::quant_linear(xt, packed.clone(), scales.clone(), bits);
                let want = kernels::reference_linear(&x, m, &pm);
                assert_dot_close(
                    &format!("cube fwd int{bits} m={m} n={n} k={k}"),
                    &to_vec(y),
                    &want,
                    &x,
                    &wd,
                    m,
                    n,
                    k,
                );

                let gy = rng.vec(m * n);
                let gyt = Tensor::<Cube, 2>::from_data(TensorData::new(gy.clone(), [m, n]), &dev);
                let gx = Tensor::<Cube, 2>::from_primitive(burn::tensor::TensorPrimitive::Float(
                    <Cube as quant::QuantBackend>::quant_linear_grad_input(
                        gyt.into_primitive().tensor(),
                        packed.clone().into_primitive(),
                        scales.clone().into_primitive().tensor(),
                        bits,
                    ),
                ));
                let want = kernels::reference_linear_grad(&gy, m, &pm);
                // Σ_n gy[i, n] Ŵ[n, l]: the transposed weight is the second operand.
                let wt: Vec<f32> = (0..k)
                    .flat_map(|l| (0..n).map(move |j| (l, j)))
                    .map(|(l, j)| wd[j * k + l])
                    .collect();
                assert_dot_close(
                    &format!("cube grad int{bits} m={m} n={n} k={k}"),
                    &to_vec(gx),
                    &want,
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
fn cube_quant_linear_keeps_f16_activations() {
    let mut rng = Rng::new(12);
    let dev = device();
    let (n, k) = (45, 66);
    for bits in [4u8, 8] {
        let w = random_quantized(&mut rng, n, k, bits);
        let pm = PackedMatrix::new(bits, n, k, &w.packed, &w.scales).unwrap();
        let (packed, scales) = upload(&w);
        for m in [1, 3, 12] {
            let x = Tensor::<Cube, 2>::from_data(TensorData::new(rng.vec(m * k), [m, k]), &dev)
                .cast(DType::F16);
            let xr = to_vec(x.clone());
            let y = quant::quant_linear(x, packed.clone(), scales.clone(), bits);
            assert_eq!(y.dtype(), DType::F16, "output keeps the activation dtype");
            let want = kernels::reference_linear(&xr, m, &pm);
            for (g, w) in to_vec(y).iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 1e-3 * w.abs() + 1e-3,
                    "f16 int{bits} m={m}: got {g} want {w}"
                );
            }
        }
    }
}

#[test]
fn cube_autodiff_gradient_reaches_the_input() {
    type AD = Autodiff<Cube>;
    let mut rng = Rng::new(13);
    let dev = device();
    let (m, n, k) = (5, 40, 70);
    let w = random_quantized(&mut rng, n, k, 4);
    let pm = PackedMatrix::new(4, n, k, &w.packed, &w.scales).unwrap();
    let packed = Tensor::<AD, 2, Int>::from_data(
        TensorData::new(w.packed.clone(), w.packed_shape()),
        (&dev, DType::I8),
    );
    let scales =
        Tensor::<AD, 1>::from_data(TensorData::new(w.scales.clone(), [n]), (&dev, DType::F16));
    let x =
        Tensor::<AD, 2>::from_data(TensorData::new(rng.vec(m * k), [m, k]), &dev).require_grad();
    let y = quant::quant_linear(x.clone(), packed, scales, 4);
    // d(Σ y)/dx = Σ_n Ŵ[n, :] for every row.
    let grads = y.sum().backward();
    let gx = x.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
    let want = kernels::reference_linear_grad(&vec![1.0; m * n], m, &pm);
    for (g, w) in gx.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-4 * w.abs().max(1.0), "grad {g} vs {w}");
    }
}

#[test]
fn cube_frozen_linear_matches_reference() {
    let mut rng = Rng::new(14);
    let dev = device();
    // (n, k): a single row, k below one cube's threads, and k not a multiple of them.
    for (n, k) in [(1, 3), (33, 130), (70, 1000)] {
        let wf: Vec<f32> = rng
            .vec(n * k)
            .into_iter()
            .map(|v| f16::from_f32(v).to_f32())
            .collect();
        let w32 = Tensor::<Cube, 2>::from_data(TensorData::new(wf.clone(), [n, k]), &dev);
        // f16 weight under f32 activations: GEMV kernel up to 8 rows, converted chunks above;
        // f32 weight: burn's matmul.
        for weight in [w32.clone().cast(DType::F16), w32] {
            for m in [1, 4, 8, 19] {
                let x = rng.vec(m * k);
                let xt = Tensor::<Cube, 2>::from_data(TensorData::new(x.clone(), [m, k]), &dev);
                let y = quant::frozen_linear(xt, weight.clone());
                let want: Vec<f32> = (0..m)
                    .flat_map(|i| (0..n).map(move |j| (i, j)))
                    .map(|(i, j)| {
                        (0..k)
                            .map(|l| x[i * k + l] as f64 * wf[j * k + l] as f64)
                            .sum::<f64>() as f32
                    })
                    .collect();
                let what = format!("cube frozen {:?} m={m} n={n} k={k}", weight.dtype());
                assert_dot_close(&what, &to_vec(y), &want, &x, &wf, m, n, k);
            }
        }
    }
}

/// Every load width the device takes (1 byte up to its widest vector) gives the same GEMV, on a
/// row whose 2048 packed bytes every width divides, for int4 and int8 and for f16 scales (the
/// f16 kernel from 4 bytes up) as well as f32 ones (always the f32 kernel); a width that does not
/// divide the row is refused with a message, not read past the row.
#[test]
fn cube_gemv_load_widths_agree() {
    let mut rng = Rng::new(15);
    let dev = device();
    let n = 33;
    for (bits, k) in [(4u8, 4096), (8, 2048)] {
        let w = random_quantized(&mut rng, n, k, bits);
        let pm = PackedMatrix::new(bits, n, k, &w.packed, &w.scales).unwrap();
        let wd = w.dequantize_f32();
        let (packed, scales) = upload(&w);
        let packed = packed.into_primitive();
        let widest = quant::cube::gemv_load_width(&packed);
        assert!(widest >= 4, "a device with only {widest}-byte loads");
        for scales in [scales.clone(), scales.cast(DType::F32)] {
            let dtype = scales.dtype();
            let scales = scales.into_primitive().tensor();
            for m in [1, 3] {
                let mut width = 1;
                while width <= widest {
                    // New activations per width: a kernel that wrote nothing must not pass on
                    // the previous width's result left in a reused buffer.
                    let x = rng.vec(m * k);
                    let xt = Tensor::<Cube, 2>::from_data(TensorData::new(x.clone(), [m, k]), &dev);
                    let xp = xt.into_primitive().tensor();
                    let want = kernels::reference_linear(&x, m, &pm);
                    let y = quant::cube::quant_gemv_with_loads(&xp, &packed, &scales, bits, width);
                    let y =
                        Tensor::<Cube, 2>::from_primitive(burn::tensor::TensorPrimitive::Float(y));
                    let what =
                        format!("cube gemv int{bits} {dtype:?} scales, {width}-byte loads m={m}");
                    assert_dot_close(&what, &to_vec(y), &want, &x, &wd, m, n, k);
                    width *= 2;
                }
            }
        }
    }

    let odd = random_quantized(&mut rng, 2, 34, 4); // 17 bytes per row
    let (packed, scales) = upload(&odd);
    let x = Tensor::<Cube, 2>::from_data(TensorData::new(rng.vec(34), [1, 34]), &dev);
    let refused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        quant::cube::quant_gemv_with_loads(
            &x.into_primitive().tensor(),
            &packed.into_primitive(),
            &scales.into_primitive().tensor(),
            4,
            2,
        )
    }));
    let message = refused.expect_err("a 2-byte load over 17-byte rows was accepted");
    let message = message
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains("rows of 17 bytes 2 bytes at a time"),
        "unexpected message: {message}"
    );
}

/// The GEMV dequantizes every weight to exactly `f16(scale · q)`, as THUDM does: one-hot
/// activation rows read single weights back, for every q (all 16 nibbles, all 256 bytes) and
/// every position inside a loaded 32-bit word, under 1024 scales spread over the f16 range
/// from subnormals to the largest whose products all fit f16 (8184 for int4, 511.75 for int8),
/// given as f16 (the f16 kernel) and as f32 (the f32 kernel). A dot-product tolerance would let
/// a one-ulp rounding slip through; this compares bits.
#[test]
fn cube_gemv_dequantizes_every_value_exactly() {
    let dev = device();
    let k = 512;
    for bits in [4u8, 8] {
        // Bit patterns below 0x7000 (8192) / 0x6000 (512), low bits varied.
        let top = if bits == 4 { 0x7000 } else { 0x6000 };
        let scales: Vec<f16> = (0..1024u32)
            .map(|i| f16::from_bits((i * 29 % top) as u16 | (i % 8) as u16))
            .collect();
        let n = scales.len();
        let rb = k * bits as usize / 8;
        // Row r's bytes: byte t = (t + r) mod 256, so every row holds every byte value and
        // every nibble at every position of a word.
        let packed: Vec<i8> = (0..n * rb)
            .map(|i| ((i % rb + i / rb) % 256) as u8 as i8)
            .collect();
        let w = QuantizedWeight {
            bits,
            out_features: n,
            in_features: k,
            packed,
            scales: scales.clone(),
        };
        let want = w.dequantize_f32();
        let (packed, scales_f16) = upload(&w);
        for scales_t in [scales_f16.clone(), scales_f16.cast(DType::F32)] {
            // 8 one-hot rows per call, columns c0 .. c0 + 8: every column mod 8 and, over the calls,
            // every byte value at every row.
            let cols = if bits == 4 { 2 * 256 } else { 256 };
            for c0 in (0..cols).step_by(8) {
                let mut x = vec![0f32; 8 * k];
                for i in 0..8 {
                    x[i * k + c0 + i] = 1.0;
                }
                let xt = Tensor::<Cube, 2>::from_data(TensorData::new(x, [8, k]), &dev);
                let y = to_vec(quant::quant_linear(
                    xt,
                    packed.clone(),
                    scales_t.clone(),
                    bits,
                ));
                let dtype = scales_t.dtype();
                for i in 0..8 {
                    for r in 0..n {
                        let (got, exp) = (y[i * n + r], want[r * k + c0 + i]);
                        assert!(
                            got.to_bits() == exp.to_bits() || (got == 0.0 && exp == 0.0),
                            "int{bits}, {dtype:?} scales: row {r} (scale {}), column {}: {got:e} != {exp:e}",
                            scales[r],
                            c0 + i
                        );
                    }
                }
            }
        }
    }
}
