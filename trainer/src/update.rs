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
///
/// Summed on the host in a fixed order: a backend reduction splits its work by thread scheduling,
/// and a norm that differs in the last bit between two runs changes the clip coefficient, so an
/// exactly resumed run would drift from the uninterrupted one.
pub fn grad_norm<B: TrainBackend>(grads: &GradMap<B>) -> f64 {
    let mut total = 0f64;
    for g in grads.values() {
        match g.clone().into_data().convert::<f32>().to_vec::<f32>() {
            Ok(v) => total += v.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>(),
            Err(_) => return f64::NAN,
        }
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
    StepOutcome {
        grad_norm: norm,
        clipped: coef.is_some(),
        lr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::CpuBackend;
    use burn::backend::Flex;

    /// Regression: the norm came from the backend's parallel f32 `sum`, whose split (and so
    /// its last bits) followed thread scheduling; a resumed full fine-tune then drifted from the
    /// straight run in about one run of three. The norm is now a fixed-order f64 host sum.
    #[test]
    fn resumed_run_drift_grad_norm_is_a_fixed_order_host_sum() {
        let n = 3 << 20; // large enough for the backend to split a reduction over threads
        let values: Vec<f32> = (0..n)
            .map(|i| ((i as f32) * 0.618_034).sin() * 1e-3 + 1e-4)
            .collect();
        let dev = Default::default();
        let mut grads = GradMap::<CpuBackend>::new();
        grads.insert(
            "a".into(),
            Tensor::<Flex, 1>::from_data(TensorData::new(values.clone(), [n]), &dev),
        );
        grads.insert(
            "b".into(),
            Tensor::<Flex, 1>::from_data(TensorData::new(vec![0.5f32, -0.25], [2]), &dev),
        );
        let want = (values
            .iter()
            .map(|&x| f64::from(x) * f64::from(x))
            .sum::<f64>()
            + 0.3125)
            .sqrt();
        for _ in 0..5 {
            assert_eq!(grad_norm::<CpuBackend>(&grads).to_bits(), want.to_bits());
        }
    }
}
