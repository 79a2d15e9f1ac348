//! Applying one optimizer step to named parameters: global-norm clipping, then `adamw_hf`.

use burn::module::Param;
use burn::prelude::*;

use crate::optim::{AdamState, AdamWHf, clip_coefficient};
use crate::params::{ParamMut, Trainable};
use crate::step::{GradMap, TrainBackend};

/// What an optimizer step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepOutcome {
    /// Global L2 norm of the accumulated gradients before clipping.
    pub grad_norm: f64,
    /// Whether they were scaled by max_grad_norm / (norm + 1e-6).
    pub clipped: bool,
    /// Learning rate used.
    pub lr: f64,
}

/// Global L2 norm of the gradients (f64 on the host).
pub fn grad_norm<B: TrainBackend>(grads: &GradMap<B>) -> f64 {
    let mut total = 0f64;
    for g in grads.values() {
        let sq = (g.clone() * g.clone()).sum();
        let v: Vec<f64> = sq.into_data().convert::<f64>().to_vec().unwrap_or_default();
        total += v.first().copied().unwrap_or(f64::NAN);
    }
    total.sqrt()
}

/// Clip and update every parameter of `target` that has a gradient. `state.step` is advanced.
/// The caller checks `grad_norm` for non-finite values first.
pub fn apply<B: TrainBackend, T: Trainable<B>>(
    target: &mut T,
    mut grads: GradMap<B>,
    norm: f64,
    max_grad_norm: f64,
    opt: &AdamWHf,
    state: &mut AdamState<B::InnerBackend>,
    lr: f64,
) -> StepOutcome {
    let coef = clip_coefficient(norm, max_grad_norm);
    if let Some(c) = coef {
        for g in grads.values_mut() {
            *g = g.clone() * c;
        }
    }
    state.step += 1;
    let t = state.step;
    target.for_each_param_mut(&mut |name, p| {
        let Some(g) = grads.remove(name) else { return };
        match p {
            ParamMut::D1(p) => {
                let new = opt.update(name, p.val().inner(), g, lr, t, state);
                *p = Param::initialized(p.id, Tensor::from_inner(new).require_grad());
            }
            ParamMut::D2(p) => {
                let dims = p.dims();
                let new = opt.update(name, p.val().inner(), g.reshape(dims), lr, t, state);
                *p = Param::initialized(p.id, Tensor::from_inner(new).require_grad());
            }
        }
    });
    StepOutcome { grad_norm: norm, clipped: coef.is_some(), lr }
}
