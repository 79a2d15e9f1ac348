//! Linear modules over [`QuantBackend`]: [`QuantLinear`] (packed int4/int8, frozen),
//! [`DenseLinear`] (torch-layout `[out, in]` weight, trainable or frozen) and the [`Linear`] enum
//! the model uses for its four per-block projections.
//!
//! `QuantLinear`'s tensors are plain `Tensor` fields, which burn treats as constants: they are not
//! parameters (no gradient, not touched by optimizers or `ModuleMapper`s such as an f32 cast) and
//! not part of the module record — build them with the constructors below, persist them with
//! [`QuantLinear::to_quantized`].

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorData};
use half::f16;

use crate::backend::{frozen_linear, quant_linear};
use crate::{QuantBackend, QuantError, QuantizedWeight};

/// Host-side bias values in either precision (checkpoints store f16; f32 for trained layers).
#[derive(Debug, Clone, PartialEq)]
pub enum BiasData {
    F16(Vec<f16>),
    F32(Vec<f32>),
}

impl From<Vec<f16>> for BiasData {
    fn from(v: Vec<f16>) -> Self {
        BiasData::F16(v)
    }
}

impl From<Vec<f32>> for BiasData {
    fn from(v: Vec<f32>) -> Self {
        BiasData::F32(v)
    }
}

impl BiasData {
    fn len(&self) -> usize {
        match self {
            BiasData::F16(v) => v.len(),
            BiasData::F32(v) => v.len(),
        }
    }

    /// A 1-D tensor keeping the data's dtype.
    fn into_tensor<B: Backend>(
        self,
        out_features: usize,
        device: &B::Device,
    ) -> Result<Tensor<B, 1>, QuantError> {
        if self.len() != out_features {
            return Err(QuantError::LengthMismatch {
                what: "bias",
                expected: out_features,
                got: self.len(),
            });
        }
        Ok(match self {
            BiasData::F16(v) => {
                Tensor::from_data(TensorData::new(v, [out_features]), (device, DType::F16))
            }
            BiasData::F32(v) => {
                Tensor::from_data(TensorData::new(v, [out_features]), (device, DType::F32))
            }
        })
    }
}

/// `y + bias`, the bias cast to `y`'s dtype and broadcast over the leading dims.
fn add_bias<B: Backend, const D: usize>(
    y: Tensor<B, D>,
    bias: Option<Tensor<B, 1>>,
) -> Tensor<B, D> {
    match bias {
        None => y,
        Some(b) => {
            let b = if b.dtype() == y.dtype() {
                b
            } else {
                b.cast(y.dtype())
            };
            y + b.unsqueeze::<D>()
        }
    }
}

fn readback<B: Backend, const D: usize, K>(
    t: Tensor<B, D, K>,
    what: &'static str,
) -> Result<TensorData, QuantError>
where
    K: burn::tensor::BasicOps<B>,
{
    t.try_into_data().map_err(|e| QuantError::Readback {
        what,
        message: format!("{e:?}"),
    })
}

/// A frozen linear layer with a THUDM-quantized weight: `y = x · Ŵᵀ + b`, `Ŵ = f16(scale · q)`.
///
/// Memory: only the packed bytes (`in / 2` per row for int4, `in` for int8), the f16 scales and the
/// bias are resident; nothing dequantized survives a call, and under autodiff the backward state is
/// the same packed handle.
#[derive(Module, Debug)]
pub struct QuantLinear<B: Backend> {
    /// Packed I8 `[out, in · bits / 8]` (HF key `….weight`).
    pub weight: Tensor<B, 2, Int>,
    /// F16 `[out]` (HF key `….weight_scale`).
    pub weight_scale: Tensor<B, 1>,
    /// `[out]`, F16 or F32 as loaded (HF key `….bias`).
    pub bias: Option<Tensor<B, 1>>,
    /// 4 or 8.
    pub bits: u8,
    /// Input features (the packed width is `in_features · bits / 8`).
    pub in_features: usize,
}

