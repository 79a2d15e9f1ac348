//! One micro-batch: forward, loss, backward — with per-block recomputation (the original always
//! enables gradient checkpointing) or plain autodiff.
//!
//! Recomputation runs the blocks once without autodiff keeping only each block's input, computes
//! the head and loss with autodiff, then walks the blocks from last to first: re-run block l with
//! autodiff on its saved input (and on detached copies of its prefix keys/values), backpropagate
//! the incoming gradient, and hand the input gradient to block l−1. Only one block's graph is ever
//! alive, so activation memory is one block plus the block inputs. The P-Tuning prefix gradient
//! is then obtained with one backward through the (small) prefix encoder from the per-layer
//! key/value gradients.

use std::collections::BTreeMap;

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use glm_model::block::KvPair;
use glm_model::masks::derive_inputs;
use glm_model::model::loss_rows;
use glm_model::{ChatGlmModel, GlmBackend, causal_lm_loss, ids_tensor, labels_tensor};
use prefix_encoder::PrefixEncoder;

use crate::error::TrainError;
use crate::params::{BlockParams, ParamRef, Trainable};

/// The backend of a training run: autodiff over a backend with the model's extra ops.
pub trait TrainBackend: AutodiffBackend<InnerBackend: GlmBackend> + GlmBackend {}
impl<B: AutodiffBackend<InnerBackend: GlmBackend> + GlmBackend> TrainBackend for B {}

/// Token rows and labels of one micro-batch (equal-length rows).
#[derive(Debug, Clone)]
pub struct MicroBatch {
    pub rows: Vec<Vec<u32>>,
    pub labels: Vec<Vec<i64>>,
}

impl MicroBatch {
    /// Tokens in the batch.
    pub fn tokens(&self) -> usize {
        self.rows.iter().map(Vec::len).sum()
    }
}

/// Gradients by parameter name, flattened, on the inner backend.
pub type GradMap<B> = BTreeMap<String, Tensor<<B as AutodiffBackend>::InnerBackend, 1>>;

/// What one micro-batch produced.
#[derive(Debug)]
pub struct MicroResult<B: TrainBackend> {
    /// Mean cross-entropy of the micro-batch (unscaled).
    pub loss: f64,
    /// Gradients of `loss · scale` for every trainable parameter.
    pub grads: GradMap<B>,
}

/// The model being trained: only the prefix (P-Tuning v2) or every parameter (full fine-tune).
pub enum Target<'a, B: TrainBackend> {
    Prefix(&'a PrefixEncoder<B>),
    Full,
}

fn add_grad<B: TrainBackend>(map: &mut GradMap<B>, name: &str, g: Tensor<B::InnerBackend, 1>) {
    match map.remove(name) {
        Some(prev) => map.insert(name.to_string(), prev + g),
        None => map.insert(name.to_string(), g),
    };
}

/// Calls its argument with every (checkpoint name, parameter) to collect gradients of.
type ParamVisitor<'a, B> = dyn Fn(&mut dyn FnMut(&str, ParamRef<'_, B>)) + 'a;

/// Gradients of one layer's prefix keys and values (inner backend).
type KvGrads<B> = (
    Tensor<<B as AutodiffBackend>::InnerBackend, 4>,
    Tensor<<B as AutodiffBackend>::InnerBackend, 4>,
);

fn collect<B: TrainBackend>(map: &mut GradMap<B>, grads: &B::Gradients, visit: &ParamVisitor<B>) {
    visit(&mut |name, p| {
        let g = match &p {
            ParamRef::D1(p) => p.val().grad(grads),
            ParamRef::D2(p) => p.val().grad(grads).map(|g| {
                let n: usize = g.dims().iter().product();
                g.reshape([n])
            }),
        };
        if let Some(g) = g {
            add_grad::<B>(map, name, g);
        }
    });
}

