//! The one-row int4 GEMV on AVX-512 (F, BW, VNNI): the same fixed-point activations and exact
//! integer products as [`super::fixed`], in a third of the instructions. A 64-column block is 8:
//! one zero-extending load of its 32 bytes to words, one shift, two `vpermw` lookups in a
//! 32-word table and four `vpdpwssd` (multiply word pairs, add into i32), where AVX2 needs 27.
//! Weight rows go three at a time, one from each third of the task's rows: they share each load
//! of the activation limbs, and each core reads three memory streams.
//!
//! Why each step is exact and needs no mask:
//! - `vpmovzxbw` puts byte `j` of the block in word `j`: column `2j` in bits 4..8 (the high
//!   nibble, signed), column `2j + 1` in bits 0..4;
//! - `vpermw` reads the low 5 bits of each index word. The table holds the 16 integers `c_q`
//!   (entry = unsigned nibble, see [`super::lut_words`]) twice, so the low nibble indexes it
//!   directly whatever bit 4 (the high nibble's lowest bit) holds; the high nibble, shifted down
//!   by 4, has nothing above it;
//! - `vpdpwssd` adds two products `c_q · limb` (|c_q| ≤ 2^14, |limb| ≤ 2^12) to an i32 lane per
//!   instruction. The even and odd columns of a limb share one accumulator (two instructions per
//!   block), so a lane gains at most 2 · 2^27 per block and 3 · 2^28 per 3-block group, below
//!   2^31.

use std::arch::asm;
use std::arch::x86_64::*;
use std::ops::Range;

use super::fixed::{FixedRow, GROUP_BLOCKS};
use super::{BLOCK4, lut_words, prefetch_ahead};
use crate::kernels::PackedMatrix;

/// `$acc += ` the 16 lane-pair sums of `$c · $l` (`vpdpwssd`, i16 × i16 → i32).
///
/// Inline assembly, not `_mm512_dpwssd_epi32`: LLVM, tuning for no particular CPU, splits the
/// intrinsic into `vpmaddwd` + `vpaddd`, 50 % more instructions in this kernel.
macro_rules! dpwssd {
    ($acc:expr, $c:expr, $l:expr) => {
        asm!(
            "vpdpwssd {acc}, {c}, {l}",
            acc = inout(zmm_reg) $acc,
            c = in(zmm_reg) $c,
            l = in(zmm_reg) $l,
            options(pure, nomem, nostack, preserves_flags)
        )
    };
}

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
    let limbs = x.limbs_for(&ORDER, w, &rows, out);
    // Three rows per pass, one from each third of `rows`: the three share each load of the limbs,
    // and each third is a sequential memory stream. Measured from DRAM (1200 MiB of 4096-row
    // layers, 16 tasks on two threads, alternating): 1.11–1.27× (median 1.17×) the speed of
    // consecutive pairs at 16384 columns, 0.93–1.23× (median 1.05×) at 4096. One row at a time
    // is 1.2–1.3× slower than pairs (the limb loads double).
    let third = rows.len() / 3;
    for p in 0..third {
        let r = [0, 1, 2].map(|t| t * third + p);
        // SAFETY: rows.start + r[t] < rows.start + 3 · third ≤ rows.end ≤ w.n (asserted); the
        // caller guarantees the CPU.
        let sums = unsafe { rows_fixed512(x, limbs, w, r.map(|j| rows.start + j)) };
        for (j, v) in r.into_iter().zip(sums) {
            out[j] += v;
        }
    }
    for (j, o) in out[..rows.len()].iter_mut().enumerate().skip(3 * third) {
        // SAFETY: as above, for the last rows one at a time.
        let [v] = unsafe { rows_fixed512(x, limbs, w, [rows.start + j]) };
        *o += v;
    }
}

