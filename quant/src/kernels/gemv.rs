//! Decode-time kernels (at most [`super::GEMV_MAX_ROWS`] activation rows): every packed weight byte
//! is read once and decoded in registers, the work split over weight rows with rayon.

use std::borrow::Cow;
use std::ops::Range;

use rayon::prelude::*;

use super::{Isa, PackedMatrix, scalar};

/// Below this many weight elements the rayon split costs more than it saves.
const PARALLEL_MIN_ELEMS: usize = 1 << 16;

#[cfg(target_arch = "x86_64")]
use super::x86;

/// `x` with every full 64-column block permuted into the decode order of the AVX2 int4 kernel.
#[cfg(target_arch = "x86_64")]
fn permute_x(x: &[f32], m: usize, k: usize) -> Vec<f32> {
    let mut xp = x.to_vec();
    for i in 0..m {
        for b in 0..k / x86::BLOCK4 {
            let base = i * k + x86::BLOCK4 * b;
            for p in 0..x86::BLOCK4 {
                xp[base + p] = x[base + x86::perm_offset(p)];
            }
        }
    }
    xp
}

/// Undoes [`permute_x`] on an `[m, k]` gradient buffer.
#[cfg(target_arch = "x86_64")]
fn unpermute_into(acc: &[f32], m: usize, k: usize, out: &mut [f32]) {
    out.copy_from_slice(acc);
    for i in 0..m {
        for b in 0..k / x86::BLOCK4 {
            let base = i * k + x86::BLOCK4 * b;
            for p in 0..x86::BLOCK4 {
                out[base + x86::perm_offset(p)] = acc[base + p];
            }
        }
    }
}

/// Dispatches the const-generic AVX2 row kernels; `$a` is the accumulator count for `$m` rows.
#[cfg(target_arch = "x86_64")]
macro_rules! by_rows {
    ($m:expr, $f:ident, $($arg:expr),*) => {
        // SAFETY (all arms): callers reach this only with Isa::Avx2 or above, runtime-detected.
        match $m {
            1 => unsafe { x86::$f::<1, 4>($($arg),*) },
            2 => unsafe { x86::$f::<2, 4>($($arg),*) },
            3 => unsafe { x86::$f::<3, 2>($($arg),*) },
            4 => unsafe { x86::$f::<4, 2>($($arg),*) },
            5 => unsafe { x86::$f::<5, 1>($($arg),*) },
            6 => unsafe { x86::$f::<6, 1>($($arg),*) },
            7 => unsafe { x86::$f::<7, 1>($($arg),*) },
            8 => unsafe { x86::$f::<8, 1>($($arg),*) },
            m => unreachable!("GEMV kernel called with {m} rows"),
        }
    };
}

#[cfg(target_arch = "x86_64")]
macro_rules! by_rows_grad {
    ($m:expr, $f:ident, $($arg:expr),*) => {
        // SAFETY (all arms): callers reach this only with Isa::Avx2 or above, runtime-detected.
        match $m {
            1 => unsafe { x86::$f::<1>($($arg),*) },
            2 => unsafe { x86::$f::<2>($($arg),*) },
            3 => unsafe { x86::$f::<3>($($arg),*) },
            4 => unsafe { x86::$f::<4>($($arg),*) },
            5 => unsafe { x86::$f::<5>($($arg),*) },
            6 => unsafe { x86::$f::<6>($($arg),*) },
            7 => unsafe { x86::$f::<7>($($arg),*) },
            8 => unsafe { x86::$f::<8>($($arg),*) },
            m => unreachable!("GEMV gradient kernel called with {m} rows"),
        }
    };
}

/// Columns per pass of the AVX2 kernels. While the `[m, k]` activations fit in half of L2
/// (256 KiB) the weights stream as one sequential run per task; beyond that the `[m, cols]` slice
/// of x is kept near L1 size, at the price of row pieces of ≥ 512 bytes. Measured: unchunked is
/// 10–15 % faster for 2–8 rows of 4096 columns, chunked 1.4× faster for 8 rows of 16384.
fn col_chunk(m: usize, k: usize) -> usize {
    if m * k * 4 <= 256 << 10 {
        k.max(64)
    } else {
        // A multiple of the int4 block (64) and of the int8 step (8).
        (4096 / m).max(1024) / 64 * 64
    }
}

/// Forward kernel for weight rows `rows`, writing `out [rows.len(), m]` (zeroed by the caller).
fn rows_kernel(
    isa: Isa,
    xs: &[f32],
    m: usize,
    w: &PackedMatrix<'_>,
    rows: Range<usize>,
    out: &mut [f32],
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 => {
            let kc = col_chunk(m, w.k);
            for c0 in (0..w.k).step_by(kc) {
                let cols = c0..(c0 + kc).min(w.k);
                if w.bits == 4 {
                    by_rows!(m, gemv4, xs, w, rows.clone(), cols, out)
                } else {
                    by_rows!(m, gemv8, xs, w, rows.clone(), cols, out)
                }
            }
        }
        _ => scalar::gemv_rows(xs, m, w, rows, out),
    }
}

fn grad_kernel(
    isa: Isa,
    gy: &[f32],
    m: usize,
    w: &PackedMatrix<'_>,
    rows: Range<usize>,
    acc: &mut [f32],
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 if w.bits == 4 => by_rows_grad!(m, grad4, gy, w, rows, acc),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 => by_rows_grad!(m, grad8, gy, w, rows, acc),
        _ => scalar::grad_rows(gy, m, w, rows, acc),
    }
}