impl<B: Backend> QuantLinear<B> {
    /// Uploads a quantized weight (I8 packed + F16 scales) and an optional bias.
    pub fn from_quantized(
        q: &QuantizedWeight,
        bias: Option<BiasData>,
        device: &B::Device,
    ) -> Result<Self, QuantError> {
        // Re-validate: the struct's fields are public.
        q.validate()?;
        let weight = Tensor::from_data(
            TensorData::new(q.packed.clone(), q.packed_shape()),
            (device, DType::I8),
        );
        let weight_scale = Tensor::from_data(
            TensorData::new(q.scales.clone(), [q.out_features]),
            (device, DType::F16),
        );
        let bias = bias
            .map(|b| b.into_tensor(q.out_features, device))
            .transpose()?;
        Ok(Self {
            weight,
            weight_scale,
            bias,
            bits: q.bits,
            in_features: q.in_features,
        })
    }

    /// Quantizes an f16 weight `[out_features, in_features]` (row-major) exactly like THUDM and uploads it.
    pub fn quantize_from_f16(
        weight: &[f16],
        out_features: usize,
        in_features: usize,
        bits: u8,
        bias: Option<BiasData>,
        device: &B::Device,
    ) -> Result<Self, QuantError> {
        let q = QuantizedWeight::quantize(weight, out_features, in_features, bits)?;
        Self::from_quantized(&q, bias, device)
    }

    /// Reads the packed weight and scales back (e.g. to write a pre-quantized checkpoint).
    pub fn to_quantized(&self) -> Result<QuantizedWeight, QuantError> {
        let packed = readback(self.weight.clone(), "packed weight")?
            .convert::<i8>()
            .to_vec::<i8>()
            .map_err(|e| QuantError::Readback {
                what: "packed weight",
                message: format!("{e:?}"),
            })?;
        let scales = readback(self.weight_scale.clone(), "weight_scale")?
            .convert::<f16>()
            .to_vec::<f16>()
            .map_err(|e| QuantError::Readback {
                what: "weight_scale",
                message: format!("{e:?}"),
            })?;
        QuantizedWeight::from_packed(
            packed,
            scales,
            self.out_features(),
            self.in_features,
            self.bits,
        )
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.weight.dims()[0]
    }
}

impl<B: QuantBackend> QuantLinear<B> {
    /// `x [..., in] → [..., out]` in `x`'s dtype; the gradient flows to `x` only.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let y = quant_linear(x, self.weight.clone(), self.weight_scale.clone(), self.bits);
        add_bias(y, self.bias.clone())
    }
}

/// A dense linear layer with the weight in torch layout `[out, in]` (any float dtype).
#[derive(Module, Debug)]
pub struct DenseLinear<B: Backend> {
    /// `[out, in]` (HF key `….weight`, no transpose on load).
    pub weight: Param<Tensor<B, 2>>,
    /// `[out]` (HF key `….bias`).
    pub bias: Option<Param<Tensor<B, 1>>>,
}

impl<B: Backend> DenseLinear<B> {
    /// Wraps existing tensors as parameters (`weight [out, in]`, `bias [out]`).
    pub fn new(weight: Tensor<B, 2>, bias: Option<Tensor<B, 1>>) -> Self {
        Self {
            weight: Param::from_tensor(weight),
            bias: bias.map(Param::from_tensor),
        }
    }

    /// Builds the layer from host data, keeping each tensor's dtype (an F16 checkpoint stays F16).
    pub fn from_weights(
        weight: TensorData,
        bias: Option<TensorData>,
        device: &B::Device,
    ) -> Result<Self, QuantError> {
        let shape = weight.shape.clone();
        if shape.len() != 2 {
            return Err(QuantError::ShapeMismatch {
                what: "dense weight",
                expected: vec![0, 0],
                got: shape.to_vec(),
            });
        }
        if let Some(b) = &bias
            && (b.shape.len() != 1 || b.shape[0] != shape[0])
        {
            return Err(QuantError::ShapeMismatch {
                what: "bias",
                expected: vec![shape[0]],
                got: b.shape.to_vec(),
            });
        }
        let wd = weight.dtype;
        let weight = Tensor::from_data(weight, (device, wd));
        let bias = bias.map(|b| {
            let bd = b.dtype;
            Tensor::from_data(b, (device, bd))
        });
        Ok(Self::new(weight, bias))
    }

