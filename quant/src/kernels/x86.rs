//! x86-64 kernels for packed int4/int8 weights (AVX2 + FMA + F16C, and AVX-512 for the one-row
//! int4 GEMV; selected at run time).
//!
//! int4 decoding goes through a per-row lookup table of the 16 possible products `f16(scale · q)`,
//! whose bytes sit in `pshufb` registers:
//! - GEMM tiles ([`fill_tile`]) look up the f16 bit patterns and widen them with `vcvtph2ps`;
//! - the GEMV kernels ([`gemv4`], [`grad4`]), bound by decode throughput, avoid `vcvtph2ps`
//!   (one per 8 weights, the slowest step on Zen 3): every product is an integer multiple
//!   `c_q · u` of the scale's ulp `u`, the table holds `c_q` as a signed 16-bit integer
//!   ([`LutInt`]), and [`decode_idx`] widens the 16-bit values to i32 with `vpmaddwd` before
//!   `vcvtdq2ps` — two instructions per 8 weights on the multiply and convert pipes, leaving the
//!   two shuffle pipes to the table lookups. The row sum is scaled by `u`, a power of two, so the
//!   result equals the sum over `f16(scale · q)` bit for bit;
//! - one activation row (decoding one sequence) goes to [`fixed`], which also turns the
//!   activations into integers and multiplies with `vpmaddwd`, or, where the CPU has AVX-512 VNNI,
//!   to [`fixed512`], the same computation with `vpermw` and `vpdpwssd`.
//!
//! int8 computes `scale · q` in f32 (exact) and rounds through `vcvtps2ph` (round-to-nearest-even),
//! matching `f16(scale · q)`. The GEMV kernels decode 64-column blocks in a *permuted* column order
//! (see [`perm_offset`]) that avoids re-interleaving the nibbles; the caller permutes `x` once
//! instead.

use std::arch::x86_64::*;
use std::ops::Range;

use super::{PackedMatrix, scalar};

pub(super) mod fixed;
pub(super) mod fixed512;

/// Columns per block of the int4 GEMV kernels (32 packed bytes).
pub(super) const BLOCK4: usize = 64;

/// Decoded position `p` (0..64) of a 64-column int4 block → column offset inside the block.
///
/// [`nibbles64`] loads the block's 32 bytes once; positions 0..32 come from their low nibbles
/// (odd columns), 32..64 from their high nibbles (even columns). Within each half, output vector
/// `f` (8 lanes, `d` = lane) holds byte `16·(d / 4) + 8·(f / 2) + 2·(d % 4) + f % 2`: the
/// `unpacklo/hi_epi8` of the two table lookups pairs bytes 0..8 / 8..16 of each 128-bit lane into
/// words, and `vpmaddwd` takes the even / odd word of each 32-bit lane.
#[inline]
pub(super) const fn perm_offset(p: usize) -> usize {
    let (high_nibble, r) = (p / 32, p % 32);
    let (f, d) = (r / 8, r % 8);
    let byte = 16 * (d / 4) + 8 * (f / 2) + 2 * (d % 4) + f % 2;
    2 * byte + (high_nibble == 0) as usize
}

/// Low/high bytes of the 16 f16 products of one row, duplicated in both 128-bit lanes.
#[derive(Clone, Copy)]
pub(super) struct Lut4 {
    lo: __m256i,
    hi: __m256i,
}

/// Builds the int4 table for `scale` (index = unsigned nibble; 8..=15 are q = -8..=-1).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn lut4(scale: f32) -> Lut4 {
    let s = _mm256_set1_ps(scale);
    let q0 = _mm256_setr_ps(0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0);
    let q1 = _mm256_setr_ps(-8.0, -7.0, -6.0, -5.0, -4.0, -3.0, -2.0, -1.0);
    let h0 = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_mul_ps(q0, s));
    let h1 = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_mul_ps(q1, s));
    let split = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    let a = _mm_shuffle_epi8(h0, split);
    let b = _mm_shuffle_epi8(h1, split);
    Lut4 {
        lo: _mm256_broadcastsi128_si256(_mm_unpacklo_epi64(a, b)),
        hi: _mm256_broadcastsi128_si256(_mm_unpackhi_epi64(a, b)),
    }
}

