//! `torch.save`-compatible writer: a state dict of contiguous CPU tensors, byte for byte in the
//! layout torch >= 2 produces (checked against the golden checkpoints written by the reference).
//!
//! Archive (`<stem>` = file stem, as torch names it): `<stem>/data.pkl` (protocol-2 pickle),
//! `.format_version` ("1"), `.storage_alignment` ("64"), `byteorder` ("little"), `data/0..n` (one
//! storage per tensor), `version` ("3\n"), `.data/serialization_id`. Every record is STORED with a
//! data descriptor; its data starts on a 64-byte boundary thanks to an "FB" extra field of 'Z's
//! (torch's miniz padding), and zip64 records are used where sizes/offsets pass 4 GiB.

use std::io::Write;
use std::path::Path;

use super::error::IoError;
use super::safetensors_io::{validate_for_write, write_atomically};
use super::tensor::{DType, RawTensor};

/// The Python container of the saved state dict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TorchContainer {
    /// A plain `dict`, as the reference Trainer's `save_pretrained(state_dict=filtered)` writes
    /// the prefix checkpoint (`checkpoint-N/pytorch_model.bin`).
    #[default]
    Dict,
    /// `collections.OrderedDict`, as `torch.save(model.state_dict())` writes.
    OrderedDict,
}

/// Write `tensors` (in this order) as a `torch.save` state dict that `torch.load` reads back as a
/// `dict` of contiguous tensors with exactly these keys. The file is written atomically.
pub fn write_torch_state_dict(path: &Path, tensors: &[(&str, &RawTensor)]) -> Result<(), IoError> {
    write_torch_state_dict_with(path, tensors, TorchContainer::Dict)
}

/// [`write_torch_state_dict`] with a choice of container.
pub fn write_torch_state_dict_with(
    path: &Path,
    tensors: &[(&str, &RawTensor)],
    container: TorchContainer,
) -> Result<(), IoError> {
    validate_for_write(path, tensors)?;
    let archive = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| IoError::Write {
            file: path.to_path_buf(),
            tensor: String::new(),
            message: "the path has no file name".into(),
        })?;
    let pickle = state_dict_pickle(tensors, container);
    write_atomically(path, |w| {
        let mut z = TorchZipWriter::new(w, &archive, u32::MAX as u64);
        z.record("data.pkl", &pickle)?;
        z.record(".format_version", b"1")?;
        z.record(".storage_alignment", b"64")?;
        z.record("byteorder", b"little")?;
        for (i, (_, t)) in tensors.iter().enumerate() {
            z.record(&format!("data/{i}"), &t.bytes)?;
        }
        z.finish()
    })
}

// ---------------------------------------------------------------------------------------------
// Pickle emission, replaying CPython's protocol-2 `Pickler` on what `torch.save` hands it.

/// Memo slots of objects that CPython would pickle once and then refer to by `BINGET`.
#[derive(Default)]
struct Shared {
    rebuild: Option<u32>,
    ordered_dict: Option<u32>,
    storage_tag: Option<u32>,
    cpu: Option<u32>,
    storage_types: Vec<(DType, u32)>,
}

struct Pickler {
    out: Vec<u8>,
    next_memo: u32,
}

impl Pickler {
    fn put(&mut self) -> u32 {
        let i = self.next_memo;
        if i < 256 {
            self.out.extend_from_slice(&[b'q', i as u8]);
        } else {
            self.out.push(b'r');
            self.out.extend_from_slice(&i.to_le_bytes());
        }
        self.next_memo += 1;
        i
    }

    fn get(&mut self, i: u32) {
        if i < 256 {
            self.out.extend_from_slice(&[b'h', i as u8]);
        } else {
            self.out.push(b'j');
            self.out.extend_from_slice(&i.to_le_bytes());
        }
    }

    /// A memoized global, or `GLOBAL module\nname\n` + memo.
    fn global(&mut self, slot: Option<u32>, module: &str, name: &str) -> u32 {
        if let Some(i) = slot {
            self.get(i);
            return i;
        }
        self.out.push(b'c');
        self.out
            .extend_from_slice(format!("{module}\n{name}\n").as_bytes());
        self.put()
    }

    /// `BINUNICODE` + memo (protocol 2 has no short form).
    fn str(&mut self, s: &str) -> u32 {
        self.out.push(b'X');
        self.out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.out.extend_from_slice(s.as_bytes());
        self.put()
    }

