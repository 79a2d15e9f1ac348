//! `PrefixEncoder`: P-Tuning v2's trainable virtual keys/values for every layer of a frozen GLM.
//!
//! Without projection it is one embedding [P, 2·L·H]; with `prefix_projection` an embedding
//! [P, H] → Linear(H, H) → tanh → Linear(H, 2·L·H) (state-dict names `trans.0` / `trans.2`).
//! Parameters stay f32 whatever precision the base model runs in (the original's
//! `prefix_encoder.float()` after `model.half()`).

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::{DType, Distribution};
use glm_model::{ChatGlmConfig, KvPair, Past};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Shape of a prefix encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PrefixConfig {
    /// P (`--pre_seq_len`).
    pub pre_seq_len: usize,
    /// Two-layer MLP reparameterisation (`--prefix_projection`, default false).
    pub prefix_projection: bool,
    /// L of the base model.
    pub num_layers: usize,
    /// H of the base model.
    pub hidden_size: usize,
    /// nh of the base model.
    pub num_heads: usize,
}

impl PrefixConfig {
    /// The prefix shape for `model` with `pre_seq_len` / `prefix_projection`.
    pub fn for_model(model: &ChatGlmConfig, pre_seq_len: usize, prefix_projection: bool) -> Self {
        Self {
            pre_seq_len,
            prefix_projection,
            num_layers: model.num_layers,
            hidden_size: model.hidden_size,
            num_heads: model.num_attention_heads,
        }
    }

    /// 2·L·H: one row holds key and value of every layer.
    pub fn row_width(&self) -> usize {
        2 * self.num_layers * self.hidden_size
    }

    /// Parameter names and shapes in the original's state-dict order (without the
    /// `transformer.prefix_encoder.` prefix).
    pub fn parameter_shapes(&self) -> Vec<(&'static str, Vec<usize>)> {
        let (p, h, w) = (self.pre_seq_len, self.hidden_size, self.row_width());
        if self.prefix_projection {
            vec![
                ("embedding.weight", vec![p, h]),
                ("trans.0.weight", vec![h, h]),
                ("trans.0.bias", vec![h]),
                ("trans.2.weight", vec![w, h]),
                ("trans.2.bias", vec![w]),
            ]
        } else {
            vec![("embedding.weight", vec![p, w])]
        }
    }

    /// Number of trainable parameters.
    pub fn num_params(&self) -> usize {
        self.parameter_shapes()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }

    /// Initialise as PyTorch does by default — embedding ~ N(0, 1), Linear weight and bias ~
    /// U(−1/√fan_in, 1/√fan_in) (Kaiming-uniform with a = √5) — from `seed`, in f32.
    pub fn init<B: Backend>(&self, seed: u64, device: &B::Device) -> PrefixEncoder<B> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut tensors = self.parameter_shapes().into_iter().map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = if name == "embedding.weight" {
                (0..n).map(|_| standard_normal(&mut rng)).collect()
            } else {
                let fan_in = self.hidden_size as f32;
                let bound = 1.0 / fan_in.sqrt();
                (0..n).map(|_| rng.random_range(-bound..bound)).collect()
            };
            (name, TensorData::new(values, shape))
        });
        let mut next = || {
            tensors
                .next()
                .map(|(_, d)| d)
                .unwrap_or_else(|| TensorData::new(Vec::<f32>::new(), [0]))
        };
        let embedding = Param::from_tensor(Tensor::from_data(next(), (device, DType::F32)));
        let trans = if self.prefix_projection {
            Some(Projection {
                first_weight: Param::from_tensor(Tensor::from_data(next(), (device, DType::F32))),
                first_bias: Param::from_tensor(Tensor::from_data(next(), (device, DType::F32))),
                second_weight: Param::from_tensor(Tensor::from_data(next(), (device, DType::F32))),
                second_bias: Param::from_tensor(Tensor::from_data(next(), (device, DType::F32))),
            })
        } else {
            None
        };
        PrefixEncoder {
            embedding,
            trans,
            config: *self,
            dropout_prob: DEFAULT_DROPOUT,
        }
    }
}

/// The original's `Dropout(p = 0.1)` on the prefix keys/values (training mode only).
pub const DEFAULT_DROPOUT: f64 = 0.1;

/// N(0, 1) by Box–Muller (independent of `rand_distr`).
fn standard_normal(rng: &mut StdRng) -> f32 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// `trans`: Linear(H, H) → tanh → Linear(H, 2·L·H), weights [out, in] as in torch.
#[derive(Module, Debug)]
pub struct Projection<B: Backend> {
    /// `trans.0.weight` [H, H].
    pub first_weight: Param<Tensor<B, 2>>,
    /// `trans.0.bias` `[H]`.
    pub first_bias: Param<Tensor<B, 1>>,
    /// `trans.2.weight` [2LH, H].
    pub second_weight: Param<Tensor<B, 2>>,
    /// `trans.2.bias` `[2LH]`.
    pub second_bias: Param<Tensor<B, 1>>,
}

/// P-Tuning v2 prefix encoder (`transformer.prefix_encoder`).
#[derive(Module, Debug)]
pub struct PrefixEncoder<B: Backend> {
    /// `embedding.weight`: [P, 2·L·H], or [P, H] with projection.
    pub embedding: Param<Tensor<B, 2>>,
    /// `trans.*` with `prefix_projection`.
    pub trans: Option<Projection<B>>,
    #[module(skip)]
    pub config: PrefixConfig,
    /// Dropout probability on the keys/values in training (0.1 in the original).
    pub dropout_prob: f64,
}

