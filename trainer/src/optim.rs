//! The optimisation step of the original Trainer (transformers 4.27, `optim = adamw_hf`):
//! global-norm clipping, AdamW with ε added *before* bias correction and decoupled weight decay
//! applied after the update, and the linear / constant / cosine schedules with warmup.
//!
//! burn's own AdamW differs (ε after bias correction, defaults ε = 1e-5, wd = 1e-4, per-tensor
//! clipping), so the update is written here over plain tensors, keyed by parameter *name* so
//! that the state survives a resume (burn's `ParamId`s are fresh on every run).

use std::collections::BTreeMap;

use burn::prelude::*;
use burn::tensor::DType;

/// Hyper-parameters of `adamw_hf`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWHf {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

/// The defaults of HF's `TrainingArguments`, which `main.py` keeps: betas (0.9, 0.999), eps 1e-8,
/// no weight decay.
impl Default for AdamWHf {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// First and second moments of one parameter (flattened, f32).
#[derive(Debug, Clone)]
pub struct Moments<B: Backend> {
    pub exp_avg: Tensor<B, 1>,
    pub exp_avg_sq: Tensor<B, 1>,
}

/// Optimizer state: step count and per-parameter moments.
#[derive(Debug, Clone)]
pub struct AdamState<B: Backend> {
    /// Optimizer steps taken (t of the bias correction).
    pub step: u64,
    pub moments: BTreeMap<String, Moments<B>>,
}

impl<B: Backend> Default for AdamState<B> {
    fn default() -> Self {
        Self {
            step: 0,
            moments: BTreeMap::new(),
        }
    }
}

/// Whether HF's parameter groups apply weight decay to `name` (not to biases and LayerNorm weights).
pub fn decays(name: &str) -> bool {
    !(name.ends_with(".bias") || name.contains("layernorm") || name.contains("LayerNorm"))
}

impl AdamWHf {
    /// One update of `param` (any shape) with gradient `grad` at learning rate `lr`, advancing the
    /// moments of `name`. `step` is t ≥ 1 (this step included). Computed in f32; the result has
    /// `param`'s dtype.
    pub fn update<B: Backend, const D: usize>(
        &self,
        name: &str,
        param: Tensor<B, D>,
        grad: Tensor<B, D>,
        lr: f64,
        step: u64,
        state: &mut AdamState<B>,
    ) -> Tensor<B, D> {
        let shape = param.shape();
        let dtype = param.dtype();
        let n = shape.num_elements();
        let p = to_f32(param).reshape([n]);
        let g = to_f32(grad).reshape([n]);
        let device = p.device();
        let mom = state
            .moments
            .entry(name.to_string())
            .or_insert_with(|| Moments {
                exp_avg: Tensor::zeros([n], &device),
                exp_avg_sq: Tensor::zeros([n], &device),
            });
        let m = mom.exp_avg.clone() * self.beta1 + g.clone() * (1.0 - self.beta1);
        let v = mom.exp_avg_sq.clone() * self.beta2 + g.clone() * g * (1.0 - self.beta2);
        mom.exp_avg = m.clone();
        mom.exp_avg_sq = v.clone();
        // ε is added to sqrt(v) before the bias correction is folded into the step size.
        let denom = v.sqrt() + self.eps;
        let t = step as i32;
        let step_size = lr * (1.0 - self.beta2.powi(t)).sqrt() / (1.0 - self.beta1.powi(t));
        let mut p = p - m / denom * step_size;
        if self.weight_decay > 0.0 && decays(name) {
            // Decoupled decay on the already-updated parameter, as transformers' AdamW.
            p = p.clone() - p * (lr * self.weight_decay);
        }
        let p = p.reshape(shape);
        if dtype == DType::F32 {
            p
        } else {
            p.cast(dtype)
        }
    }
}

fn to_f32<B: Backend, const D: usize>(t: Tensor<B, D>) -> Tensor<B, D> {
    if t.dtype() == DType::F32 {
        t
    } else {
        t.cast(DType::F32)
    }
}

/// Learning-rate schedule (`lr_scheduler_type`) with warmup.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Schedule {
    Linear,
    Constant,
    ConstantWithWarmup,
    Cosine,
}

impl Schedule {
    /// Parse the HF name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "linear" => Some(Self::Linear),
            "constant" => Some(Self::Constant),
            "constant_with_warmup" => Some(Self::ConstantWithWarmup),
            "cosine" => Some(Self::Cosine),
            _ => None,
        }
    }
}

/// The schedule of a run: `lr(k)` is the rate used by the optimizer step that follows k
/// scheduler steps (k = 0 for the first step).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    pub base: f64,
    pub kind: Schedule,
    pub warmup_steps: u64,
    pub total_steps: u64,
}

