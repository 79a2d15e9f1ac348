//! The binary layout of a dataset cache file (part of `cache`): writing it atomically, and
//! reading it back with every length, bound and checksum verified.
//!
//! ```text
//! header  "GLMTDSET" | u32 version | u8 kind | 3 × 0 | [u8; 32] key | u64 payload_len | [u8; 32] sha256(payload)
//! payload u64 rows_in_file | u64 selected | u64 skipped_empty | u32 n + n × u64 skipped_lines | u64 row_count | rows
//! train   ids (int array) | labels (int array)
//! eval    ids | mask (bit array) | positions | labels
//! int array: u32 len | i32 lead_value | u32 lead_run | i32 tail_value | u32 tail_run | middle as i32
//! bit array: u32 len | ceil(len / 8) bytes, LSB first
//! ```
//! All values are little-endian. The lead/tail runs absorb the padding and the −100 label
//! prefix, so a row costs roughly its real tokens.

use std::path::Path;

use sha2::{Digest, Sha256};

use super::{FORMAT_VERSION, RowKind};
use crate::preprocess::{EvalRow, TrainRow};

const MAGIC: &[u8; 8] = b"GLMTDSET";
const HEADER_LEN: usize = 8 + 4 + 4 + 32 + 8 + 32;

/// Rows that can live in a cache file.
pub(super) trait CachedRow: Sized {
    fn encode(&self, out: &mut Vec<u8>);
    fn decode(r: &mut Reader<'_>) -> Result<Self, String>;
}

/// Counts stored beside the rows so a cache hit reports the same as a build.
pub(super) struct Meta {
    pub(super) rows_in_file: usize,
    pub(super) selected: usize,
    pub(super) skipped_empty: usize,
    pub(super) skipped_lines: Vec<usize>,
}

/// Write `rows` to `file` atomically (temp file in the same directory, fsync, rename).
pub(super) fn write_cache<R: CachedRow>(
    file: &Path,
    kind: RowKind,
    key: &[u8; 32],
    meta: &Meta,
    rows: &[R],
) -> std::io::Result<()> {
    let mut payload = Vec::with_capacity(64 + rows.len() * 256);
    for v in [meta.rows_in_file, meta.selected, meta.skipped_empty] {
        payload.extend_from_slice(&(v as u64).to_le_bytes());
    }
    payload.extend_from_slice(&(meta.skipped_lines.len() as u32).to_le_bytes());
    for &l in &meta.skipped_lines {
        payload.extend_from_slice(&(l as u64).to_le_bytes());
    }
    payload.extend_from_slice(&(rows.len() as u64).to_le_bytes());
    for r in rows {
        r.encode(&mut payload);
    }
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&[kind.tag(), 0, 0, 0]);
    out.extend_from_slice(key);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&Sha256::digest(&payload));
    out.extend_from_slice(&payload);

    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}-{nanos}", std::process::id()));
    let result = (|| {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&out)?;
        f.sync_all()?;
        std::fs::rename(&tmp, file)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Read and verify a cache file; `Err` says why it is unusable.
pub(super) fn read_cache<R: CachedRow>(
    file: &Path,
    kind: RowKind,
    key: &[u8; 32],
) -> Result<(Vec<R>, Meta), String> {
    let data = std::fs::read(file).map_err(|e| format!("cannot read: {e}"))?;
    if data.len() < HEADER_LEN {
        return Err(format!(
            "truncated: {} bytes, shorter than the {HEADER_LEN}-byte header",
            data.len()
        ));
    }
    let (header, payload) = data.split_at(HEADER_LEN);
    if &header[..8] != MAGIC {
        return Err("not a glm-tune dataset cache (bad magic)".into());
    }
    let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if version != FORMAT_VERSION {
        return Err(format!(
            "format version {version}, expected {FORMAT_VERSION}"
        ));
    }
    if header[12] != kind.tag() {
        return Err(format!(
            "holds kind {}, expected {}",
            header[12],
            kind.tag()
        ));
    }
    if &header[16..48] != key {
        return Err("key mismatch (the file belongs to other inputs)".into());
    }
    let len = u64::from_le_bytes(header[48..56].try_into().map_err(|_| "header")?);
    if len != payload.len() as u64 {
        return Err(format!(
            "truncated or extended: payload is {} bytes, header says {len}",
            payload.len()
        ));
    }
    if Sha256::digest(payload).as_slice() != &header[56..88] {
        return Err("checksum mismatch (file corrupted)".into());
    }
    let mut r = Reader {
        data: payload,
        pos: 0,
    };
    let rows_in_file = r.u64()? as usize;
    let selected = r.u64()? as usize;
    let skipped_empty = r.u64()? as usize;
    let n_lines = r.u32()? as usize;
    let mut skipped_lines = Vec::with_capacity(n_lines.min(r.remaining() / 8));
    for _ in 0..n_lines {
        skipped_lines.push(r.u64()? as usize);
    }
    let n = r.u64()? as usize;
    let mut rows = Vec::with_capacity(n.min(r.remaining()));
    for _ in 0..n {
        rows.push(R::decode(&mut r)?);
    }
    if r.remaining() != 0 {
        return Err(format!("{} unexpected bytes after the rows", r.remaining()));
    }
    Ok((
        rows,
        Meta {
            rows_in_file,
            selected,
            skipped_empty,
            skipped_lines,
        },
    ))
}

/// Bounds-checked little-endian reader over a cache payload.
pub(super) struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.remaining() {
            return Err(format!("truncated at payload byte {}", self.pos));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn i32(&mut self) -> Result<i32, String> {
        Ok(self.u32()? as i32)
    }
    fn u64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().map_err(|_| "u64")?))
    }

    fn ints(&mut self) -> Result<Vec<i64>, String> {
        let len = self.u32()? as usize;
        let (lead_v, lead_n) = (self.i32()?, self.u32()? as usize);
        let (tail_v, tail_n) = (self.i32()?, self.u32()? as usize);
        let mid = len
            .checked_sub(lead_n + tail_n)
            .ok_or("int array runs longer than the array")?;
        let body = self.take(mid.checked_mul(4).ok_or("int array too long")?)?;
        let mut v = Vec::with_capacity(len);
        v.resize(lead_n, i64::from(lead_v));
        v.extend(
            body.chunks_exact(4)
                .map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
        );
        v.resize(len, i64::from(tail_v));
        Ok(v)
    }
    fn ids(&mut self) -> Result<Vec<u32>, String> {
        self.ints()?
            .into_iter()
            .map(|v| u32::try_from(v).map_err(|_| format!("negative token id {v}")))
            .collect()
    }
    fn bits(&mut self) -> Result<Vec<bool>, String> {
        let len = self.u32()? as usize;
        let bytes = self.take(len.div_ceil(8))?;
        Ok((0..len).map(|i| bytes[i / 8] >> (i % 8) & 1 == 1).collect())
    }
}