/// Looks up 32 byte indices (0..16) and widens the f16 results: returns (words of bytes 0..8 of
/// each lane, words of bytes 8..16 of each lane).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn lookup(idx: __m256i, lut: &Lut4) -> (__m256i, __m256i) {
    let lo = _mm256_shuffle_epi8(lut.lo, idx);
    let hi = _mm256_shuffle_epi8(lut.hi, idx);
    (_mm256_unpacklo_epi8(lo, hi), _mm256_unpackhi_epi8(lo, hi))
}

/// Integer form of one row's int4 table for the GEMV kernels: every product `f16(scale · q)` is an
/// integer multiple `c_q · u` of `u` = the ulp of the scale (|c_q| ≤ 2^14), so the kernels multiply
/// by the exact integers `c_q` and scale the row's sum by `u` once (a power of two: exact).
/// `lo`/`hi` hold the low/high bytes of `c_q` as a signed 16-bit integer, duplicated in both
/// 128-bit lanes.
#[derive(Clone, Copy)]
pub(super) struct LutInt {
    lo: __m256i,
    hi: __m256i,
    /// The unit `u`.
    pub(super) unit: f32,
}

/// The integers `c_q` of a row's table as 16 i16 in entry order (index = unsigned nibble, 8..=15
/// are q = -8..=-1), and the unit `u` they count: `f16(scale · q) = c_q · u`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn lut_words(scale: half::f16) -> (__m256i, f32) {
    let e = ((scale.to_bits() & 0x7FFF) >> 10) as i32;
    // ulp of an f16 with exponent field e (2^-24 for zero/subnormal scales).
    let unit_exp = if e == 0 { -24 } else { e - 25 };
    let unit = f32::from_bits(((unit_exp + 127) as u32) << 23);
    // F16C conversion: `half`'s `to_f32` re-checks CPU features on every call.
    let s = _mm256_set1_ps(_mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(
        scale.to_bits(),
    )))));
    let q0 = _mm256_setr_ps(0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0);
    let q1 = _mm256_setr_ps(-8.0, -7.0, -6.0, -5.0, -4.0, -3.0, -2.0, -1.0);
    let round = |q| {
        _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_mul_ps(
            q, s,
        )))
    };
    let inv = _mm256_set1_ps(1.0 / unit);
    let c0 = _mm256_cvtps_epi32(_mm256_mul_ps(round(q0), inv));
    let c1 = _mm256_cvtps_epi32(_mm256_mul_ps(round(q1), inv));
    // 16 i16 in entry order (packs interleaves the lanes; the permute restores the order).
    let w = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(c0, c1));
    (w, unit)
}

/// Builds the integer table of a row (index = unsigned nibble, 8..=15 are q = -8..=-1).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn lut_int(scale: half::f16) -> LutInt {
    let (w, unit) = lut_words(scale);
    let split = _mm256_setr_epi8(
        0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15, 0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5,
        7, 9, 11, 13, 15,
    );
    let b = _mm256_shuffle_epi8(w, split);
    let (l, h) = (_mm256_castsi256_si128(b), _mm256_extracti128_si256::<1>(b));
    LutInt {
        lo: _mm256_broadcastsi128_si256(_mm_unpacklo_epi64(l, h)),
        hi: _mm256_broadcastsi128_si256(_mm_unpackhi_epi64(l, h)),
        unit,
    }
}