impl<B: Backend> PrefixEncoder<B> {
    /// The encoder output for prefix ids 0..P: [P, 2·L·H] in f32.
    pub fn rows(&self) -> Tensor<B, 2> {
        let emb = self.embedding.val();
        match &self.trans {
            None => emb,
            Some(t) => {
                let hidden = (emb.matmul(t.first_weight.val().transpose())
                    + t.first_bias.val().unsqueeze::<2>())
                .tanh();
                hidden.matmul(t.second_weight.val().transpose())
                    + t.second_bias.val().unsqueeze::<2>()
            }
        }
    }

    /// `get_prompt`: per-layer keys/values [B, nh, P, hd] in `dtype`, cast before dropout as the
    /// original does. With `train`, dropout(p) is applied independently to every batch row.
    ///
    /// Order of the reference: view [B, P, 2L, nh, hd], permute to [2L, B, nh, P, hd], split by
    /// layer: key = slot 2l, value = slot 2l + 1 — i.e. the flat index inside one row is
    /// ((l·2 + kv)·nh + head)·hd + d.
    pub fn past_key_values(&self, batch: usize, dtype: DType, train: bool) -> Past<B> {
        let c = self.config;
        let (p, l2, nh) = (c.pre_seq_len, 2 * c.num_layers, c.num_heads);
        let hd = c.hidden_size / nh;
        let rows = self.rows();
        let rows = if rows.dtype() == dtype {
            rows
        } else {
            rows.cast(dtype)
        };
        if !(train && self.dropout_prob > 0.0) {
            // Every row is the same prefix: each layer's keys/values are stride-0 views over the
            // batch (no per-row copies; at ChatGLM-6B, 16 rows of a 128-token f16 prefix would
            // be 0.9 GiB). Attention copies them once, into the cache it concatenates.
            let kv = rows.reshape([p, l2, nh, hd]).permute([1, 2, 0, 3]); // [2L, nh, P, hd]
            let slot = |i: usize| kv.clone().narrow(0, i, 1).expand([batch, nh, p, hd]);
            let layers = (0..c.num_layers)
                .map(|l| KvPair::new(slot(2 * l), slot(2 * l + 1)))
                .collect();
            return Past {
                layers,
                prefix_len: p,
            };
        }
        // Training: dropout draws an independent mask for every row, so the rows are real copies.
        let kv = rows
            .reshape([1, p, l2, nh, hd])
            .expand([batch, p, l2, nh, hd]);
        let keep = 1.0 - self.dropout_prob;
        let mask = kv.random_like(Distribution::Bernoulli(keep));
        let kv = kv * mask / keep;
        let kv = kv.permute([2, 0, 3, 1, 4]); // [2L, B, nh, P, hd]
        let layers = (0..c.num_layers)
            .map(|l| {
                KvPair::new(
                    kv.clone().narrow(0, 2 * l, 1).reshape([batch, nh, p, hd]),
                    kv.clone()
                        .narrow(0, 2 * l + 1, 1)
                        .reshape([batch, nh, p, hd]),
                )
            })
            .collect();
        Past {
            layers,
            prefix_len: p,
        }
    }

    /// Named parameters in state-dict order (`embedding.weight`, `trans.0.weight`, ...) as
    /// (name, shape, flat f32 values).
    pub fn named_tensors(&self) -> Vec<(&'static str, Vec<usize>, Tensor<B, 2>)> {
        let mut out = vec![(
            "embedding.weight",
            self.embedding.dims().to_vec(),
            self.embedding.val(),
        )];
        if let Some(t) = &self.trans {
            out.push((
                "trans.0.weight",
                t.first_weight.dims().to_vec(),
                t.first_weight.val(),
            ));
            out.push((
                "trans.0.bias",
                t.first_bias.dims().to_vec(),
                t.first_bias.val().unsqueeze::<2>(),
            ));
            out.push((
                "trans.2.weight",
                t.second_weight.dims().to_vec(),
                t.second_weight.val(),
            ));
            out.push((
                "trans.2.bias",
                t.second_bias.dims().to_vec(),
                t.second_bias.val().unsqueeze::<2>(),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    fn values(t: Tensor<Flex, 4>) -> Vec<f32> {
        t.into_data().convert::<f32>().to_vec().unwrap()
    }

    #[test]
    fn shared_inference_rows_equal_the_copied_training_layout() {
        let cfg = ChatGlmConfig::with_shape(16, 3, 4, 32, 50);
        let dev = Default::default();
        let mut enc = PrefixConfig::for_model(&cfg, 5, false).init::<Flex>(7, &dev);
        let shared = enc.past_key_values(3, DType::F32, false);
        // A dropout that never drops (keep = 1 in f32) takes the per-row copying path.
        enc.dropout_prob = 1e-12;
        let copied = enc.past_key_values(3, DType::F32, true);
        assert_eq!(shared.layers.len(), 3);
        for (s, c) in shared.layers.iter().zip(&copied.layers) {
            assert_eq!(s.key.dims(), [3, 4, 5, 4]);
            assert_eq!(values(s.key.clone()), values(c.key.clone()));
            assert_eq!(values(s.value.clone()), values(c.value.clone()));
        }
    }
}
