//! The one-row int4 GEMV on AVX-512 (F, BW, VNNI): the same fixed-point activations and exact
//! integer products as [`super::fixed`], in a third of the instructions. A 64-column block is 8:
//! one zero-extending load of its 32 bytes to words, one shift, two `vpermw` lookups in a
//! 32-word table and four `vpdpwssd` (multiply word pairs, add into i32), where AVX2 needs 27.
//!
//! Why each step is exact and needs no mask:
//! - `vpmovzxbw` puts byte `j` of the block in word `j`: column `2j` in bits 4..8 (the high
//!   nibble, signed), column `2j + 1` in bits 0..4;
//! - `vpermw` reads the low 5 bits of each index word. The table holds the 16 integers `c_q`
//!   (entry = unsigned nibble, see [`super::lut_words`]) twice, so the low nibble indexes it
//!   directly whatever bit 4 (the high nibble's lowest bit) holds; the high nibble, shifted down
//!   by 4, has nothing above it;
//! - `vpdpwssd` adds two products `c_q · limb` (|c_q| ≤ 2^14, |limb| ≤ 2^12) to an i32 lane per
//!   instruction; the even and odd columns of a limb go to separate accumulators, so a lane gains
//!   at most 2 · 2^26 per block and 3 · 2^27 per 3-block group, far below 2^31.

use std::arch::x86_64::*;
use std::ops::Range;

use super::fixed::{FixedRow, GROUP_BLOCKS};
use super::{BLOCK4, lut_words, prefetch_ahead};
use crate::kernels::PackedMatrix;

/// Limb order of [`gemv4_fixed512`]: words 0..32 of a block are the even columns (the high
/// nibbles of bytes 0..32), words 32..64 the odd columns (their low nibbles).
pub(in crate::kernels) const ORDER: [u8; BLOCK4] = {
    let mut t = [0u8; BLOCK4];
    let mut i = 0;
    while i < BLOCK4 {
        t[i] = if i < 32 { 2 * i } else { 2 * (i - 32) + 1 } as u8;
        i += 1;
    }
    t
};

/// `out[j] += Σ_k x[k] · Ŵ[r, k]` for the weight rows `r ∈ rows` (`j = r − rows.start`) over the
/// full 64-column blocks of `x` (the caller adds the tail columns). `x` must have been built with
/// [`ORDER`].
///
/// # Safety
/// The CPU must support AVX2, FMA, F16C, AVX-512F, AVX-512BW and AVX-512 VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
pub(in crate::kernels) unsafe fn gemv4_fixed512(
    x: &FixedRow,
    w: &PackedMatrix<'_>,
    rows: Range<usize>,
    out: &mut [f32],
) {
    let (rb, nblk) = (w.row_bytes(), w.k / BLOCK4);
    assert!(
        x.order == ORDER
            && x.hi.len() == nblk * BLOCK4
            && x.lo.len() == nblk * BLOCK4
            && x.groups.len() == nblk.div_ceil(GROUP_BLOCKS)
            && out.len() >= rows.len()
            && rows.end <= w.n
    );
    let (hptr, lptr) = (x.hi.as_ptr(), x.lo.as_ptr());
    let full = nblk / GROUP_BLOCKS;
    for (r, o) in rows.zip(out.iter_mut()) {
        let (words, unit) = lut_words(w.scales[r]);
        let lut = _mm512_broadcast_i64x4(words);
        // SAFETY: row r lies inside `w.data` (checked by PackedMatrix::new and the assert above).
        let p = unsafe { w.data.as_ptr().add(r * rb) };
        // Block `b` of the row: 32 packed bytes, limbs [64b, 64b + 64). Even and odd columns
        // accumulate apart (see the module comment for the bound), which also halves the
        // `vpdpwssd` dependency chains.
        macro_rules! block {
            ($b:expr, $he:ident, $ho:ident, $le:ident, $lo:ident) => {{
                let b = $b;
                let v = _mm512_cvtepu8_epi16(_mm256_loadu_si256(
                    p.add(b * BLOCK4 / 2) as *const __m256i
                ));
                let odd = _mm512_permutexvar_epi16(v, lut);
                let even = _mm512_permutexvar_epi16(_mm512_srli_epi16::<4>(v), lut);
                let ld = |q: *const i16| _mm512_loadu_si512(q as *const __m512i);
                let (ph, pl) = (hptr.add(b * BLOCK4), lptr.add(b * BLOCK4));
                $he = _mm512_dpwssd_epi32($he, even, ld(ph));
                $ho = _mm512_dpwssd_epi32($ho, odd, ld(ph.add(32)));
                $le = _mm512_dpwssd_epi32($le, even, ld(pl));
                $lo = _mm512_dpwssd_epi32($lo, odd, ld(pl.add(32)));
            }};
        }
        // Two f32 sums (high and low limbs) keep the per-group FMAs off one chain.
        let (mut acc_h, mut acc_l) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        for (g, [s_hi, s_lo]) in x.groups.iter().enumerate() {
            let z = _mm512_setzero_si512();
            let (mut he, mut ho, mut le, mut lo) = (z, z, z, z);
            let b0 = g * GROUP_BLOCKS;
            // SAFETY: every block b < k / 64 reads bytes [32b, 32b + 32) of row r and limbs
            // [64b, 64b + 64); prefetches never fault.
            unsafe {
                if g < full {
                    // The group's 96 bytes span at most two cache lines.
                    prefetch_ahead(p.add(b0 * BLOCK4 / 2));
                    prefetch_ahead(p.add(b0 * BLOCK4 / 2 + 64));
                    const _: () = assert!(GROUP_BLOCKS == 3);
                    block!(b0, he, ho, le, lo);
                    block!(b0 + 1, he, ho, le, lo);
                    block!(b0 + 2, he, ho, le, lo);
                } else {
                    for b in b0..nblk {
                        block!(b, he, ho, le, lo);
                    }
                }
            }
            // The i32 sums are exact integers (their sum too: < 2^31); from here on the sum
            // rounds like any f32 sum.
            let (hi, lo) = (_mm512_add_epi32(he, ho), _mm512_add_epi32(le, lo));
            acc_h = _mm512_fmadd_ps(_mm512_cvtepi32_ps(hi), _mm512_set1_ps(*s_hi), acc_h);
            acc_l = _mm512_fmadd_ps(_mm512_cvtepi32_ps(lo), _mm512_set1_ps(*s_lo), acc_l);
        }
        let sum = _mm512_reduce_add_ps(_mm512_add_ps(acc_h, acc_l));
        // u · 2^e may leave the f32 range (tiny activations): scaled in f64.
        *o += (f64::from(sum) * f64::from(unit) * x.unit) as f32;
    }
}
