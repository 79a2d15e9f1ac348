//! Streaming reader of `torch.save` zip archives (PyTorch >= 1.6): indexes `data.pkl` through the
//! code-free pickle VM, locates each storage record (`<archive>/data/<key>`) in the zip, and reads a
//! tensor's bytes only when asked — for STORED records (what torch writes) by seeking straight to
//! the byte range, so peak memory while reading is about the size of that one tensor.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use zip::CompressionMethod;

use super::error::IoError;
use super::state_dict::{TensorRef, parse_state_dict};
use super::tensor::{RawTensor, TensorInfo};

/// Upper bound for `data.pkl` (the real 6B checkpoint's pickle is ~40 KB).
const MAX_PICKLE_BYTES: u64 = 256 << 20;

/// Where a storage record's bytes are.
#[derive(Debug, Clone)]
struct Record {
    /// Full entry name, e.g. `pytorch_model/data/3`.
    name: String,
    /// Index in the zip central directory.
    index: usize,
    /// Absolute file offset of the record's first byte (meaningful for STORED records).
    data_start: u64,
    size: u64,
    crc32: u32,
    stored: bool,
}

#[derive(Debug, Clone)]
struct Entry {
    tensor: TensorRef,
    record: Record,
}

/// An opened `torch.save` zip archive holding a state dict.
#[derive(Debug, Clone)]
pub struct TorchFile {
    path: PathBuf,
    archive: String,
    big_endian: bool,
    /// Tensor metadata in file order (by record position, then storage offset).
    infos: Vec<TensorInfo>,
    entries: Vec<Entry>,
    by_name: HashMap<String, usize>,
}

/// Whether `head` starts a legacy (pre-1.6) torch file: a raw pickle stream or the older tar format.
pub(crate) fn looks_like_legacy_torch(head: &[u8]) -> bool {
    head.starts_with(b"\x80\x02") || head.get(257..262) == Some(b"ustar".as_slice())
}

