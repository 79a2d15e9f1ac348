//! The vocabulary and the Unigram Viterbi search (SentencePiece `Model::EncodeOptimized`).
//!
//! Matched from text: NORMAL and USER_DEFINED pieces (UNUSED ones are in the trie but skipped);
//! never matched: CONTROL, UNKNOWN and BYTE pieces. A user-defined piece scores
//! `length_in_bytes · max_score − 0.1`, where `max_score` is the largest NORMAL score but at least
//! `FLT_MIN` (SentencePiece initialises it with `FLT_MIN`, so with all-negative scores the bonus is
//! ≈ −0.1 and user symbols always win). A character with no single-character piece gets an UNK
//! node scored `min_score − 10`. Float semantics follow the C++ exactly: normal and user scores
//! are added to the path score in double precision and stored as float, UNK in float. The UNK
//! pieces of the best path are then spelled as UTF-8 byte pieces (byte fallback) or, without byte
//! fallback, merged into one unknown piece per run (SentencePiece `PopulateSentencePieceText`).

use std::collections::HashMap;

use super::sentencepiece_model::PieceKind;
use super::trie::CharTrie;

/// Vocabulary with the search structures.
#[derive(Debug, Clone)]
pub(crate) struct Vocab {
    pub(crate) pieces: Vec<String>,
    pub(crate) scores: Vec<f32>,
    pub(crate) kinds: Vec<PieceKind>,
    pub(crate) piece_to_id: HashMap<String, u32>,
    trie: CharTrie,
    /// Score a matched piece adds to the path (double, as in the C++); NaN for UNUSED pieces.
    match_score: Vec<f64>,
    pub(crate) unk_id: u32,
    /// `<0xHH>` ids when byte fallback is on.
    pub(crate) byte_ids: Option<Box<[u32; 256]>>,
    /// Byte value of each BYTE piece id (decode side).
    byte_of_id: HashMap<u32, u8>,
    min_score: f32,
}

/// One piece of the best path: byte range of the normalised text and its id.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Segment {
    pub start: usize,
    pub end: usize,
    pub id: u32,
}

/// Best path ending at a character boundary (SentencePiece `BestPathNode`; SentencePiece indexes
/// by byte, but only character boundaries are ever reached).
#[derive(Debug, Clone, Copy)]
struct BestPathNode {
    id: u32,
    score: f32,
    /// `u32::MAX` = not reached yet.
    starts_at: usize,
}

const UNREACHED: usize = usize::MAX;

/// Reusable buffers of [`Vocab::viterbi`].
#[derive(Debug, Default)]
pub(crate) struct ViterbiScratch {
    /// `(code point, byte offset)` of each character of the normalised text.
    chars: Vec<(u32, usize)>,
    best: Vec<BestPathNode>,
}

impl ViterbiScratch {
    pub(crate) fn capacity_bytes(&self) -> usize {
        self.chars.capacity() * 16 + self.best.capacity() * 16
    }
}
const UNK_PENALTY: f32 = 10.0;

