//! The int4 GEMV for one activation row on fixed-point activations (AVX2), the decode step's
//! kernel: 16 weights cost two `vpmaddwd` (one per activation limb) and two integer adds, where
//! the float kernel spends two widenings, two conversions and two FMAs.
//!
//! The table of a weight row gives each product `f16(scale · q)` as an exact integer `c_q` times
//! the scale's ulp `u` (see [`super::lut_int`]). The activations are turned into integers too: in
//! each group of [`GROUP_BLOCKS`] · 64 columns, `x ≈ 2^e_g · X` with `X` the element rounded to a
//! multiple of `2^e_g`, the ulp of the group's largest magnitude as a 24-bit significand. So
//! every element keeps at least the bits f32 gives the group's largest element (that element
//! and any one-hot row stay exact), and `|X| ≤ 2^24`, stored as two i16 limbs
//! `X = 4096 · hi + lo` with `|hi| ≤ 2^12`, `lo ∈ [-2048, 2047]`. `vpmaddwd` multiplies the 16-bit
//! `c_q` by each limb and adds lane pairs into i32 without rounding; each group's i32 sums go to
//! f32 once, scaled by `2^e_g`.
//!
//! Measured on the project machine (Zen 3, one core): the bare inner loop takes 8 cycles per 64
//! weights, against 11 for the float kernel ([`super::gemv4`]). The four vector pipes are the
//! bound, not one instruction: a block is 27 operations, 8 `vpmaddwd` on the two multiply pipes,
//! 8 shuffles on the two shuffle pipes, 11 adds and masks on any (quant/README.md, *Measured*).

use std::arch::x86_64::*;
use std::ops::Range;

use super::{BLOCK4, hsum, lut_int, nibbles64, perm_offset, prefetch_ahead};
use crate::kernels::PackedMatrix;

/// 64-column blocks per exponent group. One block adds at most 4 · 2 · 2^14 · 2^12 = 2^29 to an
/// i32 lane (|c_q| ≤ 2^14, |hi| ≤ 2^12), so three stay below 2^31 before the group is flushed.
pub(in crate::kernels) const GROUP_BLOCKS: usize = 3;

/// Column offset (inside its block) of limb word `t` (0..64).
///
/// Word `t` meets the `t`-th 16-bit table value of the decode in `vpmaddwd`: half `h = t / 32`
/// (low/high nibbles), unpack `v` (`unpacklo`/`unpackhi` of the two lookups), lane word `j`; as
/// [`perm_offset`] lays it out, word `j` of dword `d = j / 2` is decoded position
/// `32h + 16v + 8(j % 2) + d`.
const fn word_offset(t: usize) -> usize {
    let (h, r) = (t / 32, t % 32);
    let (v, j) = (r / 16, r % 16);
    perm_offset(32 * h + 16 * v + 8 * (j % 2) + j / 2)
}

/// [`word_offset`] of every word of a block: the limb order of [`gemv4_fixed`].
pub(in crate::kernels) const ORDER: [u8; BLOCK4] = {
    let mut t = [0u8; BLOCK4];
    let mut i = 0;
    while i < BLOCK4 {
        t[i] = word_offset(i) as u8;
        i += 1;
    }
    t
};

/// `x` (|x| ≤ 2^24) split into its limbs: `x = 4096 · hi + lo`, `lo ∈ [-2048, 2047]`.
fn split(x: i32) -> (i16, i16) {
    let h = (x + 2048) >> 12;
    (h as i16, (x - (h << 12)) as i16)
}

/// One activation row in fixed point: the limbs of its full 64-column blocks in the order of the
/// kernel that reads them (limb word `t` of a block holds column `order[t]`: [`ORDER`] for
/// [`gemv4_fixed`], [`super::fixed512::ORDER`] for the AVX-512 kernel), and per group the f32
/// factors `[4096 · s_g, s_g]` with `s_g = 2^(e_g − e)`, where `2^e` (`unit`) is the largest
/// group's ulp (so `s_g ≤ 1`).
pub(in crate::kernels) struct FixedRow {
    pub(super) hi: Vec<Limbs>,
    pub(super) lo: Vec<Limbs>,
    pub(super) groups: Vec<[f32; 2]>,
    pub(super) unit: f64,
    /// The limb order it was built for (each kernel asserts its own).
    pub(super) order: [u8; BLOCK4],
}

/// One limb of each of a block's 64 columns, on two whole cache lines: the AVX-512 kernel loads
/// 64 bytes at a time, and a load split across two lines costs two (measured on a Xeon with
/// AVX-512: the kernel took 1.1–1.3× as long with the limbs 16 bytes off the line).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(super) struct Limbs(pub(super) [i16; BLOCK4]);

