//! Gradients through the custom ops under `Autodiff<Flex>`: the quantized layer's input gradient
//! against the dequantized-float computation and central finite differences; frozen dense layers
//! (f32 and f16 weights, strided views) against plain matmul; trainable dense weights still get
//! their gradient; the module API (`Linear` enum, quantize, `valid()`).

mod common;

use burn::backend::{Autodiff, Flex};
use burn::module::AutodiffModule;
use burn::module::Module;
use burn::tensor::{DType, Tensor, TensorData};
use common::{Rng, random_quantized};
use half::f16;
use quant::{BiasData, DenseLinear, Linear, QuantLinear};

type AD = Autodiff<Flex>;

fn t2<B: burn::tensor::backend::Backend>(v: Vec<f32>, shape: [usize; 2]) -> Tensor<B, 2> {
    Tensor::from_data(TensorData::new(v, shape), &Default::default())
}

fn t3<B: burn::tensor::backend::Backend>(v: Vec<f32>, shape: [usize; 3]) -> Tensor<B, 3> {
    Tensor::from_data(TensorData::new(v, shape), &Default::default())
}

fn values<B: burn::tensor::backend::Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.cast(DType::F32).into_data().to_vec::<f32>().unwrap()
}

fn close(what: &str, got: &[f32], want: &[f32], rel: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= rel * scale,
            "{what}: element {i}: got {g} want {w} (scale {scale})"
        );
    }
}

/// Nonlinear loss Σ c ⊙ tanh(y) so that the finite differences test more than linearity.
fn loss<B: burn::tensor::backend::Backend>(y: Tensor<B, 3>, c: &Tensor<B, 3>) -> Tensor<B, 1> {
    (y.tanh() * c.clone()).sum()
}

#[test]
fn quantized_input_gradient_matches_dequantized_float_and_finite_differences() {
    let mut rng = Rng::new(10);
    for (bits, (b, s)) in [(4u8, (2usize, 3usize)), (8, (3, 5)), (4, (1, 1))] {
        let (n, k) = (40, 66);
        let w = random_quantized(&mut rng, n, k, bits);
        let bias = rng.vec(n);
        let dev = Default::default();
        let layer =
            QuantLinear::<AD>::from_quantized(&w, Some(BiasData::F32(bias.clone())), &dev).unwrap();
        let xv = rng.vec(b * s * k);
        let cv = rng.vec(b * s * n);
        let c = t3::<AD>(cv.clone(), [b, s, n]);
        let x = t3::<AD>(xv.clone(), [b, s, k]).require_grad();
        let y = layer.forward(x.clone());
        let grads = loss(y.clone(), &c).backward();
        let gx = values(x.grad(&grads).expect("x has a gradient"));

        // Reference: the same computation with the dequantized float weight as a constant tensor.
        let wd = t2::<AD>(w.dequantize_f32(), [n, k]);
        let xr = t3::<AD>(xv.clone(), [b, s, k]).require_grad();
        let yr = xr.clone().matmul(wd.transpose().unsqueeze::<3>())
            + t2::<AD>(bias.clone(), [1, n]).unsqueeze::<3>();
        let gr = loss(yr.clone(), &c).backward();
        close(&format!("int{bits} forward"), &values(y), &values(yr), 1e-5);
        close(
            &format!("int{bits} grad x"),
            &gx,
            &values(xr.grad(&gr).unwrap()),
            1e-5,
        );

        // Central differences in f64 around a few coordinates.
        let lossv = |xv: &[f32]| -> f64 {
            let y = layer.valid().forward(t3::<Flex>(xv.to_vec(), [b, s, k]));
            let yv = values(y);
            yv.iter()
                .zip(&cv)
                .map(|(y, c)| (*y as f64).tanh() * *c as f64)
                .sum()
        };
        for idx in [0, k / 2 + 1, b * s * k - 1] {
            let h = 1e-2f32;
            let (mut xp, mut xm) = (xv.clone(), xv.clone());
            xp[idx] += h;
            xm[idx] -= h;
            let fd = (lossv(&xp) - lossv(&xm)) / (2.0 * h as f64);
            let g = gx[idx] as f64;
            assert!(
                (fd - g).abs() <= 2e-3 * (1.0 + g.abs()),
                "int{bits} finite difference at {idx}: fd {fd} vs grad {g}"
            );
        }
    }
}

