//! Throughput of the quantized kernels on ChatGLM-6B layer shapes (prints numbers; not a test).
//!
//! `cargo bench -p quant` — full run; `cargo bench -p quant -- --quick` — tiny shapes, few
//! rounds (CI smoke test). For each shape `in → out`:
//! - this machine's memory bandwidth, measured in the same rounds with a multi-threaded copy of
//!   256 MiB or four times the L3, whichever is more (bytes read + bytes written per second, the
//!   STREAM "copy" convention), and a read-only pass over the same buffer;
//! - int4 / int8 GEMV (1 activation row): effective GB/s of packed weight bytes read, cycling over
//!   enough distinct copies of the layer (that many bytes in total) that the weights come from
//!   DRAM, not from the L3 — as in decoding, where every layer is read once per token;
//! - int4 / int8 GEMM (256 rows): GFLOP/s next to flex's f32 matmul of the same shape (`x · Wᵀ`
//!   with `W [out, in]` as a transposed view, and `x · W` with `W [in, out]` contiguous);
//! - the int4 input-gradient GEMM (256 rows);
//! - the frozen f16 GEMV (1 and 8 rows) on the tied output head, 4096 → 130528.
//!
//! The machine may be shared: every round times each variant once, next to its baseline; the
//! table shows the best round of each variant, and the ratios (`%copy`, `ratio`) are medians of
//! the per-round ratios of neighbouring measurements, so load that comes and goes cancels out.

mod common;

use std::hint::black_box;
use std::time::Instant;

use burn::backend::Flex;
use common::{median, run};
use half::f16;
use rayon::prelude::*;

fn timed(f: &mut dyn FnMut()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64()
}

/// Buffers of the bandwidth probes.
struct Memory {
    src: Vec<u64>,
    dst: Vec<u64>,
}

