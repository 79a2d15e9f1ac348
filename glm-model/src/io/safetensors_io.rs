//! Streaming safetensors reader (parse the JSON header once, then `seek` + read one tensor's byte
//! range per request) and a safetensors writer.
//!
//! Layout: `u64` little-endian header length N, N bytes of JSON
//! `{"__metadata__": {str: str}, name: {"dtype", "shape", "data_offsets": [begin, end]}}` (offsets
//! relative to the data section that starts at 8 + N), then the data.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::error::IoError;
use super::tensor::{DType, RawTensor, TensorInfo};

/// Largest header accepted (the `safetensors` crate uses the same bound).
const MAX_HEADER: u64 = 100_000_000;

#[derive(Debug, Clone)]
struct Span {
    begin: u64,
    end: u64,
}

/// An opened safetensors file.
#[derive(Debug, Clone)]
pub struct SafetensorsFile {
    path: PathBuf,
    data_start: u64,
    /// Tensors in file order (by data offset).
    infos: Vec<TensorInfo>,
    spans: Vec<Span>,
    by_name: HashMap<String, usize>,
    metadata: BTreeMap<String, String>,
}

impl SafetensorsFile {
    /// Open and index a safetensors file: reads the header only and checks every tensor's byte range
    /// against the file length (a truncated file is reported here, naming the first cut tensor).
    pub fn open(path: &Path) -> Result<SafetensorsFile, IoError> {
        let header_err = |message: String| IoError::SafetensorsHeader {
            file: path.to_path_buf(),
            message,
        };
        let mut f = File::open(path).map_err(|e| IoError::io(path, e))?;
        let file_len = f.metadata().map_err(|e| IoError::io(path, e))?.len();
        let mut len8 = [0u8; 8];
        f.read_exact(&mut len8).map_err(|_| {
            header_err(format!(
                "file of {file_len} bytes is too short for a header"
            ))
        })?;
        let n = u64::from_le_bytes(len8);
        if n > MAX_HEADER {
            return Err(header_err(format!(
                "header length {n} is implausible; not a safetensors file"
            )));
        }
        if 8 + n > file_len {
            return Err(IoError::Truncated {
                file: path.to_path_buf(),
                tensor: "(header)".into(),
                what: format!("the {n}-byte header does not fit in the {file_len}-byte file"),
            });
        }
        let mut header = vec![0u8; n as usize];
        f.read_exact(&mut header)
            .map_err(|e| IoError::io(path, e))?;
        let json: serde_json::Value = serde_json::from_slice(&header)
            .map_err(|e| header_err(format!("header is not JSON: {e}")))?;
        let serde_json::Value::Object(map) = json else {
            return Err(header_err("header is not a JSON object".into()));
        };
        let data_start = 8 + n;
        let data_len = file_len - data_start;
        let mut metadata = BTreeMap::new();
        let mut rows: Vec<(TensorInfo, Span)> = Vec::with_capacity(map.len());
        for (name, v) in map {
            if name == "__metadata__" {
                let serde_json::Value::Object(m) = v else {
                    return Err(header_err("__metadata__ is not an object".into()));
                };
                for (k, v) in m {
                    let serde_json::Value::String(s) = v else {
                        return Err(header_err(format!("__metadata__.{k} is not a string")));
                    };
                    metadata.insert(k, s);
                }
                continue;
            }
            let (info, span) = parse_entry(path, &name, &v, data_len)?;
            rows.push((info, span));
        }
        rows.sort_by_key(|(_, s)| (s.begin, s.end));
        let mut infos = Vec::with_capacity(rows.len());
        let mut spans = Vec::with_capacity(rows.len());
        let mut by_name = HashMap::with_capacity(rows.len());
        for (info, span) in rows {
            by_name.insert(info.name.clone(), infos.len());
            infos.push(info);
            spans.push(span);
        }
        Ok(SafetensorsFile {
            path: path.to_path_buf(),
            data_start,
            infos,
            spans,
            by_name,
            metadata,
        })
    }

    /// The file this reader indexes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tensors in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.infos
    }

    /// Metadata of one tensor.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.infos[i])
    }

    /// The `__metadata__` map (empty when absent).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// Read one tensor's bytes (one seek, one read of exactly its range).
    pub fn read(&self, name: &str) -> Result<RawTensor, IoError> {
        let Some(&i) = self.by_name.get(name) else {
            return Err(IoError::TensorNotFound {
                file: self.path.clone(),
                tensor: name.to_string(),
                count: self.infos.len(),
                hint: String::new(),
            });
        };
        let (info, span) = (&self.infos[i], &self.spans[i]);
        let mut bytes = vec![0u8; (span.end - span.begin) as usize];
        let read_err = |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                IoError::Truncated {
                    file: self.path.clone(),
                    tensor: name.to_string(),
                    what: format!("the file ends before byte {}", self.data_start + span.end),
                }
            } else {
                IoError::ReadTensor {
                    file: self.path.clone(),
                    tensor: name.to_string(),
                    source: e,
                }
            }
        };
        let mut f = File::open(&self.path).map_err(|e| IoError::io(&self.path, e))?;
        f.seek(SeekFrom::Start(self.data_start + span.begin))
            .map_err(read_err)?;
        f.read_exact(&mut bytes).map_err(read_err)?;
        Ok(RawTensor {
            dtype: info.dtype,
            shape: info.shape.clone(),
            bytes,
        })
    }
}