    /// Input features.
    pub fn in_features(&self) -> usize {
        self.weight.shape()[1]
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.weight.shape()[0]
    }
}

impl<B: QuantBackend> DenseLinear<B> {
    /// `x [..., in] → [..., out]` in `x`'s dtype.
    ///
    /// A trainable weight (full fine-tuning) goes through burn's tracked matmul and receives its
    /// gradient; a frozen one through [`QuantBackend::frozen_linear`], so autodiff keeps only the
    /// weight's own handle and never a converted copy.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let w = self.weight.val();
        let y = if w.is_require_grad() {
            let w = if w.dtype() == x.dtype() {
                w
            } else {
                w.cast(x.dtype())
            };
            x.matmul(w.transpose().unsqueeze::<D>())
        } else {
            frozen_linear(x, w)
        };
        add_bias(y, self.bias.as_ref().map(Param::val))
    }
}

/// One of the four quantizable projections of a GLM block.
///
/// Store paths: burn's module visitor names the variant (`….query_key_value.Dense.weight`);
/// burn-store's `PytorchStore` skips enum variants by default, `SafetensorsStore` needs
/// `.skip_enum_variants(true)` to match HF keys. A `Quantized` layer has no record entries at all
/// (its tensors are constants): build it with [`QuantLinear::from_quantized`].
// The dense variant is larger (Param bookkeeping); there are only four per block, so no boxing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Linear<B: Backend> {
    Dense(DenseLinear<B>),
    Quantized(QuantLinear<B>),
}

impl<B: Backend> Linear<B> {
    /// Input features.
    pub fn in_features(&self) -> usize {
        match self {
            Linear::Dense(l) => l.in_features(),
            Linear::Quantized(l) => l.in_features,
        }
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        match self {
            Linear::Dense(l) => l.out_features(),
            Linear::Quantized(l) => l.out_features(),
        }
    }

    /// Quantizes a dense layer (weight rounded to f16 first, as the reference's f16 model) and keeps
    /// its bias; a quantized layer is returned unchanged (like the reference's "Already quantized").
    pub fn quantize(self, bits: u8) -> Result<Self, QuantError> {
        match self {
            Linear::Quantized(q) => Ok(Linear::Quantized(q)),
            Linear::Dense(d) => {
                let [out, inp] = d.weight.dims();
                let device = d.weight.device();
                let w = readback(d.weight.val(), "dense weight")?.convert::<f16>();
                let w = w.to_vec::<f16>().map_err(|e| QuantError::Readback {
                    what: "dense weight",
                    message: format!("{e:?}"),
                })?;
                let bias = match &d.bias {
                    None => None,
                    Some(b) => {
                        let data = readback(b.val(), "bias")?.convert::<f32>();
                        let v = data.to_vec::<f32>().map_err(|e| QuantError::Readback {
                            what: "bias",
                            message: format!("{e:?}"),
                        })?;
                        Some(match b.val().dtype() {
                            DType::F16 => BiasData::F16(v.into_iter().map(f16::from_f32).collect()),
                            _ => BiasData::F32(v),
                        })
                    }
                };
                drop(d);
                Ok(Linear::Quantized(QuantLinear::quantize_from_f16(
                    &w, out, inp, bits, bias, &device,
                )?))
            }
        }
    }
}

impl<B: QuantBackend> Linear<B> {
    /// `x [..., in] → [..., out]` (see [`DenseLinear::forward`] and [`QuantLinear::forward`]).
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Linear::Dense(l) => l.forward(x),
            Linear::Quantized(l) => l.forward(x),
        }
    }
}