/// 32 nibble indices (one per byte) → 32 integers `c_q` as f32 (order: see [`perm_offset`]).
/// Exact: |c_q| ≤ 2^14, and the i32 → f32 conversion of such integers does not round.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn decode_idx(idx: __m256i, lut: &LutInt) -> [__m256; 4] {
    let lo = _mm256_shuffle_epi8(lut.lo, idx);
    let hi = _mm256_shuffle_epi8(lut.hi, idx);
    let (w0, w1) = (_mm256_unpacklo_epi8(lo, hi), _mm256_unpackhi_epi8(lo, hi));
    // vpmaddwd with word multipliers (1, 0) / (0, 1) picks the even / odd word of each 32-bit
    // lane, sign-extended; it runs on the multiply pipes, which this loop otherwise leaves idle
    // (a vpsrad for the odd word would compete with the shuffles: measured 5 % slower).
    let (even, odd) = (_mm256_set1_epi32(1), _mm256_set1_epi32(1 << 16));
    [
        _mm256_cvtepi32_ps(_mm256_madd_epi16(w0, even)),
        _mm256_cvtepi32_ps(_mm256_madd_epi16(w0, odd)),
        _mm256_cvtepi32_ps(_mm256_madd_epi16(w1, even)),
        _mm256_cvtepi32_ps(_mm256_madd_epi16(w1, odd)),
    ]
}

/// The two nibble-index vectors of a 64-column block (32 packed bytes at `p`): low nibbles (odd
/// columns, decoded positions 0..32) and high nibbles (even columns, positions 32..64).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibbles64(p: *const i8) -> [__m256i; 2] {
    // SAFETY: the caller guarantees 32 readable bytes at `p`.
    let v = unsafe { _mm256_loadu_si256(p as *const __m256i) };
    let m = _mm256_set1_epi8(0x0F);
    [
        _mm256_and_si256(v, m),
        _mm256_and_si256(_mm256_srli_epi16::<4>(v), m),
    ]
}

/// How far ahead of the decoder the kernels prefetch packed (or f16) weights, in bytes. The
/// hardware prefetchers alone leave the decoder waiting on DRAM. On Zen 3, 1 KiB measured +8–15 %
/// for one activation row, and 512 B to 4 KiB all did about as well; on a Xeon with AVX-512,
/// 4 KiB beat 1 KiB by 11–22 % for the one-row kernels (AVX2 and AVX-512, in one process), and
/// 2–8 KiB were alike.
const PREFETCH_AHEAD: usize = 4096;

/// Prefetches the cache line `PREFETCH_AHEAD` bytes after `p` (callers issue one per 64 bytes).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn prefetch_ahead(p: *const i8) {
    // wrapping_add: near the end of the weight the address may lie past the buffer; a prefetch
    // never faults, and the pointer is never dereferenced.
    _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH_AHEAD));
}

/// 16 packed bytes → 32 weights in natural column order (for the GEMM tiles).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn decode32_nat(p: *const i8, lut: &Lut4) -> [__m256; 4] {
    // SAFETY: the caller guarantees 16 readable bytes at `p`.
    let v = unsafe { _mm_loadu_si128(p as *const __m128i) };
    let m = _mm_set1_epi8(0x0F);
    let lo = _mm_and_si128(v, m);
    let hi = _mm_and_si128(_mm_srli_epi16::<4>(v), m);
    // High nibble = even column comes first.
    let idx = _mm256_set_m128i(_mm_unpackhi_epi8(hi, lo), _mm_unpacklo_epi8(hi, lo));
    let (h0, h1) = lookup(idx, lut);
    [
        _mm256_cvtph_ps(_mm256_castsi256_si128(h0)),
        _mm256_cvtph_ps(_mm256_castsi256_si128(h1)),
        _mm256_cvtph_ps(_mm256_extracti128_si256::<1>(h0)),
        _mm256_cvtph_ps(_mm256_extracti128_si256::<1>(h1)),
    ]
}

/// 8 int8 values → `f16(scale · q)` as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dq8(p: *const i8, s: __m256) -> __m256 {
    // SAFETY: the caller guarantees 8 readable bytes at `p`.
    let v = _mm256_cvtepi8_epi32(unsafe { _mm_loadl_epi64(p as *const __m128i) });
    let f = _mm256_mul_ps(_mm256_cvtepi32_ps(v), s);
    _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(f))
}

