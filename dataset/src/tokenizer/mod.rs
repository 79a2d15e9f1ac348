//! The ChatGLM-6B tokenizer: token-for-token the reference `ChatGLMTokenizer` (transformers
//! 4.27.1, `tokenization_chatglm.py` of 2023-05-08) over SentencePiece 0.2 (reference §6).
//!
//! Encoding: HF special-token split with whitespace stripping (`chatglm`) → ChatGLM newline /
//! tab / blank substitutions → SentencePiece normalisation with the model's own charsmap
//! (`normalize`, `charsmap`) → Unigram Viterbi with user symbols forced and control pieces
//! excluded, byte fallback (`unigram`). Decoding: `decode`.
//!
//! Two model formats are read from a directory: `ice_text.model` (+ `tokenizer_config.json`), the
//! original SentencePiece protobuf (`sentencepiece_model`), or a Hugging Face `tokenizer.json`
//! Unigram tokenizer loaded with the `tokenizers` crate (`hf_json`; used for the small demo
//! tokenizer trained with `tokenizers`' `UnigramTrainer`). Both run through the same ChatGLM and
//! SentencePiece rules. The Viterbi search and the charsmap interpreter are native because the
//! `tokenizers` equivalents differ from SentencePiece in ways that change ids: control and byte
//! pieces are matchable from text there (`</s>` would become one CONTROL piece), path scores are
//! summed in f64 instead of SentencePiece's float/double mix, user symbols get no bonus, and its
//! `Precompiled` normaliser works per grapheme with the shortest rule instead of the longest.

mod charsmap;
mod chatglm;
mod config;
mod decode;
mod error;
mod hf_json;
mod normalize;
mod sentencepiece_model;
mod trie;
mod unigram;

use std::borrow::Cow;
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

pub use error::TokenizerError;

use charsmap::Charsmap;
use chatglm::{Chunk, SpecialSplitter, SplitToken};
use config::ChatGlmConfig;
use decode::SpDecoder;
use normalize::{SpNormalizer, UnicodeNorm, WhitespaceOptions};
use sentencepiece_model::PieceKind;
use unigram::{Segment, ViterbiScratch, Vocab};

/// File name of the SentencePiece model in a ChatGLM checkpoint directory.
pub const SENTENCEPIECE_FILE: &str = "ice_text.model";
/// File name of the HF tokenizer configuration.
pub const CONFIG_FILE: &str = "tokenizer_config.json";
/// File name of a Hugging Face `tokenizers` tokenizer.
pub const HF_TOKENIZER_FILE: &str = "tokenizer.json";

/// The ChatGLM-6B tokenizer. Cheap to clone (shared immutable state); usable from many threads.
#[derive(Clone)]
pub struct ChatGlmTokenizer {
    inner: Arc<Inner>,
}

struct Inner {
    vocab: Vocab,
    normalizer: SpNormalizer,
    decoder: SpDecoder,
    splitter: SpecialSplitter,
    blanks: Vec<String>,
    remove_space: bool,
    pad: u32,
    unk: u32,
    mask: u32,
    gmask: u32,
    sop: u32,
    eop: u32,
    /// HF `all_special_ids` (bos, eos, unk, pad, mask, additional): dropped by `skip_special_tokens`.
    hf_special_ids: Vec<u32>,
    sources: Vec<PathBuf>,
    fingerprint: String,
    origin: Origin,
}

/// Where the vocabulary came from (what `save_tokenizer_json` writes).
enum Origin {
    SentencePiece { charsmap: Option<Charsmap> },
    HfJson(String),
}

/// Reused buffers of the encoder (one set per thread).
#[derive(Default)]
struct Scratch {
    pre: String,
    norm: Vec<u8>,
    viterbi: ViterbiScratch,
    segments: Vec<Segment>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Buffers larger than this are released after use instead of being kept per thread.
const SCRATCH_KEEP_BYTES: usize = 1 << 20;

impl std::fmt::Debug for ChatGlmTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let i = &self.inner;
        f.debug_struct("ChatGlmTokenizer")
            .field("vocab_size", &i.vocab.len())
            .field(
                "format",
                &match i.origin {
                    Origin::SentencePiece { .. } => "sentencepiece",
                    Origin::HfJson(_) => "tokenizer.json",
                },
            )
            .field("sources", &i.sources)
            .field("fingerprint", &i.fingerprint)
            .finish()
    }
}

