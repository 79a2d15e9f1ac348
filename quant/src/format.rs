//! THUDM's weight-only quantization format (`quantization.py`), in plain Rust without burn.
//!
//! A weight `W [out, in]` (f16) becomes one f16 scale per output row plus signed integers
//! `q [out, in]` in `[-7, 7]` (int4) or `[-127, 127]` (int8). int4 values are packed two per byte,
//! **high nibble = even input column**, both nibbles two's complement. The value the model
//! multiplies with is `Ŵ[n, k] = f16(scale[n] · q[n, k])`, i.e. the product rounded to f16
//! (THUDM's `extract_weight_to_half`). Everything here is bit-exact with the reference.

use half::f16;

use crate::QuantError;

/// A quantized `[out_features, in_features]` weight in THUDM's storage layout.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedWeight {
    /// 4 or 8.
    pub bits: u8,
    /// Rows of the weight (output features).
    pub out_features: usize,
    /// Columns of the weight (input features).
    pub in_features: usize,
    /// `[out_features, in_features · bits / 8]` row-major; int4 bytes hold (even col << 4) | (odd col & 0xF).
    pub packed: Vec<i8>,
    /// `[out_features]` per-row scales.
    pub scales: Vec<f16>,
}

/// Checks `bits` and, for int4, that `in_features` is even.
pub fn check_bits(bits: u8, in_features: usize) -> Result<(), QuantError> {
    match bits {
        8 => Ok(()),
        4 if in_features.is_multiple_of(2) => Ok(()),
        4 => Err(QuantError::OddInFeatures { in_features }),
        b => Err(QuantError::UnsupportedBits(b)),
    }
}

/// Bytes per packed row: `in_features · bits / 8`.
pub fn packed_row_bytes(in_features: usize, bits: u8) -> usize {
    in_features * bits as usize / 8
}

/// `f16(scale · q)`: the product is exact in f32 (11 + 7 significant bits), then rounded to
/// nearest-even f16 exactly as the CUDA `extract_weight_to_half` kernel does.
#[inline]
pub fn dequant_value(scale: f16, q: i8) -> f16 {
    f16::from_f32(scale.to_f32() * q as f32)
}

/// Sign-extends the high nibble of a packed byte (even input column).
#[inline]
pub fn high_nibble(byte: i8) -> i8 {
    byte >> 4
}

/// Sign-extends the low nibble of a packed byte (odd input column).
#[inline]
pub fn low_nibble(byte: i8) -> i8 {
    (byte << 4) >> 4
}

/// Packs two int4 values, `even` into the high nibble (8-bit wrap like the reference).
#[inline]
pub fn pack_pair(even: i8, odd: i8) -> i8 {
    (((even as u8) << 4) | ((odd as u8) & 0x0F)) as i8
}

impl QuantizedWeight {
    /// Quantizes an f16 weight `[out_features, in_features]` (row-major) exactly like THUDM:
    /// `scale = f16(f32(absmax_row) · f32(1/(2^(bits-1) - 1)))` (the CUDA kernel multiplies by the
    /// reciprocal), `q = round_half_even(f16(f32(w) / f32(scale)))`.
    ///
    /// A row of zeros gets scale 0 and q = 0 (the reference would produce NaN there). A quotient
    /// beyond the integer range (only possible with subnormal scales) is clamped.
    pub fn quantize(
        weight: &[f16],
        out_features: usize,
        in_features: usize,
        bits: u8,
    ) -> Result<Self, QuantError> {
        check_bits(bits, in_features)?;
        let expected = out_features * in_features;
        if weight.len() != expected {
            return Err(QuantError::LengthMismatch {
                what: "weight",
                expected,
                got: weight.len(),
            });
        }
        let qmax = ((1i32 << (bits - 1)) - 1) as f32;
        let recip = 1.0f32 / qmax;
        let row_bytes = packed_row_bytes(in_features, bits);
        let mut packed = vec![0i8; out_features * row_bytes];
        let mut scales = Vec::with_capacity(out_features);
        let mut q = vec![0i8; in_features];
        for row in 0..out_features {
            let w = &weight[row * in_features..(row + 1) * in_features];
            let mut absmax = 0.0f32;
            for (col, v) in w.iter().enumerate() {
                let v = v.to_f32();
                if !v.is_finite() {
                    return Err(QuantError::NonFinite { row, col, value: v });
                }
                absmax = absmax.max(v.abs());
            }
            let scale = f16::from_f32(absmax * recip);
            let s = scale.to_f32();
            for (dst, v) in q.iter_mut().zip(w) {
                *dst = if s == 0.0 {
                    0
                } else {
                    // f16/f16 division happens in f32 and is rounded to f16 before torch.round.
                    let quot = f16::from_f32(v.to_f32() / s).to_f32();
                    quot.round_ties_even().clamp(-qmax - 1.0, qmax) as i8
                };
            }
            scales.push(scale);
            let dst = &mut packed[row * row_bytes..(row + 1) * row_bytes];
            pack_row(&q, bits, dst);
        }
        Ok(Self {
            bits,
            out_features,
            in_features,
            packed,
            scales,
        })
    }

