//! Shared test support for the golden fixtures of the Python reference (`../shared/fixtures`).
//!
//! Included by each crate's tests with
//! `#[path = "../../tests/support/fixtures.rs"] mod fixtures;` so the fixture conventions live in
//! one place. The root is `$GLM_TUNE_FIXTURES` (default `<workspace>/../shared/fixtures`); files
//! and tolerances are discovered through its `manifest.json`, so another fixture set with the same
//! layout can be dropped in and run by the same tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Root of the fixture set.
pub fn root() -> PathBuf {
    match std::env::var_os("GLM_TUNE_FIXTURES") {
        Some(p) => PathBuf::from(p),
        None => workspace_root().join("../shared/fixtures"),
    }
}

/// The workspace root (parent of every member crate).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Members live one level below the workspace root.
    if here.join("Cargo.lock").exists() || here.join("configs").is_dir() {
        here.to_path_buf()
    } else {
        here.parent().expect("crate has a parent").to_path_buf()
    }
}

/// `../shared/data` beside the checkout (real tokenizer, AdvertiseGen rows).
pub fn shared_data() -> PathBuf {
    match std::env::var_os("GLM_TUNE_SHARED_DATA") {
        Some(p) => PathBuf::from(p),
        None => workspace_root().join("../shared/data"),
    }
}

/// Element-wise tolerance `|got - want| <= abs + rel * |want|` (numpy.allclose).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tol {
    pub abs: f64,
    pub rel: f64,
}

impl Tol {
    pub const EXACT: Tol = Tol { abs: 0.0, rel: 0.0 };
    fn from_json(v: &serde_json::Value) -> Option<Tol> {
        match v {
            serde_json::Value::String(s) if s.starts_with("exact") => Some(Tol::EXACT),
            serde_json::Value::Object(m) if m.contains_key("abs") || m.contains_key("rel") => {
                Some(Tol {
                    abs: m.get("abs").and_then(|x| x.as_f64()).unwrap_or(0.0),
                    rel: m.get("rel").and_then(|x| x.as_f64()).unwrap_or(0.0),
                })
            }
            _ => None,
        }
    }
}

/// One entry of `manifest.json`.
#[derive(Debug, Clone)]
pub struct Entry {
    pub file: String,
    pub shape: Option<Vec<usize>>,
    pub dtype: Option<String>,
    pub tolerance: serde_json::Value,
}

impl Entry {
    /// Element tolerance of the file (`exact` when the manifest gives none).
    pub fn tol(&self) -> Tol {
        Tol::from_json(&self.tolerance).unwrap_or(Tol::EXACT)
    }
    /// A named sub-tolerance (`{"loss": {"abs": ..}}` style entries).
    pub fn sub_tol(&self, key: &str) -> Tol {
        self.tolerance
            .get(key)
            .and_then(Tol::from_json)
            .unwrap_or_else(|| panic!("{}: no tolerance for {key}", self.file))
    }
}

/// The parsed `manifest.json`.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub root: PathBuf,
    pub raw: serde_json::Value,
    pub files: BTreeMap<String, Entry>,
}

impl Manifest {
    /// Load the manifest of [`root()`]; panics with the path when it is missing.
    pub fn load() -> Manifest {
        let root = root();
        let path = root.join("manifest.json");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "fixture manifest {}: {e} (set GLM_TUNE_FIXTURES)",
                path.display()
            )
        });
        let raw: serde_json::Value = serde_json::from_str(&text).expect("manifest.json is JSON");
        let mut files = BTreeMap::new();
        for f in raw["files"].as_array().expect("manifest has files") {
            let file = f["file"].as_str().expect("file name").to_string();
            let shape = f
                .get("shape")
                .and_then(|s| s.as_array())
                .map(|a| a.iter().map(|x| x.as_u64().unwrap() as usize).collect());
            let dtype = f.get("dtype").and_then(|d| d.as_str()).map(str::to_string);
            let tolerance = f
                .get("tolerance")
                .cloned()
                .unwrap_or(serde_json::Value::Null);
            files.insert(
                file.clone(),
                Entry {
                    file,
                    shape,
                    dtype,
                    tolerance,
                },
            );
        }
        Manifest { root, raw, files }
    }

    /// The entry for `file` (relative path); panics if the manifest does not list it.
    pub fn entry(&self, file: &str) -> &Entry {
        self.files
            .get(file)
            .unwrap_or_else(|| panic!("manifest.json does not list {file}"))
    }

    /// Absolute path of a listed file.
    pub fn path(&self, file: &str) -> PathBuf {
        self.entry(file);
        self.root.join(file)
    }

    /// Every listed file under `dir/` (e.g. `"forward/"`).
    pub fn under(&self, dir: &str) -> Vec<&Entry> {
        self.files
            .values()
            .filter(|e| e.file.starts_with(dir))
            .collect()
    }

    /// Read a listed `.npy` file, checking its shape and dtype against the manifest.
    pub fn npy(&self, file: &str) -> Npy {
        let e = self.entry(file);
        let n = Npy::read(&self.root.join(file));
        if let Some(shape) = &e.shape {
            assert_eq!(&n.shape, shape, "{file}: shape differs from manifest");
        }
        n
    }

    /// Read a listed JSON file.
    pub fn json(&self, file: &str) -> serde_json::Value {
        let p = self.path(file);
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    /// Read every tensor of a listed safetensors file as f32 (F32/F16 sources) with shapes.
    pub fn safetensors_f32(&self, file: &str) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
        read_safetensors_f32(&self.path(file))
    }

    /// The structure-preserving map from real ChatGLM ids to the tiny vocabulary (`id_remap`).
    pub fn tiny_id(&self, id: i64) -> i64 {
        let base = self.raw["id_remap"]["special_base"]
            .as_i64()
            .unwrap_or(1000);
        if id < 6 {
            id
        } else if (130000..=130007).contains(&id) {
            base + (id - 130000)
        } else {
            6 + (id - 6) % (base - 6)
        }
    }
}