    fn memo_str(&mut self, slot: Option<u32>, s: &str) -> u32 {
        match slot {
            Some(i) => {
                self.get(i);
                i
            }
            None => self.str(s),
        }
    }

    /// CPython `save_long`: BININT1 / BININT2 / BININT, else LONG1 (minimal two's complement).
    fn int(&mut self, v: u64) {
        if v <= 0xff {
            self.out.extend_from_slice(&[b'K', v as u8]);
        } else if v <= 0xffff {
            self.out.push(b'M');
            self.out.extend_from_slice(&(v as u16).to_le_bytes());
        } else if v <= 0x7fff_ffff {
            self.out.push(b'J');
            self.out.extend_from_slice(&(v as u32).to_le_bytes());
        } else {
            let nbytes = ((64 - v.leading_zeros()) >> 3) as usize + 1;
            let mut b = [0u8; 9];
            b[..8].copy_from_slice(&v.to_le_bytes());
            self.out.extend_from_slice(&[0x8a, nbytes as u8]);
            self.out.extend_from_slice(&b[..nbytes]);
        }
    }

    /// A tuple of ints: `EMPTY_TUPLE` (not memoized), TUPLE1-3, or MARK ... TUPLE; then memo.
    fn int_tuple(&mut self, items: &[usize]) {
        if items.is_empty() {
            self.out.push(b')');
            return;
        }
        if items.len() > 3 {
            self.out.push(b'(');
        }
        for &v in items {
            self.int(v as u64);
        }
        self.out.push(match items.len() {
            1 => 0x85,
            2 => 0x86,
            3 => 0x87,
            _ => b't',
        });
        self.put();
    }
}

/// Contiguous row-major strides as torch computes them (a size-0/1 dim counts as 1).
fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; shape.len()];
    let mut acc = 1usize;
    for i in (0..shape.len()).rev() {
        strides[i] = acc;
        acc *= shape[i].max(1);
    }
    strides
}

fn state_dict_pickle(tensors: &[(&str, &RawTensor)], container: TorchContainer) -> Vec<u8> {
    let mut p = Pickler {
        out: vec![0x80, 2],
        next_memo: 0,
    };
    let mut sh = Shared::default();
    match container {
        TorchContainer::Dict => {
            p.out.push(b'}');
            p.put();
        }
        TorchContainer::OrderedDict => {
            sh.ordered_dict = Some(p.global(None, "collections", "OrderedDict"));
            p.out.extend_from_slice(b")R");
            p.put();
        }
    }
    // CPython `_batch_setitems`: batches of 1000, MARK ... SETITEMS, a lone item uses SETITEM.
    for (b, batch) in tensors.chunks(1000).enumerate() {
        if batch.len() > 1 {
            p.out.push(b'(');
        }
        for (i, (name, t)) in batch.iter().enumerate() {
            p.str(name);
            tensor(&mut p, &mut sh, t, b * 1000 + i);
        }
        p.out.push(if batch.len() > 1 { b'u' } else { b's' });
    }
    p.out.push(b'.');
    p.out
}

/// `_rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict())` with the storage as
/// `BINPERSID ('storage', torch.<T>Storage, key, 'cpu', numel)`.
fn tensor(p: &mut Pickler, sh: &mut Shared, t: &RawTensor, key: usize) {
    sh.rebuild = Some(p.global(sh.rebuild, "torch._utils", "_rebuild_tensor_v2"));
    p.out.extend_from_slice(b"((");
    sh.storage_tag = Some(p.memo_str(sh.storage_tag, "storage"));
    let slot = sh
        .storage_types
        .iter()
        .find(|(d, _)| *d == t.dtype)
        .map(|&(_, i)| i);
    let i = p.global(slot, "torch", t.dtype.torch_storage_name());
    if slot.is_none() {
        sh.storage_types.push((t.dtype, i));
    }
    p.str(&key.to_string());
    sh.cpu = Some(p.memo_str(sh.cpu, "cpu"));
    p.int(t.numel() as u64);
    p.out.push(b't');
    p.put();
    p.out.push(b'Q');
    p.int(0);
    p.int_tuple(&t.shape);
    p.int_tuple(&contiguous_strides(&t.shape));
    p.out.push(0x89);
    sh.ordered_dict = Some(p.global(sh.ordered_dict, "collections", "OrderedDict"));
    p.out.extend_from_slice(b")R");
    p.put();
    p.out.push(b't');
    p.put();
    p.out.push(b'R');
    p.put();
}