fn put_ints(out: &mut Vec<u8>, v: &[i64]) {
    let len = v.len();
    let lead_v = v.first().copied().unwrap_or(0);
    let lead_n = v.iter().take_while(|&&x| x == lead_v).count();
    let tail_v = v.last().copied().unwrap_or(0);
    let tail_n = v[lead_n..]
        .iter()
        .rev()
        .take_while(|&&x| x == tail_v)
        .count();
    out.extend_from_slice(&(len as u32).to_le_bytes());
    for x in [
        lead_v as i32 as u32,
        lead_n as u32,
        tail_v as i32 as u32,
        tail_n as u32,
    ] {
        out.extend_from_slice(&x.to_le_bytes());
    }
    for &x in &v[lead_n..len - tail_n] {
        out.extend_from_slice(&(x as i32).to_le_bytes());
    }
}

fn put_ids(out: &mut Vec<u8>, v: &[u32]) {
    put_ints(out, &v.iter().map(|&x| i64::from(x)).collect::<Vec<_>>());
}

fn put_bits(out: &mut Vec<u8>, v: &[bool]) {
    out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    for chunk in v.chunks(8) {
        out.push(
            chunk
                .iter()
                .enumerate()
                .fold(0u8, |acc, (i, &b)| acc | (u8::from(b) << i)),
        );
    }
}

impl CachedRow for TrainRow {
    fn encode(&self, out: &mut Vec<u8>) {
        put_ids(out, &self.input_ids);
        put_ints(out, &self.labels);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, String> {
        let row = TrainRow {
            input_ids: r.ids()?,
            labels: r.ints()?,
        };
        if row.input_ids.len() != row.labels.len() {
            return Err("train row with input_ids and labels of different lengths".into());
        }
        Ok(row)
    }
}

impl CachedRow for EvalRow {
    fn encode(&self, out: &mut Vec<u8>) {
        put_ids(out, &self.input_ids);
        put_bits(out, &self.attention_mask);
        put_ints(out, &self.position_ids);
        put_ints(out, &self.labels);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, String> {
        let row = EvalRow {
            input_ids: r.ids()?,
            attention_mask: r.bits()?,
            position_ids: r.ints()?,
            labels: r.ints()?,
        };
        let l = row.seq_len();
        if row.attention_mask.len() != l * l || row.position_ids.len() != 2 * l {
            return Err("eval row with inconsistent mask/position sizes".into());
        }
        Ok(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_arrays_round_trip_with_runs() {
        for v in [
            vec![],
            vec![5],
            vec![-100, -100, 7, 8, 3, 3],
            vec![3, 3, 3],
            vec![1, 2, 3],
            vec![-100, 130004, -100],
        ] {
            let mut out = Vec::new();
            put_ints(&mut out, &v);
            let mut r = Reader { data: &out, pos: 0 };
            assert_eq!(r.ints().unwrap(), v);
            assert_eq!(r.remaining(), 0);
        }
        let mut out = Vec::new();
        put_ints(&mut out, &[-100; 100]);
        assert_eq!(out.len(), 20, "a constant array is stored as one run");
    }

    #[test]
    fn bit_arrays_round_trip() {
        let v: Vec<bool> = (0..77).map(|i| i % 3 == 0 || i > 70).collect();
        let mut out = Vec::new();
        put_bits(&mut out, &v);
        assert_eq!(out.len(), 4 + 10);
        assert_eq!(Reader { data: &out, pos: 0 }.bits().unwrap(), v);
    }

    #[test]
    fn reader_rejects_truncation_and_bad_runs() {
        let mut out = Vec::new();
        put_ints(&mut out, &[1, 2, 3, 4]);
        assert!(
            Reader {
                data: &out[..out.len() - 1],
                pos: 0
            }
            .ints()
            .is_err()
        );
        // len 2 with lead run 3: inconsistent.
        let bad: Vec<u8> = [2u32, 0, 3, 0, 0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        assert!(Reader { data: &bad, pos: 0 }.ints().is_err());
    }
}
