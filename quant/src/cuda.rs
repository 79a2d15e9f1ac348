//! [`QuantBackend`] for burn's CubeCL backends (`burn::backend::Cuda` without the `fusion`
//! feature is `CubeBackend<CudaRuntime, f32, i32, u8>`), behind the `cuda` feature.
//!
//! Quantized ops: a small cubecl kernel dequantizes a chunk of packed rows (one thread per packed
//! byte, `f16(scale · q)` rounded exactly like THUDM, written in the activation dtype) and burn's
//! own matmul multiplies it; the chunk is freed before the next one, so the dense copy never
//! exceeds [`crate::generic::CHUNK_ELEMS`] elements. Dense frozen ops use [`crate::generic`].
//!
//! Not run in this repository's CI (no GPU): only compiled with `cargo check --features cuda`.

use burn::tensor::DType;
use burn::tensor::ops::{FloatTensor, FloatTensorOps, IntTensor};
use burn::tensor::{Shape, TensorMetadata};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use cubecl::calculate_cube_count_elemwise;
use cubecl::prelude::*;
use half::f16;

use crate::QuantBackend;
use crate::generic::{self, CHUNK_ELEMS};

/// Dequantizes rows `row0 .. row0 + output.shape(0)` of `packed [N, K · bits / 8]` into `output`.
/// int4: high nibble (arithmetic shift of the sign-extended byte) = even column.
#[cube(launch)]
fn dequantize_rows_kernel<F: Float, S: Float, P: Int>(
    packed: &Tensor<P>,
    scales: &Tensor<S>,
    output: &mut Tensor<F>,
    row0: u32,
    #[comptime] bits: u32,
    #[define(F, S, P)] _dtypes: [StorageType; 3],
) {
    let rows = output.shape(0);
    let k = output.shape(1);
    let kb = packed.shape(1);
    let pos = ABSOLUTE_POS;
    if pos >= rows * kb {
        terminate!();
    }
    let row = pos / kb;
    let col = pos % kb;
    let src_row = row0 as usize + row;
    let byte = i32::cast_from(packed[src_row * packed.stride(0) + col * packed.stride(1)]);
    let s = f32::cast_from(scales[src_row * scales.stride(0)]);
    if comptime!(bits == 4) {
        let hi = byte >> 4;
        let lo = (byte << 28) >> 28;
        // scale · q is exact in f32; the f16 cast is the reference's rounding.
        output[row * k + 2 * col] = F::cast_from(f16::cast_from(s * f32::cast_from(hi)));
        output[row * k + 2 * col + 1] = F::cast_from(f16::cast_from(s * f32::cast_from(lo)));
    } else {
        output[row * k + col] = F::cast_from(f16::cast_from(s * f32::cast_from(byte)));
    }
}

/// `Ŵ[row0 .. row0 + rows, :]` as a contiguous `[rows, K]` tensor of `dtype`.
pub fn dequantize_rows<R: CubeRuntime>(
    packed: &CubeTensor<R>,
    scales: &CubeTensor<R>,
    bits: u8,
    row0: usize,
    rows: usize,
    dtype: DType,
) -> CubeTensor<R> {
    let kb = packed.shape()[1];
    let k = kb * 8 / bits as usize;
    let output = empty_device_dtype::<R>(
        packed.client.clone(),
        packed.device.clone(),
        Shape::new([rows, k]),
        dtype,
    );
    let units = rows * kb;
    let cube_dim = CubeDim::new(&packed.client, units);
    let cube_count = calculate_cube_count_elemwise(&packed.client, units, cube_dim);
    let dtypes = [dtype.into(), scales.dtype.into(), packed.dtype.into()];
    dequantize_rows_kernel::launch::<R>(
        &packed.client,
        cube_count,
        cube_dim,
        packed.clone().into_tensor_arg(),
        scales.clone().into_tensor_arg(),
        output.clone().into_tensor_arg(),
        row0 as u32,
        bits as u32,
        dtypes,
    );
    output
}

fn row_chunks(n: usize, k: usize) -> impl Iterator<Item = (usize, usize)> {
    let step = (CHUNK_ELEMS / k.max(1)).clamp(1, n.max(1));
    (0..n).step_by(step).map(move |r0| (r0, step.min(n - r0)))
}

impl<R, F, I, BT> QuantBackend for CubeBackend<R, F, I, BT>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    fn quant_linear(
        x: FloatTensor<Self>,
        packed: IntTensor<Self>,
        scales: FloatTensor<Self>,
        bits: u8,
    ) -> FloatTensor<Self> {
        assert!(
            bits == 4 || bits == 8,
            "quant_linear: bits must be 4 or 8, got {bits}"
        );
        let [n, kb] = packed.shape().dims::<2>();
        let k = kb * 8 / bits as usize;
        assert_eq!(
            x.shape().dims::<2>()[1],
            k,
            "quant_linear: x features differ from the packed weight's"
        );
        let (packed, scales) = (into_contiguous(packed), into_contiguous(scales));
        let dtype = x.dtype();
        let parts: Vec<_> = row_chunks(n, k)
            .map(|(r0, rows)| {
                let w = dequantize_rows(&packed, &scales, bits, r0, rows, dtype);
                Self::float_matmul(x.clone(), Self::float_transpose(w))
            })
            .collect();
        if parts.is_empty() {
            return generic::quant_linear::<Self>(x, packed, scales, bits);
        }
        Self::float_cat(parts, 1)
    }

    fn quant_linear_grad_input(
        grad_y: FloatTensor<Self>,
        packed: IntTensor<Self>,
        scales: FloatTensor<Self>,
        bits: u8,
    ) -> FloatTensor<Self> {
        assert!(
            bits == 4 || bits == 8,
            "quant_linear_grad_input: bits must be 4 or 8, got {bits}"
        );
        let [n, kb] = packed.shape().dims::<2>();
        let k = kb * 8 / bits as usize;
        let m = grad_y.shape().dims::<2>()[0];
        let (packed, scales) = (into_contiguous(packed), into_contiguous(scales));
        let dtype = grad_y.dtype();
        let mut gx: Option<FloatTensor<Self>> = None;
        for (r0, rows) in row_chunks(n, k) {
            let w = dequantize_rows(&packed, &scales, bits, r0, rows, dtype);
            let gy = Self::float_slice(grad_y.clone(), &[(0..m).into(), (r0..r0 + rows).into()]);
            let part = Self::float_matmul(gy, w);
            gx = Some(match gx {
                None => part,
                Some(acc) => Self::float_add(acc, part),
            });
        }
        match gx {
            Some(g) => g,
            None => generic::quant_linear_grad_input::<Self>(grad_y, packed, scales, bits),
        }
    }

    fn frozen_linear(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        generic::frozen_linear::<Self>(x, weight)
    }

    fn frozen_linear_grad_input(
        grad_y: FloatTensor<Self>,
        weight: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        generic::frozen_linear_grad_input::<Self>(grad_y, weight)
    }
}