impl Memory {
    fn new(bytes: usize) -> Self {
        let n = bytes / 8;
        let mut m = Memory {
            src: (0..n as u64).collect(),
            dst: vec![0; n],
        };
        m.copy(); // fault the pages in
        m
    }
    fn bytes(&self) -> f64 {
        (self.src.len() * 8) as f64
    }
    fn chunk(&self) -> usize {
        self.src.len().div_ceil(rayon::current_num_threads() * 4)
    }
    /// Seconds for one parallel copy.
    fn copy(&mut self) -> f64 {
        let c = self.chunk();
        let (src, dst) = (&self.src, &mut self.dst);
        timed(&mut || {
            dst.par_chunks_mut(c)
                .zip(src.par_chunks(c))
                .for_each(|(d, s)| d.copy_from_slice(s));
            black_box(&*dst);
        })
    }
    /// Seconds for one parallel read-only pass.
    fn read(&self) -> f64 {
        let c = self.chunk();
        timed(&mut || {
            let s: u64 = self
                .src
                .par_chunks(c)
                .map(|c| c.iter().fold(0u64, |a, &v| a.wrapping_add(v)))
                .sum();
            black_box(s);
        })
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let threads = rayon::current_num_threads();
    let isa = quant::kernels::Isa::detect();
    // Working sets beyond the last-level cache, for the copy and for the GEMV's layer copies.
    let stream = if quick {
        16 << 20
    } else {
        common::host_stream_bytes()
    };
    println!(
        "quant qmatmul benchmark ({} mode, {threads} rayon threads, kernels {isa:?}, {} MiB streamed per GEMV round and copy)",
        if quick { "quick" } else { "full" },
        stream >> 20
    );
    let shapes: &[(usize, usize)] = if quick {
        &[(256, 768), (512, 256)]
    } else {
        &[(4096, 12288), (4096, 4096), (4096, 16384), (16384, 4096)]
    };
    let (gemm_rows, rounds) = if quick { (32, 2) } else { (256, 8) };
    let mut mem = Memory::new(stream);

    println!();
    println!(
        "{:>11} | {:>6} {:>6} | {:>7} {:>6} {:>7} | {:>7} {:>7} {:>7} {:>6} | {:>7} {:>7}",
        "in -> out",
        "copy",
        "read",
        "i4 GEMV",
        "%copy",
        "i8 GEMV",
        "i4 GEMM",
        "f32 xWt",
        "f32 xW",
        "ratio",
        "i8 GEMM",
        "i4 grad"
    );
    println!(
        "{:>11} | {:>6} {:>6} | {:>7} {:>6} {:>7} | {:>7} {:>7} {:>7} {:>6} | {:>7} {:>7}",
        "",
        "GB/s",
        "GB/s",
        "GB/s",
        "",
        "GB/s",
        "GFLOP/s",
        "GFLOP/s",
        "GFLOP/s",
        "",
        "GFLOP/s",
        "GFLOP/s"
    );
    let (mut best_copy, mut gemv_rates, mut worst_same_round, mut worst_ratio) =
        (0f64, Vec::new(), f64::INFINITY, f64::INFINITY);
    for (si, &(k, n)) in shapes.iter().enumerate() {
        let dev = Default::default();
        let act = |m, k| common::act::<Flex>(m, k, &dev);
        let l4s = common::layer_copies::<Flex>(n, k, 4, si, quick, stream, &dev);
        let l8s = common::layer_copies::<Flex>(n, k, 8, si, quick, stream, &dev);
        let (l4, l8) = (&l4s[0], &l8s[0]);
        let (x1, xm, gy) = (act(1, k), act(gemm_rows, k), act(gemm_rows, n));
        let (w_nk, w_kn) = (act(n, k), act(k, n));
        let flops = 2.0 * gemm_rows as f64 * n as f64 * k as f64;

        // Order within a round keeps each quantized kernel next to its baseline.
        let mut best = [f64::INFINITY; 9];
        let (mut gemv_vs_copy, mut gemm_vs_f32) = (Vec::new(), Vec::new());
        for round in 0..=rounds {
            let t = [
                mem.copy(),
                // One GEMV per distinct copy; the time per layer is kept.
                timed(&mut || l4s.iter().for_each(|l| run(l, &x1))) / l4s.len() as f64,
                mem.read(),
                timed(&mut || l8s.iter().for_each(|l| run(l, &x1))) / l8s.len() as f64,
                // f32 baselines on the same backend, around the int4 GEMM.
                timed(&mut || {
                    black_box(xm.clone().matmul(w_nk.clone().transpose()));
                }),
                timed(&mut || run(l4, &xm)),
                timed(&mut || {
                    black_box(xm.clone().matmul(w_kn.clone()));
                }),
                timed(&mut || run(l8, &xm)),
                timed(&mut || {
                    black_box(<Flex as quant::QuantBackend>::quant_linear_grad_input(
                        gy.clone().into_primitive().tensor(),
                        l4.packed.clone().into_primitive(),
                        l4.scales.clone().into_primitive().tensor(),
                        4,
                    ));
                }),
            ];
            if round > 0 {
                // round 0 is the warm-up
                best.iter_mut().zip(t).for_each(|(b, v)| *b = b.min(v));
                // Ratios of neighbours in the same round: robust to load that comes and goes.
                gemv_vs_copy.push((l4.bytes as f64 / t[1]) / (2.0 * mem.bytes() / t[0]));
                gemm_vs_f32.push(t[4].min(t[6]) / t[5]);
            }
        }
        let [tc, t4v, tr, t8v, tf_t, t4m, tf_c, t8m, t4g] = best;
        let (gemv_pct, ratio) = (median(gemv_vs_copy), median(gemm_vs_f32));
        let copy = 2.0 * mem.bytes() / tc / 1e9;
        let gemv4 = l4.bytes as f64 / t4v / 1e9;
        let gf = |t: f64| flops / t / 1e9;
        best_copy = best_copy.max(copy);
        gemv_rates.push(gemv4);
        worst_same_round = worst_same_round.min(gemv_pct);
        worst_ratio = worst_ratio.min(ratio);
        println!(
            "{:>11} | {:>6.1} {:>6.1} | {:>7.1} {:>5.0}% {:>7.1} | {:>7.1} {:>7.1} {:>7.1} {:>6.2} | {:>7.1} {:>7.1}",
            format!("{k}->{n}"),
            copy,
            mem.bytes() / tr / 1e9,
            gemv4,
            100.0 * gemv_pct,
            l8.bytes as f64 / t8v / 1e9,
            gf(t4m),
            gf(tf_t),
            gf(tf_c),
            ratio,
            gf(t8m),
            gf(t4g),
        );
    }
    let worst_overall = gemv_rates
        .iter()
        .fold(f64::INFINITY, |m, g| m.min(g / best_copy));
    println!();
    println!(
        "int4 GEMV, worst shape: {:.0}% of the copy bandwidth measured next to it (median over rounds), {:.0}% of the best copy bandwidth of the run ({best_copy:.1} GB/s); target >= 60%",
        100.0 * worst_same_round,
        100.0 * worst_overall
    );
    println!(
        "int4 GEMM ({gemm_rows} rows) / best f32 matmul measured next to it, worst shape (median over rounds): {worst_ratio:.2}x; target >= 0.8x"
    );
    head_gemv(quick, &mut mem, rounds);
}

/// The frozen f16 GEMV on the tied output head (`lm_head` = `word_embeddings`, 4096 → 130528 at
/// 6B, 1 GiB of f16): the largest single weight read per decoded token.
fn head_gemv(quick: bool, mem: &mut Memory, rounds: usize) {
    use quant::kernels::{DenseMatrix, DenseStorage, dense_linear};
    let (n, k) = if quick { (4096, 256) } else { (130_528, 4096) };
    let w: Vec<f16> = (0..n * k)
        .map(|i| f16::from_f32(((i % 251) as f32 - 125.0) / 1000.0))
        .collect();
    let view = DenseMatrix {
        data: DenseStorage::F16(&w),
        n,
        k,
        offset: 0,
        row_stride: k as isize,
        col_stride: 1,
    };
    let bytes = (n * k * 2) as f64;
    println!();
    for m in [1usize, 8] {
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i % 97) as f32 - 48.0) / 64.0)
            .collect();
        let mut y = vec![0f32; m * n];
        let (mut best, mut vs_copy) = (f64::INFINITY, Vec::new());
        for round in 0..=rounds.min(4) {
            let tc = mem.copy();
            let t = timed(&mut || {
                dense_linear(&x, m, &view, &mut y);
                black_box(&y);
            });
            if round > 0 {
                best = best.min(t);
                vs_copy.push((bytes / t) / (2.0 * mem.bytes() / tc));
            }
        }
        vs_copy.sort_by(f64::total_cmp);
        println!(
            "f16 head GEMV {k}->{n}, {m} row(s): {:.1} ms, {:.1} GB/s of f16 weights ({:.0}% of the copy bandwidth measured next to it)",
            best * 1e3,
            bytes / best / 1e9,
            100.0 * vs_copy[vs_copy.len() / 2]
        );
    }
}
