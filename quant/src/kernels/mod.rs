//! CPU kernels on plain slices (no burn types): the fused int4/int8 GEMV and tiled GEMM, their
//! input-gradient counterparts, the frozen dense-weight GEMM and f16/bf16 GEMV, and the simple
//! reference path the fast kernels are tested against.
//!
//! Conventions: activations are row-major f32 `x [m, k]`; the weight is `W [n, k]` (torch layout);
//! `y [m, n] = x · Ŵᵀ` and `g_x [m, k] = g_y [m, n] · Ŵ`. Quantized weights are dequantized as
//! `Ŵ = f16(scale · q)` exactly (see [`crate::format`]), only in registers (GEMV) or in a small
//! per-task f32 tile (GEMM), never as a whole matrix.

mod dense;
mod dense_gemv;
mod gemv;
mod scalar;
mod tiled;
#[cfg(target_arch = "x86_64")]
mod x86;

use half::f16;

pub use dense::{
    DenseMatrix, DenseStorage, dense_linear, dense_linear_f16, dense_linear_grad,
    dense_linear_grad_f16,
};

use crate::format::{check_bits, packed_row_bytes};

/// Largest row count served by one call of the GEMV (decode) kernels.
pub const GEMV_MAX_ROWS: usize = 8;

/// Up to this many rows the forward runs the GEMV kernels on groups of [`GEMV_MAX_ROWS`] rows;
/// more rows go to the tiled GEMM. The tiles pay a row-count-independent cost (every weight is
/// widened to f32 scratch and repacked by `gemm`): on 4096 → 12288 int4 the GEMM took 33 / 37 / 42
/// ms for 16 / 24 / 32 rows against 8–11 ms per group of 8 for the GEMV; the two meet at about 48
/// rows, and the decode batches and beams of evaluation stay below 32.
pub const GEMV_SPLIT_MAX_ROWS: usize = 32;

/// A borrowed packed weight `[n, k]`: `data` is `[n, k · bits / 8]`, `scales` is `[n]`.
#[derive(Debug, Clone, Copy)]
pub struct PackedMatrix<'a> {
    /// 4 or 8.
    pub bits: u8,
    /// Output features (weight rows).
    pub n: usize,
    /// Input features (weight columns).
    pub k: usize,
    /// Packed rows.
    pub data: &'a [i8],
    /// One f16 scale per row.
    pub scales: &'a [f16],
}

impl<'a> PackedMatrix<'a> {
    /// Validates the buffer lengths against `(bits, n, k)`.
    pub fn new(
        bits: u8,
        n: usize,
        k: usize,
        data: &'a [i8],
        scales: &'a [f16],
    ) -> Result<Self, crate::QuantError> {
        check_bits(bits, k)?;
        let expected = n * packed_row_bytes(k, bits);
        if data.len() != expected {
            return Err(crate::QuantError::LengthMismatch {
                what: "packed weight",
                expected,
                got: data.len(),
            });
        }
        if scales.len() != n {
            return Err(crate::QuantError::LengthMismatch {
                what: "weight_scale",
                expected: n,
                got: scales.len(),
            });
        }
        Ok(Self {
            bits,
            n,
            k,
            data,
            scales,
        })
    }

    /// Bytes per packed row.
    pub fn row_bytes(&self) -> usize {
        packed_row_bytes(self.k, self.bits)
    }
}

/// Instruction set used by the quantized kernels, in increasing order of capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// Portable Rust (used where AVX2/FMA/F16C are missing).
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// [`Isa::Avx2`] plus AVX-512 F, BW and VNNI, used by the one-row int4 GEMV (decoding one
    /// sequence); every other kernel runs its AVX2 form.
    Avx512,
}

impl Isa {
    /// The best instruction set available on this CPU (runtime detection).
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx2") && has!("fma") && has!("f16c") {
                if has!("avx512f") && has!("avx512bw") && has!("avx512vnni") {
                    return Isa::Avx512;
                }
                return Isa::Avx2;
            }
        }
        Isa::Scalar
    }

    /// Every instruction set this CPU supports, from [`Isa::Scalar`] up (tests run each).
    pub fn available() -> Vec<Isa> {
        let best = Isa::detect();
        [Isa::Scalar, Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter(|i| *i <= best)
            .collect()
    }

    /// Whether the AVX2 kernels may run (true for [`Isa::Avx2`] and [`Isa::Avx512`]).
    pub(crate) fn avx2(self) -> bool {
        self >= Isa::Avx2
    }

    /// `self`, or the best instruction set below it that this CPU supports.
    fn or_supported(self) -> Isa {
        self.min(Isa::detect())
    }
}