    /// Wraps already packed data (e.g. from a THUDM `chatglm-6b-int4` checkpoint), validating the shapes.
    pub fn from_packed(
        packed: Vec<i8>,
        scales: Vec<f16>,
        out_features: usize,
        in_features: usize,
        bits: u8,
    ) -> Result<Self, QuantError> {
        let q = Self {
            bits,
            out_features,
            in_features,
            packed,
            scales,
        };
        q.validate()?;
        Ok(q)
    }

    /// Checks that the buffers match `(bits, out_features, in_features)` (the fields are public).
    pub fn validate(&self) -> Result<(), QuantError> {
        check_bits(self.bits, self.in_features)?;
        let expected = self.out_features * packed_row_bytes(self.in_features, self.bits);
        if self.packed.len() != expected {
            return Err(QuantError::LengthMismatch {
                what: "packed weight",
                expected,
                got: self.packed.len(),
            });
        }
        if self.scales.len() != self.out_features {
            return Err(QuantError::LengthMismatch {
                what: "weight_scale",
                expected: self.out_features,
                got: self.scales.len(),
            });
        }
        if let Some((row, s)) = self.scales.iter().enumerate().find(|(_, s)| !s.is_finite()) {
            return Err(QuantError::NonFiniteScale {
                row,
                value: s.to_f32(),
            });
        }
        Ok(())
    }

    /// Bytes per packed row.
    pub fn row_bytes(&self) -> usize {
        packed_row_bytes(self.in_features, self.bits)
    }

    /// Shape of the packed storage `[out_features, in_features · bits / 8]`.
    pub fn packed_shape(&self) -> [usize; 2] {
        [self.out_features, self.row_bytes()]
    }

    /// The integer values `q [out, in]` (nibbles sign-extended for int4).
    pub fn unpack(&self) -> Vec<i8> {
        let (k, rb) = (self.in_features, self.row_bytes());
        let mut out = vec![0i8; self.out_features * k];
        for row in 0..self.out_features {
            unpack_row(
                &self.packed[row * rb..(row + 1) * rb],
                self.bits,
                &mut out[row * k..(row + 1) * k],
            );
        }
        out
    }

    /// `Ŵ = f16(scale · q)` as f16 `[out, in]`.
    pub fn dequantize_f16(&self) -> Vec<f16> {
        let q = self.unpack();
        let k = self.in_features;
        let mut out = Vec::with_capacity(q.len());
        for (row, &s) in self.scales.iter().enumerate() {
            out.extend(
                q[row * k..(row + 1) * k]
                    .iter()
                    .map(|&v| dequant_value(s, v)),
            );
        }
        out
    }

    /// `Ŵ = f16(scale · q)` widened to f32 `[out, in]` (values exactly f16-representable).
    pub fn dequantize_f32(&self) -> Vec<f32> {
        self.dequantize_f16().into_iter().map(f16::to_f32).collect()
    }
}

