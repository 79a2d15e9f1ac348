//! Named access to the trainable parameters, by their Hugging Face state-dict names.
//!
//! P-Tuning v2 trains `transformer.prefix_encoder.*`; full fine-tuning trains every parameter of
//! the model (names from [`glm_model::params`]). Names key the optimizer state and the
//! checkpoints, so they are stable across runs (burn's `ParamId`s are not).

use burn::prelude::*;
use glm_model::ChatGlmModel;
use glm_model::block::GlmBlock;
pub use glm_model::params::{ParamMut, ParamRef};
use prefix_encoder::{KEY_PREFIX, PrefixEncoder};

/// Something whose parameters can be listed and replaced by name.
pub trait Trainable<B: Backend> {
    /// Visit every trainable parameter with its state-dict name, in state-dict order.
    fn for_each_param(&self, f: &mut dyn FnMut(&str, ParamRef<'_, B>));
    /// Visit every trainable parameter mutably.
    fn for_each_param_mut(&mut self, f: &mut dyn FnMut(&str, ParamMut<'_, B>));

    /// Names and shapes.
    fn param_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let mut out = Vec::new();
        self.for_each_param(&mut |n, p| out.push((n.to_string(), p.dims())));
        out
    }
}

impl<B: Backend> Trainable<B> for PrefixEncoder<B> {
    fn for_each_param(&self, f: &mut dyn FnMut(&str, ParamRef<'_, B>)) {
        f(
            &format!("{KEY_PREFIX}embedding.weight"),
            ParamRef::D2(&self.embedding),
        );
        if let Some(t) = &self.trans {
            f(
                &format!("{KEY_PREFIX}trans.0.weight"),
                ParamRef::D2(&t.first_weight),
            );
            f(
                &format!("{KEY_PREFIX}trans.0.bias"),
                ParamRef::D1(&t.first_bias),
            );
            f(
                &format!("{KEY_PREFIX}trans.2.weight"),
                ParamRef::D2(&t.second_weight),
            );
            f(
                &format!("{KEY_PREFIX}trans.2.bias"),
                ParamRef::D1(&t.second_bias),
            );
        }
    }
    fn for_each_param_mut(&mut self, f: &mut dyn FnMut(&str, ParamMut<'_, B>)) {
        f(
            &format!("{KEY_PREFIX}embedding.weight"),
            ParamMut::D2(&mut self.embedding),
        );
        if let Some(t) = &mut self.trans {
            f(
                &format!("{KEY_PREFIX}trans.0.weight"),
                ParamMut::D2(&mut t.first_weight),
            );
            f(
                &format!("{KEY_PREFIX}trans.0.bias"),
                ParamMut::D1(&mut t.first_bias),
            );
            f(
                &format!("{KEY_PREFIX}trans.2.weight"),
                ParamMut::D2(&mut t.second_weight),
            );
            f(
                &format!("{KEY_PREFIX}trans.2.bias"),
                ParamMut::D1(&mut t.second_bias),
            );
        }
    }
}

impl<B: Backend> Trainable<B> for ChatGlmModel<B> {
    fn for_each_param(&self, f: &mut dyn FnMut(&str, ParamRef<'_, B>)) {
        ChatGlmModel::for_each_param(self, f)
    }
    fn for_each_param_mut(&mut self, f: &mut dyn FnMut(&str, ParamMut<'_, B>)) {
        ChatGlmModel::for_each_param_mut(self, f)
    }
}

/// The parameters of one block only (per-block recomputation collects gradients block by block).
pub struct BlockParams<'a, B: Backend> {
    pub layer: usize,
    pub block: &'a GlmBlock<B>,
}

impl<B: Backend> BlockParams<'_, B> {
    /// Visit the block's parameters with their full names.
    pub fn for_each_param(&self, f: &mut dyn FnMut(&str, ParamRef<'_, B>)) {
        glm_model::params::for_each_block_param(self.layer, self.block, f);
    }
}