#[test]
fn frozen_dense_forward_and_gradient_match_plain_matmul() {
    let mut rng = Rng::new(11);
    let dev = Default::default();
    let (m, n, k) = (13, 24, 40);
    for wdtype in [DType::F32, DType::F16, DType::BF16] {
        for xdtype in [DType::F32, DType::F16] {
            let wv = rng.vec(n * k);
            let bias = rng.vec(n);
            let weight = TensorData::new(wv.clone(), [n, k]).convert_dtype(wdtype);
            let layer = DenseLinear::<AD>::from_weights(
                weight,
                Some(TensorData::new(bias.clone(), [n])),
                &dev,
            )
            .unwrap()
            .no_grad();
            let xv = rng.vec(m * k);
            let x = t2::<AD>(xv.clone(), [m, k]).cast(xdtype).require_grad();
            let y = layer.forward(x.clone());
            assert_eq!(y.dtype(), xdtype, "output in the activation dtype");
            let gyv = rng.vec(m * n);
            let gy = t2::<AD>(gyv.clone(), [m, n]).cast(xdtype);
            let grads = (y.clone() * gy.clone()).sum().backward();
            let gx = values(x.grad(&grads).unwrap());

            // Plain matmul on the weight's values (as stored) widened to f32.
            let wr = t2::<Flex>(values(t2::<Flex>(wv.clone(), [n, k]).cast(wdtype)), [n, k]);
            let xr = t2::<Flex>(values(t2::<Flex>(xv.clone(), [m, k]).cast(xdtype)), [m, k]);
            let yr = xr.matmul(wr.clone().transpose()) + t2::<Flex>(bias.clone(), [1, n]);
            let gyr = t2::<Flex>(values(t2::<Flex>(gyv.clone(), [m, n]).cast(xdtype)), [m, n]);
            let gxr = gyr.matmul(wr);
            let tol = if xdtype == DType::F32 { 1e-5 } else { 4e-3 };
            close(
                &format!("frozen {wdtype:?} x {xdtype:?} forward"),
                &values(y),
                &values(yr),
                tol,
            );
            close(
                &format!("frozen {wdtype:?} x {xdtype:?} grad"),
                &gx,
                &values(gxr),
                tol,
            );
        }
    }
}

#[test]
fn frozen_linear_accepts_strided_weight_views() {
    let mut rng = Rng::new(12);
    let (m, n, k) = (9, 21, 35);
    // W stored transposed ([k, n] buffer), passed as a [n, k] view: gemm reads it through strides.
    let wt = t2::<Flex>(rng.vec(k * n), [k, n]);
    let w = wt.clone().transpose();
    let x = t2::<Flex>(rng.vec(m * k), [m, k]);
    let y = quant::frozen_linear(x.clone(), w.clone());
    close(
        "strided f32",
        &values(y),
        &values(x.clone().matmul(wt.clone())),
        1e-5,
    );
    let y16 = quant::frozen_linear(x.clone(), w.clone().cast(DType::F16));
    close(
        "strided f16 weight",
        &values(y16),
        &values(x.matmul(wt.cast(DType::F16).cast(DType::F32))),
        1e-5,
    );
}

#[test]
fn trainable_dense_weight_receives_its_gradient() {
    let mut rng = Rng::new(13);
    let dev = Default::default();
    let (m, n, k) = (4, 6, 10);
    let layer =
        DenseLinear::<AD>::from_weights(TensorData::new(rng.vec(n * k), [n, k]), None, &dev)
            .unwrap();
    let xv = rng.vec(m * k);
    let x = t2::<AD>(xv.clone(), [m, k]).require_grad();
    let grads = layer.forward(x.clone()).sum().backward();
    let gw = layer
        .weight
        .grad(&grads)
        .expect("trainable weight gets a gradient");
    // d Σ(x Wᵀ) / dW[j, l] = Σ_i x[i, l]
    let colsum: Vec<f32> = (0..k)
        .map(|l| (0..m).map(|i| xv[i * k + l]).sum())
        .collect();
    let want: Vec<f32> = (0..n).flat_map(|_| colsum.clone()).collect();
    close("weight grad", &values(gw), &want, 1e-5);
    assert!(x.grad(&grads).is_some());
    // Frozen: no weight gradient, x still gets one.
    let frozen = layer.no_grad();
    let x = t2::<AD>(xv, [m, k]).require_grad();
    let grads = frozen.forward(x.clone()).sum().backward();
    assert!(frozen.weight.grad(&grads).is_none());
    assert!(x.grad(&grads).is_some());
}

