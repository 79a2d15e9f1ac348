//! Throughput of the cubecl kernels on ChatGLM-6B layer shapes, on the GPU backend the build
//! has (prints numbers; not a test): `cargo bench -p quant --features cuda --bench cube`, or
//! `--features vulkan` (on Mesa's lavapipe the numbers say nothing about a GPU; CI runs it with
//! `-- --quick` as a smoke test). Without either feature it says so and exits.
//!
//! For each shape `in → out`, with the device synchronised around every timed call:
//! - the device's memory bandwidth in the same rounds: `y = x + 1` over 256 MiB of f32 (bytes read
//!   + bytes written per second, the STREAM "copy" convention of the CPU benchmark);
//! - int4 / int8 GEMV (1 activation row, the fused kernel): GB/s of packed weight bytes read,
//!   cycling over enough copies of the layer (≥ 256 MiB) that they come from device memory, not
//!   from the L2 cache; int4 also with the packed rows read one byte per load and each weight
//!   converted int → f32 → f16 → f32 (`i4 1B`, the kernel before the vector loads and the f16
//!   dequantization), to show what those are worth;
//! - int4 GEMM (256 rows, dequantize chunks + burn's matmul): GFLOP/s next to burn's f32 matmul of
//!   the same shape on the same device;
//! - the frozen f16 GEMV (1 and 8 rows) on the tied output head, 4096 → 130528, in GB/s and
//!   against the copy bandwidth.
//!
//! Every round times each variant next to its baseline; the table shows the best round and the
//! median of the per-round ratios, as `qmatmul` does.

#[cfg(not(any(feature = "cuda", feature = "vulkan")))]
fn main() {
    println!(
        "quant cube benchmark: built without a GPU backend; run `cargo bench -p quant --features cuda --bench cube` (or --features vulkan)"
    );
}

#[cfg(any(feature = "cuda", feature = "vulkan"))]
fn main() {
    bench::main();
}

#[cfg(any(feature = "cuda", feature = "vulkan"))]
mod common;

#[cfg(any(feature = "cuda", feature = "vulkan"))]
mod bench {
    use std::hint::black_box;
    use std::time::Instant;

    use burn::tensor::backend::{Backend, BackendTypes};
    use burn::tensor::{DType, Distribution, Tensor};

    use crate::common::{Layer, median, run};

    #[cfg(feature = "cuda")]
    type Cube = burn::backend::Cuda;
    #[cfg(all(feature = "vulkan", not(feature = "cuda")))]
    type Cube = burn::backend::Vulkan;

    type Device = <Cube as BackendTypes>::Device;

    /// `x · Ŵᵀ` by the fused GEMV reading the packed rows one byte per load, result discarded.
    fn run_bytewise(l: &Layer<Cube>, x: &Tensor<Cube, 2>) {
        black_box(quant::cube::quant_gemv_with_loads(
            &x.clone().into_primitive().tensor(),
            &l.packed.clone().into_primitive(),
            &l.scales.clone().into_primitive().tensor(),
            l.bits,
            1,
        ));
    }

    /// Seconds for `f` and everything it queued on the device.
    fn timed(dev: &Device, f: &mut dyn FnMut()) -> f64 {
        Cube::sync(dev).expect("device sync");
        let t = Instant::now();
        f();
        Cube::sync(dev).expect("device sync");
        t.elapsed().as_secs_f64()
    }