/// Read as many bytes as are available up to `buf.len()`.
pub(crate) fn read_up_to(mut r: impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn zip_err(path: &Path, e: impl ToString) -> IoError {
    IoError::Zip {
        file: path.to_path_buf(),
        message: e.to_string(),
    }
}

type Zip = zip::ZipArchive<BufReader<File>>;

impl TorchFile {
    /// Open and index a torch zip archive. Reads the zip directory, `data.pkl`, `byteorder` and one
    /// local header per storage record; no tensor data.
    pub fn open(path: &Path) -> Result<TorchFile, IoError> {
        let mut file = File::open(path).map_err(|e| IoError::io(path, e))?;
        let file_len = file.metadata().map_err(|e| IoError::io(path, e))?.len();
        let mut head = [0u8; 512];
        let n = read_up_to(&mut file, &mut head).map_err(|e| IoError::io(path, e))?;
        if !head[..n].starts_with(b"PK\x03\x04") {
            if looks_like_legacy_torch(&head[..n]) {
                return Err(IoError::LegacyTorch {
                    file: path.to_path_buf(),
                });
            }
            return Err(zip_err(
                path,
                "no zip local header at the start of the file",
            ));
        }
        let reader = File::open(path).map_err(|e| IoError::io(path, e))?;
        let mut zip = zip::ZipArchive::new(BufReader::new(reader)).map_err(|e| zip_err(path, e))?;
        let (archive, pkl_index) = find_archive(path, &zip)?;

        let pickle = read_small_record(path, &mut zip, pkl_index)?;
        let big_endian = match zip.index_for_name(&format!("{archive}/byteorder")) {
            None => false,
            Some(i) => match read_small_record(path, &mut zip, i)?.as_slice() {
                b"little" => false,
                b"big" => true,
                other => {
                    return Err(IoError::NotStateDict {
                        file: path.to_path_buf(),
                        message: format!(
                            "unknown byteorder record {:?}",
                            String::from_utf8_lossy(other)
                        ),
                    });
                }
            },
        };

        let tensors = parse_state_dict(path, &pickle)?;
        let mut records: HashMap<String, Record> = HashMap::new();
        let mut named: Vec<(String, Entry)> = Vec::with_capacity(tensors.len());
        for (name, tensor) in tensors {
            let key = tensor.storage.key.clone();
            let record = match records.get(&key) {
                Some(r) => r.clone(),
                None => {
                    let r =
                        locate_record(path, &mut zip, &mut file, file_len, &archive, &name, &key)?;
                    records.insert(key, r.clone());
                    r
                }
            };
            check_view(path, &name, &tensor, &record)?;
            named.push((name, Entry { tensor, record }));
        }
        // File order: records by position, views of one storage by offset; stable otherwise.
        named.sort_by_key(|(_, e)| (e.record.data_start, e.tensor.offset));
        let mut infos = Vec::with_capacity(named.len());
        let mut entries = Vec::with_capacity(named.len());
        let mut by_name = HashMap::with_capacity(named.len());
        for (name, e) in named {
            by_name.insert(name.clone(), entries.len());
            infos.push(TensorInfo {
                name,
                dtype: e.tensor.storage.dtype,
                shape: e.tensor.shape.clone(),
                file: path.to_path_buf(),
            });
            entries.push(e);
        }
        tracing::debug!(file = %path.display(), archive = %archive, tensors = infos.len(), "indexed torch checkpoint");
        Ok(TorchFile {
            path: path.to_path_buf(),
            archive,
            big_endian,
            infos,
            entries,
            by_name,
        })
    }

    /// The file this reader indexes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Name of the archive's top folder (torch uses the file stem, e.g. `pytorch_model`).
    pub fn archive_name(&self) -> &str {
        &self.archive
    }

    /// Tensors in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.infos
    }

    /// Metadata of one tensor.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.infos[i])
    }

    /// Read one tensor (contiguous, row-major). Only this tensor's bytes are read.
    pub fn read(&self, name: &str) -> Result<RawTensor, IoError> {
        let Some(&i) = self.by_name.get(name) else {
            return Err(IoError::TensorNotFound {
                file: self.path.clone(),
                tensor: name.to_string(),
                count: self.infos.len(),
                hint: String::new(),
            });
        };
        let Entry { tensor: t, record } = &self.entries[i];
        let es = t.storage.dtype.size();
        let numel: usize = t.shape.iter().product();
        let mut bytes = if numel == 0 {
            Vec::new()
        } else if is_contiguous(&t.shape, &t.strides) {
            let start = t.offset as usize * es;
            self.read_record_range(name, record, start as u64, numel * es)?
        } else {
            // Strided view: read the storage span it touches, then gather row-major.
            let last: usize = t
                .shape
                .iter()
                .zip(&t.strides)
                .map(|(&d, &s)| (d - 1) * s)
                .sum();
            let span =
                self.read_record_range(name, record, t.offset * es as u64, (last + 1) * es)?;
            gather(&span, es, &t.shape, &t.strides)
        };
        if self.big_endian && es > 1 {
            for c in bytes.chunks_exact_mut(es) {
                c.reverse();
            }
        }
        Ok(RawTensor {
            dtype: t.storage.dtype,
            shape: t.shape.clone(),
            bytes,
        })
    }

    /// Read `len` bytes at `start` of a record's uncompressed data.
    fn read_record_range(
        &self,
        tensor: &str,
        record: &Record,
        start: u64,
        len: usize,
    ) -> Result<Vec<u8>, IoError> {
        let mut buf = vec![0u8; len];
        let truncated = |what: String| IoError::Truncated {
            file: self.path.clone(),
            tensor: tensor.to_string(),
            what,
        };
        let read_err = |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                truncated(format!(
                    "record `{}` ends before byte {}",
                    record.name,
                    start + len as u64
                ))
            } else {
                IoError::ReadTensor {
                    file: self.path.clone(),
                    tensor: tensor.to_string(),
                    source: e,
                }
            }
        };
        if record.stored {
            let mut f = File::open(&self.path).map_err(|e| IoError::io(&self.path, e))?;
            f.seek(SeekFrom::Start(record.data_start + start))
                .map_err(read_err)?;
            f.read_exact(&mut buf).map_err(read_err)?;
            if start == 0 && len as u64 == record.size {
                let found = crc32fast::hash(&buf);
                if found != record.crc32 {
                    return Err(IoError::Corrupt {
                        file: self.path.clone(),
                        tensor: tensor.to_string(),
                        record: record.name.clone(),
                        expected: record.crc32,
                        found,
                    });
                }
            }
        } else {
            // Compressed record (archive re-zipped by another tool): stream through the decoder.
            let mut zip = open_zip(&self.path)?;
            let mut zf = zip
                .by_index(record.index)
                .map_err(|e| zip_err(&self.path, e))?;
            std::io::copy(&mut (&mut zf).take(start), &mut std::io::sink()).map_err(read_err)?;
            zf.read_exact(&mut buf).map_err(read_err)?;
        }
        Ok(buf)
    }
}