#[test]
fn linear_enum_quantize_and_module_plumbing() {
    let mut rng = Rng::new(14);
    let dev = Default::default();
    let (n, k) = (12, 16);
    let w16: Vec<f16> = rng.vec(n * k).into_iter().map(f16::from_f32).collect();
    let bias: Vec<f16> = rng.vec(n).into_iter().map(f16::from_f32).collect();
    let dense = Linear::Dense(
        DenseLinear::<AD>::from_weights(
            TensorData::new(w16.clone(), [n, k]),
            Some(TensorData::new(bias.clone(), [n])),
            &dev,
        )
        .unwrap(),
    );
    assert_eq!((dense.in_features(), dense.out_features()), (k, n));
    let q = dense.quantize(4).unwrap();
    let Linear::Quantized(ql) = &q else {
        panic!("quantize gives a quantized layer")
    };
    assert_eq!(
        ql.to_quantized().unwrap(),
        quant::QuantizedWeight::quantize(&w16, n, k, 4).unwrap()
    );
    assert_eq!((q.in_features(), q.out_features()), (k, n));
    assert_eq!(
        q.num_params(),
        0,
        "quantized tensors are constants, not parameters"
    );
    let x = t3::<AD>(rng.vec(2 * 3 * k), [2, 3, k]).require_grad();
    let y = q.forward(x.clone());
    assert_eq!(y.dims(), [2, 3, n]);
    let g = y.sum().backward();
    assert_eq!(x.grad(&g).unwrap().dims(), [2, 3, k]);
    // valid() drops autodiff and keeps the packed layer.
    let inner: Linear<Flex> = q.valid();
    assert_eq!(inner.out_features(), n);
    // Errors name the problem.
    let err = QuantLinear::<Flex>::quantize_from_f16(
        &w16,
        n,
        k,
        4,
        Some(BiasData::F16(vec![f16::ONE; 3])),
        &dev,
    )
    .unwrap_err();
    assert!(err.to_string().contains("bias"), "{err}");
}

#[test]
fn readme_example() -> Result<(), quant::QuantError> {
    use quant::QuantizedWeight;
    type B = Autodiff<Flex>;
    let dev = Default::default();
    let (out_f, in_f) = (8, 16);
    let w: Vec<f16> = (0..out_f * in_f)
        .map(|i| f16::from_f32((i as f32 * 0.37).sin()))
        .collect();
    let q = QuantizedWeight::quantize(&w, out_f, in_f, 4)?;
    let layer =
        QuantLinear::<B>::from_quantized(&q, Some(BiasData::F16(vec![f16::ZERO; out_f])), &dev)?;
    let x = Tensor::<B, 3>::from_data(
        TensorData::new(vec![0.5f32; 2 * 3 * in_f], [2, 3, in_f]),
        &dev,
    )
    .require_grad();
    let y = layer.forward(x.clone());
    assert_eq!(y.dims(), [2, 3, out_f]);
    let grads = y.sum().backward();
    let gx = x.grad(&grads).unwrap();
    assert_eq!(gx.dims(), [2, 3, in_f]);
    // Every row of g_x is the column sum of Ŵ.
    let wd = q.dequantize_f32();
    let colsum: Vec<f32> = (0..in_f)
        .map(|c| (0..out_f).map(|r| wd[r * in_f + c]).sum())
        .collect();
    close("readme grad", &values(gx)[..in_f], &colsum, 1e-6);
    assert_eq!(layer.to_quantized()?, q);
    Ok(())
}

#[test]
fn balanced_checkpointing_gives_the_same_gradient() {
    use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
    type AdBalanced = Autodiff<Flex, BalancedCheckpointing>;
    let mut rng = Rng::new(15);
    let (n, k, m) = (20, 34, 6);
    let w = random_quantized(&mut rng, n, k, 4);
    let xv = rng.vec(m * k);
    let dev = Default::default();
    let grad = |x: Tensor<AdBalanced, 2>| {
        let l = QuantLinear::<AdBalanced>::from_quantized(&w, None, &dev).unwrap();
        let d = DenseLinear::<AdBalanced>::from_weights(
            TensorData::new(fixed_weight(k * n), [k, n]),
            None,
            &dev,
        )
        .unwrap()
        .no_grad();
        let y = d.forward(l.forward(x.clone()).tanh()).exp();
        let g = y.sum().backward();
        values(x.grad(&g).unwrap())
    };
    let gc = grad(t2::<AdBalanced>(xv.clone(), [m, k]).require_grad());
    let grad_nc = {
        let l = QuantLinear::<AD>::from_quantized(&w, None, &dev).unwrap();
        let d = DenseLinear::<AD>::from_weights(
            TensorData::new(fixed_weight(k * n), [k, n]),
            None,
            &dev,
        )
        .unwrap()
        .no_grad();
        let x = t2::<AD>(xv, [m, k]).require_grad();
        let g = d
            .forward(l.forward(x.clone()).tanh())
            .exp()
            .sum()
            .backward();
        values(x.grad(&g).unwrap())
    };
    close("balanced checkpointing", &gc, &grad_nc, 1e-6);
}

/// The same pseudo-random values on every call.
fn fixed_weight(len: usize) -> Vec<f32> {
    Rng::new(99).vec(len)
}
