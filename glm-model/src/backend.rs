//! `GlmBackend`: the backend operations the model needs beyond burn's own — the quantized and
//! frozen linear ops of the `quant` crate, and an in-place write of new key/value positions into
//! the decoding cache ([`GlmBackend::write_positions`]).

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::prelude::*;
use burn::tensor::{DType, TensorPrimitive};
use burn_flex::{Flex, FlexTensor};

/// Implemented for flex, autodiff over any `GlmBackend`, and the cubecl backends (CUDA, Vulkan).
pub trait GlmBackend: quant::QuantBackend {
    /// `buffer` [B, nh, capacity, hd] with `value` [B, nh, S, hd] (cast to the buffer's dtype)
    /// written at positions `at..at + S` of dimension 2.
    ///
    /// The default is burn's `slice_assign`, which cubecl backends do in place when the buffer
    /// is not shared. Flex 0.21's `slice_assign` copies the whole buffer whatever its sharing
    /// (it keeps its input alive next to the contiguous clone it writes), which would make each
    /// decoding step cost O(cache), so flex has its own in-place write.
    fn write_positions(
        buffer: Tensor<Self, 4>,
        at: usize,
        value: Tensor<Self, 4>,
    ) -> Tensor<Self, 4> {
        slice_write(buffer, at, value)
    }
}

/// The default [`GlmBackend::write_positions`]: burn's `slice_assign`.
fn slice_write<B: Backend>(buffer: Tensor<B, 4>, at: usize, value: Tensor<B, 4>) -> Tensor<B, 4> {
    let [b, nh, s, hd] = value.dims();
    let value = crate::layers::cast_to(value, buffer.dtype());
    buffer.slice_assign([0..b, 0..nh, at..at + s, 0..hd], value)
}

impl GlmBackend for Flex {
    fn write_positions(
        buffer: Tensor<Self, 4>,
        at: usize,
        value: Tensor<Self, 4>,
    ) -> Tensor<Self, 4> {
        let value = crate::layers::cast_to(value, buffer.dtype());
        let mut buf: FlexTensor = buffer.into_primitive().tensor();
        // Logical [B, nh, S, hd] order, offset 0.
        let val = value.into_primitive().tensor().to_contiguous();
        let written = match buf.dtype() {
            DType::F32 => write_runs::<f32>(&mut buf, &val, at),
            DType::F16 => write_runs::<half::f16>(&mut buf, &val, at),
            DType::BF16 => write_runs::<half::bf16>(&mut buf, &val, at),
            _ => false,
        };
        let out = Tensor::<Flex, 4>::from_primitive(TensorPrimitive::Float(buf));
        if written {
            out
        } else {
            // Shared, a view or another dtype: burn's path (a copy of the buffer, still correct).
            slice_write(out, at, Tensor::from_primitive(TensorPrimitive::Float(val)))
        }
    }
}

/// Copies `val` [B, nh, S, hd] (contiguous) into positions `at..at + S` of `buf`
/// [B, nh, capacity, hd] when `buf` is a whole, contiguous, unshared buffer; false otherwise
/// (nothing written).
fn write_runs<E: burn::tensor::Element + bytemuck::Pod>(
    buf: &mut FlexTensor,
    val: &FlexTensor,
    at: usize,
) -> bool {
    let (bd, vd) = (
        buf.layout().shape().dims::<4>(),
        val.layout().shape().dims::<4>(),
    );
    let [b, nh, s, hd] = vd;
    let cap = bd[2];
    let fits = bd[0] == b && bd[1] == nh && bd[3] == hd && at + s <= cap;
    let whole = buf.layout().is_contiguous()
        && buf.layout().start_offset() == 0
        && buf.storage::<E>().len() == buf.layout().num_elements();
    let plain = val.layout().is_contiguous() && val.layout().start_offset() == 0;
    if !(fits && whole && plain) {
        return false;
    }
    if b * nh * s * hd == 0 {
        return true;
    }
    let src = &val.storage::<E>()[..b * nh * s * hd];
    let Some(dst) = buf.try_storage_mut::<E>() else {
        return false;
    };
    // Per (row, head) the S new positions are one contiguous run of S·hd elements.
    let run = s * hd;
    for (bh, src) in src.chunks_exact(run).enumerate() {
        let d = (bh * cap + at) * hd;
        dst[d..d + run].copy_from_slice(src);
    }
    true
}