/// Forward + backward of one micro-batch; gradients are of `loss · scale` (scale =
/// 1 / gradient_accumulation_steps). `inner` is `model.valid()` (used by the recomputation's
/// gradient-free pass). Prefix dropout follows the backend RNG, which the caller seeds.
pub fn micro_step<B: TrainBackend>(
    model: &ChatGlmModel<B>,
    inner: &ChatGlmModel<B::InnerBackend>,
    target: &Target<'_, B>,
    batch: &MicroBatch,
    scale: f64,
    recompute: bool,
    device: &B::Device,
) -> Result<MicroResult<B>, TrainError> {
    let b = batch.rows.len();
    let dtype = model.precision.dtype();
    let past = match target {
        Target::Prefix(p) => Some(p.past_key_values(b, dtype, true)),
        Target::Full => None,
    };
    let mut grads_out = GradMap::<B>::new();

    if !recompute {
        let out = model.forward_rows(&batch.rows, past.as_ref(), device)?;
        let loss = causal_lm_loss(out.logits, labels_tensor::<B>(&batch.labels, device));
        let value = scalar(loss.clone());
        let grads = (loss * scale).backward();
        match target {
            Target::Prefix(p) => collect::<B>(&mut grads_out, &grads, &|f| p.for_each_param(f)),
            Target::Full => collect::<B>(&mut grads_out, &grads, &|f| model.for_each_param(f)),
        }
        return Ok(MicroResult {
            loss: value,
            grads: grads_out,
        });
    }

    let inputs = derive_inputs(&batch.rows, &model.config)?;
    let prefix_len = past.as_ref().map(|p| p.prefix_len).unwrap_or(0);
    let s = inputs.seq;
    let ids_inner = ids_tensor::<B::InnerBackend>(&batch.rows, device);
    let ctx_inner = inner.layer_context(
        inputs.position_tensor(device),
        inputs.mask_tensor(device),
        prefix_len,
        s + 1,
    );
    let past_inner: Option<Vec<KvPair<B::InnerBackend>>> = past.as_ref().map(|p| {
        p.layers
            .iter()
            .map(|kv| KvPair::new(kv.key.clone().inner(), kv.value.clone().inner()))
            .collect()
    });

    // Gradient-free pass keeping each block's input.
    let mut x = inner.embed(ids_inner);
    let mut inputs_per_layer = Vec::with_capacity(inner.layers.len());
    for (l, layer) in inner.layers.iter().enumerate() {
        inputs_per_layer.push(x.clone());
        x = layer
            .forward(x, &ctx_inner, past_inner.as_ref().map(|p| &p[l]))
            .0;
    }

    let x_last = Tensor::<B, 3>::from_inner(x).require_grad();
    let (value, mut grad_x) = match target {
        Target::Prefix(_) => frozen_head_backward(model, inner, x_last, batch, scale, device)?,
        Target::Full => {
            // Head and loss with autodiff: the tied embedding and final LayerNorm get gradients.
            let loss = causal_lm_loss(
                model.head(x_last.clone()),
                labels_tensor::<B>(&batch.labels, device),
            );
            let value = scalar(loss.clone());
            let grads = (loss * scale).backward();
            let grad_x = x_last.grad(&grads).ok_or_else(|| {
                TrainError::Internal("no gradient reached the last hidden state".into())
            })?;
            collect::<B>(&mut grads_out, &grads, &|f| {
                f(
                    "transformer.word_embeddings.weight",
                    ParamRef::D2(&model.word_embeddings.weight),
                );
                f(
                    "transformer.final_layernorm.weight",
                    ParamRef::D1(&model.final_layernorm.weight),
                );
                f(
                    "transformer.final_layernorm.bias",
                    ParamRef::D1(&model.final_layernorm.bias),
                );
            });
            (value, grad_x)
        }
    };

    // Blocks from last to first, one graph at a time.
    let ctx = model.layer_context(
        inputs.position_tensor(device),
        inputs.mask_tensor(device),
        prefix_len,
        s + 1,
    );
    let mut kv_grads: Vec<Option<KvGrads<B>>> = vec![None; model.layers.len()];
    for l in (0..model.layers.len()).rev() {
        let x_in = inputs_per_layer
            .pop()
            .ok_or_else(|| TrainError::Internal(format!("no saved input of layer {l}")))?;
        let x_in = Tensor::<B, 3>::from_inner(x_in).require_grad();
        let kv = past_inner.as_ref().map(|p| {
            KvPair::new(
                Tensor::<B, 4>::from_inner(p[l].key.clone()).require_grad(),
                Tensor::<B, 4>::from_inner(p[l].value.clone()).require_grad(),
            )
        });
        let (y, _) = model.layers[l].forward(x_in.clone(), &ctx, kv.as_ref());
        let grads = (y * Tensor::<B, 3>::from_inner(grad_x)).sum().backward();
        grad_x = x_in.grad(&grads).ok_or_else(|| {
            TrainError::Internal(format!("no gradient reached the input of block {l}"))
        })?;
        if let Some(kv) = &kv {
            let gk = kv.key.grad(&grads);
            let gv = kv.value.grad(&grads);
            if let (Some(gk), Some(gv)) = (gk, gv) {
                kv_grads[l] = Some((gk, gv));
            }
        }
        if let Target::Full = target {
            let block = BlockParams {
                layer: l,
                block: &model.layers[l],
            };
            collect::<B>(&mut grads_out, &grads, &|f| block.for_each_param(f));
        }
    }

    match (target, past) {
        (Target::Prefix(p), Some(past)) => {
            // One backward through the prefix encoder from all layers' key/value gradients.
            let mut objective: Option<Tensor<B, 1>> = None;
            for (l, kv) in past.layers.into_iter().enumerate() {
                let Some((gk, gv)) = kv_grads[l].take() else {
                    continue;
                };
                let term = (kv.key * Tensor::from_inner(gk)).sum()
                    + (kv.value * Tensor::from_inner(gv)).sum();
                objective = Some(match objective {
                    Some(o) => o + term,
                    None => term,
                });
            }
            if let Some(o) = objective {
                let grads = o.backward();
                collect::<B>(&mut grads_out, &grads, &|f| p.for_each_param(f));
            }
        }
        (Target::Full, _) => {
            // The embedding lookup's share of the tied embedding gradient.
            let emb = model.embed(ids_tensor::<B>(&batch.rows, device));
            let grads = (emb * Tensor::<B, 3>::from_inner(grad_x)).sum().backward();
            collect::<B>(&mut grads_out, &grads, &|f| {
                f(
                    "transformer.word_embeddings.weight",
                    ParamRef::D2(&model.word_embeddings.weight),
                )
            });
        }
        _ => {}
    }
    Ok(MicroResult {
        loss: value,
        grads: grads_out,
    })
}

