//! Dense linear layer in the torch layout (`weight` [out, in], `bias` [out]).
//!
//! Interim: the `quant` crate's `Linear` enum (dense or int4/int8) replaces this type.

use burn::module::Param;
use burn::prelude::*;

use crate::layers::cast_to;

/// y = x · Wᵀ + b with W stored [out, in] as in the Hugging Face checkpoint.
#[derive(Module, Debug)]
pub struct DenseLinear<B: Backend> {
    /// [out, in].
    pub weight: Param<Tensor<B, 2>>,
    /// [out].
    pub bias: Option<Param<Tensor<B, 1>>>,
}

/// The linear layer used by every GLM block.
pub type Linear<B> = DenseLinear<B>;

impl<B: Backend> DenseLinear<B> {
    /// x [..., in] → [..., out].
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dims = x.dims();
        let k = dims[D - 1];
        let m: usize = dims[..D - 1].iter().product();
        let w = cast_to(self.weight.val(), x.dtype());
        let n = w.dims()[0];
        let mut y = x.reshape([m, k]).matmul(w.transpose());
        if let Some(b) = &self.bias {
            let dtype = y.dtype();
            y = y + cast_to(b.val(), dtype).unsqueeze::<2>();
        }
        let mut out = dims;
        out[D - 1] = n;
        y.reshape(out)
    }
    /// Input features.
    pub fn in_features(&self) -> usize {
        self.weight.dims()[1]
    }
    /// Output features.
    pub fn out_features(&self) -> usize {
        self.weight.dims()[0]
    }
}
