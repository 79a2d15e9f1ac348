//! Portable scalar decoding of packed rows: the fallback for CPUs without AVX2/FMA/F16C and the
//! tail handling (columns past the last full SIMD block) of the vector kernels.

use half::f16;

use super::PackedMatrix;
use crate::format::{dequant_value, high_nibble, low_nibble};

/// `f16(scale · q)` as f32 for every int4 nibble, indexed by the *unsigned* nibble (0..=7 → q = 0..=7,
/// 8..=15 → q = -8..=-1).
pub(super) fn lut4(scale: f16) -> [f32; 16] {
    let mut lut = [0f32; 16];
    for (i, v) in lut.iter_mut().enumerate() {
        let q = if i < 8 { i as i8 } else { i as i8 - 16 };
        *v = dequant_value(scale, q).to_f32();
    }
    lut
}

/// Writes `Ŵ[row, k0 .. k0 + out.len()]` as f32 (`k0` even for int4).
pub(super) fn dequant_row_range(w: &PackedMatrix<'_>, row: usize, k0: usize, out: &mut [f32]) {
    let scale = w.scales[row];
    let bytes = &w.data[row * w.row_bytes()..(row + 1) * w.row_bytes()];
    if w.bits == 4 {
        debug_assert!(k0.is_multiple_of(2));
        let lut = lut4(scale);
        let src = &bytes[k0 / 2..];
        for (pair, &b) in out.chunks_exact_mut(2).zip(src) {
            pair[0] = lut[(b as u8 >> 4) as usize];
            pair[1] = lut[(b as u8 & 0x0F) as usize];
        }
        if out.len() % 2 == 1 {
            let last = out.len() - 1;
            out[last] = lut[(src[last / 2] as u8 >> 4) as usize];
        }
    } else {
        let s = scale.to_f32();
        for (o, &q) in out.iter_mut().zip(&bytes[k0..]) {
            *o = f16::from_f32(s * q as f32).to_f32();
        }
    }
}

/// The whole dequantized weight `[n, k]`, computed straight from the format definition
/// (independent of the LUT code above, so tests compare two implementations).
pub(super) fn dequantize_all(w: &PackedMatrix<'_>) -> Vec<f32> {
    let mut out = Vec::with_capacity(w.n * w.k);
    for row in 0..w.n {
        let s = w.scales[row];
        let bytes = &w.data[row * w.row_bytes()..(row + 1) * w.row_bytes()];
        if w.bits == 4 {
            for &b in bytes {
                out.push(dequant_value(s, high_nibble(b)).to_f32());
                out.push(dequant_value(s, low_nibble(b)).to_f32());
            }
        } else {
            out.extend(bytes.iter().map(|&q| dequant_value(s, q).to_f32()));
        }
    }
    out
}

/// Scalar GEMV for weight rows `rows` (absolute indices): `out[r · m + i] = Σ_k x[i, k] Ŵ[r, k]`.
pub(super) fn gemv_rows(
    x: &[f32],
    m: usize,
    w: &PackedMatrix<'_>,
    rows: std::ops::Range<usize>,
    out: &mut [f32],
) {
    let mut wrow = vec![0f32; w.k];
    for (r, o) in rows.zip(out.chunks_exact_mut(m)) {
        dequant_row_range(w, r, 0, &mut wrow);
        for (i, oi) in o.iter_mut().enumerate() {
            let xi = &x[i * w.k..(i + 1) * w.k];
            *oi = xi.iter().zip(&wrow).map(|(a, b)| a * b).sum();
        }
    }
}

/// Scalar gradient accumulation over weight rows `rows`: `acc[i, k] += g_y[i, r] · Ŵ[r, k]`.
pub(super) fn grad_rows(
    gy: &[f32],
    m: usize,
    w: &PackedMatrix<'_>,
    rows: std::ops::Range<usize>,
    acc: &mut [f32],
) {
    let mut wrow = vec![0f32; w.k];
    for r in rows {
        dequant_row_range(w, r, 0, &mut wrow);
        for i in 0..m {
            let g = gy[i * w.n + r];
            for (a, &wv) in acc[i * w.k..(i + 1) * w.k].iter_mut().zip(&wrow) {
                *a += g * wv;
            }
        }
    }
}