impl FixedRow {
    /// The fixed-point form of `x` (its tail after the last full block is left out), or `None`
    /// when `x` holds an infinity or NaN: the float kernel then propagates it.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(in crate::kernels) unsafe fn new(x: &[f32], order: &[u8; BLOCK4]) -> Option<Self> {
        // |x| bit patterns order like the values; inf and NaN are the patterns ≥ 0x7F80_0000.
        let max_bits = |s: &[f32]| s.iter().fold(0u32, |a, v| a.max(v.to_bits() & 0x7FFF_FFFF));
        if max_bits(x) >= 0x7F80_0000 {
            return None;
        }
        let full = x.len() / BLOCK4 * BLOCK4;
        // e_g: the ulp exponent of the group's largest magnitude as a 24-bit significand, read
        // from its f64 bits (so that subnormal f32 maxima get theirs too): biased exponent − 1023
        // − 23. None for an all-zero group. Every X then satisfies |X| < 2^24.
        let exps: Vec<Option<i32>> = x[..full]
            .chunks(GROUP_BLOCKS * BLOCK4)
            .map(|g| match max_bits(g) {
                0 => None,
                b => Some(((f64::from(f32::from_bits(b)).to_bits() >> 52) & 0x7FF) as i32 - 1046),
            })
            .collect();
        let e = exps.iter().flatten().copied().max().unwrap_or(0);
        let (mut hi, mut lo) = (
            vec![Limbs([0; BLOCK4]); full / BLOCK4],
            vec![Limbs([0; BLOCK4]); full / BLOCK4],
        );
        let mut groups = vec![[0f32; 2]; exps.len()];
        for (g, eg) in exps.iter().enumerate() {
            let Some(eg) = *eg else { continue };
            // Groups 2^126 below the largest one underflow to 0, below f32's reach of the sum.
            let s = (2f64).powi(eg - e) as f32;
            groups[g] = [4096.0 * s, s];
            let inv = (2f64).powi(-eg);
            let cols = g * GROUP_BLOCKS * BLOCK4..((g + 1) * GROUP_BLOCKS * BLOCK4).min(full);
            for b0 in cols.step_by(BLOCK4) {
                let b = b0 / BLOCK4;
                let (xb, hb, lb) = (&x[b0..b0 + BLOCK4], &mut hi[b].0, &mut lo[b].0);
                if inv <= f64::from(f32::MAX) {
                    // SAFETY: the caller guarantees AVX2.
                    unsafe { limbs(xb, inv as f32, order, hb, lb) };
                } else {
                    // Groups of subnormals: 2^-e_g is beyond the f32 range.
                    for t in 0..BLOCK4 {
                        let v = f64::from(xb[order[t] as usize]) * inv;
                        (hb[t], lb[t]) = split(v.round_ties_even() as i32);
                    }
                }
            }
        }
        Some(Self {
            hi,
            lo,
            groups,
            unit: (2f64).powi(e),
            order: *order,
        })
    }

    /// Every kernel's entry check: `self` was built with `order` for `w`'s columns, and the
    /// `rows` lie in `w` with room for them in `out`. Returns the high and low limbs.
    pub(super) fn limbs_for(
        &self,
        order: &[u8; BLOCK4],
        w: &PackedMatrix<'_>,
        rows: &Range<usize>,
        out: &[f32],
    ) -> (*const i16, *const i16) {
        let nblk = w.k / BLOCK4;
        assert!(
            self.order == *order
                && self.hi.len() == nblk
                && self.lo.len() == nblk
                && self.groups.len() == nblk.div_ceil(GROUP_BLOCKS)
                && out.len() >= rows.len()
                && rows.end <= w.n
        );
        (self.hi.as_ptr().cast(), self.lo.as_ptr().cast())
    }
}

/// Limbs of one 64-column block: `x · inv` (exact, a power of two) rounded half to even by
/// `vcvtps2dq`, split, and stored in `order`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn limbs(
    x: &[f32],
    inv: f32,
    order: &[u8; BLOCK4],
    hi: &mut [i16; BLOCK4],
    lo: &mut [i16; BLOCK4],
) {
    assert!(x.len() == BLOCK4);
    let sinv = _mm256_set1_ps(inv);
    let mut q = [0i32; BLOCK4];
    for c in 0..BLOCK4 / 8 {
        // SAFETY: lanes 8c..8c + 8 of 64-element slices.
        unsafe {
            let v = _mm256_mul_ps(_mm256_loadu_ps(x.as_ptr().add(8 * c)), sinv);
            _mm256_storeu_si256(
                q.as_mut_ptr().add(8 * c) as *mut __m256i,
                _mm256_cvtps_epi32(v),
            );
        }
    }
    for t in 0..BLOCK4 {
        (hi[t], lo[t]) = split(q[order[t] as usize]);
    }
}

