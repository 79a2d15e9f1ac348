//! The one-row int4 GEMV (decoding one sequence) computes on fixed-point activations: each element
//! is rounded to a multiple of the ulp of its 192-column group's largest magnitude. These tests pin
//! the error bound that promises, with the activations that strain it — outliers next to small
//! values, groups of subnormals, rows entirely below the normal range, K with a tail after the last
//! 64-column block — and that infinities and NaNs still propagate. Each test runs every kernel
//! this CPU has: AVX2 (`vpmaddwd`) and AVX-512 (`vpdpwssd`), which share the fixed-point form.

mod common;

use common::{Rng, random_quantized};
use quant::kernels::{self, Isa, PackedMatrix};

/// The instruction sets with a fixed-point kernel that this CPU supports (none: nothing to test
/// here; the scalar path is tested in kernels.rs).
fn fixed_isas() -> Vec<Isa> {
    Isa::available()
        .into_iter()
        .filter(|i| *i >= Isa::Avx2)
        .collect()
}

/// Columns per exponent group of the fixed-point kernel (3 blocks of 64).
const GROUP: usize = 192;

/// Checks `y = x · Ŵᵀ` against the f64 reference within the fixed-point kernel's bound: rounding
/// `x[k]` costs at most `2^-24 · max_g(k)` (half the ulp of its group's largest magnitude),
/// times `|Ŵ[j, k]|`; the f32 sums of the group totals add `(2 · groups + 8) · 2^-24 · Σ_k |x Ŵ|`;
/// the tail columns after the last full block go through f32 FMAs, whose products of subnormal
/// size round to the subnormal grid (2^-149), as does the result.
fn check(isa: Isa, what: &str, x: &[f32], w: &quant::QuantizedWeight, n: usize, k: usize) {
    let pm = PackedMatrix::new(4, n, k, &w.packed, &w.scales).unwrap();
    let wd = w.dequantize_f32();
    let want = kernels::reference_linear(x, 1, &pm);
    let mut y = vec![f32::NAN; n];
    kernels::quant_linear_with(isa, x, 1, &pm, &mut y);
    let full = k / 64 * 64;
    let group_max: Vec<f64> = x[..full]
        .chunks(GROUP)
        .map(|g| g.iter().fold(0f64, |a, v| a.max(f64::from(v.abs()))))
        .collect();
    let groups = group_max.len() as f64;
    let eps = 2f64.powi(-24);
    for j in 0..n {
        let (mut rounding, mut mag) = (0f64, 0f64);
        for c in 0..k {
            let wj = f64::from(wd[j * k + c]).abs();
            if c < full {
                rounding += eps * group_max[c / GROUP] * wj;
            }
            mag += f64::from(x[c]).abs() * wj;
        }
        let subnormal = (k - full + 2) as f64 * 2f64.powi(-149);
        let bound = rounding + (2.0 * groups + 8.0) * eps * mag + subnormal;
        let err = (f64::from(y[j]) - f64::from(want[j])).abs();
        assert!(
            err <= bound,
            "{isa:?} {what}: row {j} got {} want {} (error {err:e} > bound {bound:e})",
            y[j],
            want[j]
        );
    }
}

#[test]
fn one_row_gemv_keeps_small_activations_next_to_outliers() {
    for isa in fixed_isas() {
        keeps_small_activations_next_to_outliers(isa);
    }
}

fn keeps_small_activations_next_to_outliers(isa: Isa) {
    let mut rng = Rng::new(11);
    for &(n, k) in &[(37usize, 4096usize), (19, 1000), (8, 64), (5, 16384 + 70)] {
        let w = random_quantized(&mut rng, n, k, 4);
        // Plain uniform activations.
        check(isa, "uniform", &rng.vec(k), &w, n, k);
        // LLM-like outliers: a few columns 10^3 above the rest, which span four decades.
        let mut x: Vec<f32> = (0..k)
            .map(|c| rng.uniform() * 10f32.powi(-((c % 4) as i32)))
            .collect();
        for c in (5..k).step_by(331) {
            x[c] = 1000.0 * rng.uniform().signum();
        }
        check(isa, "outliers", &x, &w, n, k);
        // Whole groups of subnormals beside normal groups, and a row with no normal value at all
        // (its scale 2^-e lies beyond the f32 range).
        let sub: Vec<f32> = (0..k)
            .map(|c| {
                let v = rng.uniform();
                if (c / GROUP).is_multiple_of(2) {
                    v * 1e-39
                } else {
                    v
                }
            })
            .collect();
        check(isa, "subnormal groups", &sub, &w, n, k);
        let tiny: Vec<f32> = (0..k).map(|_| rng.uniform() * 1e-40).collect();
        check(isa, "subnormal row", &tiny, &w, n, k);
        check(isa, "zeros", &vec![0f32; k], &w, n, k);
    }
}

