//! Bit-exactness against the reference's quantization goldens (`model_quantized/`, `quant/`):
//! quantizing the tiny model's f16 weights must reproduce THUDM's packed bytes and scales exactly,
//! and the dequantized values must equal `quant/dequantized_weights.safetensors`.

#[path = "../../tests/support/fixtures.rs"]
mod fixtures;

use std::collections::BTreeMap;

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use half::f16;
use quant::{BiasData, QuantLinear, QuantizedWeight};

/// Raw tensors of a safetensors file: name → (dtype, shape, bytes).
fn raw(path: &std::path::Path) -> BTreeMap<String, (safetensors::Dtype, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                (v.dtype(), v.shape().to_vec(), v.data().to_vec()),
            )
        })
        .collect()
}

fn f16s(b: &[u8]) -> Vec<f16> {
    b.chunks_exact(2)
        .map(|c| f16::from_le_bytes([c[0], c[1]]))
        .collect()
}

/// The quantized module names, discovered from the `weight_scale` keys of the golden checkpoint.
fn modules(q: &BTreeMap<String, (safetensors::Dtype, Vec<usize>, Vec<u8>)>) -> Vec<String> {
    let names: Vec<String> = q
        .keys()
        .filter_map(|k| k.strip_suffix(".weight_scale").map(str::to_string))
        .collect();
    assert!(
        !names.is_empty(),
        "no *.weight_scale tensors in model_quantized"
    );
    names
}

fn bits_from_config(m: &fixtures::Manifest) -> u8 {
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(m.root.join("model_quantized/config.json")).unwrap(),
    )
    .unwrap();
    cfg["quantization_bit"]
        .as_u64()
        .expect("quantization_bit in config.json") as u8
}

#[test]
fn quantizing_the_f16_checkpoint_reproduces_thudm_bytes_and_scales() {
    let m = fixtures::Manifest::load();
    let full = raw(&m.path("model/model.safetensors"));
    let golden = raw(&m.path("model_quantized/model.safetensors"));
    let dequant = m.safetensors_f32("quant/dequantized_weights.safetensors");
    let bits = bits_from_config(&m);
    let names = modules(&golden);
    assert_eq!(
        names.len(),
        dequant.len(),
        "one dequantized tensor per quantized module"
    );
    for name in &names {
        let (dt, shape, w) = &full[&format!("{name}.weight")];
        assert_eq!(*dt, safetensors::Dtype::F16, "{name}: source weight is f16");
        let (out, inp) = (shape[0], shape[1]);
        let q = QuantizedWeight::quantize(&f16s(w), out, inp, bits).unwrap();

        let (pdt, pshape, packed) = &golden[&format!("{name}.weight")];
        assert_eq!(*pdt, safetensors::Dtype::I8, "{name}: packed dtype");
        assert_eq!(pshape, &q.packed_shape().to_vec(), "{name}: packed shape");
        let ours: Vec<u8> = q.packed.iter().map(|&b| b as u8).collect();
        let diff = ours.iter().zip(packed).filter(|(a, b)| a != b).count();
        assert_eq!(diff, 0, "{name}: {diff} packed bytes differ from THUDM's");

        let (_, _, scales) = &golden[&format!("{name}.weight_scale")];
        let want: Vec<u16> = f16s(scales).iter().map(|v| v.to_bits()).collect();
        let got: Vec<u16> = q.scales.iter().map(|v| v.to_bits()).collect();
        assert_eq!(got, want, "{name}: scales differ");

        let (dshape, dvals) = &dequant[&format!("{name}.weight")];
        assert_eq!(dshape, &vec![out, inp]);
        fixtures::assert_close(
            &format!("{name} dequantized"),
            &q.dequantize_f32(),
            dvals,
            m.entry("quant/dequantized_weights.safetensors").tol(),
        );
    }
}

#[test]
fn loading_the_prequantized_checkpoint_dequantizes_exactly() {
    let m = fixtures::Manifest::load();
    let golden = raw(&m.path("model_quantized/model.safetensors"));
    let dequant = m.safetensors_f32("quant/dequantized_weights.safetensors");
    let bits = bits_from_config(&m);
    for name in modules(&golden) {
        let (_, pshape, packed) = &golden[&format!("{name}.weight")];
        let (_, _, scales) = &golden[&format!("{name}.weight_scale")];
        let (dshape, dvals) = &dequant[&format!("{name}.weight")];
        let packed: Vec<i8> = packed.iter().map(|&b| b as i8).collect();
        let q =
            QuantizedWeight::from_packed(packed, f16s(scales), pshape[0], dshape[1], bits).unwrap();
        fixtures::assert_close(&name, &q.dequantize_f32(), dvals, fixtures::Tol::EXACT);

        // The module path: the same bytes through QuantLinear on Flex equal x · W̃ᵀ + b.
        let (_, _, bias) = &golden[&format!("{name}.bias")];
        let bias = f16s(bias);
        let dev = Default::default();
        let layer =
            QuantLinear::<Flex>::from_quantized(&q, Some(BiasData::F16(bias.clone())), &dev)
                .unwrap();
        let (n, k) = (dshape[0], dshape[1]);
        let rows = 5;
        let x: Vec<f32> = (0..rows * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        let y = layer.forward(Tensor::<Flex, 2>::from_data(
            TensorData::new(x.clone(), [rows, k]),
            &dev,
        ));
        let y = y.into_data().to_vec::<f32>().unwrap();
        let mut want = vec![0f32; rows * n];
        for i in 0..rows {
            for j in 0..n {
                let dot: f64 = (0..k)
                    .map(|l| x[i * k + l] as f64 * dvals[j * k + l] as f64)
                    .sum();
                want[i * n + j] = (dot + bias[j].to_f64()) as f32;
            }
        }
        fixtures::assert_close(
            &format!("{name} forward"),
            &y,
            &want,
            fixtures::Tol {
                abs: 1e-4,
                rel: 1e-5,
            },
        );

        // And back: the module returns the checkpoint bytes unchanged.
        assert_eq!(
            layer.to_quantized().unwrap(),
            q,
            "{name}: to_quantized round trip"
        );
    }
}