fn open_zip(path: &Path) -> Result<Zip, IoError> {
    let f = File::open(path).map_err(|e| IoError::io(path, e))?;
    zip::ZipArchive::new(BufReader::new(f)).map_err(|e| zip_err(path, e))
}

/// Find the archive folder and the index of `<archive>/data.pkl`.
fn find_archive(path: &Path, zip: &Zip) -> Result<(String, usize), IoError> {
    let mut names = zip.file_names();
    let found = names.find_map(|n| {
        let (dir, file) = n.rsplit_once('/')?;
        (file == "data.pkl" && !dir.contains('/')).then(|| dir.to_string())
    });
    match found {
        Some(dir) => {
            let idx = zip
                .index_for_name(&format!("{dir}/data.pkl"))
                .ok_or_else(|| zip_err(path, "data.pkl vanished from the directory"))?;
            Ok((dir, idx))
        }
        None => {
            let torchscript = zip
                .file_names()
                .any(|n| n.ends_with("/constants.pkl") || n.contains("/code/"));
            Err(IoError::NotStateDict {
                file: path.to_path_buf(),
                message: if torchscript {
                    "this is a TorchScript archive (torch.jit.save), not a state dict; load it in Python and \
                     torch.save(model.state_dict(), ...) instead"
                        .into()
                } else {
                    "the zip archive has no `<archive>/data.pkl`; not a torch.save file".into()
                },
            })
        }
    }
}

fn read_small_record(path: &Path, zip: &mut Zip, index: usize) -> Result<Vec<u8>, IoError> {
    let mut zf = zip.by_index(index).map_err(|e| zip_err(path, e))?;
    let name = zf.name().to_string();
    if zf.size() > MAX_PICKLE_BYTES {
        return Err(IoError::NotStateDict {
            file: path.to_path_buf(),
            message: format!("record `{name}` claims {} bytes; refusing", zf.size()),
        });
    }
    let mut out = Vec::with_capacity(zf.size() as usize);
    zf.read_to_end(&mut out)
        .map_err(|e| zip_err(path, format!("reading `{name}`: {e}")))?;
    Ok(out)
}

/// Locate `<archive>/data/<key>`: its directory entry and, for STORED records, the absolute data
/// offset from its local header (30 fixed bytes + name + extra, where torch puts its alignment pad).
fn locate_record(
    path: &Path,
    zip: &mut Zip,
    file: &mut File,
    file_len: u64,
    archive: &str,
    tensor: &str,
    key: &str,
) -> Result<Record, IoError> {
    let name = format!("{archive}/data/{key}");
    let Some(index) = zip.index_for_name(&name) else {
        return Err(IoError::MissingRecord {
            file: path.to_path_buf(),
            tensor: tensor.to_string(),
            record: name,
        });
    };
    let (stored, size, compressed, crc32, header_start) = {
        let zf = zip.by_index_raw(index).map_err(|e| zip_err(path, e))?;
        (
            zf.compression() == CompressionMethod::Stored,
            zf.size(),
            zf.compressed_size(),
            zf.crc32(),
            zf.header_start(),
        )
    };
    let mut lh = [0u8; 30];
    let truncated = |what: String| IoError::Truncated {
        file: path.to_path_buf(),
        tensor: tensor.to_string(),
        what,
    };
    file.seek(SeekFrom::Start(header_start))
        .map_err(|e| IoError::io(path, e))?;
    file.read_exact(&mut lh).map_err(|_| {
        truncated(format!(
            "local header of `{name}` at byte {header_start} is cut off"
        ))
    })?;
    if &lh[..4] != b"PK\x03\x04" {
        return Err(zip_err(
            path,
            format!("bad local header signature for `{name}` at byte {header_start}"),
        ));
    }
    let name_len = u16::from_le_bytes([lh[26], lh[27]]) as u64;
    let extra_len = u16::from_le_bytes([lh[28], lh[29]]) as u64;
    let data_start = header_start + 30 + name_len + extra_len;
    if data_start + compressed > file_len {
        return Err(truncated(format!(
            "record `{name}` needs bytes {data_start}..{} but the file has {file_len}",
            data_start + compressed
        )));
    }
    Ok(Record {
        name,
        index,
        data_start,
        size,
        crc32,
        stored,
    })
}

