//! Golden tests of the checkpoint I/O layer (`glm_model::io`) against the reference's files:
//! the three copies of the tiny model, the pre-quantized model, the Trainer's prefix checkpoint
//! (read, and re-written byte for byte), plus hostile / truncated / mismatched inputs.

#[path = "../../tests/support/fixtures.rs"]
mod fixtures;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use glm_model::io::{
    CheckpointDir, CheckpointFormat, DType, IoError, RawTensor, TensorFile, TorchContainer,
    write_safetensors, write_torch_state_dict, write_torch_state_dict_with,
};

/// The manifest's `tensors` map of a listed file: name -> (dtype, shape), dtypes normalised.
fn manifest_tensors(m: &fixtures::Manifest, file: &str) -> BTreeMap<String, (DType, Vec<usize>)> {
    let entry = m.raw["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["file"] == file)
        .unwrap_or_else(|| panic!("{file} not in manifest"));
    entry["tensors"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let s = v.as_str().unwrap();
            let (d, rest) = s.split_once('[').unwrap();
            let dtype = match d {
                "float16" | "F16" => DType::F16,
                "float32" | "F32" => DType::F32,
                "int8" | "I8" => DType::I8,
                other => panic!("{file}: unexpected manifest dtype {other}"),
            };
            let shape = rest
                .trim_end_matches(']')
                .split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(|x| x.parse().unwrap())
                .collect();
            (k.clone(), (dtype, shape))
        })
        .collect()
}

fn read_everything(ck: &CheckpointDir) -> BTreeMap<String, RawTensor> {
    ck.stream()
        .map(|r| r.unwrap())
        .map(|(i, t)| (i.name.clone(), t))
        .collect()
}

fn tmpdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn io_the_three_model_copies_hold_identical_tensors() {
    let m = fixtures::Manifest::load();
    let dir = m.path("model/config.json").parent().unwrap().to_path_buf();
    let want = manifest_tensors(&m, "model/pytorch_model.bin");
    assert_eq!(
        CheckpointDir::available_formats(&dir),
        vec![
            CheckpointFormat::Safetensors,
            CheckpointFormat::TorchBin,
            CheckpointFormat::TorchBinSharded
        ]
    );
    assert_eq!(
        CheckpointDir::open(&dir).unwrap().format(),
        CheckpointFormat::Safetensors
    );

    let mut copies = Vec::new();
    for format in [
        CheckpointFormat::TorchBin,
        CheckpointFormat::TorchBinSharded,
        CheckpointFormat::Safetensors,
    ] {
        let ck = CheckpointDir::open_format(&dir, format).unwrap();
        assert_eq!(ck.format(), format);
        let got: BTreeMap<String, (DType, Vec<usize>)> = ck
            .tensors()
            .map(|i| (i.name.clone(), (i.dtype, i.shape.clone())))
            .collect();
        assert_eq!(
            got, want,
            "{format}: names/dtypes/shapes differ from the manifest"
        );
        let all = read_everything(&ck);
        for (name, t) in &all {
            assert_eq!(t.bytes.len(), t.numel() * 2, "{format}: {name}");
            assert_eq!(
                ck.read(name).unwrap(),
                *t,
                "{format}: stream and read disagree on {name}"
            );
        }
        copies.push((format, all));
    }
    for (format, all) in &copies[1..] {
        assert_eq!(all, &copies[0].1, "{format} differs from pytorch_model.bin");
    }
    let bin = &copies[0].1;
    // The file stores lm_head equal to the embedding (tied at load time).
    assert_eq!(
        bin["lm_head.weight"],
        bin["transformer.word_embeddings.weight"]
    );
    // Independent check against the `safetensors` crate.
    let st_bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&st_bytes).unwrap();
    for (name, view) in st.tensors() {
        assert_eq!(view.data(), bin[&name].bytes.as_slice(), "{name}");
    }
    // fp16 -> f32 conversion is exact: matches the fixture helper's decoder bit for bit.
    let emb = bin["transformer.word_embeddings.weight"]
        .to_f32_vec()
        .unwrap();
    let reference: Vec<f32> = bin["transformer.word_embeddings.weight"]
        .bytes
        .chunks_exact(2)
        .map(|c| fixtures::f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
        .collect();
    assert_eq!(
        emb.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        reference.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
}

#[test]
fn io_sharded_checkpoint_streams_shard_by_shard() {
    let m = fixtures::Manifest::load();
    let dir = m
        .path("model/pytorch_model.bin.index.json")
        .parent()
        .unwrap()
        .to_path_buf();
    let ck = CheckpointDir::open_format(&dir, CheckpointFormat::TorchBinSharded).unwrap();
    let files: Vec<String> = ck
        .files()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        files,
        [
            "pytorch_model-00001-of-00002.bin",
            "pytorch_model-00002-of-00002.bin"
        ]
    );
    let order: Vec<(String, PathBuf)> = ck
        .stream()
        .map(|r| r.unwrap())
        .map(|(i, _)| (i.name.clone(), i.file.clone()))
        .collect();
    assert_eq!(order.len(), 43);
    assert_eq!(order.last().unwrap().0, "lm_head.weight");
    assert!(
        order[..42]
            .iter()
            .all(|(_, f)| f.ends_with("pytorch_model-00001-of-00002.bin"))
    );
    // Within a shard the stream follows the order of the records in the file.
    assert_eq!(order[0].0, "transformer.word_embeddings.weight");
    assert_eq!(order[41].0, "transformer.final_layernorm.bias");
}