impl LrSchedule {
    /// Warmup steps as HF derives them: `warmup_steps` if > 0, else ceil(total · warmup_ratio).
    pub fn warmup(total_steps: u64, warmup_steps: u64, warmup_ratio: f64) -> u64 {
        if warmup_steps > 0 {
            warmup_steps
        } else {
            (total_steps as f64 * warmup_ratio).ceil() as u64
        }
    }

    /// Multiplier of the base rate after `k` scheduler steps (HF's lr_lambda).
    pub fn factor(&self, k: u64) -> f64 {
        let (k, w, t) = (k as f64, self.warmup_steps as f64, self.total_steps as f64);
        if self.kind != Schedule::Constant && k < w {
            return k / w.max(1.0);
        }
        match self.kind {
            Schedule::Constant | Schedule::ConstantWithWarmup => 1.0,
            Schedule::Linear => ((t - k) / (t - w).max(1.0)).max(0.0),
            Schedule::Cosine => {
                let progress = (k - w) / (t - w).max(1.0);
                (0.5 * (1.0 + (std::f64::consts::PI * 0.5 * 2.0 * progress).cos())).max(0.0)
            }
        }
    }

    /// The learning rate after `k` scheduler steps.
    pub fn lr(&self, k: u64) -> f64 {
        self.base * self.factor(k)
    }
}

/// Global L2 norm of a set of gradients (as `torch.nn.utils.clip_grad_norm_`), computed in f64 on
/// the host from per-tensor sums of squares.
pub fn global_norm<B: Backend>(sums_of_squares: &[Tensor<B, 1>]) -> f64 {
    let mut total = 0f64;
    for s in sums_of_squares {
        let v: Vec<f32> = s
            .clone()
            .into_data()
            .convert::<f32>()
            .to_vec()
            .unwrap_or_default();
        total += v.iter().map(|&x| x as f64).sum::<f64>();
    }
    total.sqrt()
}

/// Clipping coefficient max_norm / (norm + 1e-6) when it is below 1, else `None` (no clipping).
pub fn clip_coefficient(norm: f64, max_grad_norm: f64) -> Option<f64> {
    if max_grad_norm <= 0.0 {
        return None;
    }
    let coef = max_grad_norm / (norm + 1e-6);
    (coef < 1.0).then_some(coef)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn linear_schedule_matches_hf() {
        let s = LrSchedule {
            base: 2e-2,
            kind: Schedule::Linear,
            warmup_steps: 0,
            total_steps: 3000,
        };
        assert_eq!(s.lr(0), 2e-2);
        assert!((s.lr(10) - 0.019933333333333334).abs() < 1e-15);
        assert!((s.lr(2999) - 2e-2 / 3000.0).abs() < 1e-15);
        assert_eq!(s.lr(3000), 0.0);
        let w = LrSchedule {
            base: 1.0,
            kind: Schedule::Linear,
            warmup_steps: 10,
            total_steps: 110,
        };
        assert_eq!(w.lr(5), 0.5);
        assert_eq!(w.lr(60), 0.5);
        assert_eq!(LrSchedule::warmup(100, 0, 0.1), 10);
    }

    #[test]
    fn cosine_and_constant() {
        let c = LrSchedule {
            base: 1.0,
            kind: Schedule::Cosine,
            warmup_steps: 0,
            total_steps: 100,
        };
        assert!((c.lr(50) - 0.5).abs() < 1e-12);
        assert!(c.lr(100).abs() < 1e-12);
        let k = LrSchedule {
            base: 3.0,
            kind: Schedule::Constant,
            warmup_steps: 5,
            total_steps: 100,
        };
        assert_eq!(k.lr(0), 3.0);
    }

    #[test]
    fn adamw_hf_first_step_formula() {
        let dev = Default::default();
        let opt = AdamWHf {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        };
        let mut st = AdamState::<Flex>::default();
        let p = Tensor::<Flex, 1>::from_floats([1.0, -2.0], &dev);
        let g = Tensor::<Flex, 1>::from_floats([0.5, -0.25], &dev);
        let out: Vec<f32> = opt
            .update("w", p, g, 0.1, 1, &mut st)
            .into_data()
            .to_vec()
            .unwrap();
        // t = 1: m = 0.1 g, v = 0.001 g², step = lr·sqrt(0.001)/0.1; update = step·m/(sqrt(v)+eps)
        for (i, (p0, g0)) in [(1.0f64, 0.5f64), (-2.0, -0.25)].iter().enumerate() {
            let m = 0.1 * g0;
            let v = 0.001 * g0 * g0;
            let want = p0 - 0.1 * 0.001f64.sqrt() / 0.1 * m / (v.sqrt() + 1e-8);
            assert!((out[i] as f64 - want).abs() < 1e-6, "{} vs {want}", out[i]);
        }
    }

    #[test]
    fn clipping_coefficient() {
        assert_eq!(clip_coefficient(0.5, 1.0), None);
        let c = clip_coefficient(2.0, 1.0).unwrap();
        assert!((c - 1.0 / (2.0 + 1e-6)).abs() < 1e-15);
    }
}
