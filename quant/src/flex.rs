//! [`QuantBackend`] for burn's `Flex` CPU backend: borrows the tensors' storage (no copy for
//! contiguous f32 activations, I8 packed weights, F16 scales and any dense weight view) and runs
//! the kernels of [`crate::kernels`]. F16/BF16 activations are widened to f32 and the result is
//! rounded back to the activation dtype, except f16 × f16 dense products which stay in f16 gemm.

use std::borrow::Cow;

use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::tensor::{DType, TensorData, TensorMetadata};
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

use crate::QuantBackend;
use crate::kernels::{self, DenseMatrix, DenseStorage, PackedMatrix};

/// `[rows, cols]` of a 2-D tensor, panicking with `what` otherwise.
fn dims2(t: &FlexTensor, what: &str) -> [usize; 2] {
    let shape = t.shape();
    assert_eq!(
        shape.num_dims(),
        2,
        "{what}: expected a 2-D tensor, got shape {shape:?}"
    );
    [shape[0], shape[1]]
}

/// The tensor's elements as contiguous row-major f32 (borrowed when already so).
fn to_f32<'a>(t: &'a FlexTensor, what: &str) -> Cow<'a, [f32]> {
    if let Some(s) = t.as_slice::<f32>() {
        return Cow::Borrowed(s);
    }
    // After to_contiguous the buffer holds exactly the logical elements at offset 0.
    let c = t.to_contiguous();
    Cow::Owned(match c.dtype() {
        DType::F32 => c.storage::<f32>().to_vec(),
        DType::F16 => {
            let src = c.storage::<f16>();
            let mut v = vec![0f32; src.len()];
            src.convert_to_f32_slice(&mut v);
            v
        }
        DType::BF16 => {
            let src = c.storage::<bf16>();
            let mut v = vec![0f32; src.len()];
            src.convert_to_f32_slice(&mut v);
            v
        }
        DType::F64 => c.storage::<f64>().iter().map(|&v| v as f32).collect(),
        d => panic!("{what}: unsupported float dtype {d:?} (use F32, F16 or BF16)"),
    })
}

/// Contiguous f16 elements of an F16 tensor.
fn to_f16<'a>(t: &'a FlexTensor) -> Cow<'a, [f16]> {
    match t.as_slice::<f16>() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(t.to_contiguous().storage::<f16>().to_vec()),
    }
}

/// Result buffer → tensor of `dtype` (f32 results are rounded once for F16/BF16).
fn from_f32(v: Vec<f32>, shape: [usize; 2], dtype: DType) -> FlexTensor {
    match dtype {
        DType::F16 => {
            let mut out = vec![f16::ZERO; v.len()];
            out.convert_from_f32_slice(&v);
            FlexTensor::from_data(TensorData::new(out, shape))
        }
        DType::BF16 => {
            let mut out = vec![bf16::ZERO; v.len()];
            out.convert_from_f32_slice(&v);
            FlexTensor::from_data(TensorData::new(out, shape))
        }
        DType::F64 => FlexTensor::from_data(TensorData::new(
            v.into_iter().map(f64::from).collect::<Vec<_>>(),
            shape,
        )),
        _ => FlexTensor::from_data(TensorData::new(v, shape)),
    }
}

/// Packed bytes as i8 (borrowed for contiguous I8/U8 storage).
fn packed_bytes(t: &FlexTensor) -> Cow<'_, [i8]> {
    match t.dtype() {
        DType::I8 => match t.as_slice::<i8>() {
            Some(s) => Cow::Borrowed(s),
            None => Cow::Owned(t.to_contiguous().storage::<i8>().to_vec()),
        },
        DType::U8 => match t.as_slice::<u8>() {
            Some(s) => Cow::Borrowed(bytemuck::cast_slice(s)),
            None => Cow::Owned(bytemuck::cast_slice(t.to_contiguous().storage::<u8>()).to_vec()),
        },
        // Wider int storage: each element holds one packed byte value.
        DType::I16 => Cow::Owned(
            t.to_contiguous()
                .storage::<i16>()
                .iter()
                .map(|&v| v as i8)
                .collect(),
        ),
        DType::I32 => Cow::Owned(
            t.to_contiguous()
                .storage::<i32>()
                .iter()
                .map(|&v| v as i8)
                .collect(),
        ),
        DType::I64 => Cow::Owned(
            t.to_contiguous()
                .storage::<i64>()
                .iter()
                .map(|&v| v as i8)
                .collect(),
        ),
        d => panic!(
            "quant_linear: packed weight has dtype {d:?}; expected I8 (see QuantLinear::from_quantized)"
        ),
    }
}

/// Scales as f16 (borrowed for contiguous F16 storage; other float dtypes are rounded to f16).
fn scales_f16(t: &FlexTensor) -> Cow<'_, [f16]> {
    if t.dtype() == DType::F16 {
        return to_f16(t);
    }
    Cow::Owned(
        to_f32(t, "weight_scale")
            .iter()
            .map(|&v| f16::from_f32(v))
            .collect(),
    )
}

/// Validated packed view plus the borrowed buffers it points into.
struct Packed<'a> {
    data: Cow<'a, [i8]>,
    scales: Cow<'a, [f16]>,
    n: usize,
    k: usize,
    bits: u8,
}