/// Whether the AVX2 int4 kernels use the permuted column order.
fn permuted(isa: Isa, w: &PackedMatrix<'_>) -> bool {
    cfg!(target_arch = "x86_64") && isa.avx2() && w.bits == 4
}

/// `y [m, n] = x [m, k] · Ŵᵀ` for `1 ≤ m ≤ 8`.
pub(super) fn gemv(isa: Isa, x: &[f32], m: usize, w: &PackedMatrix<'_>, y: &mut [f32]) {
    // One row (decoding one sequence): the fixed-point kernel, whose inner loop takes 8 cycles
    // per 64 weights against about 11 for the float kernel's on Zen 3 (AVX2), and which needs 8
    // instructions per 64 weights instead of 27 with AVX-512 VNNI. With 2+ rows the float kernel
    // decodes each weight once for all rows and is as fast or faster (measured on Zen 3: equal at
    // 2 rows, 1.1–1.5× faster at 4–8).
    #[cfg(target_arch = "x86_64")]
    if m == 1 && permuted(isa, w) {
        let order = if isa == Isa::Avx512 {
            &x86::fixed512::ORDER
        } else {
            &x86::fixed::ORDER
        };
        // SAFETY: `permuted` holds only with Isa::Avx2 or above, which was runtime-detected.
        if let Some(fx) = unsafe { x86::fixed::FixedRow::new(x, order) } {
            let full = w.k / x86::BLOCK4 * x86::BLOCK4;
            over_weight_rows(1, w.n, w.k, y, |rows, out| {
                // SAFETY: as above; Isa::Avx512 was runtime-detected too.
                unsafe {
                    if isa == Isa::Avx512 {
                        x86::fixed512::gemv4_fixed512(&fx, w, rows.clone(), out)
                    } else {
                        x86::fixed::gemv4_fixed(&fx, w, rows.clone(), out)
                    }
                };
                if full < w.k {
                    // The tail columns are not permuted: the float kernel reads them from x.
                    by_rows!(1, gemv4, x, w, rows, full..w.k, out)
                }
            });
            return;
        }
    }
    #[cfg(target_arch = "x86_64")]
    let xs: Cow<'_, [f32]> = if permuted(isa, w) {
        Cow::Owned(permute_x(x, m, w.k))
    } else {
        Cow::Borrowed(x)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let xs: Cow<'_, [f32]> = Cow::Borrowed(x);

    over_weight_rows(m, w.n, w.k, y, |rows, out| {
        rows_kernel(isa, &xs, m, w, rows, out)
    });
}

/// Runs a GEMV row kernel over all `n` weight rows and writes `y [m, n]`: `kernel(rows, out)`
/// accumulates weight rows `rows` into the zeroed, weight-row-major `out [rows.len(), m]`; the
/// rows are split over rayon tasks when the weight has at least [`PARALLEL_MIN_ELEMS`] elements,
/// and the `[n, m]` result is transposed into `y` (m = 1 needs no transpose and no buffer).
pub(super) fn over_weight_rows(
    m: usize,
    n: usize,
    k: usize,
    y: &mut [f32],
    kernel: impl Fn(Range<usize>, &mut [f32]) + Sync,
) {
    let mut yt_buf = if m == 1 {
        Vec::new()
    } else {
        vec![0f32; n * m]
    };
    let yt: &mut [f32] = if m == 1 { &mut *y } else { &mut yt_buf };
    yt.fill(0.0);
    if n * k < PARALLEL_MIN_ELEMS {
        kernel(0..n, yt);
    } else {
        let tasks = rayon::current_num_threads() * 8;
        let rows_per_task = n.div_ceil(tasks).max(1);
        yt.par_chunks_mut(rows_per_task * m)
            .enumerate()
            .for_each(|(t, chunk)| {
                let r0 = t * rows_per_task;
                kernel(r0..r0 + chunk.len() / m, chunk);
            });
    }
    if m > 1 {
        for (j, row) in yt_buf.chunks_exact(m).enumerate() {
            for (i, v) in row.iter().enumerate() {
                y[i * n + j] = *v;
            }
        }
    }
}

/// `g_x [m, k] = g_y [m, n] · Ŵ` for `1 ≤ m ≤ 8`: weight rows are split over tasks, each
/// accumulating a private `[m, k]` buffer, summed at the end (so every task streams whole rows).
pub(super) fn gemv_grad(isa: Isa, gy: &[f32], m: usize, w: &PackedMatrix<'_>, gx: &mut [f32]) {
    let tasks = if w.n * w.k < PARALLEL_MIN_ELEMS {
        1
    } else {
        rayon::current_num_threads().min(w.n).max(1)
    };
    let rows_per_task = w.n.div_ceil(tasks);
    let partials: Vec<Vec<f32>> = (0..tasks)
        .into_par_iter()
        .map(|t| {
            let mut acc = vec![0f32; m * w.k];
            let r0 = (t * rows_per_task).min(w.n);
            grad_kernel(isa, gy, m, w, r0..(r0 + rows_per_task).min(w.n), &mut acc);
            acc
        })
        .collect();
    let mut sum = partials.into_iter().reduce(|mut a, b| {
        a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
        a
    });
    let acc = sum.get_or_insert_with(|| vec![0f32; m * w.k]);
    #[cfg(target_arch = "x86_64")]
    if permuted(isa, w) {
        unpermute_into(acc, m, w.k, gx);
        return;
    }
    gx.copy_from_slice(acc);
}