/// The sums `Σ_k x[k] · Ŵ[r, k]` of [`gemv4_fixed512`] for the `R` weight rows `rows`; `(hptr,
/// lptr)` are `x`'s high and low limbs as [`FixedRow::limbs_for`] returned them.
///
/// # Safety
/// As [`gemv4_fixed512`]; every row `< w.n` and `x` matches `w` (asserted there).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
unsafe fn rows_fixed512<const R: usize>(
    x: &FixedRow,
    (hptr, lptr): (*const i16, *const i16),
    w: &PackedMatrix<'_>,
    rows: [usize; R],
) -> [f32; R] {
    let (rb, nblk) = (w.row_bytes(), w.k / BLOCK4);
    let full = nblk / GROUP_BLOCKS;
    let (mut luts, mut units) = ([_mm512_setzero_si512(); R], [0f32; R]);
    let mut ps = [w.data.as_ptr(); R];
    for (i, &r) in rows.iter().enumerate() {
        let (words, unit) = lut_words(w.scales[r]);
        luts[i] = _mm512_broadcast_i64x4(words);
        units[i] = unit;
        // SAFETY: row r < w.n lies inside `w.data` (PackedMatrix::new checked its length).
        ps[i] = unsafe { w.data.as_ptr().add(r * rb) };
    }
    // Block `b` of each row: 32 packed bytes, limbs [64b, 64b + 64), into one i32 sum per limb
    // (see the module comment for the bound). Two sums per row, not four (even and odd columns
    // apart): the three rows' sums, twelve limb loads and tables then fit the 32 registers
    // (with four, each group spilled one and moved eighteen). Measured from DRAM: 1.02–1.05×
    // (medians) the speed, with the same integer sums.
    macro_rules! block {
        ($b:expr, $hi:ident, $lo:ident) => {{
            let b = $b;
            // Each block's limbs are a 64-byte-aligned `Limbs`: whole-line loads.
            let ld = |q: *const i16| _mm512_load_si512(q as *const __m512i);
            let (ph, pl) = (hptr.add(b * BLOCK4), lptr.add(b * BLOCK4));
            let (h_even, h_odd, l_even, l_odd) = (ld(ph), ld(ph.add(32)), ld(pl), ld(pl.add(32)));
            for i in 0..R {
                let v = _mm512_cvtepu8_epi16(_mm256_loadu_si256(
                    ps[i].add(b * BLOCK4 / 2) as *const __m256i
                ));
                let odd = _mm512_permutexvar_epi16(v, luts[i]);
                let even = _mm512_permutexvar_epi16(_mm512_srli_epi16::<4>(v), luts[i]);
                dpwssd!($hi[i], even, h_even);
                dpwssd!($hi[i], odd, h_odd);
                dpwssd!($lo[i], even, l_even);
                dpwssd!($lo[i], odd, l_odd);
            }
        }};
    }
    // Two f32 sums per row (high and low limbs) keep the per-group FMAs off one chain.
    let (mut acc_h, mut acc_l) = ([_mm512_setzero_ps(); R], [_mm512_setzero_ps(); R]);
    for (g, [s_hi, s_lo]) in x.groups.iter().enumerate() {
        let (mut hi, mut lo) = ([_mm512_setzero_si512(); R], [_mm512_setzero_si512(); R]);
        let b0 = g * GROUP_BLOCKS;
        // SAFETY: every block b < k / 64 reads bytes [32b, 32b + 32) of each row and limbs
        // [64b, 64b + 64); prefetches never fault.
        unsafe {
            if g < full {
                for p in ps {
                    // The group's 96 bytes span at most two cache lines.
                    prefetch_ahead(p.add(b0 * BLOCK4 / 2));
                    prefetch_ahead(p.add(b0 * BLOCK4 / 2 + 64));
                }
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
        for i in 0..R {
            // The i32 sums are exact integers; from here on the sum rounds like any f32 sum.
            let (h, l) = (_mm512_cvtepi32_ps(hi[i]), _mm512_cvtepi32_ps(lo[i]));
            acc_h[i] = _mm512_fmadd_ps(h, _mm512_set1_ps(*s_hi), acc_h[i]);
            acc_l[i] = _mm512_fmadd_ps(l, _mm512_set1_ps(*s_lo), acc_l[i]);
        }
    }
    let mut sums = [0f32; R];
    for (i, s) in sums.iter_mut().enumerate() {
        let sum = _mm512_reduce_add_ps(_mm512_add_ps(acc_h[i], acc_l[i]));
        // u · 2^e may leave the f32 range (tiny activations): scaled in f64.
        *s = (f64::from(sum) * f64::from(units[i]) * x.unit) as f32;
    }
    sums
}