/// Sum of the 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// int4 GEMV over weight rows `rows` and columns `cols`: `out[r · M + i] += Σ_{k ∈ cols} x[i, k] Ŵ[r, k]`,
/// with `xp` = x whose full 64-column blocks are permuted by [`perm_offset`]. `A` accumulators per
/// x row hide FMA latency. `cols.start` is a multiple of 64; `cols.end` too unless it is `w.k`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `xp` is `[M, w.k]`, `out` is `[rows.len(), M]`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn gemv4<const M: usize, const A: usize>(
    xp: &[f32],
    w: &PackedMatrix<'_>,
    rows: Range<usize>,
    cols: Range<usize>,
    out: &mut [f32],
) {
    let (k, rb) = (w.k, w.row_bytes());
    let (b0, nblk) = (cols.start / BLOCK4, cols.end / BLOCK4);
    assert!(
        xp.len() >= M * k
            && out.len() >= rows.len() * M
            && rows.end <= w.n
            && cols.end <= k
            && cols.start.is_multiple_of(BLOCK4)
    );
    let xptr = xp.as_ptr();
    let end = rows.end;
    let mut next = (!rows.is_empty()).then(|| lut_int(w.scales[rows.start]));
    for (r, o) in rows.zip(out.chunks_exact_mut(M)) {
        let Some(lut) = next else { break };
        // The next row's table is built before this row's loop: its ~40-cycle dependency chain
        // then overlaps this row's work instead of stalling the start of the next row.
        next = (r + 1 < end).then(|| lut_int(w.scales[r + 1]));
        // SAFETY: row r lies inside `w.data` (checked by PackedMatrix::new and the assert above).
        let p = unsafe { w.data.as_ptr().add(r * rb) };
        let mut acc = [[_mm256_setzero_ps(); A]; M];
        for b in b0..nblk {
            // SAFETY: block b < k / 64 reads bytes [32b, 32b + 32) of the row and x columns < k.
            unsafe {
                if b % 2 == 0 {
                    prefetch_ahead(p.add(b * BLOCK4 / 2));
                }
                // Each half is used right after its decode: fewer live registers than 8 vectors.
                for (h, idx) in nibbles64(p.add(b * BLOCK4 / 2)).into_iter().enumerate() {
                    let wv = decode_idx(idx, &lut);
                    for (i, acc_i) in acc.iter_mut().enumerate() {
                        let xb = xptr.add(i * k + b * BLOCK4 + 32 * h);
                        for (j, wj) in wv.iter().enumerate() {
                            acc_i[j % A] =
                                _mm256_fmadd_ps(*wj, _mm256_loadu_ps(xb.add(8 * j)), acc_i[j % A]);
                        }
                    }
                }
            }
        }
        for (oi, acc_i) in o.iter_mut().zip(&acc) {
            let mut v = acc_i[0];
            for a in &acc_i[1..] {
                v = _mm256_add_ps(v, *a);
            }
            // Σ x·c scaled by the power of two u equals Σ x·f16(scale·q) bit for bit.
            *oi += lut.unit * hsum(v);
        }
        if cols.end == k && nblk * BLOCK4 < k {
            let lut = scalar::lut4(w.scales[r]);
            let row = &w.data[r * rb..(r + 1) * rb];
            for c in (nblk * BLOCK4..k).step_by(2) {
                let b = row[c / 2] as u8;
                let (we, wo) = (lut[(b >> 4) as usize], lut[(b & 0x0F) as usize]);
                for (i, oi) in o.iter_mut().enumerate() {
                    *oi += xp[i * k + c] * we + xp[i * k + c + 1] * wo;
                }
            }
        }
    }
}

