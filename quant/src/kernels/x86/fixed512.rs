//! The one-row int4 GEMV on AVX-512 (F, BW, VNNI): the same fixed-point activations and exact
//! integer products as [`super::fixed`], in a third of the instructions. A 64-column block is 8:
//! one zero-extending load of its 32 bytes to words, one shift, two `vpermw` lookups in a
//! 32-word table and four `vpdpwssd` (multiply word pairs, add into i32), where AVX2 needs 27.
//! Weight rows go two or four at a time ([`rows_per_pass`]) and share each load of the
//! activation limbs.
//!
//! Why each step is exact and needs no mask:
//! - `vpmovzxbw` puts byte `j` of the block in word `j`: column `2j` in bits 4..8 (the high
//!   nibble, signed), column `2j + 1` in bits 0..4;
//! - `vpermw` reads the low 5 bits of each index word. The table holds the 16 integers `c_q`
//!   (entry = unsigned nibble, see [`super::lut_words`]) twice, so the low nibble indexes it
//!   directly whatever bit 4 (the high nibble's lowest bit) holds; the high nibble, shifted down
//!   by 4, has nothing above it;
//! - `vpdpwssd` adds two products `c_q · limb` (|c_q| ≤ 2^14, |limb| ≤ 2^12) to an i32 lane per
//!   instruction, 2^27 at most; a block issues two per limb (even and odd columns) into that
//!   limb's accumulator, so a lane gains at most 2^28 per block and 3 · 2^28 < 2^31 per 3-block
//!   group.

use std::arch::asm;
use std::arch::x86_64::*;
use std::ops::Range;

use super::fixed::{FixedRow, GROUP_BLOCKS};
use super::{BLOCK4, PREFETCH_AHEAD, lut_words, prefetch_at};
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
    let out = &mut out[..rows.len()];
    let pass = rows_per_pass(w.k);
    let (whole, rest) = out.split_at_mut(rows.len() / pass * pass);
    for (i, o) in whole.chunks_exact_mut(pass).enumerate() {
        let r0 = rows.start + pass * i;
        // SAFETY: rows r0..r0 + pass lie in rows (asserted ≤ w.n); the caller guarantees the CPU.
        unsafe {
            match pass {
                4 => rows_fixed512::<4>(x, limbs, w, r0, o),
                _ => rows_fixed512::<2>(x, limbs, w, r0, o),
            }
        }
    }
    let r0 = rows.end - rest.len();
    for (i, o) in rest.iter_mut().enumerate() {
        // SAFETY: as above, for the last rows one at a time.
        unsafe { rows_fixed512::<1>(x, limbs, w, r0 + i, std::slice::from_mut(o)) };
    }
}

/// Weight rows per pass over the limbs for rows of `k` columns. Measured from DRAM on two threads
/// (Xeon, AVX-512), rows sharing the limb loads: two instead of one, 1.2–1.3× at every width; four
/// instead of two, about 1.1× for 16384 columns (whose 64 KiB of limbs do not fit in L1, so each
/// limb load comes from L2) and alike at 4096. Four rows fit in the registers since each row keeps
/// one i32 sum per limb instead of one per limb and column parity.
fn rows_per_pass(k: usize) -> usize {
    if k >= 8192 { 4 } else { 2 }
}

/// [`gemv4_fixed512`] for the `R` weight rows `r0..r0 + R` into `out[..R]`; `(hptr, lptr)` are
/// `x`'s high and low limbs as [`FixedRow::limbs_for`] returned them.
///
/// # Safety
/// As [`gemv4_fixed512`]; `r0 + R ≤ w.n` and `x` matches `w` (asserted there).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
unsafe fn rows_fixed512<const R: usize>(
    x: &FixedRow,
    (hptr, lptr): (*const i16, *const i16),
    w: &PackedMatrix<'_>,
    r0: usize,
    out: &mut [f32],
) {
    let (rb, nblk) = (w.row_bytes(), w.k / BLOCK4);
    let full = nblk / GROUP_BLOCKS;
    // The R rows of a pass are R streams `rb` apart. Short rows: prefetch the next pass's rows at
    // the same offset (4 KiB ahead of a row would land in a row this pass reads already, with four
    // rows of 2 KiB: measured 1.5× slower); long rows: 4 KiB ahead within the row.
    let dist = if rb < PREFETCH_AHEAD {
        (R * rb).max(PREFETCH_AHEAD)
    } else {
        PREFETCH_AHEAD
    };
    let (mut luts, mut units) = ([_mm512_setzero_si512(); R], [0f32; R]);
    let mut ps = [w.data.as_ptr(); R];
    for i in 0..R {
        let (words, unit) = lut_words(w.scales[r0 + i]);
        luts[i] = _mm512_broadcast_i64x4(words);
        units[i] = unit;
        // SAFETY: row r0 + i lies inside `w.data` (PackedMatrix::new checked its length).
        ps[i] = unsafe { w.data.as_ptr().add((r0 + i) * rb) };
    }
    // Block `b` of each row: 32 packed bytes, limbs [64b, 64b + 64). One i32 sum per row and limb
    // (see the module comment for the bound): two registers per row leave room for four rows.
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
                dpwssd!($lo[i], even, l_even);
                dpwssd!($hi[i], odd, h_odd);
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
                    let q = p.add(b0 * BLOCK4 / 2);
                    prefetch_at(q, dist);
                    prefetch_at(q, dist + 64);
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
            // The i32 sums are exact integers (< 2^31); from here on the sum rounds like any f32
            // sum.
            acc_h[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(hi[i]), _mm512_set1_ps(*s_hi), acc_h[i]);
            acc_l[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(lo[i]), _mm512_set1_ps(*s_lo), acc_l[i]);
        }
    }
    for i in 0..R {
        let sum = _mm512_reduce_add_ps(_mm512_add_ps(acc_h[i], acc_l[i]));
        // u · 2^e may leave the f32 range (tiny activations): scaled in f64.
        out[i] += (f64::from(sum) * f64::from(units[i]) * x.unit) as f32;
    }
}