/// Packs one row of integers into `dst` (`bits = 8`: plain copy).
pub fn pack_row(q: &[i8], bits: u8, dst: &mut [i8]) {
    if bits == 4 {
        for (d, pair) in dst.iter_mut().zip(q.chunks_exact(2)) {
            *d = pack_pair(pair[0], pair[1]);
        }
    } else {
        dst.copy_from_slice(q);
    }
}

/// Unpacks one packed row into integers.
pub fn unpack_row(src: &[i8], bits: u8, dst: &mut [i8]) {
    if bits == 4 {
        for (pair, &b) in dst.chunks_exact_mut(2).zip(src) {
            pair[0] = high_nibble(b);
            pair[1] = low_nibble(b);
        }
    } else {
        dst.copy_from_slice(src);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nibble_order_and_sign() {
        // even column 3 → high nibble, odd column -2 → low nibble 0xE
        let b = pack_pair(3, -2);
        assert_eq!(b as u8, 0x3E);
        assert_eq!(high_nibble(b), 3);
        assert_eq!(low_nibble(b), -2);
        let b = pack_pair(-7, 7);
        assert_eq!(b as u8, 0x97);
        assert_eq!((high_nibble(b), low_nibble(b)), (-7, 7));
        for e in -8i8..8 {
            for o in -8i8..8 {
                let b = pack_pair(e, o);
                assert_eq!((high_nibble(b), low_nibble(b)), (e, o));
            }
        }
    }

    #[test]
    fn quantize_small_row_by_hand() {
        // absmax 7 → scale f16(7 · f32(1/7)) = 1.0; values round half to even.
        let w: Vec<f16> = [7.0, -3.5, 2.5, 0.5, -0.5, 1.5]
            .iter()
            .map(|&v| f16::from_f32(v))
            .collect();
        let q = QuantizedWeight::quantize(&w, 1, 6, 4).unwrap();
        assert_eq!(q.scales[0], f16::from_f32(1.0));
        assert_eq!(q.unpack(), vec![7, -4, 2, 0, 0, 2]);
        assert_eq!(
            q.packed,
            vec![pack_pair(7, -4), pack_pair(2, 0), pack_pair(0, 2)]
        );
    }

    #[test]
    fn bad_shapes_are_rejected() {
        let w = vec![f16::ONE; 6];
        assert_eq!(
            QuantizedWeight::quantize(&w, 2, 3, 4),
            Err(QuantError::OddInFeatures { in_features: 3 })
        );
        assert_eq!(
            QuantizedWeight::quantize(&w, 2, 3, 5),
            Err(QuantError::UnsupportedBits(5))
        );
        assert!(matches!(
            QuantizedWeight::quantize(&w, 2, 4, 8),
            Err(QuantError::LengthMismatch { .. })
        ));
        assert!(QuantizedWeight::from_packed(vec![0; 5], vec![f16::ONE; 2], 2, 4, 4).is_err());
        assert!(QuantizedWeight::from_packed(vec![0; 4], vec![f16::ONE; 1], 2, 4, 4).is_err());
        assert!(QuantizedWeight::from_packed(vec![0; 4], vec![f16::ONE; 2], 2, 4, 4).is_ok());
        assert!(matches!(
            QuantizedWeight::from_packed(vec![0; 4], vec![f16::ONE, f16::NAN], 2, 4, 4),
            Err(QuantError::NonFiniteScale { row: 1, .. })
        ));
        let bad = vec![f16::ONE, f16::INFINITY];
        assert!(matches!(
            QuantizedWeight::quantize(&bad, 1, 2, 8),
            Err(QuantError::NonFinite { row: 0, col: 1, .. })
        ));
    }

    #[test]
    fn zero_row_gives_zero_scale_and_values() {
        let w = vec![f16::ZERO; 4];
        let q = QuantizedWeight::quantize(&w, 1, 4, 4).unwrap();
        assert_eq!(q.scales[0], f16::ZERO);
        assert_eq!(q.dequantize_f32(), vec![0.0; 4]);
    }
}
