//! The backend extension: [`QuantBackend`] adds the quantized and frozen linear products to any
//! burn backend, plus tensor-level wrappers that flatten leading dimensions.
//!
//! Implementations: `Flex` (fast CPU kernels, [`crate::flex`]), `Autodiff<B, C>`
//! (input-gradient-only backward, [`crate::autodiff`]) and, with the `cuda` or `vulkan` feature,
//! the CubeCL backends (`cube`). Any other backend can implement the trait with the generic
//! functions of [`crate::generic`].

use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{Int, Tensor, TensorPrimitive};

/// Linear products against frozen weights, computing only what training through a frozen base needs.
///
/// Shapes use `M` activation rows, `K` input features and `N` output features. All inputs are 2-D;
/// see [`quant_linear`] / [`frozen_linear`] for wrappers over `[..., K]` tensors.
pub trait QuantBackend: Backend {
    /// `y [M, N] = x [M, K] · Ŵᵀ` with `Ŵ[n, k] = f16(scale[n] · q[n, k])`.
    ///
    /// `packed`: I8 int tensor `[N, K · bits / 8]` in THUDM's layout (int4: high nibble = even
    /// column); `scales`: F16 float tensor `[N]`; `bits` ∈ {4, 8}. The output has `x`'s dtype.
    fn quant_linear(
        x: FloatTensor<Self>,
        packed: IntTensor<Self>,
        scales: FloatTensor<Self>,
        bits: u8,
    ) -> FloatTensor<Self>;

    /// `g_x [M, K] = g_y [M, N] · Ŵ` (the input gradient only; output has `grad_y`'s dtype).
    fn quant_linear_grad_input(
        grad_y: FloatTensor<Self>,
        packed: IntTensor<Self>,
        scales: FloatTensor<Self>,
        bits: u8,
    ) -> FloatTensor<Self>;

    /// `y [M, N] = x [M, K] · Wᵀ` for a frozen dense weight `W [N, K]` stored in any float dtype
    /// (f16/bf16/f32); the output has `x`'s dtype and no full converted copy of `W` is made.
    fn frozen_linear(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self>;

    /// `g_x [M, K] = g_y [M, N] · W` for a frozen dense weight `W [N, K]` (output in `grad_y`'s dtype).
    fn frozen_linear_grad_input(
        grad_y: FloatTensor<Self>,
        weight: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

/// Flattens `x [..., K]` to `[M, K]`, returning the leading dims.
fn flatten<B: Backend, const D: usize>(x: Tensor<B, D>) -> (Tensor<B, 2>, [usize; D]) {
    assert!(D >= 1, "linear layers need at least a feature dimension");
    let dims = x.dims();
    let k = dims[D - 1];
    let m = dims[..D - 1].iter().product::<usize>();
    (x.reshape([m, k]), dims)
}

fn unflatten<B: Backend, const D: usize>(y: Tensor<B, 2>, mut dims: [usize; D]) -> Tensor<B, D> {
    dims[D - 1] = y.dims()[1];
    y.reshape(dims)
}

/// `[..., K] → [..., N]` through [`QuantBackend::quant_linear`] (no bias).
///
/// Panics if `x`'s last dimension differs from the packed weight's `K`.
pub fn quant_linear<B: QuantBackend, const D: usize>(
    x: Tensor<B, D>,
    packed: Tensor<B, 2, Int>,
    scales: Tensor<B, 1>,
    bits: u8,
) -> Tensor<B, D> {
    let (x2, dims) = flatten(x);
    let y = B::quant_linear(
        x2.into_primitive().tensor(),
        packed.into_primitive(),
        scales.into_primitive().tensor(),
        bits,
    );
    unflatten(Tensor::from_primitive(TensorPrimitive::Float(y)), dims)
}

/// `[..., K] → [..., N]` through [`QuantBackend::frozen_linear`] with `weight [N, K]` (no bias).
pub fn frozen_linear<B: QuantBackend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 2>,
) -> Tensor<B, D> {
    let (x2, dims) = flatten(x);
    let y = B::frozen_linear(
        x2.into_primitive().tensor(),
        weight.into_primitive().tensor(),
    );
    unflatten(Tensor::from_primitive(TensorPrimitive::Float(y)), dims)
}