/// Parse a byte piece name `<0xHH>` (SentencePiece `PieceToByte`, upper-case hex).
pub(crate) fn piece_to_byte(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
    {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

impl Vocab {
    /// Build from `(piece, score, kind)` entries in id order. Errors are plain descriptions.
    pub(crate) fn new(
        entries: Vec<(String, f32, PieceKind)>,
        byte_fallback: bool,
    ) -> Result<Vocab, String> {
        if entries.is_empty() {
            return Err("the vocabulary is empty".into());
        }
        if entries.len() > u32::MAX as usize / 2 {
            return Err(format!(
                "the vocabulary has {} pieces, more than supported",
                entries.len()
            ));
        }
        let mut pieces = Vec::with_capacity(entries.len());
        let mut scores = Vec::with_capacity(entries.len());
        let mut kinds = Vec::with_capacity(entries.len());
        let mut piece_to_id = HashMap::with_capacity(entries.len());
        let mut unk_id = None;
        let mut byte_of_id = HashMap::new();
        let mut byte_ids = [u32::MAX; 256];
        // SentencePiece starts from FLT_MAX / FLT_MIN (the smallest positive float), not −FLT_MAX.
        let (mut min_score, mut max_score) = (f32::MAX, f32::MIN_POSITIVE);
        for (i, (piece, score, kind)) in entries.into_iter().enumerate() {
            let id = i as u32;
            if piece.is_empty() {
                return Err(format!("piece {id} is empty"));
            }
            if piece_to_id.insert(piece.clone(), id).is_some() {
                return Err(format!("piece {piece:?} (id {id}) is defined twice"));
            }
            match kind {
                PieceKind::Unknown => {
                    if let Some(prev) = unk_id {
                        return Err(format!("two unknown pieces: ids {prev} and {id}"));
                    }
                    unk_id = Some(id);
                }
                PieceKind::Byte => {
                    let b = piece_to_byte(&piece).ok_or_else(|| {
                        format!("byte piece {piece:?} (id {id}) is not of the form <0xHH>")
                    })?;
                    byte_ids[b as usize] = id;
                    byte_of_id.insert(id, b);
                }
                PieceKind::Normal => {
                    min_score = min_score.min(score);
                    max_score = max_score.max(score);
                }
                _ => {}
            }
            pieces.push(piece);
            scores.push(score);
            kinds.push(kind);
        }
        let unk_id = unk_id.ok_or("no piece has type UNKNOWN (`<unk>` is required)")?;
        let byte_ids = if byte_fallback {
            if let Some(b) = byte_ids.iter().position(|&id| id == u32::MAX) {
                return Err(format!(
                    "byte_fallback is on but the byte piece <0x{b:02X}> is missing (all 256 are needed)"
                ));
            }
            Some(Box::new(byte_ids))
        } else {
            None
        };
        // Matchable pieces; a piece containing NUL cannot be a Darts key in SentencePiece either.
        let keys: Vec<(&str, u32)> = pieces
            .iter()
            .zip(&kinds)
            .enumerate()
            .filter(|(_, (p, k))| {
                matches!(
                    k,
                    PieceKind::Normal | PieceKind::UserDefined | PieceKind::Unused
                ) && !p.as_bytes().contains(&0)
            })
            .map(|(i, (p, _))| (p.as_str(), i as u32))
            .collect();
        let trie = CharTrie::build(keys);
        // C++: a user symbol scores `length * max_score_ - 0.1` (length in bytes; float product,
        // then double); a normal score is a float widened to double.
        let match_score = pieces
            .iter()
            .zip(&kinds)
            .zip(&scores)
            .map(|((p, k), &sc)| match k {
                PieceKind::UserDefined => f64::from(p.len() as f32 * max_score) - 0.1,
                PieceKind::Unused => f64::NAN,
                _ => f64::from(sc),
            })
            .collect();
        Ok(Vocab {
            pieces,
            scores,
            kinds,
            piece_to_id,
            trie,
            match_score,
            unk_id,
            byte_ids,
            byte_of_id,
            min_score,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.pieces.len()
    }

    pub(crate) fn kind(&self, id: u32) -> Option<PieceKind> {
        self.kinds.get(id as usize).copied()
    }

    pub(crate) fn byte_value(&self, id: u32) -> Option<u8> {
        self.byte_of_id.get(&id).copied()
    }

    /// Viterbi over `normalized` (valid UTF-8); the best path is written to `segments` as byte
    /// ranges.
    pub(crate) fn viterbi(
        &self,
        normalized: &[u8],
        scratch: &mut ViterbiScratch,
        segments: &mut Vec<Segment>,
    ) {
        segments.clear();
        let size = normalized.len();
        if size == 0 {
            return;
        }
        let chars = &mut scratch.chars;
        chars.clear();
        match std::str::from_utf8(normalized) {
            Ok(text) => chars.extend(text.char_indices().map(|(i, c)| (u32::from(c), i))),
            // The normaliser only emits UTF-8; should that ever break, spell the text as unknown.
            Err(_) => {
                segments.push(Segment {
                    start: 0,
                    end: size,
                    id: self.unk_id,
                });
                return;
            }
        }
        let n = chars.len();
        let pos = |k: usize| if k < n { chars[k].1 } else { size };
        let best = &mut scratch.best;
        best.clear();
        best.resize(
            n + 1,
            BestPathNode {
                id: 0,
                score: 0.0,
                starts_at: UNREACHED,
            },
        );
        let unk_score = self.min_score - UNK_PENALTY;
        for start in 0..n {
            let till_here = best[start].score;
            let mut has_single_node = false;
            let mut cur = self.trie.root();
            for k in start..n {
                let Some((value, next)) = self.trie.step(cur, chars[k].0) else {
                    break;
                };
                cur = next;
                if let Some(id) = value {
                    let score = self.match_score[id as usize];
                    if !score.is_nan() {
                        let candidate = score + f64::from(till_here);
                        let target = &mut best[k + 1];
                        if target.starts_at == UNREACHED || candidate > f64::from(target.score) {
                            *target = BestPathNode {
                                id,
                                score: candidate as f32,
                                starts_at: start,
                            };
                        }
                        if k == start {
                            has_single_node = true;
                        }
                    }
                }
            }
            if !has_single_node {
                // UNK arithmetic stays in float, as in the C++.
                let candidate = unk_score + till_here;
                let target = &mut best[start + 1];
                if target.starts_at == UNREACHED || candidate > target.score {
                    *target = BestPathNode {
                        id: self.unk_id,
                        score: candidate,
                        starts_at: start,
                    };
                }
            }
        }
        let mut ends_at = n;
        while ends_at > 0 {
            let node = best[ends_at];
            // Every character boundary is reached (UNK guarantees progress), so
            // `starts_at < ends_at`; the guard keeps a corrupt state from looping.
            if node.starts_at == UNREACHED || node.starts_at >= ends_at {
                segments.clear();
                segments.push(Segment {
                    start: 0,
                    end: size,
                    id: self.unk_id,
                });
                return;
            }
            let s = node.starts_at;
            segments.push(Segment {
                start: pos(s),
                end: pos(ends_at),
                id: node.id,
            });
            ends_at = s;
        }
        segments.reverse();
    }

    /// Emit the ids (and optionally piece strings) of a best path, expanding UNK pieces into byte
    /// pieces or merging runs of UNK pieces.
    pub(crate) fn emit(
        &self,
        normalized: &[u8],
        segments: &[Segment],
        ids: &mut Vec<u32>,
        mut pieces: Option<&mut Vec<String>>,
    ) {
        let mut i = 0;
        while i < segments.len() {
            let seg = segments[i];
            if seg.id != self.unk_id {
                ids.push(seg.id);
                if let Some(p) = pieces.as_deref_mut() {
                    p.push(self.pieces[seg.id as usize].clone());
                }
                i += 1;
                continue;
            }
            if let Some(byte_ids) = &self.byte_ids {
                for &b in &normalized[seg.start..seg.end] {
                    let id = byte_ids[b as usize];
                    ids.push(id);
                    if let Some(p) = pieces.as_deref_mut() {
                        p.push(self.pieces[id as usize].clone());
                    }
                }
                i += 1;
            } else {
                let mut end = seg.end;
                let mut j = i + 1;
                while j < segments.len() && segments[j].id == self.unk_id {
                    end = segments[j].end;
                    j += 1;
                }
                ids.push(self.unk_id);
                if let Some(p) = pieces.as_deref_mut() {
                    p.push(String::from_utf8_lossy(&normalized[seg.start..end]).into_owned());
                }
                i = j;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab(byte_fallback: bool) -> Vocab {
        let mut e = vec![
            ("<unk>".to_string(), 0.0, PieceKind::Unknown),
            ("<s>".to_string(), 0.0, PieceKind::Control),
            ("<n>".to_string(), 0.0, PieceKind::UserDefined),
            ("▁".to_string(), -2.0, PieceKind::Normal),
            ("a".to_string(), -3.0, PieceKind::Normal),
            ("b".to_string(), -3.0, PieceKind::Normal),
            ("ab".to_string(), -5.0, PieceKind::Normal),
            ("▁ab".to_string(), -9.0, PieceKind::Normal),
            ("<".to_string(), -1.0, PieceKind::Normal),
            ("s".to_string(), -1.0, PieceKind::Normal),
            (">".to_string(), -1.0, PieceKind::Normal),
            ("n".to_string(), -1.0, PieceKind::Normal),
        ];
        if byte_fallback {
            for b in 0..=255u8 {
                e.push((format!("<0x{b:02X}>"), 0.0, PieceKind::Byte));
            }
        }
        Vocab::new(e, byte_fallback).unwrap()
    }

    fn run(v: &Vocab, s: &str) -> (Vec<u32>, Vec<String>) {
        let (mut scratch, mut segs, mut ids, mut pieces) = (
            ViterbiScratch::default(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        v.viterbi(s.as_bytes(), &mut scratch, &mut segs);
        v.emit(s.as_bytes(), &segs, &mut ids, Some(&mut pieces));
        (ids, pieces)
    }

    #[test]
    fn best_path_user_symbols_and_controls() {
        let v = vocab(false);
        // "ab" (-5) beats "a"+"b" (-6); "▁"+"ab" (-7) beats "▁ab" (-9).
        assert_eq!(run(&v, "▁ab").1, vec!["▁", "ab"]);
        // A user symbol beats "<"+"n"+">" (-3) thanks to its -0.1 bonus; "<s>" (CONTROL) is not matched.
        assert_eq!(run(&v, "<n><s>").1, vec!["<n>", "<", "s", ">"]);
    }

    #[test]
    fn unknown_runs_merge_or_fall_back_to_bytes() {
        let v = vocab(false);
        let (ids, pieces) = run(&v, "a你好b");
        assert_eq!(ids, vec![4, 0, 5]);
        assert_eq!(pieces, vec!["a", "你好", "b"]);
        let v = vocab(true);
        let (ids, pieces) = run(&v, "a你");
        assert_eq!(pieces, vec!["a", "<0xE4>", "<0xBD>", "<0xA0>"]);
        assert_eq!(ids[1], 12 + 0xe4);
    }

    #[test]
    fn byte_piece_names() {
        assert_eq!(piece_to_byte("<0x0A>"), Some(10));
        assert_eq!(piece_to_byte("<0xff>"), None);
        assert_eq!(piece_to_byte("<0x1>"), None);
        assert!(Vocab::new(vec![("<unk>".into(), 0.0, PieceKind::Unknown)], true).is_err());
        assert!(Vocab::new(vec![("a".into(), 0.0, PieceKind::Normal)], false).is_err());
    }
}