impl<'a> Packed<'a> {
    fn new(packed: &'a FlexTensor, scales: &'a FlexTensor, bits: u8) -> Self {
        let [n, kb] = dims2(packed, "quant_linear packed weight");
        assert!(
            bits == 4 || bits == 8,
            "quant_linear: bits must be 4 or 8, got {bits}"
        );
        let k = kb * 8 / bits as usize;
        let s = scales.shape();
        assert!(
            s.num_dims() == 1 && s[0] == n,
            "quant_linear: weight_scale has shape {s:?}, expected [{n}]"
        );
        Self {
            data: packed_bytes(packed),
            scales: scales_f16(scales),
            n,
            k,
            bits,
        }
    }

    fn matrix(&self) -> PackedMatrix<'_> {
        match PackedMatrix::new(self.bits, self.n, self.k, &self.data, &self.scales) {
            Ok(m) => m,
            Err(e) => panic!("quant_linear: {e}"),
        }
    }
}

/// Strided view of a dense weight tensor of any float dtype.
fn dense_view(w: &FlexTensor) -> DenseMatrix<'_> {
    let [n, k] = dims2(w, "frozen_linear weight");
    let strides = w.layout().strides();
    let data = match w.dtype() {
        DType::F32 => DenseStorage::F32(w.storage::<f32>()),
        DType::F16 => DenseStorage::F16(w.storage::<f16>()),
        DType::BF16 => DenseStorage::BF16(w.storage::<bf16>()),
        d => panic!("frozen_linear: weight dtype {d:?} is not supported (use F32, F16 or BF16)"),
    };
    DenseMatrix {
        data,
        n,
        k,
        offset: w.layout().start_offset(),
        row_stride: strides[0],
        col_stride: strides[1],
    }
}

impl QuantBackend for Flex {
    fn quant_linear(x: FlexTensor, packed: FlexTensor, scales: FlexTensor, bits: u8) -> FlexTensor {
        let [m, k] = dims2(&x, "quant_linear x");
        let p = Packed::new(&packed, &scales, bits);
        assert_eq!(
            k,
            p.k,
            "quant_linear: x has {k} features, the packed weight {} ({} bytes per row at {bits} bits)",
            p.k,
            p.k * bits as usize / 8
        );
        let xs = to_f32(&x, "quant_linear x");
        let mut y = vec![0f32; m * p.n];
        kernels::quant_linear(&xs, m, &p.matrix(), &mut y);
        from_f32(y, [m, p.n], x.dtype())
    }

    fn quant_linear_grad_input(
        grad_y: FlexTensor,
        packed: FlexTensor,
        scales: FlexTensor,
        bits: u8,
    ) -> FlexTensor {
        let [m, n] = dims2(&grad_y, "quant_linear grad_y");
        let p = Packed::new(&packed, &scales, bits);
        assert_eq!(
            n, p.n,
            "quant_linear_grad_input: grad_y has {n} columns, the weight {} rows",
            p.n
        );
        let gy = to_f32(&grad_y, "quant_linear grad_y");
        let mut gx = vec![0f32; m * p.k];
        kernels::quant_linear_grad(&gy, m, &p.matrix(), &mut gx);
        from_f32(gx, [m, p.k], grad_y.dtype())
    }

    fn frozen_linear(x: FlexTensor, weight: FlexTensor) -> FlexTensor {
        let [m, k] = dims2(&x, "frozen_linear x");
        let w = dense_view(&weight);
        assert_eq!(
            k, w.k,
            "frozen_linear: x has {k} features, the weight {} columns",
            w.k
        );
        if let (DType::F16, DenseStorage::F16(_)) = (x.dtype(), w.data) {
            let xs = to_f16(&x);
            let mut y = vec![f16::ZERO; m * w.n];
            kernels::dense_linear_f16(&xs, m, &w, &mut y);
            return FlexTensor::from_data(TensorData::new(y, [m, w.n]));
        }
        let xs = to_f32(&x, "frozen_linear x");
        let mut y = vec![0f32; m * w.n];
        kernels::dense_linear(&xs, m, &w, &mut y);
        from_f32(y, [m, w.n], x.dtype())
    }

    fn frozen_linear_grad_input(grad_y: FlexTensor, weight: FlexTensor) -> FlexTensor {
        let [m, n] = dims2(&grad_y, "frozen_linear grad_y");
        let w = dense_view(&weight);
        assert_eq!(
            n, w.n,
            "frozen_linear_grad_input: grad_y has {n} columns, the weight {} rows",
            w.n
        );
        if let (DType::F16, DenseStorage::F16(_)) = (grad_y.dtype(), w.data) {
            let gy = to_f16(&grad_y);
            let mut gx = vec![f16::ZERO; m * w.k];
            kernels::dense_linear_grad_f16(&gy, m, &w, &mut gx);
            return FlexTensor::from_data(TensorData::new(gx, [m, w.k]));
        }
        let gy = to_f32(&grad_y, "frozen_linear grad_y");
        let mut gx = vec![0f32; m * w.k];
        kernels::dense_linear_grad(&gy, m, &w, &mut gx);
        from_f32(gx, [m, w.k], grad_y.dtype())
    }
}