/// Read every tensor of a safetensors file as f32 (F32, F16, BF16 converted) keyed by name.
pub fn read_safetensors_f32(path: &Path) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let data = view.data();
        let vals: Vec<f32> = match view.dtype() {
            safetensors::Dtype::F32 => data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            safetensors::Dtype::F16 => data
                .chunks_exact(2)
                .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            safetensors::Dtype::BF16 => data
                .chunks_exact(2)
                .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
                .collect(),
            safetensors::Dtype::I8 => data.iter().map(|&b| b as i8 as f32).collect(),
            other => panic!("{}: {name}: unsupported dtype {other:?}", path.display()),
        };
        out.insert(name.to_string(), (view.shape().to_vec(), vals));
    }
    out
}

/// IEEE half to f32 without external crates.
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) & 1) as u32;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = if exp == 0 {
        if man == 0 {
            sign << 31
        } else {
            // subnormal: normalise
            let mut e = 127 - 15 + 1;
            let mut m = man;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            (sign << 31) | ((e as u32) << 23) | ((m & 0x3ff) << 13)
        }
    } else if exp == 31 {
        (sign << 31) | (0xff << 23) | (man << 13)
    } else {
        (sign << 31) | ((exp + 127 - 15) << 23) | (man << 13)
    };
    f32::from_bits(bits)
}

/// A `.npy` array (format v1/v2, little-endian, C order) with its values widened.
#[derive(Debug, Clone)]
pub struct Npy {
    pub shape: Vec<usize>,
    pub descr: String,
    bytes: Vec<u8>,
}

impl Npy {
    pub fn read(path: &Path) -> Npy {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            &data[..6],
            b"\x93NUMPY",
            "{}: not a .npy file",
            path.display()
        );
        let major = data[6];
        let (hlen, start) = if major == 1 {
            (u16::from_le_bytes([data[8], data[9]]) as usize, 10)
        } else {
            (
                u32::from_le_bytes([data[8], data[9], data[10], data[11]]) as usize,
                12,
            )
        };
        let header = std::str::from_utf8(&data[start..start + hlen]).unwrap();
        let descr = header
            .split("'descr':")
            .nth(1)
            .unwrap()
            .split('\'')
            .nth(1)
            .unwrap()
            .to_string();
        assert!(
            header.contains("'fortran_order': False"),
            "{}: fortran order",
            path.display()
        );
        let shape_txt = header.split("'shape':").nth(1).unwrap();
        let shape_txt = &shape_txt[shape_txt.find('(').unwrap() + 1..shape_txt.find(')').unwrap()];
        let shape: Vec<usize> = shape_txt
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .collect();
        Npy {
            shape,
            descr,
            bytes: data[start + hlen..].to_vec(),
        }
    }

    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn f32(&self) -> Vec<f32> {
        match self.descr.as_str() {
            "<f4" => self
                .bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            "<f2" => self
                .bytes
                .chunks_exact(2)
                .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            "<f8" => self
                .bytes
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
            d => panic!("npy dtype {d} is not float"),
        }
    }

    /// Raw f16 bit patterns of a `<f2` array.
    pub fn f16_bits(&self) -> Vec<u16> {
        assert_eq!(self.descr, "<f2");
        self.bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect()
    }

    pub fn i64(&self) -> Vec<i64> {
        match self.descr.as_str() {
            "<i8" => self
                .bytes
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            "<i4" => self
                .bytes
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64)
                .collect(),
            d => panic!("npy dtype {d} is not integer"),
        }
    }

    pub fn bool(&self) -> Vec<bool> {
        assert_eq!(self.descr, "|b1", "npy dtype is not bool");
        self.bytes.iter().map(|&b| b != 0).collect()
    }
}

/// Assert `got` matches `want` element-wise within `tol`; reports the worst element.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: Tol) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length {} != {}",
        got.len(),
        want.len()
    );
    let mut worst: Option<(usize, f64)> = None;
    let mut bad = 0usize;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let (g, w) = (g as f64, w as f64);
        let lim = tol.abs + tol.rel * w.abs();
        let d = (g - w).abs();
        // A NaN difference is out of tolerance too.
        if d.is_nan() || d > lim {
            bad += 1;
            let excess = if d.is_nan() { f64::INFINITY } else { d - lim };
            if worst.is_none_or(|(_, e)| excess > e) {
                worst = Some((i, excess));
            }
        }
    }
    if let Some((i, _)) = worst {
        panic!(
            "{what}: {bad} of {} elements outside abs {} rel {}; worst at {i}: got {} want {}",
            got.len(),
            tol.abs,
            tol.rel,
            got[i],
            want[i]
        );
    }
}
