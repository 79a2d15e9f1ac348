//! SentencePiece's precompiled normalisation map (`normalizer_spec.precompiled_charsmap`).
//!
//! Layout (SentencePiece `Normalizer::DecodePrecompiledCharsMap`): a little-endian u32 byte size of
//! a Darts-clone double array, the array's u32 units, then NUL-terminated replacement strings. A
//! key is a byte string of the *input*; its value is the offset of its replacement. SentencePiece
//! applies the **longest** matching key at each position (`Normalizer::NormalizePrefix`); the
//! `tokenizers` crate's `Precompiled` normaliser instead works grapheme by grapheme with the first
//! (shortest) match, which differs on some combining sequences — hence this reader.

/// A parsed charsmap: the double array and the replacement strings.
#[derive(Debug, Clone)]
pub(crate) struct Charsmap {
    units: Vec<u32>,
    /// Replacement strings, each terminated by NUL; validated as UTF-8 at load time.
    normalized: Vec<u8>,
}

// Darts-clone unit accessors (darts.h `DoubleArrayUnit`).
#[inline]
fn has_leaf(u: u32) -> bool {
    (u >> 8) & 1 == 1
}
#[inline]
fn value(u: u32) -> u32 {
    u & 0x7fff_ffff
}
/// A leaf unit has the MSB set, so its label never equals a byte.
#[inline]
fn label(u: u32) -> u32 {
    u & (0x8000_0000 | 0xff)
}
#[inline]
fn offset(u: u32) -> usize {
    ((u >> 10) << ((u & (1 << 9)) >> 6)) as usize
}

impl Charsmap {
    /// Parse the blob; the error says what is inconsistent.
    pub(crate) fn parse(blob: &[u8]) -> Result<Charsmap, String> {
        if blob.len() <= 4 {
            return Err(format!(
                "precompiled_charsmap of {} bytes is too short",
                blob.len()
            ));
        }
        let trie_size = u32::from_le_bytes([blob[0], blob[1], blob[2], blob[3]]) as usize;
        let rest = &blob[4..];
        if trie_size >= rest.len() || !trie_size.is_multiple_of(4) || trie_size == 0 {
            return Err(format!(
                "precompiled_charsmap: double-array size {trie_size} does not fit the {} byte blob",
                blob.len()
            ));
        }
        let units: Vec<u32> = rest[..trie_size]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let normalized = rest[trie_size..].to_vec();
        if let Err(e) = std::str::from_utf8(&normalized) {
            return Err(format!(
                "precompiled_charsmap: replacement strings are not UTF-8 (byte {} of the string table)",
                e.valid_up_to()
            ));
        }
        Ok(Charsmap { units, normalized })
    }

    /// Longest key that is a prefix of `input`: `(key length in bytes, replacement)`.
    ///
    /// Mirrors darts-clone `commonPrefixSearch` followed by SentencePiece's "longest rule" pick.
    #[inline]
    pub(crate) fn longest_match(&self, input: &[u8]) -> Option<(usize, &str)> {
        let units = &self.units;
        let mut id = offset(*units.first()?);
        let mut best: Option<(usize, u32)> = None;
        for (i, &c) in input.iter().enumerate() {
            id ^= c as usize;
            let Some(&unit) = units.get(id) else { break };
            if label(unit) != u32::from(c) {
                break;
            }
            id ^= offset(unit);
            if has_leaf(unit) {
                let Some(&leaf) = units.get(id) else { break };
                best = Some((i + 1, value(leaf)));
            }
        }
        let (len, v) = best?;
        let start = v as usize;
        let tail = self.normalized.get(start..)?;
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        // The whole table is UTF-8 and NUL is a one-byte character, so this cannot fail; a
        // value pointing into the middle of a character yields no replacement instead.
        let s = std::str::from_utf8(&tail[..end]).ok()?;
        Some((len, s))
    }

    /// The raw blob again (for writing a `tokenizer.json` `Precompiled` normaliser).
    pub(crate) fn to_blob(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.units.len() * 4 + self.normalized.len());
        out.extend_from_slice(&((self.units.len() * 4) as u32).to_le_bytes());
        for u in &self.units {
            out.extend_from_slice(&u.to_le_bytes());
        }
        out.extend_from_slice(&self.normalized);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-built double array with keys "a" → "x" and "ab" → "yz".
    ///
    /// Root at 0 with offset 2: child 'a' (0x61) at 2^0x61 = 0x63. Node 'a' has offset 0x100 (leaf
    /// at 0x63^0x100 = 0x163, child 'b' at 0x163^0x62 = 0x101), node 'b' offset 0x100 → leaf at
    /// 0x101^0x100 = 0x001.
    fn tiny() -> Charsmap {
        // Free units get a label no byte can match, as darts-clone's builder guarantees.
        let mut units = vec![0x8000_0000u32; 0x200];
        let unit =
            |lbl: u32, off: u32, leaf: bool| (off << 10) | lbl | if leaf { 1 << 8 } else { 0 };
        units[0] = unit(0, 2, false);
        units[0x63] = unit(0x61, 0x100, true);
        units[0x163] = 0x8000_0000; // leaf of "a": value 0
        units[0x101] = unit(0x62, 0x100, true);
        units[0x001] = 0x8000_0000 | 2; // leaf of "ab": value 2
        let mut blob = Vec::new();
        blob.extend_from_slice(&((units.len() * 4) as u32).to_le_bytes());
        for u in &units {
            blob.extend_from_slice(&u.to_le_bytes());
        }
        blob.extend_from_slice(b"x\0yz\0");
        Charsmap::parse(&blob).unwrap()
    }

    #[test]
    fn longest_match_wins_and_mismatch_stops() {
        let m = tiny();
        assert_eq!(m.longest_match(b"abc"), Some((2, "yz")));
        assert_eq!(m.longest_match(b"ac"), Some((1, "x")));
        assert_eq!(m.longest_match(b"b"), None);
        assert_eq!(m.longest_match(b""), None);
        assert_eq!(m.longest_match(b"\0a"), None);
        assert_eq!(
            Charsmap::parse(&m.to_blob()).unwrap().longest_match(b"ab"),
            Some((2, "yz"))
        );
    }

    #[test]
    fn broken_blobs_are_rejected() {
        assert!(Charsmap::parse(&[1, 0, 0]).is_err());
        assert!(Charsmap::parse(&[200, 0, 0, 0, 1, 2, 3]).is_err());
        assert!(Charsmap::parse(&[4, 0, 0, 0, 0, 0, 0, 0, 0xff]).is_err());
    }
}