/// int8 GEMV over weight rows `rows` and columns `cols` (natural order), accumulating like [`gemv4`].
/// `cols.start` is a multiple of 8; `cols.end` too unless it is `w.k`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `x` is `[M, w.k]`, `out` is `[rows.len(), M]`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn gemv8<const M: usize, const A: usize>(
    x: &[f32],
    w: &PackedMatrix<'_>,
    rows: Range<usize>,
    cols: Range<usize>,
    out: &mut [f32],
) {
    let k = w.k;
    let (b0, n8) = (cols.start / 8, cols.end / 8);
    assert!(
        x.len() >= M * k
            && out.len() >= rows.len() * M
            && rows.end <= w.n
            && cols.end <= k
            && cols.start.is_multiple_of(8)
    );
    let xptr = x.as_ptr();
    for (r, o) in rows.zip(out.chunks_exact_mut(M)) {
        let scale = w.scales[r].to_f32();
        let s = _mm256_set1_ps(scale);
        // SAFETY: row r lies inside `w.data`.
        let p = unsafe { w.data.as_ptr().add(r * k) };
        let mut acc = [[_mm256_setzero_ps(); A]; M];
        for b in b0..n8 {
            // SAFETY: columns [8b, 8b + 8) < k.
            unsafe {
                let wv = dq8(p.add(8 * b), s);
                for (i, acc_i) in acc.iter_mut().enumerate() {
                    acc_i[b % A] =
                        _mm256_fmadd_ps(wv, _mm256_loadu_ps(xptr.add(i * k + 8 * b)), acc_i[b % A]);
                }
            }
        }
        for (oi, acc_i) in o.iter_mut().zip(&acc) {
            let mut v = acc_i[0];
            for a in &acc_i[1..] {
                v = _mm256_add_ps(v, *a);
            }
            *oi += hsum(v);
        }
        for c in (n8 * 8).max(cols.start)..cols.end {
            let wv = half::f16::from_f32(scale * w.data[r * k + c] as f32).to_f32();
            for (i, oi) in o.iter_mut().enumerate() {
                *oi += x[i * k + c] * wv;
            }
        }
    }
}

/// int4 input-gradient accumulation over weight rows `rows`: `acc[i, ·] += g_y[i, r] · Ŵ[r, ·]`,
/// with `acc` in the permuted column order of [`perm_offset`] (the caller un-permutes).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `gy` is `[M, w.n]`, `acc` is `[M, w.k]`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn grad4<const M: usize>(
    gy: &[f32],
    w: &PackedMatrix<'_>,
    rows: Range<usize>,
    acc: &mut [f32],
) {
    let (k, rb, n) = (w.k, w.row_bytes(), w.n);
    let nblk = k / BLOCK4;
    assert!(gy.len() >= M * n && acc.len() >= M * k && rows.end <= n);
    let aptr = acc.as_mut_ptr();
    let end = rows.end;
    let mut next = (!rows.is_empty()).then(|| lut_int(w.scales[rows.start]));
    for r in rows {
        let Some(lut) = next else { break };
        // Built one row ahead, as in gemv4.
        next = (r + 1 < end).then(|| lut_int(w.scales[r + 1]));
        // g · Ŵ = (g · u) · c, and scaling by the power of two u is exact.
        let g: [__m256; M] = std::array::from_fn(|i| _mm256_set1_ps(gy[i * n + r] * lut.unit));
        // SAFETY: row r lies inside `w.data`; blocks and accumulator columns stay below k.
        unsafe {
            let p = w.data.as_ptr().add(r * rb);
            for b in 0..nblk {
                if b % 2 == 0 {
                    prefetch_ahead(p.add(b * BLOCK4 / 2));
                }
                for (h, idx) in nibbles64(p.add(b * BLOCK4 / 2)).into_iter().enumerate() {
                    let wv = decode_idx(idx, &lut);
                    for (i, gi) in g.iter().enumerate() {
                        let a = aptr.add(i * k + b * BLOCK4 + 32 * h);
                        for (j, wj) in wv.iter().enumerate() {
                            _mm256_storeu_ps(
                                a.add(8 * j),
                                _mm256_fmadd_ps(*wj, *gi, _mm256_loadu_ps(a.add(8 * j))),
                            );
                        }
                    }
                }
            }
        }
        if nblk * BLOCK4 < k {
            let lut = scalar::lut4(w.scales[r]);
            for c in (nblk * BLOCK4..k).step_by(2) {
                let b = w.data[r * rb + c / 2] as u8;
                let (we, wo) = (lut[(b >> 4) as usize], lut[(b & 0x0F) as usize]);
                for i in 0..M {
                    let g = gy[i * n + r];
                    acc[i * k + c] += g * we;
                    acc[i * k + c + 1] += g * wo;
                }
            }
        }
    }
}

