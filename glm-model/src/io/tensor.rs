//! Burn-free tensor values of the checkpoint layer: [`DType`], [`RawTensor`] (bytes + dtype + shape),
//! [`TensorInfo`] (what an index knows before reading) and [`ConvertError`].
//!
//! All multi-byte values are little-endian in `RawTensor::bytes`, whatever the host, because both
//! safetensors and torch (`byteorder` = "little") store them that way; conversions decode with
//! `from_le_bytes`, never by reinterpreting memory.

use std::fmt;
use std::path::PathBuf;

use half::{bf16, f16};

/// Element type of a stored tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    /// Whether the type is a floating-point type.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F64 | DType::F32 | DType::F16 | DType::BF16)
    }

    /// The safetensors spelling (`F16`, `BF16`, `I8`, `BOOL`, ...).
    pub fn safetensors_name(self) -> &'static str {
        match self {
            DType::F64 => "F64",
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::I64 => "I64",
            DType::I32 => "I32",
            DType::I16 => "I16",
            DType::I8 => "I8",
            DType::U8 => "U8",
            DType::Bool => "BOOL",
        }
    }

    /// Parse a safetensors dtype name; `None` for types this crate does not handle (F8, U16, ...).
    pub fn from_safetensors_name(name: &str) -> Option<DType> {
        Some(match name {
            "F64" => DType::F64,
            "F32" => DType::F32,
            "F16" => DType::F16,
            "BF16" => DType::BF16,
            "I64" => DType::I64,
            "I32" => DType::I32,
            "I16" => DType::I16,
            "I8" => DType::I8,
            "U8" => DType::U8,
            "BOOL" => DType::Bool,
            _ => return None,
        })
    }

    /// The torch storage class that holds this type (`HalfStorage` for F16, ...).
    pub fn torch_storage_name(self) -> &'static str {
        match self {
            DType::F64 => "DoubleStorage",
            DType::F32 => "FloatStorage",
            DType::F16 => "HalfStorage",
            DType::BF16 => "BFloat16Storage",
            DType::I64 => "LongStorage",
            DType::I32 => "IntStorage",
            DType::I16 => "ShortStorage",
            DType::I8 => "CharStorage",
            DType::U8 => "ByteStorage",
            DType::Bool => "BoolStorage",
        }
    }

    /// Inverse of [`DType::torch_storage_name`].
    pub fn from_torch_storage_name(name: &str) -> Option<DType> {
        [
            DType::F64,
            DType::F32,
            DType::F16,
            DType::BF16,
            DType::I64,
            DType::I32,
            DType::I16,
            DType::I8,
            DType::U8,
            DType::Bool,
        ]
        .into_iter()
        .find(|d| d.torch_storage_name() == name)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F64 => "f64",
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I64 => "i64",
            DType::I32 => "i32",
            DType::I16 => "i16",
            DType::I8 => "i8",
            DType::U8 => "u8",
            DType::Bool => "bool",
        })
    }
}

/// A conversion asked of a [`RawTensor`] that its dtype or byte length does not allow.
///
/// It carries no file or tensor name; [`crate::io::CheckpointDir`] and the other readers wrap it
/// into an [`crate::io::IoError`] that names both.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// The dtype cannot be used for the requested view/conversion.
    #[error("dtype {found} cannot be used as {wanted}")]
    WrongDType { wanted: &'static str, found: DType },
    /// `bytes.len()` does not equal `numel * dtype.size()`.
    #[error("{len} bytes do not hold shape {shape:?} of {dtype} ({expected} bytes expected)")]
    WrongLength {
        dtype: DType,
        shape: Vec<usize>,
        len: usize,
        expected: usize,
    },
}