// ---------------------------------------------------------------------------------------------
// Zip container, replaying torch's `PyTorchStreamWriter` on miniz.

const ALIGN: u64 = 64;

struct CentralEntry {
    name: Vec<u8>,
    flags: u16,
    crc: u32,
    size: u64,
    offset: u64,
    zip64_extra: Vec<u8>,
}

/// Stored-only zip writer that reproduces the exact bytes torch writes.
pub(crate) struct TorchZipWriter<'w, W: Write> {
    w: &'w mut W,
    archive: String,
    pos: u64,
    central: Vec<CentralEntry>,
    /// `c10::hash_combine` of every data-descriptor CRC, torch's second half of the serialization id.
    combined_crc: u64,
    /// Record names in write order (first half of the serialization id).
    names: Vec<String>,
    /// Sizes/offsets at or above this need zip64 fields (4 GiB - 1 in real files; lowered in tests).
    zip64_limit: u64,
}

fn hash_combine(seed: u64, value: u64) -> u64 {
    seed ^ value
        .wrapping_add(0x9e37_79b9)
        .wrapping_add(seed << 6)
        .wrapping_add(seed >> 2)
}

impl<'w, W: Write> TorchZipWriter<'w, W> {
    pub(crate) fn new(w: &'w mut W, archive: &str, zip64_limit: u64) -> Self {
        TorchZipWriter {
            w,
            archive: archive.to_string(),
            pos: 0,
            central: Vec::new(),
            combined_crc: 0,
            names: Vec::new(),
            zip64_limit,
        }
    }

    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.w.write_all(bytes)?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    /// miniz's zip64 extra field: id 1, then uncompressed + compressed size and/or header offset.
    fn zip64_extra(&self, size: u64, offset: u64) -> Vec<u8> {
        let big_size = size >= self.zip64_limit;
        let big_ofs = offset >= self.zip64_limit;
        if !big_size && !big_ofs {
            return Vec::new();
        }
        let mut body = Vec::new();
        if big_size {
            body.extend_from_slice(&size.to_le_bytes());
            body.extend_from_slice(&size.to_le_bytes());
        }
        if big_ofs {
            body.extend_from_slice(&offset.to_le_bytes());
        }
        let mut e = vec![1, 0];
        e.extend_from_slice(&(body.len() as u16).to_le_bytes());
        e.extend_from_slice(&body);
        e
    }

    /// Write one record `<archive>/<name>`.
    pub(crate) fn record(&mut self, name: &str, data: &[u8]) -> std::io::Result<()> {
        let full = format!("{}/{name}", self.archive).into_bytes();
        let size = data.len() as u64;
        let offset = self.pos;
        let zip64 = self.zip64_extra(size, offset);
        // torch `getPadding`: pad so the data after header + name + zip64 extra + "FB" field starts
        // on a 64-byte boundary; the "FB" field (id "FB", u16 length, 'Z' * length) is always there.
        let start = offset + 30 + full.len() as u64 + zip64.len() as u64 + 4;
        let pad = (ALIGN - start % ALIGN) % ALIGN;
        let mut extra = zip64.clone();
        extra.extend_from_slice(b"FB");
        extra.extend_from_slice(&(pad as u16).to_le_bytes());
        extra.extend(std::iter::repeat_n(b'Z', pad as usize));

        // Local header: version 0, flags UTF-8 name (0x0800) + data descriptor (0x0008), STORED,
        // time/date/crc/sizes 0. miniz writes no data descriptor (and no flag) for an empty record.
        let flags: u16 = if data.is_empty() { 0x0800 } else { 0x0808 };
        let mut lh = Vec::with_capacity(30);
        lh.extend_from_slice(b"PK\x03\x04");
        lh.extend_from_slice(&0u16.to_le_bytes());
        lh.extend_from_slice(&flags.to_le_bytes());
        lh.extend_from_slice(&[0u8; 18]);
        lh.extend_from_slice(&(full.len() as u16).to_le_bytes());
        lh.extend_from_slice(&(extra.len() as u16).to_le_bytes());
        self.put(&lh)?;
        self.put(&full)?;
        self.put(&extra)?;
        self.put(data)?;
        let crc = crc32fast::hash(data);
        // torch's write callback folds every written buffer that starts with the data-descriptor
        // signature into the id; miniz writes the STORED data in one call, so a record whose data
        // happens to start with it is counted too.
        if data.len() >= 8 && data[..4] == *b"PK\x07\x08" {
            self.combined_crc = hash_combine(
                self.combined_crc,
                u32::from_le_bytes([data[4], data[5], data[6], data[7]]) as u64,
            );
        }
        if !data.is_empty() {
            let mut dd = Vec::with_capacity(24);
            dd.extend_from_slice(b"PK\x07\x08");
            dd.extend_from_slice(&crc.to_le_bytes());
            if zip64.is_empty() {
                dd.extend_from_slice(&(size as u32).to_le_bytes());
                dd.extend_from_slice(&(size as u32).to_le_bytes());
            } else {
                dd.extend_from_slice(&size.to_le_bytes());
                dd.extend_from_slice(&size.to_le_bytes());
            }
            self.put(&dd)?;
            self.combined_crc = hash_combine(self.combined_crc, crc as u64);
        }
        self.names.push(name.to_string());
        self.central.push(CentralEntry {
            name: full,
            flags,
            crc,
            size,
            offset,
            zip64_extra: zip64,
        });
        Ok(())
    }