#[test]
fn io_quantized_model_bin_and_safetensors_are_identical() {
    let m = fixtures::Manifest::load();
    let dir = m
        .path("model_quantized/config.json")
        .parent()
        .unwrap()
        .to_path_buf();
    let want = manifest_tensors(&m, "model_quantized/pytorch_model.bin");
    assert_eq!(
        want,
        manifest_tensors(&m, "model_quantized/model.safetensors")
    );
    let bin = CheckpointDir::open_format(&dir, CheckpointFormat::TorchBin).unwrap();
    let st = CheckpointDir::open_format(&dir, CheckpointFormat::Safetensors).unwrap();
    for ck in [&bin, &st] {
        let got: BTreeMap<String, (DType, Vec<usize>)> = ck
            .tensors()
            .map(|i| (i.name.clone(), (i.dtype, i.shape.clone())))
            .collect();
        assert_eq!(got, want, "{}", ck.format());
    }
    assert_eq!(read_everything(&bin), read_everything(&st));
    let name = "transformer.layers.0.attention.query_key_value.weight";
    let q = bin.read_checked(name, &[DType::I8], &[192, 32]).unwrap();
    let q = q.as_i8().unwrap();
    assert_eq!(q.len(), 192 * 32);
    // Packed int4: both nibbles used, and both signs appear in the high nibble.
    assert!(q.iter().any(|&b| b < 0) && q.iter().any(|&b| b > 0));
    let scale = bin
        .read_checked(
            "transformer.layers.0.attention.query_key_value.weight_scale",
            &[DType::F16],
            &[192],
        )
        .unwrap();
    assert!(
        scale
            .to_f32_vec()
            .unwrap()
            .iter()
            .all(|&s| s > 0.0 && s.is_finite())
    );
    // Using the int8 weight as floats is refused with file and tensor named.
    let e = bin.read_f32(name).unwrap_err().to_string();
    assert!(
        e.contains(name) && e.contains("pytorch_model.bin") && e.contains("i8"),
        "{e}"
    );
}