/// sha256 over `(name, length, bytes)` of each file, hex.
fn fingerprint_of(files: &[(&str, &[u8])]) -> String {
    let mut h = Sha256::new();
    h.update(b"glm-tune chatglm tokenizer v1\n");
    for (name, bytes) in files {
        h.update(name.as_bytes());
        h.update([0u8]);
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn read(path: &Path) -> Result<Vec<u8>, TokenizerError> {
    std::fs::read(path).map_err(|e| TokenizerError::io(path, "cannot read", e))
}

fn read_text(path: &Path) -> Result<String, TokenizerError> {
    String::from_utf8(read(path)?).map_err(|e| TokenizerError::Config {
        path: path.to_path_buf(),
        key: "(file)".into(),
        detail: format!(
            "not UTF-8 (byte {}); save it as UTF-8",
            e.utf8_error().valid_up_to()
        ),
    })
}

impl ChatGlmTokenizer {
    /// Load from a model directory: `ice_text.model` (+ optional `tokenizer_config.json`, whose
    /// absence means the final ChatGLM-6B defaults), or else `tokenizer.json`. A path to one of
    /// these files is accepted too and means its directory.
    pub fn from_dir(dir: &Path) -> Result<Self, TokenizerError> {
        let meta = std::fs::metadata(dir)
            .map_err(|e| TokenizerError::io(dir, "cannot open the tokenizer directory", e))?;
        let dir = if meta.is_file() {
            dir.parent().unwrap_or(Path::new("."))
        } else {
            dir
        };
        let sp_path = dir.join(SENTENCEPIECE_FILE);
        let json_path = dir.join(HF_TOKENIZER_FILE);
        let cfg_path = dir.join(CONFIG_FILE);
        let (config, cfg_bytes) = if cfg_path.is_file() {
            let text = read_text(&cfg_path)?;
            (
                ChatGlmConfig::parse(&text, &cfg_path)?,
                Some(text.into_bytes()),
            )
        } else {
            (ChatGlmConfig::default(), None)
        };
        let (model_path, model_name) = if sp_path.is_file() {
            (sp_path, SENTENCEPIECE_FILE)
        } else if json_path.is_file() {
            (json_path, HF_TOKENIZER_FILE)
        } else {
            return Err(TokenizerError::NoModelFiles {
                dir: dir.to_path_buf(),
            });
        };
        let bytes = read(&model_path)?;
        let mut files: Vec<(&str, &[u8])> = vec![(model_name, &bytes)];
        let mut sources = vec![model_path.clone()];
        if let Some(c) = &cfg_bytes {
            files.push((CONFIG_FILE, c));
            sources.push(cfg_path.clone());
        }
        let fingerprint = fingerprint_of(&files);
        let tok = if model_name == SENTENCEPIECE_FILE {
            Self::from_sentencepiece(&bytes, &model_path, config, sources, fingerprint)?
        } else {
            let text = String::from_utf8(bytes).map_err(|e| TokenizerError::HfJson {
                path: model_path.clone(),
                detail: format!("not UTF-8 (byte {})", e.utf8_error().valid_up_to()),
            })?;
            Self::from_json_text(text, &model_path, config, sources, fingerprint)?
        };
        tracing::debug!(path = %model_path.display(), vocab = tok.vocab_size(), "loaded ChatGLM tokenizer");
        Ok(tok)
    }

    fn from_sentencepiece(
        bytes: &[u8],
        path: &Path,
        config: ChatGlmConfig,
        sources: Vec<PathBuf>,
        fingerprint: String,
    ) -> Result<Self, TokenizerError> {
        let proto = sentencepiece_model::parse_model_proto(bytes, path)?;
        let t = &proto.trainer_spec;
        if t.model_type != 1 {
            let name = match t.model_type {
                2 => "BPE",
                3 => "WORD",
                4 => "CHAR",
                _ => "unknown",
            };
            return Err(TokenizerError::invalid(
                path,
                format!(
                    "model_type {} ({name}) is not supported; ChatGLM's ice_text.model is a Unigram model",
                    t.model_type
                ),
            ));
        }
        if t.treat_whitespace_as_suffix {
            return Err(TokenizerError::invalid(
                path,
                "treat_whitespace_as_suffix = true is not supported",
            ));
        }
        if proto.denormalizer_charsmap.is_some() {
            return Err(TokenizerError::invalid(
                path,
                "a denormalizer_spec with rules is not supported",
            ));
        }
        let entries = proto
            .pieces
            .into_iter()
            .map(|p| (p.piece, p.score, p.kind))
            .collect();
        let vocab =
            Vocab::new(entries, t.byte_fallback).map_err(|e| TokenizerError::invalid(path, e))?;
        let spec = &proto.normalizer_spec;
        let charsmap = if spec.precompiled_charsmap.is_empty() {
            None
        } else {
            Some(
                Charsmap::parse(&spec.precompiled_charsmap)
                    .map_err(|e| TokenizerError::invalid(path, e))?,
            )
        };
        let ws = WhitespaceOptions {
            add_dummy_prefix: spec.add_dummy_prefix,
            remove_extra_whitespaces: spec.remove_extra_whitespaces,
            escape_whitespaces: spec.escape_whitespaces,
        };
        let unicode = charsmap
            .clone()
            .map_or(UnicodeNorm::Identity, UnicodeNorm::Charsmap);
        let decoder = SpDecoder {
            unk_surface: t.unk_surface.clone(),
            strip_bos_ws: ws.add_dummy_prefix || ws.remove_extra_whitespaces,
            remove_extra_whitespaces: ws.remove_extra_whitespaces,
        };
        Self::assemble(
            vocab,
            unicode,
            ws,
            decoder,
            config,
            path,
            sources,
            fingerprint,
            Origin::SentencePiece { charsmap },
        )
    }

    fn from_json_text(
        text: String,
        path: &Path,
        config: ChatGlmConfig,
        sources: Vec<PathBuf>,
        fingerprint: String,
    ) -> Result<Self, TokenizerError> {
        let loaded = hf_json::load(&text, path)?;
        let ws = WhitespaceOptions {
            add_dummy_prefix: true,
            remove_extra_whitespaces: true,
            escape_whitespaces: true,
        };
        let decoder = SpDecoder {
            unk_surface: sentencepiece_model::DEFAULT_UNK_SURFACE.to_string(),
            strip_bos_ws: true,
            remove_extra_whitespaces: true,
        };
        Self::assemble(
            loaded.vocab,
            loaded.unicode,
            ws,
            decoder,
            config,
            path,
            sources,
            fingerprint,
            Origin::HfJson(text),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        vocab: Vocab,
        unicode: UnicodeNorm,
        ws: WhitespaceOptions,
        decoder: SpDecoder,
        config: ChatGlmConfig,
        path: &Path,
        sources: Vec<PathBuf>,
        fingerprint: String,
        origin: Origin,
    ) -> Result<Self, TokenizerError> {
        let lookup = |token: &str, role: &'static str| -> Result<u32, TokenizerError> {
            vocab
                .piece_to_id
                .get(token)
                .copied()
                .ok_or_else(|| TokenizerError::MissingToken {
                    path: path.to_path_buf(),
                    token: token.to_string(),
                    role,
                })
        };
        let pad = lookup(&config.pad.content, "pad")?;
        let unk = lookup(&config.unk.content, "unk")?;
        let mask = lookup(&config.mask.content, "mask")?;
        let gmask = lookup(&config.gmask, "gmask")?;
        let sop = lookup(&config.bos.content, "bos")?;
        let eop = lookup(&config.eos.content, "eos")?;
        let mut split_tokens = Vec::new();
        let mut hf_special_ids = Vec::new();
        for spec in config.hf_special_tokens() {
            let id = lookup(&spec.content, "additional special")?;
            hf_special_ids.push(id);
            split_tokens.push(SplitToken {
                text: spec.content.clone(),
                id,
                strip_left: spec.strip_left,
                strip_right: spec.strip_right,
            });
        }
        let users: Vec<&str> = vocab
            .pieces
            .iter()
            .zip(&vocab.kinds)
            .filter(|(_, k)| **k == PieceKind::UserDefined)
            .map(|(p, _)| p.as_str())
            .collect();
        let normalizer = SpNormalizer::new(unicode, &users, ws);
        Ok(ChatGlmTokenizer {
            inner: Arc::new(Inner {
                vocab,
                normalizer,
                decoder,
                splitter: SpecialSplitter::new(split_tokens),
                blanks: chatglm::blank_tokens(hf_json::MAX_BLANK),
                remove_space: config.remove_space,
                pad,
                unk,
                mask,
                gmask,
                sop,
                eop,
                hf_special_ids,
                sources,
                fingerprint,
                origin,
            }),
        })
    }

    /// Token ids of `text`; with `add_special_tokens` `[gMASK]`, `<sop>` are appended (HF
    /// `encode(text)` default).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Vec<u32> {
        let mut ids = Vec::with_capacity(text.len() / 2 + 4);
        self.encode_into(text, add_special_tokens, &mut ids, None);
        ids
    }

    /// The pieces of `text` as HF `tokenize()` returns them (no special tokens appended).
    pub fn tokenize(&self, text: &str) -> Vec<String> {
        let mut ids = Vec::new();
        let mut pieces = Vec::new();
        self.encode_into(text, false, &mut ids, Some(&mut pieces));
        pieces
    }

    /// Ids together with their pieces.
    pub fn encode_with_pieces(&self, text: &str, add_special_tokens: bool) -> Vec<(u32, String)> {
        let mut ids = Vec::new();
        let mut pieces = Vec::new();
        self.encode_into(text, add_special_tokens, &mut ids, Some(&mut pieces));
        ids.into_iter().zip(pieces).collect()
    }

    fn encode_into(
        &self,
        text: &str,
        add_special_tokens: bool,
        ids: &mut Vec<u32>,
        mut pieces: Option<&mut Vec<String>>,
    ) {
        let inner = &*self.inner;
        let run = |s: &mut Scratch, ids: &mut Vec<u32>, pieces: Option<&mut Vec<String>>| {
            if inner.splitter.may_match(text) {
                let mut chunks = Vec::new();
                inner.splitter.split(text, &mut chunks);
                let mut pieces = pieces;
                for chunk in chunks {
                    match chunk {
                        Chunk::Text(t) => inner.encode_chunk(t, s, ids, pieces.as_deref_mut()),
                        Chunk::Special(k) => {
                            let tok = &inner.splitter.tokens[k];
                            ids.push(tok.id);
                            if let Some(p) = pieces.as_deref_mut() {
                                p.push(tok.text.clone());
                            }
                        }
                    }
                }
            } else {
                inner.encode_chunk(text, s, ids, pieces);
            }
        };
        // A thread-local scratch set, or a fresh one if it is in use or already torn down.
        let done = SCRATCH
            .try_with(|cell| match cell.try_borrow_mut() {
                Ok(mut s) => {
                    run(&mut s, ids, pieces.as_deref_mut());
                    if s.pre.capacity() > SCRATCH_KEEP_BYTES
                        || s.norm.capacity() > SCRATCH_KEEP_BYTES
                        || s.viterbi.capacity_bytes() > 8 * SCRATCH_KEEP_BYTES
                    {
                        *s = Scratch::default();
                    }
                    true
                }
                Err(_) => false,
            })
            .unwrap_or(false);
        if !done {
            run(&mut Scratch::default(), ids, pieces.as_deref_mut());
        }
        if add_special_tokens {
            for id in [inner.gmask, inner.sop] {
                ids.push(id);
                if let Some(p) = pieces.as_deref_mut() {
                    p.push(inner.vocab.pieces[id as usize].clone());
                }
            }
        }
    }

    /// Text from ids (HF `decode`): pad ids are always removed; `skip_special_tokens` also drops
    /// `<sop>`, `<eop>`, `<unk>`, `[MASK]`; `clean_up_tokenization_spaces` applies HF's clean-up
    /// (the reference default is true). Ids outside the vocabulary (the model has 130528 output
    /// rows, the tokenizer 130344 pieces; the reference raises) are treated as `<unk>`.
    pub fn decode(
        &self,
        ids: &[u32],
        skip_special_tokens: bool,
        clean_up_tokenization_spaces: bool,
    ) -> String {
        let inner = &*self.inner;
        let n = inner.vocab.len() as u32;
        let kept: Vec<u32> = ids
            .iter()
            .map(|&id| if id < n { id } else { inner.unk })
            .filter(|&id| {
                id != inner.pad && !(skip_special_tokens && inner.hf_special_ids.contains(&id))
            })
            .collect();
        if kept.is_empty() {
            return String::new();
        }
        let text = inner.decoder.decode(&inner.vocab, &kept);
        let text = match decode::postprocess(&text, hf_json::MAX_BLANK) {
            Cow::Borrowed(_) => text,
            Cow::Owned(t) => t,
        };
        if clean_up_tokenization_spaces {
            decode::clean_up_tokenization(text)
        } else {
            text
        }
    }

    /// `a + [gMASK, <sop>]`, and with `b`: `+ b + [<eop>]` (reference §6.3).
    pub fn build_inputs_with_special_tokens(&self, a: &[u32], b: Option<&[u32]>) -> Vec<u32> {
        let inner = &*self.inner;
        let mut out = Vec::with_capacity(a.len() + b.map_or(0, <[u32]>::len) + 3);
        out.extend_from_slice(a);
        out.push(inner.gmask);
        out.push(inner.sop);
        if let Some(b) = b {
            out.extend_from_slice(b);
            out.push(inner.eop);
        }
        out
    }

    /// The piece of an id (`None` outside the vocabulary).
    pub fn id_to_piece(&self, id: u32) -> Option<&str> {
        self.inner.vocab.pieces.get(id as usize).map(String::as_str)
    }

    /// The id of a piece, if it is in the vocabulary.
    pub fn piece_to_id(&self, piece: &str) -> Option<u32> {
        self.inner.vocab.piece_to_id.get(piece).copied()
    }

    /// Number of pieces (130344 for `ice_text.model`; the model has 130528 embedding rows).
    pub fn vocab_size(&self) -> usize {
        self.inner.vocab.len()
    }

    /// `<pad>` (3).
    pub fn pad_id(&self) -> u32 {
        self.inner.pad
    }
    /// `<unk>` (0).
    pub fn unk_id(&self) -> u32 {
        self.inner.unk
    }
    /// `[MASK]` (130000).
    pub fn mask_id(&self) -> u32 {
        self.inner.mask
    }
    /// `[gMASK]` (130001).
    pub fn gmask_id(&self) -> u32 {
        self.inner.gmask
    }
    /// `<sop>`, the bos token (130004).
    pub fn sop_id(&self) -> u32 {
        self.inner.sop
    }
    /// `<eop>`, the eos token (130005).
    pub fn eop_id(&self) -> u32 {
        self.inner.eop
    }

    /// Stable hex sha256 over the source files (name, length and bytes of the model file, then of
    /// `tokenizer_config.json` if present). A trained demo tokenizer hashes the `tokenizer.json`
    /// it would save, so it keeps its fingerprint after `save_tokenizer_json` + `from_dir`.
    pub fn fingerprint(&self) -> String {
        self.inner.fingerprint.clone()
    }

    /// Files to copy into a checkpoint directory (model file, then `tokenizer_config.json` if it
    /// was read). Empty for a tokenizer trained in memory (use [`Self::save_tokenizer_json`]).
    pub fn source_files(&self) -> Vec<PathBuf> {
        self.inner.sources.clone()
    }

    /// Train a small Unigram demo tokenizer with `tokenizers`' `UnigramTrainer`; the vocabulary
    /// holds the ChatGLM special tokens (`<unk> <s> </s> <pad> <n> [MASK] [gMASK] [sMASK] <sop>
    /// <eop> <|tab|> <|blank_2|>..<|blank_80|>`, ids 0..90), the learned pieces and 256 byte
    /// pieces, `vocab_size` entries at most in total. Text is NFKC-normalised. Training is
    /// deterministic: the same texts give the same `tokenizer.json` bytes in every run and on any
    /// number of cores (see `hf_json::train`).
    pub fn train_demo_tokenizer(
        texts: impl Iterator<Item = String>,
        vocab_size: usize,
    ) -> Result<Self, TokenizerError> {
        train_demo_tokenizer(texts, vocab_size)
    }

    /// [`Self::train_demo_tokenizer`] with learned pieces of at most `max_piece_chars`
    /// characters (the trainer's default is 16); short pieces keep the segmentation of templated
    /// text independent of the context.
    pub fn train_demo_tokenizer_with(
        texts: impl Iterator<Item = String>,
        vocab_size: usize,
        max_piece_chars: usize,
    ) -> Result<Self, TokenizerError> {
        train_with(texts, vocab_size, max_piece_chars)
    }

    /// Write the tokenizer as a Hugging Face `tokenizer.json` at `path` (a loaded
    /// `tokenizer.json` is written back byte for byte; an `ice_text.model` is converted).
    pub fn save_tokenizer_json(&self, path: &Path) -> Result<(), TokenizerError> {
        let text = match &self.inner.origin {
            Origin::HfJson(t) => Cow::Borrowed(t.as_str()),
            Origin::SentencePiece { charsmap } => {
                let ws = self.inner.normalizer.ws;
                if !(ws.add_dummy_prefix && ws.remove_extra_whitespaces && ws.escape_whitespaces) {
                    return Err(TokenizerError::invalid(
                        path,
                        "cannot express this model's whitespace options in tokenizer.json (ChatGLM's defaults are required)",
                    ));
                }
                Cow::Owned(
                    hf_json::to_json(&self.inner.vocab, charsmap.as_ref()).map_err(|e| {
                        TokenizerError::HfJson {
                            path: path.to_path_buf(),
                            detail: format!("cannot serialise: {e}"),
                        }
                    })?,
                )
            }
        };
        std::fs::write(path, text.as_bytes())
            .map_err(|e| TokenizerError::io(path, "cannot write", e))
    }
}

impl Inner {
    /// One chunk of text (no special tokens inside): substitutions, normalisation, Viterbi.
    fn encode_chunk(
        &self,
        chunk: &str,
        s: &mut Scratch,
        ids: &mut Vec<u32>,
        pieces: Option<&mut Vec<String>>,
    ) {
        if chunk.is_empty() {
            return;
        }
        let collapsed;
        let chunk = if self.remove_space {
            collapsed = chatglm::collapse_python_whitespace(chunk);
            collapsed.as_str()
        } else {
            chunk
        };
        s.pre.clear();
        chatglm::substitute(chunk, &self.blanks, &mut s.pre);
        self.normalizer.normalize(&s.pre, &mut s.norm);
        self.vocab.viterbi(&s.norm, &mut s.viterbi, &mut s.segments);
        self.vocab.emit(&s.norm, &s.segments, ids, pieces);
    }
}

/// Train the demo tokenizer (see [`ChatGlmTokenizer::train_demo_tokenizer`]).
pub fn train_demo_tokenizer(
    texts: impl Iterator<Item = String>,
    vocab_size: usize,
) -> Result<ChatGlmTokenizer, TokenizerError> {
    train_with(texts, vocab_size, 16)
}

fn train_with(
    texts: impl Iterator<Item = String>,
    vocab_size: usize,
    max_piece_chars: usize,
) -> Result<ChatGlmTokenizer, TokenizerError> {
    let json = hf_json::train(texts.collect(), vocab_size, max_piece_chars)?;
    let fingerprint = fingerprint_of(&[(HF_TOKENIZER_FILE, json.as_bytes())]);
    ChatGlmTokenizer::from_json_text(
        json,
        Path::new(HF_TOKENIZER_FILE),
        ChatGlmConfig::default(),
        Vec::new(),
        fingerprint,
    )
}

#[cfg(test)]
mod tests;
