//! Decode-time GEMV for frozen dense f16/bf16 weights (at most [`super::GEMV_MAX_ROWS`]
//! activation rows, contiguous weight rows): every weight row is read once and widened in
//! registers (`vcvtph2ps` straight from memory for f16, a 16-bit shift for bf16), instead of being
//! converted into an f32 tile for `gemm` first. This is the path of a tied f16 `lm_head` (130528 ×
//! 4096 at 6B) and of every frozen f16 linear while decoding.

#[cfg(target_arch = "x86_64")]
use std::ops::Range;

use super::dense::{DenseMatrix, DenseStorage};
use super::{GEMV_MAX_ROWS, Isa};

/// `y [m, n] = x [m, k] · Wᵀ` for `1 ≤ m ≤ 8` and an f16/bf16 weight with contiguous rows.
/// Returns `false` (and leaves `y` alone) where this kernel does not apply: other storage,
/// strided columns, more rows, or a CPU without AVX2/FMA/F16C.
pub(super) fn dense_gemv(x: &[f32], m: usize, w: &DenseMatrix<'_>, y: &mut [f32]) -> bool {
    let half_storage = matches!(w.data, DenseStorage::F16(_) | DenseStorage::BF16(_));
    if !(1..=GEMV_MAX_ROWS).contains(&m)
        || !half_storage
        || w.col_stride != 1
        || w.n == 0
        || !Isa::detect().avx2()
    {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        super::gemv::over_weight_rows(m, w.n, w.k, y, |rows, out| rows_kernel(x, m, w, rows, out));
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (x, y);
        false
    }
}

/// Weight rows `rows`, accumulated into `out [rows.len(), m]`.
#[cfg(target_arch = "x86_64")]
fn rows_kernel(x: &[f32], m: usize, w: &DenseMatrix<'_>, rows: Range<usize>, out: &mut [f32]) {
    // One pass over all columns: chunking x into L1-sized column slices (as the int4 kernel does
    // for several rows) measured 1.2-2x slower here, the short strided row pieces defeating the
    // prefetchers.
    macro_rules! by_rows {
        ($($m:literal => $a:literal),*) => {
            match m {
                // SAFETY (all arms): dense_gemv checked AVX2/FMA/F16C at run time and unit column
                // stride; gemv_rows asserts every row it reads lies in the storage.
                $($m => unsafe { x86::gemv_rows::<$m, $a>(x, w, rows, out) },)*
                m => unreachable!("dense GEMV called with {m} rows"),
            }
        };
    }
    by_rows!(1 => 4, 2 => 4, 3 => 2, 4 => 2, 5 => 1, 6 => 1, 7 => 1, 8 => 1)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::ops::Range;

    use super::super::dense::{DenseMatrix, DenseStorage};
    use super::super::x86::{hsum, prefetch_ahead};

    /// 8 weights at `p` (f16 or bf16 bit patterns) as f32.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn widen<const BF16: bool>(p: *const u16) -> __m256 {
        // SAFETY: the caller guarantees 8 readable elements at `p`.
        let v = unsafe { _mm_loadu_si128(p as *const __m128i) };
        if BF16 {
            // bf16 is the top half of an f32.
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(v)))
        } else {
            _mm256_cvtph_ps(v)
        }
    }

    /// `out[j · M + i] += Σ_c x[i, c] · W[rows.start + j, c]` for an f16/bf16 weight with unit
    /// column stride; `A` accumulators per x row hide the FMA latency.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C; the view must lie inside its storage and have
    /// `col_stride == 1`; `x` is `[M, w.k]`, `out` is `[rows.len(), M]`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn gemv_rows<const M: usize, const A: usize>(
        x: &[f32],
        w: &DenseMatrix<'_>,
        rows: Range<usize>,
        out: &mut [f32],
    ) {
        match w.data {
            // SAFETY: forwarded contract.
            DenseStorage::F16(d) => unsafe {
                rows_bits::<M, A, false>(x, w, d.as_ptr() as *const u16, d.len(), rows, out)
            },
            // SAFETY: forwarded contract.
            DenseStorage::BF16(d) => unsafe {
                rows_bits::<M, A, true>(x, w, d.as_ptr() as *const u16, d.len(), rows, out)
            },
            DenseStorage::F32(_) => unreachable!("dense GEMV is for f16/bf16 storage"),
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn rows_bits<const M: usize, const A: usize, const BF16: bool>(
        x: &[f32],
        w: &DenseMatrix<'_>,
        data: *const u16,
        len: usize,
        rows: Range<usize>,
        out: &mut [f32],
    ) {
        let k = w.k;
        let k8 = k / 8 * 8;
        assert!(x.len() >= M * k && out.len() >= rows.len() * M && w.col_stride == 1);
        let to_f32 = |bits: u16| {
            if BF16 {
                half::bf16::from_bits(bits).to_f32()
            } else {
                half::f16::from_bits(bits).to_f32()
            }
        };
        let xptr = x.as_ptr();
        for (r, o) in rows.zip(out.chunks_exact_mut(M)) {
            let start = usize::try_from(w.offset as isize + r as isize * w.row_stride)
                .ok()
                .filter(|s| s.checked_add(k).is_some_and(|e| e <= len));
            let Some(start) = start else {
                panic!("dense GEMV row {r} lies outside its storage of {len}")
            };
            // SAFETY: elements start .. start + k of the storage exist (asserted above).
            let p = unsafe { data.add(start) };
            let mut acc = [[_mm256_setzero_ps(); A]; M];
            for (b, c) in (0..k8).step_by(8).enumerate() {
                // SAFETY: columns c .. c + 8 < k of row r and of every x row.
                unsafe {
                    if b % 4 == 0 {
                        // One per 64 bytes, as in the int4 GEMV.
                        prefetch_ahead(p.add(c) as *const i8);
                    }
                    let wv = widen::<BF16>(p.add(c));
                    for (i, acc_i) in acc.iter_mut().enumerate() {
                        acc_i[b % A] =
                            _mm256_fmadd_ps(wv, _mm256_loadu_ps(xptr.add(i * k + c)), acc_i[b % A]);
                    }
                }
            }
            for (i, (oi, acc_i)) in o.iter_mut().zip(&acc).enumerate() {
                let mut v = acc_i[0];
                for a in &acc_i[1..] {
                    v = _mm256_add_ps(v, *a);
                }
                let mut s = hsum(v);
                for c in k8..k {
                    // SAFETY: column c < k of row r.
                    s += x[i * k + c] * to_f32(unsafe { *p.add(c) });
                }
                *oi += s;
            }
        }
    }
}
