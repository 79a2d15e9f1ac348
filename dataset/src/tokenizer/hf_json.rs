//! Hugging Face `tokenizer.json` support through the `tokenizers` crate: loading a Unigram
//! tokenizer, writing one (from `ice_text.model` or a trained demo), and training the demo
//! tokenizer with `tokenizers`' `UnigramTrainer`.
//!
//! Mapping onto SentencePiece piece types: the model's `unk_id` piece is UNKNOWN; an added token
//! with `special: true` is CONTROL (never matched from text, decodes to nothing); an added token
//! with `special: false` is USER_DEFINED (matched atomically, e.g. `<n>`); `<0xHH>` pieces are
//! BYTE when the model has `byte_fallback`; everything else is NORMAL. Normalisation: a
//! `Precompiled` charsmap (alone, or in a `Sequence`) is run with SentencePiece semantics; any
//! other normaliser runs through `tokenizers`. `Prepend("▁")` and `Replace(" ", "▁")` members of a
//! `Sequence` are dropped because the ChatGLM wrapper adds the dummy prefix and escapes spaces
//! itself. The pre-tokenizer, post-processor and decoder of the file are not used: encoding and
//! decoding follow SentencePiece + ChatGLM rules on both paths.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;
use tokenizers::models::unigram::{Unigram, UnigramTrainer};
use tokenizers::normalizers::{NFKC, Precompiled};
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::{AddedToken, ModelWrapper, NormalizerWrapper, Tokenizer};

use super::charsmap::Charsmap;
use super::chatglm::{Chunk, SpecialSplitter, blank_tokens, substitute};
use super::error::TokenizerError;
use super::normalize::{SPACE_SYMBOL, SpNormalizer, UnicodeNorm, WhitespaceOptions};
use super::sentencepiece_model::PieceKind;
use super::unigram::{Vocab, piece_to_byte};

/// What a `tokenizer.json` contributes to a ChatGLM tokenizer.
pub(crate) struct LoadedJson {
    pub vocab: Vocab,
    pub unicode: UnicodeNorm,
}

/// Control tokens of the demo tokenizer (CONTROL, except `<unk>` = UNKNOWN), in id order, with
/// `<n>` (user-defined) placed at id 4 as in ChatGLM.
const DEMO_LEADING: [(&str, bool); 10] = [
    ("<unk>", true),
    ("<s>", true),
    ("</s>", true),
    ("<pad>", true),
    ("<n>", false),
    ("[MASK]", true),
    ("[gMASK]", true),
    ("[sMASK]", true),
    ("<sop>", true),
    ("<eop>", true),
];

/// ChatGLM's longest blank token.
pub(crate) const MAX_BLANK: usize = 80;