/// A tensor as raw little-endian bytes with its dtype and shape (row-major, contiguous).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawTensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl RawTensor {
    /// Build a tensor, checking that `bytes` holds exactly `shape` elements of `dtype`.
    pub fn new(dtype: DType, shape: Vec<usize>, bytes: Vec<u8>) -> Result<RawTensor, ConvertError> {
        let t = RawTensor {
            dtype,
            shape,
            bytes,
        };
        t.check_len()?;
        Ok(t)
    }

    /// An f32 tensor from values.
    pub fn from_f32(shape: Vec<usize>, values: &[f32]) -> Result<RawTensor, ConvertError> {
        RawTensor::new(
            DType::F32,
            shape,
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        )
    }

    /// An f16 tensor from values.
    pub fn from_f16(shape: Vec<usize>, values: &[f16]) -> Result<RawTensor, ConvertError> {
        RawTensor::new(
            DType::F16,
            shape,
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        )
    }

    /// An i8 tensor from values (e.g. packed int4/int8 quantized weights).
    pub fn from_i8(shape: Vec<usize>, values: &[i8]) -> Result<RawTensor, ConvertError> {
        RawTensor::new(DType::I8, shape, values.iter().map(|&v| v as u8).collect())
    }

    /// Number of elements (1 for a 0-dim tensor).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Check `bytes.len() == numel * dtype.size()`.
    pub fn check_len(&self) -> Result<(), ConvertError> {
        let expected = self
            .shape
            .iter()
            .try_fold(self.dtype.size(), |a, &d| a.checked_mul(d));
        match expected {
            Some(e) if e == self.bytes.len() => Ok(()),
            e => Err(ConvertError::WrongLength {
                dtype: self.dtype,
                shape: self.shape.clone(),
                len: self.bytes.len(),
                expected: e.unwrap_or(usize::MAX),
            }),
        }
    }

    /// Values as f32: exact for F32, F16 and BF16; F64 is rounded to the nearest f32.
    pub fn to_f32_vec(&self) -> Result<Vec<f32>, ConvertError> {
        self.check_len()?;
        let b = &self.bytes;
        Ok(match self.dtype {
            DType::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            DType::F16 => b
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            DType::BF16 => b
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            DType::F64 => b
                .chunks_exact(8)
                .map(|c| {
                    f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
                })
                .collect(),
            found => {
                return Err(ConvertError::WrongDType {
                    wanted: "floating point (f32/f16/bf16/f64)",
                    found,
                });
            }
        })
    }

    /// Values as f16: exact for F16; F32, BF16 and F64 are rounded to nearest-even, as torch's
    /// `.half()` does.
    pub fn to_f16_vec(&self) -> Result<Vec<f16>, ConvertError> {
        self.check_len()?;
        let b = &self.bytes;
        Ok(match self.dtype {
            DType::F16 => b
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]))
                .collect(),
            DType::F32 => b
                .chunks_exact(4)
                .map(|c| f16::from_f32(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
            DType::BF16 => b
                .chunks_exact(2)
                .map(|c| f16::from_f32(bf16::from_le_bytes([c[0], c[1]]).to_f32()))
                .collect(),
            DType::F64 => b
                .chunks_exact(8)
                .map(|c| {
                    f16::from_f64(f64::from_le_bytes([
                        c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7],
                    ]))
                })
                .collect(),
            found => {
                return Err(ConvertError::WrongDType {
                    wanted: "floating point (f16/f32/bf16/f64)",
                    found,
                });
            }
        })
    }

    /// The bytes of an I8 tensor viewed as `i8` (no copy).
    pub fn as_i8(&self) -> Result<&[i8], ConvertError> {
        self.check_len()?;
        match self.dtype {
            DType::I8 => Ok(bytemuck::cast_slice(&self.bytes)),
            found => Err(ConvertError::WrongDType {
                wanted: "i8",
                found,
            }),
        }
    }

    /// Values of an integer tensor widened to i64 (I64/I32/I16/I8/U8/Bool).
    pub fn to_i64_vec(&self) -> Result<Vec<i64>, ConvertError> {
        self.check_len()?;
        let b = &self.bytes;
        Ok(match self.dtype {
            DType::I64 => b
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect(),
            DType::I32 => b
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
                .collect(),
            DType::I16 => b
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as i64)
                .collect(),
            DType::I8 => b.iter().map(|&v| v as i8 as i64).collect(),
            DType::U8 | DType::Bool => b.iter().map(|&v| v as i64).collect(),
            found => {
                return Err(ConvertError::WrongDType {
                    wanted: "integer",
                    found,
                });
            }
        })
    }
}

/// What an index knows about a stored tensor before reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// State-dict key, e.g. `transformer.layers.0.attention.dense.weight`.
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// The file that holds the tensor's bytes.
    pub file: PathBuf,
}

impl TensorInfo {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Size of the tensor's data in bytes.
    pub fn nbytes(&self) -> usize {
        self.numel() * self.dtype.size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_are_exact_and_checked() {
        let h = [
            f16::from_f32(1.5),
            f16::from_bits(0x0001),
            f16::from_f32(-65504.0),
        ];
        let t = RawTensor::from_f16(vec![3], &h).unwrap();
        assert_eq!(
            t.to_f32_vec().unwrap(),
            vec![1.5, f16::from_bits(1).to_f32(), -65504.0]
        );
        assert_eq!(t.to_f16_vec().unwrap(), h.to_vec());
        let bf = RawTensor::new(DType::BF16, vec![1], 0x3fc0u16.to_le_bytes().to_vec()).unwrap();
        assert_eq!(bf.to_f32_vec().unwrap(), vec![1.5]);
        let q = RawTensor::from_i8(vec![2, 1], &[-8, 7]).unwrap();
        assert_eq!(q.as_i8().unwrap(), &[-8, 7]);
        assert_eq!(q.to_i64_vec().unwrap(), vec![-8, 7]);
        assert!(matches!(
            q.to_f32_vec(),
            Err(ConvertError::WrongDType {
                found: DType::I8,
                ..
            })
        ));
        assert!(matches!(
            t.as_i8(),
            Err(ConvertError::WrongDType {
                found: DType::F16,
                ..
            })
        ));
        let bad = RawTensor {
            dtype: DType::F32,
            shape: vec![2],
            bytes: vec![0; 7],
        };
        assert!(matches!(
            bad.to_f32_vec(),
            Err(ConvertError::WrongLength { expected: 8, .. })
        ));
        // f32 -> f16 rounds to nearest even (1 + 2^-11 is a tie between 1 and 1 + 2^-10).
        let r = RawTensor::from_f32(vec![1], &[1.0 + 2f32.powi(-11)]).unwrap();
        assert_eq!(r.to_f16_vec().unwrap()[0], f16::from_f32(1.0));
        assert_eq!(RawTensor::from_f32(vec![], &[2.0]).unwrap().numel(), 1);
    }

    #[test]
    fn dtype_names_round_trip() {
        for d in [
            DType::F64,
            DType::F32,
            DType::F16,
            DType::BF16,
            DType::I64,
            DType::I32,
            DType::I16,
            DType::I8,
            DType::U8,
            DType::Bool,
        ] {
            assert_eq!(DType::from_safetensors_name(d.safetensors_name()), Some(d));
            assert_eq!(
                DType::from_torch_storage_name(d.torch_storage_name()),
                Some(d)
            );
        }
        assert_eq!(DType::from_safetensors_name("F8_E4M3"), None);
    }
}