#[test]
fn io_golden_prefix_checkpoint_reads_and_matches_the_trainer_params() {
    let m = fixtures::Manifest::load();
    let path = m.path("ptuning/train/checkpoint-3/pytorch_model.bin");
    let ck = CheckpointDir::open(path.parent().unwrap()).unwrap();
    assert_eq!(ck.format(), CheckpointFormat::TorchBin);
    let want = manifest_tensors(&m, "ptuning/train/checkpoint-3/pytorch_model.bin");
    let (name, (dtype, shape)) = want.iter().next().unwrap();
    let t = ck.read_checked(name, &[*dtype], shape).unwrap();
    // The Trainer saved the parameters after step 3: bit-identical to params_after_step3.
    let params = m.safetensors_f32("ptuning/train/params_after_step3.safetensors");
    let (pshape, pvals) = &params[name];
    assert_eq!(pshape, shape);
    let got = t.to_f32_vec().unwrap();
    assert_eq!(
        got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        pvals.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
}

/// Compare two torch archives byte for byte except the first 20 digits of
/// `.data/serialization_id` (torch derives them from `std::hash` of the record names, which is
/// implementation-defined) and, following from them, that record's CRC-32 in its data descriptor
/// and central-directory entry. The CRC half of the id must match.
fn assert_same_torch_file(ours: &Path, golden: &Path, what: &str) {
    let (ours_b, golden_b) = (std::fs::read(ours).unwrap(), std::fs::read(golden).unwrap());
    assert_eq!(ours_b.len(), golden_b.len(), "{what}: file sizes differ");
    let mut z = zip::ZipArchive::new(std::fs::File::open(golden).unwrap()).unwrap();
    let idx = (0..z.len())
        .find(|&i| {
            z.name_for_index(i)
                .unwrap()
                .ends_with("/.data/serialization_id")
        })
        .unwrap();
    let f = z.by_index(idx).unwrap();
    let id = f.data_start().unwrap() as usize;
    let cd_crc = f.central_header_start() as usize + 16;
    let allowed = |i: usize| {
        (id..id + 20).contains(&i)
            || (id + 44..id + 48).contains(&i)
            || (cd_crc..cd_crc + 4).contains(&i)
    };
    for i in (0..ours_b.len()).filter(|&i| ours_b[i] != golden_b[i]) {
        assert!(
            allowed(i),
            "{what}: byte {i} differs outside the name-hash half of the serialization id and its CRC"
        );
    }
}

#[test]
fn io_writer_reproduces_the_reference_files() {
    let m = fixtures::Manifest::load();
    let tmp = tmpdir();

    // (1) The Trainer's prefix checkpoint: a plain dict with one f32 tensor.
    let golden_path = m.path("ptuning/train/checkpoint-3/pytorch_model.bin");
    let golden = TensorFile::open(&golden_path).unwrap().read_all().unwrap();
    let out = tmp.path().join("pytorch_model.bin");
    let refs: Vec<(&str, &RawTensor)> = golden.iter().map(|(n, t)| (n.as_str(), t)).collect();
    write_torch_state_dict(&out, &refs).unwrap();
    assert_same_torch_file(&out, &golden_path, "checkpoint-3");
    assert_eq!(TensorFile::open(&out).unwrap().read_all().unwrap(), golden);

    // (2) torch.save(OrderedDict) of the whole tiny model, 43 fp16 tensors.
    let bin_path = m.path("model/pytorch_model.bin");
    let model = TensorFile::open(&bin_path).unwrap().read_all().unwrap();
    let refs: Vec<(&str, &RawTensor)> = model.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let out = tmp.path().join("pytorch_model.bin");
    write_torch_state_dict_with(&out, &refs, TorchContainer::OrderedDict).unwrap();
    assert_same_torch_file(&out, &bin_path, "model/pytorch_model.bin");

    // (3) transformers' shard 1: a plain dict of 42 tensors (MARK ... SETITEMS, LONG_BINPUT).
    let shard_path = m.path("model/pytorch_model-00001-of-00002.bin");
    let shard = TensorFile::open(&shard_path).unwrap().read_all().unwrap();
    let refs: Vec<(&str, &RawTensor)> = shard.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let out = tmp.path().join("pytorch_model-00001-of-00002.bin");
    write_torch_state_dict(&out, &refs).unwrap();
    assert_same_torch_file(&out, &shard_path, "shard 1");
}

/// Zip entry names (relative to the archive folder) and data offsets of a torch file.
fn zip_layout(path: &Path) -> (String, Vec<(String, u64)>) {
    let mut z = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut archive = String::new();
    let mut out = Vec::new();
    for i in 0..z.len() {
        let f = z.by_index(i).unwrap();
        let (a, rest) = f.name().split_once('/').unwrap();
        archive = a.to_string();
        assert_eq!(f.compression(), zip::CompressionMethod::Stored);
        out.push((rest.to_string(), f.data_start().unwrap()));
    }
    (archive, out)
}

#[test]
fn io_writer_handles_any_rank_and_dtype_with_torch_structure() {
    let m = fixtures::Manifest::load();
    let tmp = tmpdir();
    let f16: Vec<half::f16> = (0..24)
        .map(|i| half::f16::from_f32(i as f32 * 0.5 - 3.0))
        .collect();
    let tensors = [
        (
            "a.f32",
            RawTensor::from_f32(vec![2, 3], &[1.0, -2.0, 3.5, f32::MIN_POSITIVE, 0.0, -0.0])
                .unwrap(),
        ),
        (
            "b.f16.rank3",
            RawTensor::from_f16(vec![2, 3, 4], &f16).unwrap(),
        ),
        (
            "c.i8",
            RawTensor::from_i8(vec![4, 1], &[-128, -1, 0, 127]).unwrap(),
        ),
        ("d.scalar", RawTensor::from_f32(vec![], &[42.0]).unwrap()),
        (
            "e.rank5",
            RawTensor::from_f32(vec![1, 2, 1, 2, 1], &[1.0, 2.0, 3.0, 4.0]).unwrap(),
        ),
        ("f.empty", RawTensor::from_f32(vec![0, 3], &[]).unwrap()),
    ];
    let refs: Vec<(&str, &RawTensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
    let out = tmp.path().join("prefix_state.bin");
    write_torch_state_dict(&out, &refs).unwrap();
    let back = TensorFile::open(&out).unwrap().read_all().unwrap();
    let want: Vec<(String, RawTensor)> = tensors
        .iter()
        .map(|(n, t)| (n.to_string(), t.clone()))
        .collect();
    assert_eq!(back, want);

    // Same zip structure as the golden checkpoint: entry names modulo the archive folder (named
    // after the file stem), every record's data 64-byte aligned.
    let (archive, ours) = zip_layout(&out);
    let (g_archive, golden) = zip_layout(&m.path("ptuning/train/checkpoint-3/pytorch_model.bin"));
    assert_eq!(
        (archive.as_str(), g_archive.as_str()),
        ("prefix_state", "pytorch_model")
    );
    let names = |v: &[(String, u64)]| {
        v.iter()
            .map(|(n, _)| n.clone())
            .filter(|n| !n.starts_with("data/"))
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&ours), names(&golden));
    let data: Vec<String> = ours
        .iter()
        .map(|(n, _)| n.clone())
        .filter(|n| n.starts_with("data/"))
        .collect();
    assert_eq!(
        data,
        (0..6).map(|i| format!("data/{i}")).collect::<Vec<_>>()
    );
    for (name, ofs) in ours.iter().chain(&golden) {
        assert_eq!(ofs % 64, 0, "{name} data at {ofs}");
    }
    // Duplicate names and inconsistent byte lengths are refused, naming file and tensor.
    let bad = RawTensor {
        dtype: DType::F32,
        shape: vec![3],
        bytes: vec![0; 8],
    };
    let e = write_torch_state_dict(&out, &[("x", &bad)])
        .unwrap_err()
        .to_string();
    assert!(e.contains("prefix_state.bin") && e.contains("`x`"), "{e}");
    let e = write_torch_state_dict(&out, &[("x", &tensors[0].1), ("x", &tensors[0].1)])
        .unwrap_err()
        .to_string();
    assert!(e.contains("duplicate"), "{e}");
    // The failed writes left the previous file intact.
    assert_eq!(TensorFile::open(&out).unwrap().read_all().unwrap(), want);
}

#[test]
fn io_safetensors_writer_round_trips() {
    let tmp = tmpdir();
    let tensors = vec![
        (
            "w",
            RawTensor::from_f16(
                vec![3],
                &[half::f16::ONE, half::f16::NEG_ONE, half::f16::ZERO],
            )
            .unwrap(),
        ),
        ("q", RawTensor::from_i8(vec![1, 3], &[1, -2, 3]).unwrap()),
        (
            "p",
            RawTensor::from_f32(vec![2, 2], &[0.5, 1.5, 2.5, 3.5]).unwrap(),
        ),
    ];
    let refs: Vec<(&str, &RawTensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
    let meta: BTreeMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    let out = tmp.path().join("x.safetensors");
    write_safetensors(&out, &refs, &meta).unwrap();
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(u64::from_le_bytes(bytes[..8].try_into().unwrap()) % 8, 0);
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(
        header
            .metadata()
            .as_ref()
            .unwrap()
            .get("format")
            .map(String::as_str),
        Some("pt")
    );
    for (name, t) in &tensors {
        let v = st.tensor(name).unwrap();
        assert_eq!(
            (v.data(), v.shape()),
            (t.bytes.as_slice(), t.shape.as_slice())
        );
    }
    let ours = match TensorFile::open(&out).unwrap() {
        TensorFile::Safetensors(s) => s,
        other => panic!("sniffed as {other:?}"),
    };
    assert_eq!(ours.metadata(), &meta);
    // f32 first (largest element), then f16, then i8.
    let order: Vec<&str> = ours.tensors().iter().map(|i| i.name.as_str()).collect();
    assert_eq!(order, ["p", "w", "q"]);
    for (name, t) in &tensors {
        assert_eq!(&ours.read(name).unwrap(), t);
    }
}

/// A minimal torch zip (archive `name`) around a hand-written `data.pkl` and raw records.
fn hand_made_torch_zip(path: &Path, archive: &str, pickle: &[u8], records: &[(&str, &[u8])]) {
    let mut z = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    z.start_file(format!("{archive}/data.pkl"), opts).unwrap();
    z.write_all(pickle).unwrap();
    for (name, data) in records {
        z.start_file(format!("{archive}/{name}"), opts).unwrap();
        z.write_all(data).unwrap();
    }
    z.finish().unwrap();
}

#[test]
fn io_hostile_pickles_are_refused_naming_the_global() {
    let tmp = tmpdir();
    for (module, name) in [
        ("os", "system"),
        ("posix", "system"),
        ("builtins", "eval"),
        ("__builtin__", "exec"),
    ] {
        let mut pkl = b"\x80\x02}q\x00X\x01\x00\x00\x00aq\x01c".to_vec();
        pkl.extend_from_slice(format!("{module}\n{name}\n").as_bytes());
        pkl.extend_from_slice(b"q\x02X\x0c\x00\x00\x00touch /tmp/xq\x03\x85q\x04Rq\x05s.");
        let path = tmp.path().join(format!("evil_{module}.bin"));
        hand_made_torch_zip(
            &path,
            "evil",
            &pkl,
            &[("byteorder", b"little"), ("version", b"3\n")],
        );
        let err = CheckpointDir::open(tmp.path()).err();
        assert!(matches!(err, Some(IoError::NoCheckpoint { .. })), "{err:?}");
        let err = TensorFile::open(&path).unwrap_err();
        assert!(
            matches!(&err, IoError::ForbiddenGlobal { module: m, name: n, .. } if m == module && n == name),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&format!("{module}.{name}")), "{msg}");
        assert!(msg.contains(&format!("evil_{module}.bin")), "{msg}");
        assert!(msg.contains("must never run code"), "{msg}");
    }
}

#[test]
fn io_strided_views_shared_storage_parameters_and_big_endian() {
    let tmp = tmpdir();
    // One f32 storage 0..12; `a` = all of it as [3, 4]; `b` = a strided view at offset 1,
    // shape [2, 3], strides (1, 4) -> [[1, 5, 9], [2, 6, 10]]; `c` = `a` wrapped as a Parameter.
    let rebuild = |offset: u8, shape: &[u8], strides: &[u8]| {
        let mut p = b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x0ctQK".to_vec();
        p.push(offset);
        for dims in [shape, strides] {
            for &d in dims {
                p.extend_from_slice(&[b'K', d]);
            }
            p.push(0x86);
        }
        p.extend_from_slice(b"\x89ccollections\nOrderedDict\n)RtR");
        p
    };
    let mut pkl = b"\x80\x02ccollections\nOrderedDict\n)R(X\x01\x00\x00\x00a".to_vec();
    pkl.extend(rebuild(0, &[3, 4], &[4, 1]));
    pkl.extend_from_slice(b"X\x01\x00\x00\x00b");
    pkl.extend(rebuild(1, &[2, 3], &[1, 4]));
    pkl.extend_from_slice(b"X\x01\x00\x00\x00cctorch._utils\n_rebuild_parameter\n(");
    pkl.extend(rebuild(0, &[3, 4], &[4, 1]));
    pkl.extend_from_slice(b"\x88ccollections\nOrderedDict\n)RtRu.");
    let le: Vec<u8> = (0..12).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let be: Vec<u8> = (0..12).flat_map(|i| (i as f32).to_be_bytes()).collect();
    for (order, data) in [("little", &le), ("big", &be)] {
        let path = tmp.path().join(format!("views_{order}.bin"));
        hand_made_torch_zip(
            &path,
            "views",
            &pkl,
            &[("byteorder", order.as_bytes()), ("data/0", data)],
        );
        let f = TensorFile::open(&path).unwrap();
        let a = f.read("a").unwrap();
        assert_eq!(a.shape, vec![3, 4]);
        assert_eq!(
            a.to_f32_vec().unwrap(),
            (0..12).map(|i| i as f32).collect::<Vec<_>>(),
            "{order}"
        );
        let b = f.read("b").unwrap();
        assert_eq!(b.shape, vec![2, 3]);
        assert_eq!(
            b.to_f32_vec().unwrap(),
            vec![1.0, 5.0, 9.0, 2.0, 6.0, 10.0],
            "{order}"
        );
        assert_eq!(f.read("c").unwrap(), a);
    }
    // A view reaching past its storage is refused at open, naming the tensor.
    let mut bad = b"\x80\x02}X\x01\x00\x00\x00v".to_vec();
    bad.extend(rebuild(5, &[2, 4], &[4, 1]));
    bad.extend_from_slice(b"s.");
    let path = tmp.path().join("bad_view.bin");
    hand_made_torch_zip(&path, "bad_view", &bad, &[("data/0", &le)]);
    let e = TensorFile::open(&path).unwrap_err().to_string();
    assert!(
        e.contains("`v`") && e.contains("bad_view.bin") && e.contains("storage with 12 elements"),
        "{e}"
    );
    // A storage record that is missing.
    let path = tmp.path().join("no_record.bin");
    hand_made_torch_zip(&path, "no_record", &bad, &[]);
    let e = TensorFile::open(&path).unwrap_err();
    assert!(
        matches!(&e, IoError::MissingRecord { tensor, record, .. } if tensor == "v" && record == "no_record/data/0"),
        "{e:?}"
    );
}

#[test]
fn io_truncated_and_legacy_files_give_clear_errors() {
    let m = fixtures::Manifest::load();
    let tmp = tmpdir();
    // Torch zip cut in half: the zip directory is gone.
    let bin = std::fs::read(m.path("model/pytorch_model.bin")).unwrap();
    let cut = tmp.path().join("cut.bin");
    std::fs::write(&cut, &bin[..bin.len() / 2]).unwrap();
    let e = TensorFile::open(&cut).unwrap_err();
    assert!(matches!(e, IoError::Zip { .. }), "{e:?}");
    assert!(
        e.to_string().contains("cut.bin") && e.to_string().contains("truncated"),
        "{e}"
    );
    // Safetensors cut inside the data: reported at open, naming a tensor whose bytes are gone.
    let st = std::fs::read(m.path("model/model.safetensors")).unwrap();
    let cut = tmp.path().join("model.safetensors");
    std::fs::write(&cut, &st[..st.len() - 100]).unwrap();
    let e = CheckpointDir::open(tmp.path()).unwrap_err();
    match &e {
        IoError::Truncated { file, tensor, .. } => {
            assert!(file.ends_with("model.safetensors"));
            assert_eq!(tensor, "transformer.word_embeddings.weight");
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
    // Header cut.
    std::fs::write(&cut, &st[..20]).unwrap();
    assert!(matches!(
        TensorFile::open(&cut).unwrap_err(),
        IoError::Truncated { .. }
    ));
    // Legacy (pre-1.6) torch file: a raw pickle stream starting with torch's magic number.
    let legacy = tmp.path().join("old.pt");
    std::fs::write(
        &legacy,
        b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.\x80\x02M\xe9\x03.",
    )
    .unwrap();
    let e = TensorFile::open(&legacy).unwrap_err();
    assert!(matches!(e, IoError::LegacyTorch { .. }), "{e:?}");
    assert!(e.to_string().contains("torch.save(torch.load("), "{e}");
    // Something else entirely.
    std::fs::write(&legacy, b"GGUF\x03\x00\x00\x00 not a checkpoint").unwrap();
    assert!(matches!(
        TensorFile::open(&legacy).unwrap_err(),
        IoError::UnknownFormat { .. }
    ));
}

#[test]
fn io_lookups_and_indexes_fail_naming_file_and_tensor() {
    let m = fixtures::Manifest::load();
    let dir = m.path("model/config.json").parent().unwrap().to_path_buf();
    let ck = CheckpointDir::open_format(&dir, CheckpointFormat::TorchBin).unwrap();
    let e = ck
        .read("layers.0.attention.dense.weight")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`layers.0.attention.dense.weight`") && e.contains("pytorch_model.bin"),
        "{e}"
    );
    assert!(
        e.contains("similar: transformer.layers.0.attention.dense.weight"),
        "{e}"
    );
    let name = "transformer.layers.1.mlp.dense_h_to_4h.weight";
    let e = ck
        .read_checked(name, &[DType::F16], &[64, 256])
        .unwrap_err();
    assert!(
        matches!(&e, IoError::WrongShape { expected, found, .. } if expected == &[64, 256] && found == &[256, 64]),
        "{e:?}"
    );
    assert!(
        e.to_string().contains(name) && e.to_string().contains("pytorch_model.bin"),
        "{e}"
    );
    let e = ck.read_checked(name, &[DType::I8], &[256, 64]).unwrap_err();
    assert!(
        matches!(
            e,
            IoError::WrongDType {
                found: DType::F16,
                ..
            }
        ),
        "{e:?}"
    );

    // An index whose second shard is absent.
    let tmp = tmpdir();
    for f in [
        "pytorch_model.bin.index.json",
        "pytorch_model-00001-of-00002.bin",
    ] {
        std::fs::copy(dir.join(f), tmp.path().join(f)).unwrap();
    }
    let e = CheckpointDir::open(tmp.path()).unwrap_err();
    assert!(
        matches!(&e, IoError::MissingShard { shard, tensor, .. } if shard.ends_with("pytorch_model-00002-of-00002.bin") && tensor == "lm_head.weight"),
        "{e:?}"
    );
    // A shard that does not hold what the index says: swap the shard files.
    std::fs::copy(
        dir.join("pytorch_model-00001-of-00002.bin"),
        tmp.path().join("pytorch_model-00002-of-00002.bin"),
    )
    .unwrap();
    let e = CheckpointDir::open(tmp.path()).unwrap_err();
    assert!(
        matches!(&e, IoError::MissingFromShard { tensor, .. } if tensor == "lm_head.weight"),
        "{e:?}"
    );
    // An empty directory.
    let empty = tmpdir();
    let e = CheckpointDir::open(empty.path()).unwrap_err().to_string();
    assert!(
        e.contains("no checkpoint found") && e.contains("pytorch_model.bin"),
        "{e}"
    );
}
