//! Named access to the model's parameters by their Hugging Face state-dict names
//! (`transformer.word_embeddings.weight`, `transformer.layers.{i}.attention.query_key_value.weight`,
//! ...), as `model.named_parameters()` lists them: `lm_head` is the tied embedding and has no entry
//! of its own. Quantized linears hold no float parameters and are skipped.

use burn::module::Param;
use burn::prelude::*;

use crate::block::GlmBlock;
use crate::layers::LayerNorm;
use crate::linear::Linear;
use crate::model::ChatGlmModel;

/// A parameter of rank 1 or 2.
pub enum ParamRef<'a, B: Backend> {
    D1(&'a Param<Tensor<B, 1>>),
    D2(&'a Param<Tensor<B, 2>>),
}

/// A mutable parameter of rank 1 or 2.
pub enum ParamMut<'a, B: Backend> {
    D1(&'a mut Param<Tensor<B, 1>>),
    D2(&'a mut Param<Tensor<B, 2>>),
}

impl<B: Backend> ParamRef<'_, B> {
    /// Shape of the parameter.
    pub fn dims(&self) -> Vec<usize> {
        match self {
            ParamRef::D1(p) => p.dims().to_vec(),
            ParamRef::D2(p) => p.dims().to_vec(),
        }
    }
    /// The value flattened to `[n]`.
    pub fn flat(&self) -> Tensor<B, 1> {
        match self {
            ParamRef::D1(p) => p.val(),
            ParamRef::D2(p) => {
                let n: usize = p.dims().iter().product();
                p.val().reshape([n])
            }
        }
    }
}

pub(crate) fn ln_params<'a, B: Backend>(
    prefix: &str,
    ln: &'a LayerNorm<B>,
    f: &mut dyn FnMut(&str, ParamRef<'a, B>),
) {
    f(&format!("{prefix}.weight"), ParamRef::D1(&ln.weight));
    f(&format!("{prefix}.bias"), ParamRef::D1(&ln.bias));
}

fn ln_params_mut<B: Backend>(
    prefix: &str,
    ln: &mut LayerNorm<B>,
    f: &mut dyn FnMut(&str, ParamMut<'_, B>),
) {
    f(&format!("{prefix}.weight"), ParamMut::D1(&mut ln.weight));
    f(&format!("{prefix}.bias"), ParamMut::D1(&mut ln.bias));
}

fn linear_params<'a, B: Backend>(
    prefix: &str,
    lin: &'a Linear<B>,
    f: &mut dyn FnMut(&str, ParamRef<'a, B>),
) {
    if let Some(d) = dense(lin) {
        f(&format!("{prefix}.weight"), ParamRef::D2(&d.weight));
        if let Some(b) = &d.bias {
            f(&format!("{prefix}.bias"), ParamRef::D1(b));
        }
    }
}

fn linear_params_mut<B: Backend>(
    prefix: &str,
    lin: &mut Linear<B>,
    f: &mut dyn FnMut(&str, ParamMut<'_, B>),
) {
    if let Some(d) = dense_mut(lin) {
        f(&format!("{prefix}.weight"), ParamMut::D2(&mut d.weight));
        if let Some(b) = &mut d.bias {
            f(&format!("{prefix}.bias"), ParamMut::D1(b));
        }
    }
}

fn dense<B: Backend>(lin: &Linear<B>) -> Option<&crate::linear::DenseLinear<B>> {
    match lin {
        Linear::Dense(d) => Some(d),
        Linear::Quantized(_) => None,
    }
}

fn dense_mut<B: Backend>(lin: &mut Linear<B>) -> Option<&mut crate::linear::DenseLinear<B>> {
    match lin {
        Linear::Dense(d) => Some(d),
        Linear::Quantized(_) => None,
    }
}

fn block_params<'a, B: Backend>(
    l: usize,
    b: &'a GlmBlock<B>,
    f: &mut dyn FnMut(&str, ParamRef<'a, B>),
) {
    let p = format!("transformer.layers.{l}");
    ln_params(&format!("{p}.input_layernorm"), &b.input_layernorm, f);
    linear_params(
        &format!("{p}.attention.query_key_value"),
        &b.attention.query_key_value,
        f,
    );
    linear_params(&format!("{p}.attention.dense"), &b.attention.dense, f);
    ln_params(
        &format!("{p}.post_attention_layernorm"),
        &b.post_attention_layernorm,
        f,
    );
    linear_params(&format!("{p}.mlp.dense_h_to_4h"), &b.mlp.dense_h_to_4h, f);
    linear_params(&format!("{p}.mlp.dense_4h_to_h"), &b.mlp.dense_4h_to_h, f);
}

fn block_params_mut<B: Backend>(
    l: usize,
    b: &mut GlmBlock<B>,
    f: &mut dyn FnMut(&str, ParamMut<'_, B>),
) {
    let p = format!("transformer.layers.{l}");
    ln_params_mut(&format!("{p}.input_layernorm"), &mut b.input_layernorm, f);
    linear_params_mut(
        &format!("{p}.attention.query_key_value"),
        &mut b.attention.query_key_value,
        f,
    );
    linear_params_mut(&format!("{p}.attention.dense"), &mut b.attention.dense, f);
    ln_params_mut(
        &format!("{p}.post_attention_layernorm"),
        &mut b.post_attention_layernorm,
        f,
    );
    linear_params_mut(
        &format!("{p}.mlp.dense_h_to_4h"),
        &mut b.mlp.dense_h_to_4h,
        f,
    );
    linear_params_mut(
        &format!("{p}.mlp.dense_4h_to_h"),
        &mut b.mlp.dense_4h_to_h,
        f,
    );
}

impl<B: Backend> ChatGlmModel<B> {
    /// Visit every float parameter with its state-dict name, in state-dict order.
    pub fn for_each_param<'a>(&'a self, f: &mut dyn FnMut(&str, ParamRef<'a, B>)) {
        f(
            "transformer.word_embeddings.weight",
            ParamRef::D2(&self.word_embeddings.weight),
        );
        for (l, b) in self.layers.iter().enumerate() {
            block_params(l, b, f);
        }
        ln_params("transformer.final_layernorm", &self.final_layernorm, f);
    }

    /// Visit every float parameter mutably.
    pub fn for_each_param_mut(&mut self, f: &mut dyn FnMut(&str, ParamMut<'_, B>)) {
        f(
            "transformer.word_embeddings.weight",
            ParamMut::D2(&mut self.word_embeddings.weight),
        );
        for (l, b) in self.layers.iter_mut().enumerate() {
            block_params_mut(l, b, f);
        }
        ln_params_mut("transformer.final_layernorm", &mut self.final_layernorm, f);
    }
}

/// Visit the parameters of block `layer` with their full names.
pub fn for_each_block_param<'a, B: Backend>(
    layer: usize,
    block: &'a GlmBlock<B>,
    f: &mut dyn FnMut(&str, ParamRef<'a, B>),
) {
    block_params(layer, block, f);
}