/// Check that a view fits its storage and the storage fits its record.
fn check_view(path: &Path, name: &str, t: &TensorRef, record: &Record) -> Result<(), IoError> {
    let invalid = |message: String| IoError::InvalidTensor {
        file: path.to_path_buf(),
        tensor: name.to_string(),
        message,
    };
    let es = t.storage.dtype.size() as u64;
    let storage_bytes = t
        .storage
        .numel
        .checked_mul(es)
        .ok_or_else(|| invalid("storage size overflows".into()))?;
    if record.size < storage_bytes {
        return Err(IoError::Truncated {
            file: path.to_path_buf(),
            tensor: name.to_string(),
            what: format!(
                "record `{}` holds {} bytes but its storage of {} {} elements needs {storage_bytes}",
                record.name, record.size, t.storage.numel, t.storage.dtype
            ),
        });
    }
    let numel = t
        .shape
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d as u64));
    let Some(numel) = numel else {
        return Err(invalid(format!("shape {:?} overflows", t.shape)));
    };
    if numel == 0 {
        return Ok(());
    }
    let mut last = t.offset;
    for (&d, &s) in t.shape.iter().zip(&t.strides) {
        let step = ((d as u64) - 1)
            .checked_mul(s as u64)
            .ok_or_else(|| invalid("strides overflow".into()))?;
        last = last
            .checked_add(step)
            .ok_or_else(|| invalid("strides overflow".into()))?;
    }
    if last >= t.storage.numel {
        return Err(invalid(format!(
            "view (offset {}, shape {:?}, strides {:?}) reaches element {last} of a storage with {} elements",
            t.offset, t.shape, t.strides, t.storage.numel
        )));
    }
    Ok(())
}

/// Row-major contiguity as torch defines it (dims of size 1 may have any stride).
pub(crate) fn is_contiguous(shape: &[usize], strides: &[usize]) -> bool {
    let mut expected = 1usize;
    for (&d, &s) in shape.iter().zip(strides).rev() {
        if d != 1 {
            if s != expected {
                return false;
            }
            expected *= d;
        }
    }
    true
}

/// Gather a strided view out of `span` (which starts at the view's element 0) into row-major bytes.
pub(crate) fn gather(span: &[u8], es: usize, shape: &[usize], strides: &[usize]) -> Vec<u8> {
    let numel: usize = shape.iter().product();
    let mut out = Vec::with_capacity(numel * es);
    if numel == 0 {
        return out;
    }
    let rank = shape.len();
    let mut idx = vec![0usize; rank];
    let mut off = 0usize;
    for _ in 0..numel {
        out.extend_from_slice(&span[off * es..off * es + es]);
        // Odometer increment over the dims, innermost first.
        for d in (0..rank).rev() {
            idx[d] += 1;
            off += strides[d];
            if idx[d] < shape[d] {
                break;
            }
            off -= strides[d] * shape[d];
            idx[d] = 0;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguity_and_gather() {
        assert!(is_contiguous(&[2, 3], &[3, 1]));
        assert!(is_contiguous(&[4, 1], &[1, 7]));
        assert!(is_contiguous(&[], &[]));
        assert!(!is_contiguous(&[2, 3], &[1, 2]));
        // Transposed view of a [3, 2] row-major u8 storage 0..6 -> [2, 3].
        let storage: Vec<u8> = (0..6).collect();
        assert_eq!(
            gather(&storage, 1, &[2, 3], &[1, 2]),
            vec![0, 2, 4, 1, 3, 5]
        );
        // Broadcast (stride 0) and 2-byte elements.
        let s16: Vec<u8> = vec![1, 0, 2, 0];
        assert_eq!(
            gather(&s16, 2, &[2, 2], &[0, 1]),
            vec![1, 0, 2, 0, 1, 0, 2, 0]
        );
    }
}