impl<B: GlmBackend, C: CheckpointStrategy> GlmBackend for Autodiff<B, C> {}

#[cfg(any(feature = "cuda", feature = "vulkan"))]
impl<R, F, I, BT> GlmBackend for burn_cubecl::CubeBackend<R, F, I, BT>
where
    R: burn_cubecl::CubeRuntime,
    F: burn_cubecl::FloatElement,
    I: burn_cubecl::IntElement,
    BT: burn_cubecl::BoolElement,
{
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Distribution, TensorData};

    use super::*;

    fn data_ptr(t: &Tensor<Flex, 4>) -> usize {
        let prim: FlexTensor = t.clone().into_primitive().tensor();
        prim.bytes().as_ptr() as usize
    }

    fn values(t: Tensor<Flex, 4>) -> Vec<f32> {
        t.cast(burn::tensor::FloatDType::F32)
            .into_data()
            .to_vec()
            .unwrap()
    }

    /// Regression: flex 0.21's `slice_assign` copies the whole buffer even when nothing else
    /// holds it, which made every decoding step copy the KV cache of every layer.
    #[test]
    fn flex_slice_assign_copied_the_whole_cache_per_step() {
        let dev = Default::default();
        let buf = Tensor::<Flex, 4>::random([2, 3, 10, 4], Distribution::Default, &dev);
        let before = values(buf.clone());
        // Stored [B, S, nh, hd] and viewed as [B, nh, S, hd], as the attention makes it.
        let value =
            Tensor::<Flex, 4>::random([2, 2, 3, 4], Distribution::Default, &dev).swap_dims(1, 2);
        let want = values(
            buf.clone()
                .slice_assign([0..2, 0..3, 5..7, 0..4], value.clone()),
        );
        let ptr = data_ptr(&buf);
        let got = Flex::write_positions(buf, 5, value);
        assert_eq!(data_ptr(&got), ptr, "the write must reuse the buffer");
        let got = values(got);
        assert_eq!(got, want);
        assert_ne!(got, before);
    }

    #[test]
    fn a_shared_buffer_is_copied_not_modified() {
        let dev = Default::default();
        let buf = Tensor::<Flex, 4>::zeros([1, 2, 4, 3], &dev);
        let kept = buf.clone();
        let value = Tensor::<Flex, 4>::ones([1, 2, 1, 3], &dev);
        let got = Flex::write_positions(buf, 3, value.clone());
        assert_eq!(
            values(kept.clone()),
            vec![0.0; 24],
            "the other holder sees no change"
        );
        assert_eq!(
            values(got),
            values(kept.slice_assign([0..1, 0..2, 3..4, 0..3], value))
        );
    }

    #[test]
    fn nothing_to_write_is_not_an_error() {
        let dev = Default::default();
        let buf = Tensor::<Flex, 4>::ones([1, 2, 3, 4], &dev);
        let got = Flex::write_positions(buf, 3, Tensor::zeros([1, 2, 0, 4], &dev));
        assert_eq!(values(got), vec![1.0; 24]);
        let empty = crate::KvPair::<Flex>::new(
            Tensor::zeros([1, 2, 0, 4], &dev),
            Tensor::zeros([1, 2, 0, 4], &dev),
        );
        assert_eq!(empty.with_room(5).room(), 5);
    }

    #[test]
    fn values_are_cast_to_the_buffer_dtype() {
        let dev = Default::default();
        let buf = Tensor::<Flex, 4>::zeros([1, 1, 3, 2], (&dev, DType::F16));
        let value = Tensor::<Flex, 4>::from_data(
            TensorData::new(vec![1.0f32, 1.0 + 1.0 / 4096.0], [1, 1, 1, 2]),
            &dev,
        );
        let got = Flex::write_positions(buf, 1, value);
        assert_eq!(got.dtype(), DType::F16);
        // 1 + 2^-12 rounds to 1 in f16.
        assert_eq!(values(got), vec![0.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
    }
}
