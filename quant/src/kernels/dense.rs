//! Frozen dense weights `W [n, k]` stored in any float dtype, possibly strided (a transposed or
//! sliced view): `y = x · Wᵀ` and `g_x = g_y · W` computed in f32. An f32 weight is handed to
//! `gemm` as-is (strides, no copy); f16/bf16 weights are converted tile by tile.

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

use super::tiled::{self, TileSource};

/// Element storage of a dense weight (the whole underlying buffer; see [`DenseMatrix::offset`]).
#[derive(Debug, Clone, Copy)]
pub enum DenseStorage<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    BF16(&'a [bf16]),
}

/// A strided `[n, k]` view: element `(r, c)` lives at `offset + r · row_stride + c · col_stride`.
#[derive(Debug, Clone, Copy)]
pub struct DenseMatrix<'a> {
    pub data: DenseStorage<'a>,
    pub n: usize,
    pub k: usize,
    pub offset: usize,
    pub row_stride: isize,
    pub col_stride: isize,
}

impl DenseMatrix<'_> {
    /// Index of element `(r, c)` in the storage.
    #[inline]
    fn index(&self, r: usize, c: usize) -> usize {
        (self.offset as isize + r as isize * self.row_stride + c as isize * self.col_stride)
            as usize
    }

    /// Panics unless every element of the view lies inside the storage.
    fn check_bounds(&self) {
        if self.n == 0 || self.k == 0 {
            return;
        }
        let len = match self.data {
            DenseStorage::F32(d) => d.len(),
            DenseStorage::F16(d) => d.len(),
            DenseStorage::BF16(d) => d.len(),
        };
        let corners = [
            (0, 0),
            (self.n - 1, 0),
            (0, self.k - 1),
            (self.n - 1, self.k - 1),
        ];
        for (r, c) in corners {
            let i =
                self.offset as isize + r as isize * self.row_stride + c as isize * self.col_stride;
            assert!(
                i >= 0 && (i as usize) < len,
                "dense weight view [{}, {}] exceeds its storage of {len}",
                self.n,
                self.k
            );
        }
    }
}

impl TileSource for DenseMatrix<'_> {
    fn rows(&self) -> usize {
        self.n
    }
    fn cols(&self) -> usize {
        self.k
    }
    fn fill(&self, n0: usize, nb: usize, k0: usize, kb: usize, out: &mut [f32]) {
        for r in 0..nb {
            let o = &mut out[r * kb..(r + 1) * kb];
            let start = self.index(n0 + r, k0);
            match (self.data, self.col_stride) {
                (DenseStorage::F32(d), 1) => o.copy_from_slice(&d[start..start + kb]),
                // half's slice conversion uses F16C / SIMD where available.
                (DenseStorage::F16(d), 1) => d[start..start + kb].convert_to_f32_slice(o),
                (DenseStorage::BF16(d), 1) => d[start..start + kb].convert_to_f32_slice(o),
                (DenseStorage::F32(d), _) => o
                    .iter_mut()
                    .enumerate()
                    .for_each(|(c, v)| *v = d[self.index(n0 + r, k0 + c)]),
                (DenseStorage::F16(d), _) => o
                    .iter_mut()
                    .enumerate()
                    .for_each(|(c, v)| *v = d[self.index(n0 + r, k0 + c)].to_f32()),
                (DenseStorage::BF16(d), _) => o
                    .iter_mut()
                    .enumerate()
                    .for_each(|(c, v)| *v = d[self.index(n0 + r, k0 + c)].to_f32()),
            }
        }
    }
}

/// Multi-threading threshold in multiply-adds (the value flex uses).
const PARALLEL_MIN_OPS: usize = 192 * 192 * 192;

fn parallelism(m: usize, n: usize, k: usize) -> gemm::Parallelism {
    if m.saturating_mul(n).saturating_mul(k) >= PARALLEL_MIN_OPS {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    }
}

/// `y [m, n] = x [m, k] · Wᵀ` in f32 (`x`, `y` contiguous row-major).
pub fn dense_linear(x: &[f32], m: usize, w: &DenseMatrix<'_>, y: &mut [f32]) {
    assert!(
        x.len() == m * w.k && y.len() == m * w.n,
        "dense_linear: shape mismatch"
    );
    w.check_bounds();
    if m == 0 || w.n == 0 {
        return;
    }
    match w.data {
        // SAFETY: check_bounds proved the strided view lies inside `d`; x and y are contiguous.
        DenseStorage::F32(d) => unsafe {
            gemm_f32(
                m,
                w.n,
                w.k,
                y.as_mut_ptr(),
                1,
                w.n as isize,
                x.as_ptr(),
                1,
                w.k as isize,
                d.as_ptr().add(w.offset),
                w.row_stride,
                w.col_stride,
            )
        },
        _ => {
            // Groups of up to 8 rows through the GEMV while that beats the tiles (see
            // GEMV_SPLIT_MAX_ROWS); the GEMV declines views and dtypes it does not serve.
            let (gk, gn) = (super::GEMV_MAX_ROWS * w.k, super::GEMV_MAX_ROWS * w.n);
            let split = m <= super::GEMV_SPLIT_MAX_ROWS
                && w.k > 0
                && x.chunks(gk)
                    .zip(y.chunks_mut(gn))
                    .all(|(xs, ys)| super::dense_gemv::dense_gemv(xs, xs.len() / w.k, w, ys));
            if !split {
                tiled::linear(x, m, w, y)
            }
        }
    }
}