/// `y [m, n] = x [m, k] · Ŵᵀ`: the GEMV kernel on groups of up to 8 rows for `m ≤ 32`
/// ([`GEMV_SPLIT_MAX_ROWS`]), the tiled GEMM otherwise.
pub fn quant_linear(x: &[f32], m: usize, w: &PackedMatrix<'_>, y: &mut [f32]) {
    quant_linear_with(Isa::detect(), x, m, w, y)
}

/// [`quant_linear`] with an explicit instruction set (tests use it to cover the scalar fallback).
pub fn quant_linear_with(isa: Isa, x: &[f32], m: usize, w: &PackedMatrix<'_>, y: &mut [f32]) {
    assert_eq!(
        x.len(),
        m * w.k,
        "quant_linear: x has {} elements, expected [{m}, {}]",
        x.len(),
        w.k
    );
    assert_eq!(
        y.len(),
        m * w.n,
        "quant_linear: y has {} elements, expected [{m}, {}]",
        y.len(),
        w.n
    );
    if m == 0 || w.n == 0 {
        return;
    }
    if w.k == 0 {
        y.fill(0.0);
        return;
    }
    let isa = isa.or_supported();
    if m <= GEMV_SPLIT_MAX_ROWS {
        for (xs, ys) in x
            .chunks(GEMV_MAX_ROWS * w.k)
            .zip(y.chunks_mut(GEMV_MAX_ROWS * w.n))
        {
            gemv::gemv(isa, xs, xs.len() / w.k, w, ys);
        }
    } else {
        tiled::linear(x, m, &tiled::PackedTiles { w: *w, isa }, y);
    }
}

/// `g_x [m, k] = g_y [m, n] · Ŵ` (input gradient only), GEMV-style for `m ≤ 8`, tiled otherwise.
pub fn quant_linear_grad(gy: &[f32], m: usize, w: &PackedMatrix<'_>, gx: &mut [f32]) {
    quant_linear_grad_with(Isa::detect(), gy, m, w, gx)
}

/// [`quant_linear_grad`] with an explicit instruction set.
pub fn quant_linear_grad_with(
    isa: Isa,
    gy: &[f32],
    m: usize,
    w: &PackedMatrix<'_>,
    gx: &mut [f32],
) {
    assert_eq!(
        gy.len(),
        m * w.n,
        "quant_linear_grad: grad_y has {} elements, expected [{m}, {}]",
        gy.len(),
        w.n
    );
    assert_eq!(
        gx.len(),
        m * w.k,
        "quant_linear_grad: grad_x has {} elements, expected [{m}, {}]",
        gx.len(),
        w.k
    );
    if m == 0 || w.k == 0 {
        return;
    }
    if w.n == 0 {
        gx.fill(0.0);
        return;
    }
    let isa = isa.or_supported();
    if m <= GEMV_MAX_ROWS {
        gemv::gemv_grad(isa, gy, m, w, gx);
    } else {
        tiled::linear_grad(gy, m, &tiled::PackedTiles { w: *w, isa }, gx);
    }
}

/// Reference forward: dequantize the whole weight with [`crate::QuantizedWeight::dequantize_f32`]
/// semantics and multiply naively with f64 accumulation. Slow; for tests.
pub fn reference_linear(x: &[f32], m: usize, w: &PackedMatrix<'_>) -> Vec<f32> {
    let wd = scalar::dequantize_all(w);
    let mut y = vec![0f32; m * w.n];
    for i in 0..m {
        for j in 0..w.n {
            let mut acc = 0f64;
            for l in 0..w.k {
                acc += x[i * w.k + l] as f64 * wd[j * w.k + l] as f64;
            }
            y[i * w.n + j] = acc as f32;
        }
    }
    y
}

/// Reference input gradient `g_y · Ŵ` (naive, f64 accumulation). For tests.
pub fn reference_linear_grad(gy: &[f32], m: usize, w: &PackedMatrix<'_>) -> Vec<f32> {
    let wd = scalar::dequantize_all(w);
    let mut gx = vec![0f32; m * w.k];
    for i in 0..m {
        for l in 0..w.k {
            let mut acc = 0f64;
            for j in 0..w.n {
                acc += gy[i * w.n + j] as f64 * wd[j * w.k + l] as f64;
            }
            gx[i * w.k + l] = acc as f32;
        }
    }
    gx
}

/// Raw pointer that may be shared by rayon tasks writing disjoint parts of one output buffer.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr<T>(pub *mut T);
// SAFETY: every user writes disjoint index ranges and joins before the buffer is read.
unsafe impl<T: Send> Send for SendPtr<T> {}
unsafe impl<T: Send> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// The wrapped pointer (a method, so closures capture the whole `Send` wrapper).
    #[inline]
    pub(crate) fn get(self) -> *mut T {
        self.0
    }
}