    pub fn main() {
        let quick = std::env::args().any(|a| a == "--quick");
        let dev = Device::default();
        println!(
            "quant cube benchmark ({} mode, backend {})",
            if quick { "quick" } else { "full" },
            std::any::type_name::<Cube>()
        );
        let shapes: &[(usize, usize)] = if quick {
            &[(256, 768), (512, 256)]
        } else {
            &[(4096, 12288), (4096, 4096), (4096, 16384), (16384, 4096)]
        };
        let (gemm_rows, rounds, copy_bytes) = if quick {
            (32, 2, 16usize << 20)
        } else {
            (256, 8, 256usize << 20)
        };
        let mem = Tensor::<Cube, 1>::ones([copy_bytes / 4], &dev);
        println!();
        println!(
            "{:>11} | {:>7} | {:>7} {:>6} {:>7} {:>7} | {:>7} {:>7} {:>6}",
            "in -> out",
            "copy",
            "i4 GEMV",
            "%copy",
            "i4 1B",
            "i8 GEMV",
            "i4 GEMM",
            "f32 xWt",
            "ratio"
        );
        println!(
            "{:>11} | {:>7} | {:>7} {:>6} {:>7} {:>7} | {:>7} {:>7} {:>6}",
            "", "GB/s", "GB/s", "", "GB/s", "GB/s", "GFLOP/s", "GFLOP/s", ""
        );
        let mut widths = Vec::new();
        for (si, &(k, n)) in shapes.iter().enumerate() {
            let act = |m, k| crate::common::act::<Cube>(m, k, &dev);
            let l4s = crate::common::layer_copies::<Cube>(n, k, 4, si, quick, copy_bytes, &dev);
            let l8s = crate::common::layer_copies::<Cube>(n, k, 8, si, quick, copy_bytes, &dev);
            widths.push(quant::cube::gemv_load_width(
                &l4s[0].packed.clone().into_primitive(),
            ));
            let (x1, xm, w_nk) = (act(1, k), act(gemm_rows, k), act(n, k));
            let flops = 2.0 * gemm_rows as f64 * n as f64 * k as f64;
            let mut best = [f64::INFINITY; 6];
            let (mut gemv_vs_copy, mut gemm_vs_f32) = (Vec::new(), Vec::new());
            for round in 0..=rounds {
                let t = [
                    timed(&dev, &mut || {
                        black_box(mem.clone().add_scalar(1.0));
                    }),
                    timed(&dev, &mut || l4s.iter().for_each(|l| run(l, &x1))) / l4s.len() as f64,
                    timed(&dev, &mut || l8s.iter().for_each(|l| run(l, &x1))) / l8s.len() as f64,
                    timed(&dev, &mut || {
                        black_box(xm.clone().matmul(w_nk.clone().transpose()));
                    }),
                    timed(&dev, &mut || run(&l4s[0], &xm)),
                    timed(&dev, &mut || l4s.iter().for_each(|l| run_bytewise(l, &x1)))
                        / l4s.len() as f64,
                ];
                if round > 0 {
                    // round 0 is the warm-up (and the kernels' compilation)
                    best.iter_mut().zip(t).for_each(|(b, v)| *b = b.min(v));
                    gemv_vs_copy
                        .push((l4s[0].bytes as f64 / t[1]) / (2.0 * copy_bytes as f64 / t[0]));
                    gemm_vs_f32.push(t[3] / t[4]);
                }
            }
            let [tc, t4v, t8v, tf, t4m, t4b] = best;
            let gf = |t: f64| flops / t / 1e9;
            println!(
                "{:>11} | {:>7.1} | {:>7.1} {:>5.0}% {:>7.1} {:>7.1} | {:>7.1} {:>7.1} {:>6.2}",
                format!("{k}->{n}"),
                2.0 * copy_bytes as f64 / tc / 1e9,
                l4s[0].bytes as f64 / t4v / 1e9,
                100.0 * median(gemv_vs_copy),
                l4s[0].bytes as f64 / t4b / 1e9,
                l8s[0].bytes as f64 / t8v / 1e9,
                gf(t4m),
                gf(tf),
                median(gemm_vs_f32),
            );
        }
        println!();
        println!("int4 GEMV bytes per load, by shape: {widths:?} (i4 1B: 1)");
        head_gemv(&dev, quick, &mem, rounds);
        println!(
            "targets: int4 GEMV >= 60% of the copy bandwidth; int4 GEMM >= 0.8x the f32 matmul"
        );
    }

    /// The frozen f16 GEMV on the tied output head (`lm_head` = `word_embeddings`, 4096 → 130528
    /// at 6B, 1 GiB of f16 under f32 activations): the largest single weight read per decoded
    /// token, through `quant::frozen_linear`'s dense GEMV kernel. `mem` is the copy probe.
    fn head_gemv(dev: &Device, quick: bool, mem: &Tensor<Cube, 1>, rounds: usize) {
        let (n, k) = if quick { (4096, 256) } else { (130_528, 4096) };
        let w = Tensor::<Cube, 2>::random([n, k], Distribution::Uniform(-0.1, 0.1), dev)
            .cast(DType::F16);
        let bytes = (n * k * 2) as f64;
        let copy_bytes = 2.0 * (mem.dims()[0] * 4) as f64;
        for m in [1usize, 8] {
            let x = crate::common::act::<Cube>(m, k, dev);
            let (mut best, mut vs_copy) = (f64::INFINITY, Vec::new());
            for round in 0..=rounds.min(4) {
                let tc = timed(dev, &mut || {
                    black_box(mem.clone().add_scalar(1.0));
                });
                let t = timed(dev, &mut || {
                    black_box(quant::frozen_linear(x.clone(), w.clone()));
                });
                if round > 0 {
                    best = best.min(t);
                    vs_copy.push((bytes / t) / (copy_bytes / tc));
                }
            }
            println!(
                "f16 head GEMV {k}->{n}, {m} row(s): {:.2} ms, {:.1} GB/s of f16 weights ({:.0}% of the copy bandwidth measured next to it)",
                best * 1e3,
                bytes / best / 1e9,
                100.0 * median(vs_copy)
            );
        }
    }
}