/// Loss and last-hidden-state gradient through the frozen head: the final LayerNorm (with
/// autodiff) on only the rows that have a label, then [`ChatGlmModel::frozen_head_loss_grad`]
/// without autodiff. Returns (loss, ∂(loss·scale)/∂x_last [B, S, H] on the inner backend).
fn frozen_head_backward<B: TrainBackend>(
    model: &ChatGlmModel<B>,
    inner: &ChatGlmModel<B::InnerBackend>,
    x_last: Tensor<B, 3>,
    batch: &MicroBatch,
    scale: f64,
    device: &B::Device,
) -> Result<(f64, Tensor<B::InnerBackend, 3>), TrainError> {
    let [b, s, h] = x_last.dims();
    let (rows, targets) = loss_rows(&batch.labels);
    let n = rows.len();
    let rows = Tensor::<B, 1, Int>::from_data(TensorData::new(rows, [n]), device);
    let targets =
        Tensor::<B::InnerBackend, 1, Int>::from_data(TensorData::new(targets, [n]), device);
    let normed = model
        .final_layernorm
        .forward(x_last.clone().reshape([b * s, h]).select(0, rows)); // [N, H]
    let (loss, grad_h) = inner.frozen_head_loss_grad(normed.clone().inner(), targets, scale);
    let value = scalar(loss);
    if n == 0 {
        return Ok((
            value,
            Tensor::<B::InnerBackend, 3>::zeros([b, s, h], (device, x_last.dtype())),
        ));
    }
    let grads = (normed * Tensor::<B, 2>::from_inner(grad_h))
        .sum()
        .backward();
    let grad_x = x_last
        .grad(&grads)
        .ok_or_else(|| TrainError::Internal("no gradient reached the last hidden state".into()))?;
    Ok((value, grad_x))
}

/// A scalar tensor's value on the host.
pub fn scalar<B: Backend>(t: Tensor<B, 1>) -> f64 {
    t.into_data()
        .convert::<f64>()
        .to_vec::<f64>()
        .ok()
        .and_then(|v| v.first().copied())
        .unwrap_or(f64::NAN)
}