    /// Write `version`, `.data/serialization_id`, the central directory and the (zip64) end records.
    pub(crate) fn finish(mut self) -> std::io::Result<()> {
        self.record("version", b"3\n")?;
        // torch: 20 digits of a hash of the record names (std::hash, implementation-defined; here
        // FNV-1a, since torch.load treats the id as opaque) + 20 digits of the combined CRC.
        let names_hash = self.names.iter().fold(0u64, |acc, n| {
            let h = n.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
            });
            hash_combine(acc, h)
        });
        let id = format!("{names_hash:020}{:020}", self.combined_crc);
        self.record(".data/serialization_id", id.as_bytes())?;

        let cd_start = self.pos;
        let central = std::mem::take(&mut self.central);
        for e in &central {
            let mut h = Vec::with_capacity(46);
            h.extend_from_slice(b"PK\x01\x02");
            h.extend_from_slice(&0u16.to_le_bytes()); // version made by
            h.extend_from_slice(&0u16.to_le_bytes()); // version needed
            h.extend_from_slice(&e.flags.to_le_bytes());
            h.extend_from_slice(&[0u8; 6]); // method, time, date
            h.extend_from_slice(&e.crc.to_le_bytes());
            let size32 = e.size.min(u32::MAX as u64) as u32;
            let size32 = if e.size >= self.zip64_limit {
                u32::MAX
            } else {
                size32
            };
            h.extend_from_slice(&size32.to_le_bytes());
            h.extend_from_slice(&size32.to_le_bytes());
            h.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
            h.extend_from_slice(&(e.zip64_extra.len() as u16).to_le_bytes());
            h.extend_from_slice(&[0u8; 10]); // comment len, disk, internal attr, external attr
            let ofs32 = if e.offset >= self.zip64_limit {
                u32::MAX
            } else {
                e.offset as u32
            };
            h.extend_from_slice(&ofs32.to_le_bytes());
            self.put(&h)?;
            self.put(&e.name)?;
            self.put(&e.zip64_extra)?;
        }
        let cd_size = self.pos - cd_start;
        let n = central.len() as u64;
        // miniz in zip64 mode (torch always) writes the zip64 end record and locator.
        let eocd64_pos = self.pos;
        let mut r = Vec::with_capacity(56 + 20 + 22);
        r.extend_from_slice(b"PK\x06\x06");
        r.extend_from_slice(&44u64.to_le_bytes());
        r.extend_from_slice(&0x031eu16.to_le_bytes());
        r.extend_from_slice(&0x002du16.to_le_bytes());
        r.extend_from_slice(&[0u8; 8]);
        r.extend_from_slice(&n.to_le_bytes());
        r.extend_from_slice(&n.to_le_bytes());
        r.extend_from_slice(&cd_size.to_le_bytes());
        r.extend_from_slice(&cd_start.to_le_bytes());
        r.extend_from_slice(b"PK\x06\x07");
        r.extend_from_slice(&0u32.to_le_bytes());
        r.extend_from_slice(&eocd64_pos.to_le_bytes());
        r.extend_from_slice(&1u32.to_le_bytes());
        r.extend_from_slice(b"PK\x05\x06");
        r.extend_from_slice(&[0u8; 4]);
        r.extend_from_slice(&(n.min(0xffff) as u16).to_le_bytes());
        r.extend_from_slice(&(n.min(0xffff) as u16).to_le_bytes());
        r.extend_from_slice(&(cd_size.min(u32::MAX as u64) as u32).to_le_bytes());
        r.extend_from_slice(&(cd_start.min(u32::MAX as u64) as u32).to_le_bytes());
        r.extend_from_slice(&0u16.to_le_bytes());
        self.put(&r)?;
        self.w.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pickle_ints_match_cpython() {
        let mut p = Pickler {
            out: Vec::new(),
            next_memo: 0,
        };
        for v in [
            0u64,
            255,
            256,
            65535,
            65536,
            0x7fff_ffff,
            0x8000_0000,
            1 << 40,
        ] {
            p.int(v);
        }
        assert_eq!(
            p.out,
            [
                &b"K\x00K\xffM\x00\x01M\xff\xffJ\x00\x00\x01\x00J\xff\xff\xff\x7f"[..],
                b"\x8a\x05\x00\x00\x00\x80\x00",
                b"\x8a\x06\x00\x00\x00\x00\x00\x01",
            ]
            .concat()
        );
        assert_eq!(contiguous_strides(&[2, 3, 4]), vec![12, 4, 1]);
        assert_eq!(contiguous_strides(&[3, 0]), vec![1, 1]);
    }

    #[test]
    fn golden_prefix_pickle_is_reproduced() {
        // data.pkl of the reference Trainer's prefix checkpoint (one f32 [4, 384] tensor).
        let golden = b"\x80\x02}q\x00X+\x00\x00\x00transformer.prefix_encoder.embedding.weightq\x01ctorch._utils\n_rebuild_tensor_v2\nq\x02((X\x07\x00\x00\x00storageq\x03ctorch\nFloatStorage\nq\x04X\x01\x00\x00\x000q\x05X\x03\x00\x00\x00cpuq\x06M\x00\x06tq\x07QK\x00K\x04M\x80\x01\x86q\x08M\x80\x01K\x01\x86q\t\x89ccollections\nOrderedDict\nq\n)Rq\x0btq\x0cRq\rs.";
        let t = RawTensor::from_f32(vec![4, 384], &[0.0; 1536]).unwrap();
        let ours = state_dict_pickle(
            &[("transformer.prefix_encoder.embedding.weight", &t)],
            TorchContainer::Dict,
        );
        assert_eq!(ours.as_slice(), golden.as_slice());
    }

    #[test]
    fn empty_records_have_no_data_descriptor() {
        // As miniz (checked against torch.save): flags 0x0800 and the next header right at the
        // aligned data start.
        let mut buf = Vec::new();
        let mut z = TorchZipWriter::new(&mut buf, "a", u32::MAX as u64);
        z.record("e", b"").unwrap();
        z.record("f", b"x").unwrap();
        z.finish().unwrap();
        assert_eq!(&buf[6..8], &0x0800u16.to_le_bytes());
        assert_eq!(&buf[64..68], b"PK\x03\x04");
        assert_eq!(&buf[64 + 6..64 + 8], &0x0808u16.to_le_bytes());
    }

    #[test]
    fn zip64_records_read_back() {
        // Force the zip64 paths with a tiny limit and check the zip crate reads sizes/offsets.
        let mut buf = Vec::new();
        let mut z = TorchZipWriter::new(&mut buf, "a", 100);
        z.record("small", b"xyz").unwrap();
        z.record("big", &[7u8; 300]).unwrap();
        z.finish().unwrap();
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(buf)).unwrap();
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut zip.by_name("a/big").unwrap(), &mut v).unwrap();
        assert_eq!(v, vec![7u8; 300]);
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut zip.by_name("a/small").unwrap(), &mut v).unwrap();
        assert_eq!(v, b"xyz");
        assert_eq!(zip.len(), 4);
    }
}