fn parse_entry(
    path: &Path,
    name: &str,
    v: &serde_json::Value,
    data_len: u64,
) -> Result<(TensorInfo, Span), IoError> {
    let invalid = |message: String| IoError::InvalidTensor {
        file: path.to_path_buf(),
        tensor: name.to_string(),
        message,
    };
    let dtype_s = v
        .get("dtype")
        .and_then(|d| d.as_str())
        .ok_or_else(|| invalid("header entry has no dtype".into()))?;
    let dtype = DType::from_safetensors_name(dtype_s)
        .ok_or_else(|| invalid(format!("unsupported safetensors dtype {dtype_s} (supported: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)")))?;
    let shape: Vec<usize> = v
        .get("shape")
        .and_then(|s| s.as_array())
        .ok_or_else(|| invalid("header entry has no shape".into()))?
        .iter()
        .map(|d| d.as_u64().map(|d| d as usize))
        .collect::<Option<_>>()
        .ok_or_else(|| invalid("shape holds a non-integer".into()))?;
    let offs = v
        .get("data_offsets")
        .and_then(|s| s.as_array())
        .filter(|a| a.len() == 2)
        .and_then(|a| Some((a[0].as_u64()?, a[1].as_u64()?)))
        .ok_or_else(|| invalid("data_offsets is not [begin, end]".into()))?;
    let (begin, end) = offs;
    let nbytes = shape
        .iter()
        .try_fold(dtype.size() as u64, |a, &d| a.checked_mul(d as u64));
    if end < begin || Some(end - begin) != nbytes {
        return Err(invalid(format!(
            "data_offsets [{begin}, {end}] do not hold shape {shape:?} of {dtype} ({} bytes)",
            nbytes.map_or("overflowing".to_string(), |b| b.to_string())
        )));
    }
    if end > data_len {
        return Err(IoError::Truncated {
            file: path.to_path_buf(),
            tensor: name.to_string(),
            what: format!(
                "needs bytes [{begin}, {end}) of the data section, which holds only {data_len}"
            ),
        });
    }
    Ok((
        TensorInfo {
            name: name.to_string(),
            dtype,
            shape,
            file: path.to_path_buf(),
        },
        Span { begin, end },
    ))
}

/// Check writer input: valid lengths and unique names. Shared by both writers.
pub(crate) fn validate_for_write(
    path: &Path,
    tensors: &[(&str, &RawTensor)],
) -> Result<(), IoError> {
    let mut seen = std::collections::HashSet::new();
    for (name, t) in tensors {
        let fail = |message: String| IoError::Write {
            file: path.to_path_buf(),
            tensor: name.to_string(),
            message,
        };
        if !seen.insert(*name) {
            return Err(fail("duplicate tensor name".into()));
        }
        t.check_len().map_err(|e| fail(e.to_string()))?;
    }
    Ok(())
}

/// Write `path` atomically: the content goes to a temporary sibling that is renamed into place
/// only once complete, so an interrupted save never leaves a truncated checkpoint under `path`.
pub(crate) fn write_atomically(
    path: &Path,
    body: impl FnOnce(&mut std::io::BufWriter<File>) -> std::io::Result<()>,
) -> Result<(), IoError> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp{}", std::process::id()));
    let result = (|| {
        let f = File::create(&tmp)?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        body(&mut w)?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        IoError::io(path, e)
    })
}

/// Write a safetensors file with `tensors` and `metadata` (`__metadata__`).
///
/// Data is laid out like the `safetensors` library does: sorted by dtype size (largest first, so
/// every tensor is aligned to its element size) then by name; the header is space-padded to a
/// multiple of 8 bytes. The file is written atomically.
pub fn write_safetensors(
    path: &Path,
    tensors: &[(&str, &RawTensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<(), IoError> {
    validate_for_write(path, tensors)?;
    if let Some((name, _)) = tensors.iter().find(|(n, _)| *n == "__metadata__") {
        return Err(IoError::Write {
            file: path.to_path_buf(),
            tensor: name.to_string(),
            message: "`__metadata__` is reserved".into(),
        });
    }
    let mut order: Vec<&(&str, &RawTensor)> = tensors.iter().collect();
    order.sort_by(|a, b| b.1.dtype.size().cmp(&a.1.dtype.size()).then(a.0.cmp(b.0)));

    let q = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    let mut header = String::from("{");
    if !metadata.is_empty() {
        let items: Vec<String> = metadata
            .iter()
            .map(|(k, v)| format!("{}:{}", q(k), q(v)))
            .collect();
        header.push_str(&format!("\"__metadata__\":{{{}}}", items.join(",")));
    }
    let mut offset = 0u64;
    for (i, (name, t)) in order.iter().enumerate() {
        if i > 0 || !metadata.is_empty() {
            header.push(',');
        }
        let shape: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
        let end = offset + t.bytes.len() as u64;
        header.push_str(&format!(
            "{}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{offset},{end}]}}",
            q(name),
            t.dtype.safetensors_name(),
            shape.join(",")
        ));
        offset = end;
    }
    header.push('}');
    while (8 + header.len()) % 8 != 0 {
        header.push(' ');
    }
    write_atomically(path, |w| {
        w.write_all(&(header.len() as u64).to_le_bytes())?;
        w.write_all(header.as_bytes())?;
        for (_, t) in &order {
            w.write_all(&t.bytes)?;
        }
        Ok(())
    })
}