fn hf_err(path: &Path, detail: impl Into<String>) -> TokenizerError {
    TokenizerError::HfJson {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// Parse a `tokenizer.json` text (`path` only names it in errors).
pub(crate) fn load(text: &str, path: &Path) -> Result<LoadedJson, TokenizerError> {
    let root: Value = serde_json::from_str(text).map_err(|e| {
        hf_err(
            path,
            format!(
                "invalid JSON at line {} column {}: {e}",
                e.line(),
                e.column()
            ),
        )
    })?;
    let tk: Tokenizer = text
        .parse()
        .map_err(|e| hf_err(path, format!("not a tokenizers `tokenizer.json`: {e}")))?;
    let unigram = match tk.get_model() {
        ModelWrapper::Unigram(u) => u,
        ModelWrapper::BPE(_) => {
            return Err(hf_err(
                path,
                "model type BPE is not supported; a ChatGLM tokenizer is a Unigram model",
            ));
        }
        ModelWrapper::WordPiece(_) => {
            return Err(hf_err(
                path,
                "model type WordPiece is not supported; use a Unigram model",
            ));
        }
        ModelWrapper::WordLevel(_) => {
            return Err(hf_err(
                path,
                "model type WordLevel is not supported; use a Unigram model",
            ));
        }
    };
    let unk_id = root["model"]["unk_id"].as_u64().ok_or_else(|| {
        hf_err(
            path,
            "model.unk_id is missing; the Unigram model needs an unknown token (e.g. <unk>)",
        )
    })? as usize;
    let byte_fallback = unigram.byte_fallback();
    let mut entries: Vec<(String, f32, PieceKind)> = unigram
        .iter()
        .map(|(piece, score)| {
            let kind = if byte_fallback && piece_to_byte(piece).is_some() {
                PieceKind::Byte
            } else {
                PieceKind::Normal
            };
            (piece.clone(), *score as f32, kind)
        })
        .collect();
    let model_len = entries.len();
    let Some(unk) = entries.get_mut(unk_id) else {
        return Err(hf_err(
            path,
            format!("model.unk_id {unk_id} is outside the vocabulary of {model_len} pieces"),
        ));
    };
    unk.2 = PieceKind::Unknown;
    let mut added: Vec<(u32, AddedToken)> = tk.get_added_tokens_decoder().into_iter().collect();
    added.sort_by_key(|(id, _)| *id);
    for (id, tok) in added {
        let id = id as usize;
        let kind = if id == unk_id {
            PieceKind::Unknown
        } else if tok.special {
            PieceKind::Control
        } else {
            PieceKind::UserDefined
        };
        if id < model_len {
            if entries[id].0 != tok.content {
                return Err(hf_err(
                    path,
                    format!(
                        "added token {:?} has id {id}, which the model vocabulary assigns to {:?}",
                        tok.content, entries[id].0
                    ),
                ));
            }
            entries[id].2 = kind;
        } else if id == entries.len() {
            entries.push((tok.content, 0.0, kind));
        } else {
            return Err(hf_err(
                path,
                format!(
                    "added token {:?} has id {id} but the vocabulary ends at {}; ids must be contiguous",
                    tok.content,
                    entries.len()
                ),
            ));
        }
    }
    let vocab = Vocab::new(entries, byte_fallback).map_err(|e| hf_err(path, e))?;
    let unicode = unicode_norm(&root["normalizer"], path)?;
    Ok(LoadedJson { vocab, unicode })
}

/// Decide how to run the file's normaliser (see the module doc).
fn unicode_norm(v: &Value, path: &Path) -> Result<UnicodeNorm, TokenizerError> {
    let ty = |n: &Value| {
        n.get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let is_ws_rule = |n: &Value| match ty(n).as_str() {
        "Prepend" => n.get("prepend").and_then(Value::as_str) == Some(SPACE_SYMBOL),
        "Replace" => {
            n["pattern"].get("String").and_then(Value::as_str) == Some(" ")
                && n.get("content").and_then(Value::as_str) == Some(SPACE_SYMBOL)
        }
        _ => false,
    };
    let members: Vec<Value> = match v {
        Value::Null => return Ok(UnicodeNorm::Identity),
        _ if ty(v) == "Sequence" => v
            .get("normalizers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|n| !is_ws_rule(n))
            .collect(),
        _ if is_ws_rule(v) => Vec::new(),
        _ => vec![v.clone()],
    };
    match members.as_slice() {
        [] => Ok(UnicodeNorm::Identity),
        [one] if ty(one) == "Precompiled" => {
            let b64 = one
                .get("precompiled_charsmap")
                .and_then(Value::as_str)
                .unwrap_or("");
            let blob = base64_decode(b64).ok_or_else(|| {
                hf_err(path, "normalizer.precompiled_charsmap is not valid base64")
            })?;
            let map =
                Charsmap::parse(&blob).map_err(|e| hf_err(path, format!("normalizer: {e}")))?;
            Ok(UnicodeNorm::Charsmap(map))
        }
        [one] => parse_wrapper(one.clone(), path),
        many => parse_wrapper(
            serde_json::json!({"type": "Sequence", "normalizers": many}),
            path,
        ),
    }
}

fn parse_wrapper(v: Value, path: &Path) -> Result<UnicodeNorm, TokenizerError> {
    let n: NormalizerWrapper =
        serde_json::from_value(v).map_err(|e| hf_err(path, format!("normalizer: {e}")))?;
    Ok(UnicodeNorm::Hf(n))
}

/// Standard base64 with optional padding (what `tokenizers` writes for `Precompiled`).
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Serialise a vocabulary as a `tokenizer.json` (Unigram model, added tokens by piece type,
/// `Precompiled` normaliser when a charsmap is given).
pub(crate) fn to_json(vocab: &Vocab, charsmap: Option<&Charsmap>) -> Result<String, String> {
    let entries: Vec<(String, f64)> = vocab
        .pieces
        .iter()
        .zip(&vocab.scores)
        .map(|(p, &s)| (p.clone(), f64::from(s)))
        .collect();
    let normalizer = match charsmap {
        Some(map) => Some(NormalizerWrapper::Precompiled(
            Precompiled::from(&map.to_blob()).map_err(|e| format!("charsmap: {e:?}"))?,
        )),
        None => None,
    };
    build_json(
        entries,
        &vocab.kinds,
        vocab.unk_id as usize,
        vocab.byte_ids.is_some(),
        normalizer,
    )
}

/// Assemble a `tokenizers::Tokenizer` (Unigram model, added tokens by kind, Metaspace
/// pre-tokenizer/decoder so the file also works outside this crate) and print it.
fn build_json(
    entries: Vec<(String, f64)>,
    kinds: &[PieceKind],
    unk_id: usize,
    byte_fallback: bool,
    normalizer: Option<NormalizerWrapper>,
) -> Result<String, String> {
    let mut special = Vec::new();
    let mut user = Vec::new();
    for ((piece, _), kind) in entries.iter().zip(kinds) {
        match kind {
            PieceKind::Control | PieceKind::Unknown => {
                special.push(AddedToken::from(piece.clone(), true))
            }
            PieceKind::UserDefined => {
                user.push(AddedToken::from(piece.clone(), false).normalized(false))
            }
            _ => {}
        }
    }
    let unigram = Unigram::from(entries, Some(unk_id), byte_fallback).map_err(|e| e.to_string())?;
    let mut tk = Tokenizer::new(unigram);
    if let Some(n) = normalizer {
        tk.with_normalizer(Some(n)).map_err(|e| e.to_string())?;
    }
    tk.add_special_tokens(special).map_err(|e| e.to_string())?;
    tk.add_tokens(user).map_err(|e| e.to_string())?;
    let meta = Metaspace::new('\u{2581}', PrependScheme::First, true);
    tk.with_pre_tokenizer(Some(meta.clone()));
    tk.with_decoder(Some(meta));
    tk.to_string(true).map_err(|e| e.to_string())
}

/// The demo tokenizer's text pipeline up to normalisation, used to cut training text into words.
struct DemoPipeline {
    splitter: SpecialSplitter,
    normalizer: SpNormalizer,
    blanks: Vec<String>,
    users: Vec<String>,
}

impl DemoPipeline {
    fn new(users: Vec<String>) -> DemoPipeline {
        let ws = WhitespaceOptions {
            add_dummy_prefix: true,
            remove_extra_whitespaces: true,
            escape_whitespaces: true,
        };
        let user_refs: Vec<&str> = users.iter().map(String::as_str).collect();
        let normalizer = SpNormalizer::new(UnicodeNorm::Hf(NFKC.into()), &user_refs, ws);
        let specials = ["<sop>", "<eop>", "<unk>", "<pad>", "[MASK]"]
            .iter()
            .enumerate()
            .map(|(i, t)| super::chatglm::SplitToken {
                text: t.to_string(),
                id: i as u32,
                strip_left: true,
                strip_right: true,
            })
            .collect();
        DemoPipeline {
            splitter: SpecialSplitter::new(specials),
            normalizer,
            blanks: blank_tokens(MAX_BLANK),
            users,
        }
    }

    /// Words of `text` as the encoder will see them: `▁`-initial runs between user symbols.
    fn words(&self, text: &str) -> Vec<String> {
        let mut chunks = Vec::new();
        self.splitter.split(text, &mut chunks);
        let mut words = Vec::new();
        let (mut pre, mut norm) = (String::new(), Vec::new());
        for chunk in chunks {
            let Chunk::Text(t) = chunk else { continue };
            pre.clear();
            substitute(t, &self.blanks, &mut pre);
            self.normalizer.normalize(&pre, &mut norm);
            let s = String::from_utf8_lossy(&norm).into_owned();
            let mut rest = s.as_str();
            while !rest.is_empty() {
                // Cut at the next user symbol.
                let cut = self
                    .users
                    .iter()
                    .filter_map(|u| rest.find(u.as_str()).map(|i| (i, u.len())))
                    .min_by_key(|&(i, l)| (i, std::cmp::Reverse(l)));
                let (stretch, next) = match cut {
                    Some((i, l)) => (&rest[..i], &rest[i + l..]),
                    None => (rest, ""),
                };
                let mut start = 0;
                for (i, _) in stretch.match_indices(SPACE_SYMBOL) {
                    if i > start {
                        words.push(stretch[start..i].to_string());
                    }
                    start = i;
                }
                if start < stretch.len() {
                    words.push(stretch[start..].to_string());
                }
                rest = next;
            }
        }
        words
    }
}

/// Train a Unigram demo vocabulary of `vocab_size` entries in total (the 90 ChatGLM special and
/// user tokens and 256 byte pieces included), learned pieces at most `max_piece_chars`
/// characters long, and return its `tokenizer.json` text.
pub(crate) fn train(
    texts: Vec<String>,
    vocab_size: usize,
    max_piece_chars: usize,
) -> Result<String, TokenizerError> {
    let blanks = blank_tokens(MAX_BLANK);
    let mut leading: Vec<(String, bool)> = DEMO_LEADING
        .iter()
        .map(|(t, c)| (t.to_string(), *c))
        .collect();
    leading.push(("<|tab|>".into(), false));
    leading.extend(blanks[2..].iter().map(|b| (b.clone(), false)));
    if max_piece_chars == 0 {
        return Err(TokenizerError::Training {
            detail: "max_piece_chars is 0; pieces need at least one character".into(),
        });
    }
    let min = leading.len() + 256 + 1;
    if vocab_size < min {
        return Err(TokenizerError::Training {
            detail: format!(
                "vocab_size {vocab_size} is too small: the ChatGLM special tokens and byte pieces alone take {}; use at least {min}",
                min - 1
            ),
        });
    }
    let users: Vec<String> = leading
        .iter()
        .filter(|(_, c)| !c)
        .map(|(t, _)| t.clone())
        .collect();
    let pipeline = DemoPipeline::new(users);
    if !texts.iter().any(|t| !pipeline.words(t).is_empty()) {
        return Err(TokenizerError::Training {
            detail: "the training texts contain no characters to learn from".into(),
        });
    }
    let trainer = UnigramTrainer::builder()
        .vocab_size((vocab_size - 256) as u32)
        .special_tokens(
            leading
                .iter()
                .map(|(t, c)| AddedToken::from(t.clone(), *c))
                .collect(),
        )
        .unk_token(Some("<unk>".into()))
        .show_progress(false)
        .max_piece_length(max_piece_chars)
        .build()
        .map_err(|e| TokenizerError::Training {
            detail: e.to_string(),
        })?;
    // Word counts in a BTreeMap, handed to `do_train` in sorted order: `Trainer::feed` collects
    // them in an `AHashMap` with a per-process random seed, and the order of the sentences changes
    // the floating-point sums of the E step and so which near-tied pieces survive pruning.
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    for t in &texts {
        for w in pipeline.words(t) {
            *counts.entry(w).or_default() += 1;
        }
    }
    let sentences: Vec<(String, u32)> = counts.into_iter().collect();
    let required: BTreeSet<char> = sentences.iter().flat_map(|(s, _)| s.chars()).collect();
    // The E step and the pruning pass cut the sentences into `current_num_threads()` chunks and
    // add the chunk results in a work-stealing-dependent tree: one thread gives one chunk, so the
    // same sums on every machine and every run.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .map_err(|e| TokenizerError::Training {
            detail: format!("cannot start the training thread: {e}"),
        })?;
    let mut model = Unigram::default();
    pool.install(|| trainer.do_train(sentences, &mut model))
        .map_err(|e| TokenizerError::Training {
            detail: e.to_string(),
        })?;
    let mut entries: Vec<(String, f64)> = model.iter().cloned().collect();
    // The trainer puts the special tokens first, in the order given.
    let mut kinds: Vec<PieceKind> = (0..entries.len())
        .map(|i| match leading.get(i) {
            Some(_) if i == 0 => PieceKind::Unknown,
            Some((_, true)) => PieceKind::Control,
            Some((_, false)) => PieceKind::UserDefined,
            None => PieceKind::Normal,
        })
        .collect();
    if entries.iter().zip(&leading).any(|((p, _), (t, _))| p != t) {
        return Err(TokenizerError::Training {
            detail: "the trainer did not place the special tokens first".into(),
        });
    }
    canonical_order(&mut entries[leading.len()..], required.len());
    entries.extend((0..=255u8).map(|b| (format!("<0x{b:02X}>"), 0.0)));
    kinds.extend(std::iter::repeat_n(PieceKind::Byte, 256));
    build_json(entries, &kinds, 0, true, Some(NFKC.into()))
        .map_err(|detail| TokenizerError::Training { detail })
}

/// Make the learned pieces of `UnigramTrainer` independent of its hash-set order.
///
/// Its `finalize` walks the required characters (every character of the corpus) in `AHashSet`
/// order: a character the EM model dropped gets `min_score + k·1e-4`, k counting up in that
/// order, and the final stable sort by score keeps that order among equal scores. Here the
/// single-character pieces whose score is one of those penalty values get the same scores back in
/// character order (a permutation of the run's random assignment, so every run agrees), scores are
/// rounded to 1e-6 (far below any score gap that matters, and it keeps last-ulp `ln` differences
/// of other libms out of the file), and pieces are sorted by (score desc, piece).
fn canonical_order(learned: &mut [(String, f64)], required_chars: usize) {
    const PENALTY_DELTA: f64 = 0.0001;
    let Some(min) = learned
        .iter()
        .map(|(_, s)| *s)
        .filter(|s| !s.is_nan())
        .min_by(f64::total_cmp)
    else {
        return;
    };
    // The exact values `finalize` computes: `min_score + penalty`, penalty summed in steps.
    let mut penalty = 0.0;
    let mut penalties = Vec::with_capacity(required_chars);
    for _ in 0..required_chars {
        penalties.push(min + penalty);
        penalty += PENALTY_DELTA;
    }
    let single = |p: &str| p.chars().count() == 1;
    let chosen: Vec<usize> = (0..learned.len())
        .filter(|&i| single(&learned[i].0) && penalties.contains(&learned[i].1))
        .collect();
    let mut scores: Vec<f64> = chosen.iter().map(|&i| learned[i].1).collect();
    scores.sort_by(|a, b| b.total_cmp(a));
    let mut pieces: Vec<String> = chosen.iter().map(|&i| learned[i].0.clone()).collect();
    pieces.sort();
    for ((&i, piece), score) in chosen.iter().zip(pieces).zip(scores) {
        learned[i] = (piece, score);
    }
    for (_, s) in learned.iter_mut() {
        *s = if s.is_nan() {
            0.0
        } else {
            (*s * 1e6).round() / 1e6
        };
    }
    learned.sort_by(|(pa, sa), (pb, sb)| sb.total_cmp(sa).then_with(|| pa.cmp(pb)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGk").unwrap(), b"hi");
        assert!(base64_decode("a b").is_none());
    }

    #[test]
    fn demo_words_follow_the_encoder_pipeline() {
        let p = DemoPipeline::new(vec!["<n>".into(), "<|tab|>".into(), "<|blank_2|>".into()]);
        assert_eq!(
            p.words("你好 世界\n早上  好<sop>ｘ"),
            vec!["▁你好", "▁世界", "早上", "好", "▁x"]
        );
    }

    #[test]
    fn canonical_order_ignores_the_penalty_assignment_order() {
        // `finalize` gave the dropped characters 甲 乙 丙 min, min+δ, min+2δ in hash order; 丁 is
        // a real piece at the minimum score.
        let min = -9.5;
        let pen = |k: usize| (0..k).fold(0.0, |p, _| p + 0.0001) + min;
        let run = |order: [&str; 3]| {
            let mut v = vec![
                ("ab".to_string(), -1.0),
                ("丁".to_string(), min),
                ("c".to_string(), -1.0),
            ];
            v.extend(
                order
                    .iter()
                    .enumerate()
                    .map(|(k, c)| (c.to_string(), pen(k))),
            );
            canonical_order(&mut v, 5);
            v
        };
        let a = run(["甲", "乙", "丙"]);
        assert_eq!(a, run(["丙", "甲", "乙"]));
        assert_eq!(a, run(["乙", "丙", "甲"]));
        let pieces: Vec<&str> = a.iter().map(|(p, _)| p.as_str()).collect();
        // Sorted by score desc then piece; the penalty scores go to the characters in order.
        assert_eq!(pieces, ["ab", "c", "丁", "丙", "乙", "甲"]);
        assert_eq!(a[2].1, -9.4998);
        assert_eq!(a[5].1, -9.5);
    }

    #[test]
    fn sequence_whitespace_members_are_dropped() {
        let p = Path::new("tokenizer.json");
        let seq = serde_json::json!({"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
            {"type": "NFKC"}]});
        assert!(matches!(
            unicode_norm(&seq, p).unwrap(),
            UnicodeNorm::Hf(NormalizerWrapper::NFKC(_))
        ));
        assert!(matches!(
            unicode_norm(&Value::Null, p).unwrap(),
            UnicodeNorm::Identity
        ));
        let bad = serde_json::json!({"type": "Precompiled", "precompiled_charsmap": "!!"});
        assert!(unicode_norm(&bad, p).is_err());
    }
}