/// int8 input-gradient accumulation over weight rows `rows` (natural column order).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `gy` is `[M, w.n]`, `acc` is `[M, w.k]`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn grad8<const M: usize>(
    gy: &[f32],
    w: &PackedMatrix<'_>,
    rows: Range<usize>,
    acc: &mut [f32],
) {
    let (k, n) = (w.k, w.n);
    let n8 = k / 8;
    assert!(gy.len() >= M * n && acc.len() >= M * k && rows.end <= n);
    let aptr = acc.as_mut_ptr();
    for r in rows {
        let scale = w.scales[r].to_f32();
        let s = _mm256_set1_ps(scale);
        let g: [__m256; M] = std::array::from_fn(|i| _mm256_set1_ps(gy[i * n + r]));
        // SAFETY: row r lies inside `w.data`; columns stay below k.
        unsafe {
            let p = w.data.as_ptr().add(r * k);
            for b in 0..n8 {
                let wv = dq8(p.add(8 * b), s);
                for (i, gi) in g.iter().enumerate() {
                    let a = aptr.add(i * k + 8 * b);
                    _mm256_storeu_ps(a, _mm256_fmadd_ps(wv, *gi, _mm256_loadu_ps(a)));
                }
            }
        }
        for c in n8 * 8..k {
            let wv = half::f16::from_f32(scale * w.data[r * k + c] as f32).to_f32();
            for i in 0..M {
                acc[i * k + c] += gy[i * n + r] * wv;
            }
        }
    }
}

/// Writes the tile `Ŵ[n0 .. n0 + nb, k0 .. k0 + kb]` as row-major f32 `[nb, kb]` (`k0` even for int4).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; the tile must lie inside the weight and `out` hold `nb · kb`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn fill_tile(
    w: &PackedMatrix<'_>,
    n0: usize,
    nb: usize,
    k0: usize,
    kb: usize,
    out: &mut [f32],
) {
    assert!(n0 + nb <= w.n && k0 + kb <= w.k && out.len() >= nb * kb);
    let rb = w.row_bytes();
    for r in 0..nb {
        let row = n0 + r;
        let o = &mut out[r * kb..(r + 1) * kb];
        let done = if w.bits == 4 {
            let lut = lut4(w.scales[row].to_f32());
            let nblk = kb / 32;
            // SAFETY: bytes [k0/2 + 16b, +16) lie inside row `row` because k0 + 32b + 32 <= k0 + kb <= k.
            unsafe {
                let p = w.data.as_ptr().add(row * rb + k0 / 2);
                for b in 0..nblk {
                    let v = decode32_nat(p.add(16 * b), &lut);
                    for (j, vj) in v.iter().enumerate() {
                        _mm256_storeu_ps(o.as_mut_ptr().add(32 * b + 8 * j), *vj);
                    }
                }
            }
            nblk * 32
        } else {
            let s = _mm256_set1_ps(w.scales[row].to_f32());
            let n8 = kb / 8;
            // SAFETY: columns k0 + 8b .. + 8 <= k0 + kb <= k.
            unsafe {
                let p = w.data.as_ptr().add(row * rb + k0);
                for b in 0..n8 {
                    _mm256_storeu_ps(o.as_mut_ptr().add(8 * b), dq8(p.add(8 * b), s));
                }
            }
            n8 * 8
        };
        if done < kb {
            scalar::dequant_row_range(w, row, k0 + done, &mut o[done..]);
        }
    }
}
