//! [`QuantBackend`] for `Autodiff<B, C>`: custom backward steps that return the gradient for the
//! activations only. The saved state is the weight's own handle (packed bytes + scales, or the
//! dense weight) — a refcount, never a dequantized or converted copy — and no activation is kept,
//! since `∂(x·Wᵀ)/∂x` needs only `W`. No weight-gradient GEMM is ever computed.
//!
//! `frozen_linear` with a weight that requires grad (full fine-tuning) falls back to burn's
//! tracked matmul so that the weight receives its gradient.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::tensor::FloatDType;
use burn::tensor::TensorMetadata;
use burn::tensor::ops::{FloatTensor, FloatTensorOps, IntTensor};

use crate::QuantBackend;

/// Backward of `y = x · Ŵᵀ`: `g_x = g_y · Ŵ`.
#[derive(Debug)]
struct QuantLinearBackward;

impl<B: QuantBackend> Backward<B, 1> for QuantLinearBackward {
    type State = (IntTensor<B>, FloatTensor<B>, u8);

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let (packed, scales, bits) = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |gy| {
            B::quant_linear_grad_input(gy, packed, scales, bits)
        });
    }
}

/// Backward of `g_x = g_y · Ŵ` (its adjoint is the forward product), for double backward.
#[derive(Debug)]
struct QuantLinearGradBackward;

impl<B: QuantBackend> Backward<B, 1> for QuantLinearGradBackward {
    type State = (IntTensor<B>, FloatTensor<B>, u8);

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let (packed, scales, bits) = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |g| {
            B::quant_linear(g, packed, scales, bits)
        });
    }
}

/// Backward of `y = x · Wᵀ` with a frozen `W`.
#[derive(Debug)]
struct FrozenLinearBackward;

impl<B: QuantBackend> Backward<B, 1> for FrozenLinearBackward {
    type State = FloatTensor<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let w = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |gy| {
            B::frozen_linear_grad_input(gy, w)
        });
    }
}

/// Backward of `g_x = g_y · W` with a frozen `W`.
#[derive(Debug)]
struct FrozenLinearGradBackward;

impl<B: QuantBackend> Backward<B, 1> for FrozenLinearGradBackward {
    type State = FloatTensor<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let w = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |g| B::frozen_linear(g, w));
    }
}

impl<B: QuantBackend, C: CheckpointStrategy> QuantBackend for Autodiff<B, C> {
    fn quant_linear(
        x: FloatTensor<Self>,
        packed: IntTensor<Self>,
        scales: FloatTensor<Self>,
        bits: u8,
    ) -> FloatTensor<Self> {
        // Scales are frozen: only their inner handle is used.
        let scales = scales.primitive;
        match QuantLinearBackward
            .prepare::<C>([x.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = B::quant_linear(x.primitive, packed.clone(), scales.clone(), bits);
                prep.finish((packed, scales, bits), y)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::quant_linear(x.primitive, packed, scales, bits))
            }
        }
    }

    fn quant_linear_grad_input(
        grad_y: FloatTensor<Self>,
        packed: IntTensor<Self>,
        scales: FloatTensor<Self>,
        bits: u8,
    ) -> FloatTensor<Self> {
        let scales = scales.primitive;
        match QuantLinearGradBackward
            .prepare::<C>([grad_y.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let gx = B::quant_linear_grad_input(
                    grad_y.primitive,
                    packed.clone(),
                    scales.clone(),
                    bits,
                );
                prep.finish((packed, scales, bits), gx)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::quant_linear_grad_input(
                grad_y.primitive,
                packed,
                scales,
                bits,
            )),
        }
    }

    fn frozen_linear(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        if weight.is_tracked() {
            // Trainable weight: burn's own graph so that W gets its gradient too.
            let dtype = x.primitive.dtype();
            let w = if weight.primitive.dtype() == dtype {
                weight
            } else {
                Self::float_cast(weight, FloatDType::from(dtype))
            };
            return Self::float_matmul(x, Self::float_transpose(w));
        }
        let w = weight.primitive;
        match FrozenLinearBackward
            .prepare::<C>([x.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = B::frozen_linear(x.primitive, w.clone());
                prep.finish(w, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::frozen_linear(x.primitive, w)),
        }
    }

    fn frozen_linear_grad_input(
        grad_y: FloatTensor<Self>,
        weight: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        if weight.is_tracked() {
            let dtype = grad_y.primitive.dtype();
            let w = if weight.primitive.dtype() == dtype {
                weight
            } else {
                Self::float_cast(weight, FloatDType::from(dtype))
            };
            return Self::float_matmul(grad_y, w);
        }
        let w = weight.primitive;
        match FrozenLinearGradBackward
            .prepare::<C>([grad_y.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let gx = B::frozen_linear_grad_input(grad_y.primitive, w.clone());
                prep.finish(w, gx)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::frozen_linear_grad_input(grad_y.primitive, w))
            }
        }
    }
}