#[test]
fn one_row_gemv_is_exact_when_each_group_fits_24_bits() {
    // Regression for a single exponent per row: an outlier would round the small activations of
    // every other group to its own coarse grid. Here every sum is exact in f32 (integer weights
    // −7..=7 with scale exactly 1, activations on a 2^-10 grid in even groups and a 2^-3 grid in
    // odd groups, which also hold a 2^20 outlier on a column whose weights are 0), so the kernel
    // must reproduce the f64 reference bit for bit — which it only can if each group keeps its own
    // grid.
    // Below 65536 weights the GEMV runs as one task, so the 7-row shape reaches the kernel whole
    // on any number of threads (two passes of three rows and a last row on AVX-512, rows one by
    // one on AVX2); 23 rows are split over tasks.
    for n in [23, 7] {
        exact_when_each_group_fits_24_bits(n, 4096 + 64);
    }
}

fn exact_when_each_group_fits_24_bits(n: usize, k: usize) {
    let mut rng = Rng::new(13);
    let outlier = |c: usize| (c / GROUP) % 2 == 1 && c % GROUP == 100;
    let w: Vec<half::f16> = (0..n * k)
        .map(|i| {
            let c = i % k;
            let v = if outlier(c) {
                0.0
            } else if c == 0 {
                7.0 // row absmax 7 → scale f16(7 · f32(1/7)) = 1
            } else {
                (rng.uniform() * 7.49).round()
            };
            half::f16::from_f32(v)
        })
        .collect();
    let w = quant::QuantizedWeight::quantize(&w, n, k, 4).unwrap();
    assert!(w.scales.iter().all(|s| s.to_f32() == 1.0));
    let x: Vec<f32> = (0..k)
        .map(|c| {
            let i = (rng.uniform() * 255.0).round();
            if outlier(c) {
                2f32.powi(20)
            } else if (c / GROUP) % 2 == 1 {
                (i / 85.0).round() / 8.0 // |i| ≤ 3 on the 2^-3 grid
            } else {
                i / 1024.0
            }
        })
        .collect();
    let pm = PackedMatrix::new(4, n, k, &w.packed, &w.scales).unwrap();
    let want = kernels::reference_linear(&x, 1, &pm);
    for isa in fixed_isas() {
        let mut y = vec![f32::NAN; n];
        kernels::quant_linear_with(isa, &x, 1, &pm, &mut y);
        assert_eq!(y, want, "{isa:?}, {n} x {k}");
    }
}

#[test]
fn one_row_gemv_i32_sums_do_not_overflow_at_extreme_values() {
    // The largest products the format allows: q = -8 (pre-quantized checkpoints may hold it) with
    // a scale of mantissa 2047 gives |c_q| = 16376, and an activation just below a power of two
    // gives the largest high limb (4096). Each i32 lane of a 3-block group adds 24 such products,
    // 1.61e9 < 2^31 (AVX2; AVX-512 has twice the lanes, so 12, with even and odd columns in one
    // sum); 5-block groups would wrap on AVX2 (checked: the test then fails).
    let (n, k) = (3usize, 4096usize);
    let w = quant::QuantizedWeight {
        bits: 4,
        out_features: n,
        in_features: k,
        packed: vec![0x88u8 as i8; n * k / 2],
        scales: vec![half::f16::from_bits(0x3BFF); n],
    };
    let pm = PackedMatrix::new(4, n, k, &w.packed, &w.scales).unwrap();
    for v in [f32::from_bits(0x3FFF_FFFF), -f32::from_bits(0x3FFF_FFFF)] {
        let x = vec![v; k];
        let want = kernels::reference_linear(&x, 1, &pm);
        for isa in Isa::available() {
            let mut y = vec![f32::NAN; n];
            kernels::quant_linear_with(isa, &x, 1, &pm, &mut y);
            for j in 0..n {
                let rel = ((y[j] - want[j]) / want[j]).abs();
                assert!(
                    rel < 1e-6,
                    "{isa:?}, x = {v}: row {j} got {} want {}",
                    y[j],
                    want[j]
                );
            }
        }
    }
}

#[test]
fn one_row_gemv_propagates_inf_and_nan() {
    let mut rng = Rng::new(12);
    let (n, k) = (9usize, 320usize);
    let w = random_quantized(&mut rng, n, k, 4);
    let pm = PackedMatrix::new(4, n, k, &w.packed, &w.scales).unwrap();
    for bad in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN] {
        let mut x = rng.vec(k);
        x[77] = bad;
        let want = kernels::reference_linear(&x, 1, &pm);
        for isa in Isa::available() {
            let mut y = vec![0f32; n];
            kernels::quant_linear_with(isa, &x, 1, &pm, &mut y);
            for j in 0..n {
                assert!(
                    y[j].is_nan() == want[j].is_nan()
                        && (y[j].is_nan() || y[j] == want[j] || !want[j].is_infinite()),
                    "{isa:?}, x[77] = {bad}: row {j} got {} want {}",
                    y[j],
                    want[j]
                );
                assert!(
                    !y[j].is_finite(),
                    "{isa:?}, x[77] = {bad}: row {j} stayed finite: {}",
                    y[j]
                );
            }
        }
    }
}
