//! Backend-agnostic implementations written with burn tensor ops only: dequantize a chunk of weight
//! rows to the activation dtype, multiply, move to the next chunk. Any backend can implement
//! [`crate::QuantBackend`] with these (the CubeCL backends use them for dense frozen ops); the
//! transient dense copy is bounded by [`CHUNK_ELEMS`] elements and freed after each chunk.

use std::ops::Range;

use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{FloatDType, Int, IntDType, Tensor, TensorPrimitive};

/// Largest number of weight elements dequantized or converted at once.
pub const CHUNK_ELEMS: usize = 1 << 22;

fn rows_per_chunk(n: usize, k: usize) -> usize {
    (CHUNK_ELEMS / k.max(1)).clamp(1, n.max(1))
}

fn chunks(n: usize, k: usize) -> impl Iterator<Item = Range<usize>> {
    let step = rows_per_chunk(n, k);
    (0..n).step_by(step).map(move |r0| r0..(r0 + step).min(n))
}

fn float<B: Backend, const D: usize>(t: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// Maps unsigned nibble/byte values to two's complement: `((u + 2^(b-1)) mod 2^b) - 2^(b-1)`.
fn signed<B: Backend>(u: Tensor<B, 2, Int>, bits: u32) -> Tensor<B, 2, Int> {
    let half = 1i32 << (bits - 1);
    u.add_scalar(half)
        .remainder_scalar(2 * half)
        .sub_scalar(half)
}

/// `Ŵ[rows, :] = f16(scale · q)` converted to `dtype`, from packed `[N, K · bits / 8]` and scales `[N]`.
pub fn dequantize_rows<B: Backend>(
    packed: &Tensor<B, 2, Int>,
    scales: &Tensor<B, 1>,
    bits: u8,
    rows: Range<usize>,
    dtype: FloatDType,
) -> Tensor<B, 2> {
    let [_, kb] = packed.dims();
    let r = rows.len();
    let p = packed
        .clone()
        .slice([rows.clone(), 0..kb])
        .cast(IntDType::I32);
    let q = if bits == 4 {
        // Unsigned byte 0..=255 (well-defined remainder of a positive number), then the nibbles.
        let u = p.add_scalar(256).remainder_scalar(256);
        let hi = signed(u.clone().div_scalar(16), 4);
        let lo = signed(u.remainder_scalar(16), 4);
        // [r, kb, 2] → [r, 2kb]: the high nibble is the even column.
        Tensor::stack::<3>(vec![hi, lo], 2).reshape([r, 2 * kb])
    } else {
        p
    };
    let s = scales
        .clone()
        .slice([rows])
        .cast(FloatDType::F32)
        .reshape([r, 1]);
    // scale · q is exact in f32; the cast to f16 is the reference's rounding.
    let w: Tensor<B, 2> = q.cast(FloatDType::F32);
    (w * s).cast(FloatDType::F16).cast(dtype)
}

/// Generic [`crate::QuantBackend::quant_linear`].
pub fn quant_linear<B: Backend>(
    x: FloatTensor<B>,
    packed: IntTensor<B>,
    scales: FloatTensor<B>,
    bits: u8,
) -> FloatTensor<B> {
    let x: Tensor<B, 2> = float(x);
    let packed = Tensor::<B, 2, Int>::from_primitive(packed);
    let scales: Tensor<B, 1> = float(scales);
    let [m, k] = x.dims();
    let [n, kb] = packed.dims();
    assert_eq!(
        kb * 8 / bits as usize,
        k,
        "quant_linear: x has {k} features, the packed weight {kb} bytes per row at {bits} bits"
    );
    let dtype = FloatDType::from(x.dtype());
    let parts: Vec<Tensor<B, 2>> = chunks(n, k)
        .map(|rows| {
            x.clone()
                .matmul(dequantize_rows(&packed, &scales, bits, rows, dtype).transpose())
        })
        .collect();
    if parts.is_empty() {
        return Tensor::<B, 2>::zeros([m, 0], (&x.device(), x.dtype()))
            .into_primitive()
            .tensor();
    }
    Tensor::cat(parts, 1).into_primitive().tensor()
}

/// Generic [`crate::QuantBackend::quant_linear_grad_input`].
pub fn quant_linear_grad_input<B: Backend>(
    grad_y: FloatTensor<B>,
    packed: IntTensor<B>,
    scales: FloatTensor<B>,
    bits: u8,
) -> FloatTensor<B> {
    let gy: Tensor<B, 2> = float(grad_y);
    let packed = Tensor::<B, 2, Int>::from_primitive(packed);
    let scales: Tensor<B, 1> = float(scales);
    let [m, _] = gy.dims();
    let [n, kb] = packed.dims();
    let k = kb * 8 / bits as usize;
    let dtype = FloatDType::from(gy.dtype());
    let mut gx = Tensor::<B, 2>::zeros([m, k], (&gy.device(), gy.dtype()));
    for rows in chunks(n, k) {
        let w = dequantize_rows(&packed, &scales, bits, rows.clone(), dtype);
        gx = gx + gy.clone().slice([0..m, rows]).matmul(w);
    }
    gx.into_primitive().tensor()
}

/// Generic [`crate::QuantBackend::frozen_linear`]: the weight is used as-is when its dtype matches,
/// otherwise converted in row chunks.
pub fn frozen_linear<B: Backend>(x: FloatTensor<B>, weight: FloatTensor<B>) -> FloatTensor<B> {
    let x: Tensor<B, 2> = float(x);
    let w: Tensor<B, 2> = float(weight);
    let [m, k] = x.dims();
    let [n, kw] = w.dims();
    assert_eq!(
        k, kw,
        "frozen_linear: x has {k} features, the weight {kw} columns"
    );
    if w.dtype() == x.dtype() {
        return x.matmul(w.transpose()).into_primitive().tensor();
    }
    let dtype = FloatDType::from(x.dtype());
    let parts: Vec<Tensor<B, 2>> = chunks(n, k)
        .map(|rows| {
            x.clone()
                .matmul(w.clone().slice([rows, 0..k]).cast(dtype).transpose())
        })
        .collect();
    if parts.is_empty() {
        return Tensor::<B, 2>::zeros([m, 0], (&x.device(), x.dtype()))
            .into_primitive()
            .tensor();
    }
    Tensor::cat(parts, 1).into_primitive().tensor()
}

/// Generic [`crate::QuantBackend::frozen_linear_grad_input`].
pub fn frozen_linear_grad_input<B: Backend>(
    grad_y: FloatTensor<B>,
    weight: FloatTensor<B>,
) -> FloatTensor<B> {
    let gy: Tensor<B, 2> = float(grad_y);
    let w: Tensor<B, 2> = float(weight);
    let [m, _] = gy.dims();
    let [n, k] = w.dims();
    if w.dtype() == gy.dtype() {
        return gy.matmul(w).into_primitive().tensor();
    }
    let dtype = FloatDType::from(gy.dtype());
    let mut gx = Tensor::<B, 2>::zeros([m, k], (&gy.device(), gy.dtype()));
    for rows in chunks(n, k) {
        gx = gx
            + gy.clone()
                .slice([0..m, rows.clone()])
                .matmul(w.clone().slice([rows, 0..k]).cast(dtype));
    }
    gx.into_primitive().tensor()
}