/// `g_x [m, k] = g_y [m, n] · W` in f32.
pub fn dense_linear_grad(gy: &[f32], m: usize, w: &DenseMatrix<'_>, gx: &mut [f32]) {
    assert!(
        gy.len() == m * w.n && gx.len() == m * w.k,
        "dense_linear_grad: shape mismatch"
    );
    w.check_bounds();
    if m == 0 || w.k == 0 {
        return;
    }
    match w.data {
        // SAFETY: as in dense_linear; rhs[j, c] = W[j, c] uses the view's own strides.
        DenseStorage::F32(d) => unsafe {
            gemm_f32(
                m,
                w.k,
                w.n,
                gx.as_mut_ptr(),
                1,
                w.k as isize,
                gy.as_ptr(),
                1,
                w.n as isize,
                d.as_ptr().add(w.offset),
                w.col_stride,
                w.row_stride,
            )
        },
        _ => tiled::linear_grad(gy, m, w, gx),
    }
}

/// `dst [m, n] = lhs [m, k] · rhs [k, n]` with explicit (column, row) strides.
///
/// # Safety
/// All three strided views must be in bounds; `dst` must not alias the inputs.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_f32(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_cs: isize,
    dst_rs: isize,
    lhs: *const f32,
    lhs_cs: isize,
    lhs_rs: isize,
    rhs: *const f32,
    rhs_cs: isize,
    rhs_rs: isize,
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_cs,
            dst_rs,
            false,
            lhs,
            lhs_cs,
            lhs_rs,
            rhs,
            rhs_cs,
            rhs_rs,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            parallelism(m, n, k),
        )
    }
}

fn f16_storage<'a>(w: &DenseMatrix<'a>) -> &'a [f16] {
    match w.data {
        DenseStorage::F16(d) => d,
        other => panic!(
            "f16 dense kernel called with {} storage",
            match other {
                DenseStorage::F32(_) => "f32",
                _ => "bf16",
            }
        ),
    }
}

/// `y [m, n] = x [m, k] · Wᵀ` entirely in f16 (x, an F16 `w` and y; gemm accumulates internally),
/// used when activations and weight are both f16 so that nothing is converted at all.
pub fn dense_linear_f16(x: &[f16], m: usize, w: &DenseMatrix<'_>, y: &mut [f16]) {
    assert!(
        x.len() == m * w.k && y.len() == m * w.n,
        "dense_linear_f16: shape mismatch"
    );
    let d = f16_storage(w);
    w.check_bounds();
    if m == 0 || w.n == 0 {
        return;
    }
    let (n, k) = (w.n, w.k);
    if m <= super::GEMV_MAX_ROWS {
        // Decoding: the f32-accumulating GEMV reads each weight once (gemm's f16 path repacks).
        let xf: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
        let mut yf = vec![0f32; m * n];
        if super::dense_gemv::dense_gemv(&xf, m, w, &mut yf) {
            y.convert_from_f32_slice(&yf);
            return;
        }
    }
    // SAFETY: bounds checked above; gemm dispatches f16 by TypeId (burn-flex enables gemm's f16).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            y.as_mut_ptr(),
            1,
            n as isize,
            false,
            x.as_ptr(),
            1,
            k as isize,
            d.as_ptr().add(w.offset),
            w.row_stride,
            w.col_stride,
            f16::ZERO,
            f16::ONE,
            false,
            false,
            false,
            parallelism(m, n, k),
        )
    }
}

/// `g_x [m, k] = g_y [m, n] · W` entirely in f16.
pub fn dense_linear_grad_f16(gy: &[f16], m: usize, w: &DenseMatrix<'_>, gx: &mut [f16]) {
    assert!(
        gy.len() == m * w.n && gx.len() == m * w.k,
        "dense_linear_grad_f16: shape mismatch"
    );
    let d = f16_storage(w);
    w.check_bounds();
    if m == 0 || w.k == 0 {
        return;
    }
    let (n, k) = (w.n, w.k);
    // SAFETY: bounds checked above.
    unsafe {
        gemm::gemm(
            m,
            k,
            n,
            gx.as_mut_ptr(),
            1,
            k as isize,
            false,
            gy.as_ptr(),
            1,
            n as isize,
            d.as_ptr().add(w.offset),
            w.col_stride,
            w.row_stride,
            f16::ZERO,
            f16::ONE,
            false,
            false,
            false,
            parallelism(m, n, k),
        )
    }
}