/// `out[j] += Σ_k x[k] · Ŵ[r, k]` for the weight rows `r ∈ rows` (`j = r − rows.start`) over the
/// full 64-column blocks of `x` (the caller adds the tail columns).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::kernels) unsafe fn gemv4_fixed(
    x: &FixedRow,
    w: &PackedMatrix<'_>,
    rows: Range<usize>,
    out: &mut [f32],
) {
    let (rb, nblk) = (w.row_bytes(), w.k / BLOCK4);
    let (hptr, lptr) = x.limbs_for(&ORDER, w, &rows, out);
    let (end, full) = (rows.end, nblk / GROUP_BLOCKS);
    let Some(mut lut) = (!rows.is_empty()).then(|| lut_int(w.scales[rows.start])) else {
        return;
    };
    for (r, o) in rows.zip(out.iter_mut()) {
        // SAFETY: row r lies inside `w.data` (checked by PackedMatrix::new and `limbs_for`).
        let p = unsafe { w.data.as_ptr().add(r * rb) };
        // Block `b` of the row into the group's i32 sums: 32 packed bytes, limbs [64b, 64b + 64).
        // A macro, not a closure or a loop: the group below is written out block by block, which
        // keeps the tables and sums in registers and the loop overhead off the 3-block groups
        // (one core: 9.4–9.7 cycles per block, against 10.3–10.6 for a loop over the group).
        macro_rules! block {
            ($b:expr, $hi:ident, $lo:ident) => {{
                let b = $b;
                for (h, idx) in nibbles64(p.add(b * BLOCK4 / 2)).into_iter().enumerate() {
                    let l = _mm256_shuffle_epi8(lut.lo, idx);
                    let u = _mm256_shuffle_epi8(lut.hi, idx);
                    let (w0, w1) = (_mm256_unpacklo_epi8(l, u), _mm256_unpackhi_epi8(l, u));
                    let off = b * BLOCK4 + 32 * h;
                    let ld = |q: *const i16| _mm256_loadu_si256(q as *const __m256i);
                    let (ph, pl) = (hptr.add(off), lptr.add(off));
                    $hi = _mm256_add_epi32($hi, _mm256_madd_epi16(w0, ld(ph)));
                    $hi = _mm256_add_epi32($hi, _mm256_madd_epi16(w1, ld(ph.add(16))));
                    $lo = _mm256_add_epi32($lo, _mm256_madd_epi16(w0, ld(pl)));
                    $lo = _mm256_add_epi32($lo, _mm256_madd_epi16(w1, ld(pl.add(16))));
                }
            }};
        }
        let mut acc = _mm256_setzero_ps();
        for (g, [s_hi, s_lo]) in x.groups.iter().enumerate() {
            let (mut hi, mut lo) = (_mm256_setzero_si256(), _mm256_setzero_si256());
            let b0 = g * GROUP_BLOCKS;
            // SAFETY: every block b < k / 64 reads bytes [32b, 32b + 32) of row r and limbs
            // [64b, 64b + 64); prefetches never fault.
            unsafe {
                if g < full {
                    // The group's 96 bytes span at most two cache lines.
                    prefetch_ahead(p.add(b0 * BLOCK4 / 2));
                    prefetch_ahead(p.add(b0 * BLOCK4 / 2 + 64));
                    const _: () = assert!(GROUP_BLOCKS == 3);
                    block!(b0, hi, lo);
                    block!(b0 + 1, hi, lo);
                    block!(b0 + 2, hi, lo);
                } else {
                    for b in b0..nblk {
                        block!(b, hi, lo);
                    }
                }
            }
            // The i32 sums are exact integers; from here on the sum rounds like any f32 sum.
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(hi), _mm256_set1_ps(*s_hi), acc);
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lo), _mm256_set1_ps(*s_lo), acc);
        }
        let unit = lut.unit;
        // The next row's table: built here, its ~40-cycle dependency chain overlaps this row's
        // last blocks, still in flight (holding it through the row instead costs two registers).
        if r + 1 < end {
            lut = lut_int(w.scales[r + 1]);
        }
        // u · 2^e may leave the f32 range (tiny activations): scaled in f64.
        *o += (f64::from(hsum(acc)) * f64::from(unit) * x.unit) as f32;
    }
}
