//! Reading a SentencePiece `ModelProto` (`ice_text.model`) with a minimal protobuf wire decoder.
//!
//! Only the fields the encoder/decoder needs are kept (field numbers from SentencePiece's
//! `sentencepiece_model.proto`): `pieces` (1: piece, score, type), `trainer_spec` (2: model_type,
//! byte_fallback, treat_whitespace_as_suffix, unk_surface), `normalizer_spec` (3) and
//! `denormalizer_spec` (5). Unknown fields are skipped as protobuf requires; proto2 defaults apply
//! to absent fields (e.g. `add_dummy_prefix` = true, piece type = NORMAL).

use std::path::Path;

use super::error::TokenizerError;

/// SentencePiece piece type (`ModelProto.SentencePiece.Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PieceKind {
    /// Ordinary piece, matched by the Viterbi search.
    Normal,
    /// The single unknown piece (`<unk>`).
    Unknown,
    /// Control symbol (`<s>`, `[gMASK]`, ...): never matched from text, decodes to nothing.
    Control,
    /// User-defined symbol (`<n>`, `<|tab|>`, ...): matched atomically and never normalised.
    UserDefined,
    /// Byte piece `<0xHH>` used by byte fallback; never matched from text.
    Byte,
    /// Unused piece: in the vocabulary but skipped by the search.
    Unused,
}

impl PieceKind {
    fn from_proto(v: u64) -> Option<PieceKind> {
        Some(match v {
            1 => PieceKind::Normal,
            2 => PieceKind::Unknown,
            3 => PieceKind::Control,
            4 => PieceKind::UserDefined,
            5 => PieceKind::Unused,
            6 => PieceKind::Byte,
            _ => return None,
        })
    }
}

/// One vocabulary entry.
#[derive(Debug, Clone)]
pub(crate) struct ProtoPiece {
    pub piece: String,
    pub score: f32,
    pub kind: PieceKind,
}

/// The normaliser settings (`NormalizerSpec`).
#[derive(Debug, Clone)]
pub(crate) struct NormalizerSpec {
    pub name: String,
    /// Darts double-array + NUL-terminated replacement strings (see `charsmap.rs`).
    pub precompiled_charsmap: Vec<u8>,
    pub add_dummy_prefix: bool,
    pub remove_extra_whitespaces: bool,
    pub escape_whitespaces: bool,
}

impl Default for NormalizerSpec {
    fn default() -> Self {
        NormalizerSpec {
            name: String::new(),
            precompiled_charsmap: Vec::new(),
            add_dummy_prefix: true,
            remove_extra_whitespaces: true,
            escape_whitespaces: true,
        }
    }
}

/// The trainer settings that still matter at encode/decode time.
#[derive(Debug, Clone)]
pub(crate) struct TrainerSpec {
    /// 1 = UNIGRAM, 2 = BPE, 3 = WORD, 4 = CHAR.
    pub model_type: u64,
    pub byte_fallback: bool,
    pub treat_whitespace_as_suffix: bool,
    /// Text `<unk>` decodes to (default `" ⁇ "`).
    pub unk_surface: String,
}

impl Default for TrainerSpec {
    fn default() -> Self {
        TrainerSpec {
            model_type: 1,
            byte_fallback: false,
            treat_whitespace_as_suffix: false,
            unk_surface: DEFAULT_UNK_SURFACE.to_string(),
        }
    }
}

/// SentencePiece's default surface of an unknown piece: U+2047 between two spaces.
pub(crate) const DEFAULT_UNK_SURFACE: &str = " \u{2047} ";

/// The parts of `ModelProto` the tokenizer uses.
#[derive(Debug, Clone, Default)]
pub(crate) struct ModelProto {
    pub pieces: Vec<ProtoPiece>,
    pub trainer_spec: TrainerSpec,
    pub normalizer_spec: NormalizerSpec,
    /// Present only when the model has a denormaliser with rules.
    pub denormalizer_charsmap: Option<Vec<u8>>,
}

/// Parse `bytes` (the content of `path`, used in error messages only).
pub(crate) fn parse_model_proto(bytes: &[u8], path: &Path) -> Result<ModelProto, TokenizerError> {
    parse_inner(bytes).map_err(|(offset, detail)| TokenizerError::Protobuf {
        path: path.to_path_buf(),
        offset,
        detail,
    })
}

/// A wire-level error: absolute byte offset and what was wrong.
type WireError = (usize, String);

/// One decoded field value.
enum Value<'a> {
    Varint(u64),
    /// 8-byte value (no SentencePiece field we read uses it).
    Fixed64,
    /// Length-delimited payload and its absolute offset in the file.
    Bytes(&'a [u8], usize),
    Fixed32(u32),
}

/// Sequential reader over one (sub)message.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Absolute offset of `buf[0]` in the file, for error messages.
    base: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], base: usize) -> Self {
        Reader { buf, pos: 0, base }
    }

    fn err(&self, detail: impl Into<String>) -> WireError {
        (self.base + self.pos, detail.into())
    }

    fn varint(&mut self) -> Result<u64, WireError> {
        let mut v = 0u64;
        for shift in (0..70).step_by(7) {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(self.err("truncated varint"));
            };
            self.pos += 1;
            if shift == 63 && b > 1 {
                return Err(self.err("varint longer than 64 bits"));
            }
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(self.err("varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<(&'a [u8], usize), WireError> {
        let start = self.pos;
        let end = start.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                self.pos = end;
                Ok((&self.buf[start..end], self.base + start))
            }
            None => Err(self.err(format!(
                "field of {n} bytes runs past the end of its message"
            ))),
        }
    }

    /// Next `(field number, value)`, or `None` at the end of the message.
    fn next_field(&mut self) -> Result<Option<(u64, Value<'a>)>, WireError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = key >> 3;
        if field == 0 {
            return Err(self.err("field number 0"));
        }
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Fixed64
            }
            2 => {
                let len = self.varint()?;
                let len =
                    usize::try_from(len).map_err(|_| self.err("length does not fit in memory"))?;
                let (b, off) = self.take(len)?;
                Value::Bytes(b, off)
            }
            5 => {
                let (b, _) = self.take(4)?;
                Value::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            w => {
                return Err(self.err(format!(
                    "unsupported wire type {w} (groups are not used by SentencePiece)"
                )));
            }
        };
        Ok(Some((field, value)))
    }
}

fn utf8(b: &[u8], off: usize, what: &str) -> Result<String, WireError> {
    String::from_utf8(b.to_vec()).map_err(|e| {
        (
            off + e.utf8_error().valid_up_to(),
            format!("{what} is not valid UTF-8"),
        )
    })
}

fn expect_bytes<'a>(v: Value<'a>, what: &str, at: usize) -> Result<(&'a [u8], usize), WireError> {
    match v {
        Value::Bytes(b, off) => Ok((b, off)),
        _ => Err((
            at,
            format!("{what} has the wrong wire type (expected length-delimited)"),
        )),
    }
}

fn expect_varint(v: Value<'_>, what: &str, at: usize) -> Result<u64, WireError> {
    match v {
        Value::Varint(x) => Ok(x),
        _ => Err((
            at,
            format!("{what} has the wrong wire type (expected varint)"),
        )),
    }
}

fn parse_inner(bytes: &[u8]) -> Result<ModelProto, WireError> {
    let mut r = Reader::new(bytes, 0);
    let mut model = ModelProto::default();
    loop {
        let at = r.base + r.pos;
        let Some((field, value)) = r.next_field()? else {
            break;
        };
        match field {
            1 => {
                let (b, off) = expect_bytes(value, "ModelProto.pieces", at)?;
                model.pieces.push(parse_piece(b, off, model.pieces.len())?);
            }
            2 => {
                let (b, off) = expect_bytes(value, "ModelProto.trainer_spec", at)?;
                model.trainer_spec = parse_trainer_spec(b, off)?;
            }
            3 => {
                let (b, off) = expect_bytes(value, "ModelProto.normalizer_spec", at)?;
                model.normalizer_spec = parse_normalizer_spec(b, off)?;
            }
            5 => {
                let (b, off) = expect_bytes(value, "ModelProto.denormalizer_spec", at)?;
                let spec = parse_normalizer_spec(b, off)?;
                if !spec.precompiled_charsmap.is_empty() {
                    model.denormalizer_charsmap = Some(spec.precompiled_charsmap);
                }
            }
            _ => {}
        }
    }
    Ok(model)
}

fn parse_piece(buf: &[u8], base: usize, index: usize) -> Result<ProtoPiece, WireError> {
    let mut r = Reader::new(buf, base);
    let mut piece = ProtoPiece {
        piece: String::new(),
        score: 0.0,
        kind: PieceKind::Normal,
    };
    loop {
        let at = r.base + r.pos;
        let Some((field, value)) = r.next_field()? else {
            break;
        };
        match field {
            1 => {
                let (b, off) = expect_bytes(value, "SentencePiece.piece", at)?;
                piece.piece = utf8(b, off, &format!("piece {index}"))?;
            }
            2 => match value {
                Value::Fixed32(x) => piece.score = f32::from_bits(x),
                _ => {
                    return Err((
                        at,
                        format!("score of piece {index} has the wrong wire type (expected float)"),
                    ));
                }
            },
            3 => {
                let t = expect_varint(value, "SentencePiece.type", at)?;
                piece.kind = PieceKind::from_proto(t)
                    .ok_or_else(|| (at, format!("piece {index} has unknown type {t}")))?;
            }
            _ => {}
        }
    }
    Ok(piece)
}

fn parse_trainer_spec(buf: &[u8], base: usize) -> Result<TrainerSpec, WireError> {
    let mut r = Reader::new(buf, base);
    let mut spec = TrainerSpec::default();
    loop {
        let at = r.base + r.pos;
        let Some((field, value)) = r.next_field()? else {
            break;
        };
        match field {
            3 => spec.model_type = expect_varint(value, "TrainerSpec.model_type", at)?,
            24 => {
                spec.treat_whitespace_as_suffix =
                    expect_varint(value, "TrainerSpec.treat_whitespace_as_suffix", at)? != 0
            }
            35 => spec.byte_fallback = expect_varint(value, "TrainerSpec.byte_fallback", at)? != 0,
            44 => {
                let (b, off) = expect_bytes(value, "TrainerSpec.unk_surface", at)?;
                spec.unk_surface = utf8(b, off, "unk_surface")?;
            }
            _ => {}
        }
    }
    Ok(spec)
}

fn parse_normalizer_spec(buf: &[u8], base: usize) -> Result<NormalizerSpec, WireError> {
    let mut r = Reader::new(buf, base);
    let mut spec = NormalizerSpec::default();
    loop {
        let at = r.base + r.pos;
        let Some((field, value)) = r.next_field()? else {
            break;
        };
        match field {
            1 => {
                let (b, off) = expect_bytes(value, "NormalizerSpec.name", at)?;
                spec.name = utf8(b, off, "normalizer name")?;
            }
            2 => {
                spec.precompiled_charsmap =
                    expect_bytes(value, "NormalizerSpec.precompiled_charsmap", at)?
                        .0
                        .to_vec()
            }
            3 => {
                spec.add_dummy_prefix =
                    expect_varint(value, "NormalizerSpec.add_dummy_prefix", at)? != 0
            }
            4 => {
                spec.remove_extra_whitespaces =
                    expect_varint(value, "NormalizerSpec.remove_extra_whitespaces", at)? != 0
            }
            5 => {
                spec.escape_whitespaces =
                    expect_varint(value, "NormalizerSpec.escape_whitespaces", at)? != 0
            }
            _ => {}
        }
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn bytes_field(field: u64, payload: &[u8], out: &mut Vec<u8>) {
        varint(field << 3 | 2, out);
        varint(payload.len() as u64, out);
        out.extend_from_slice(payload);
    }

    fn piece(p: &str, score: f32, kind: Option<u64>) -> Vec<u8> {
        let mut m = Vec::new();
        bytes_field(1, p.as_bytes(), &mut m);
        varint(2 << 3 | 5, &mut m);
        m.extend_from_slice(&score.to_le_bytes());
        if let Some(k) = kind {
            varint(3 << 3, &mut m);
            varint(k, &mut m);
        }
        m
    }

    #[test]
    fn parses_pieces_specs_and_skips_unknown_fields() {
        let mut m = Vec::new();
        bytes_field(1, &piece("<unk>", 0.0, Some(2)), &mut m);
        bytes_field(1, &piece("▁a", -1.5, None), &mut m);
        let mut t = Vec::new();
        varint(35 << 3, &mut t);
        varint(1, &mut t);
        varint(4 << 3, &mut t); // vocab_size, ignored
        varint(300, &mut t);
        bytes_field(2, &t, &mut m);
        let mut n = Vec::new();
        bytes_field(1, b"nmt_nfkc", &mut n);
        varint(3 << 3, &mut n);
        varint(0, &mut n);
        bytes_field(3, &n, &mut m);
        varint(9 << 3 | 1, &mut m); // unknown fixed64 field
        m.extend_from_slice(&[0; 8]);
        let model = parse_model_proto(&m, Path::new("x.model")).unwrap();
        assert_eq!(model.pieces.len(), 2);
        assert_eq!(model.pieces[0].kind, PieceKind::Unknown);
        assert_eq!(model.pieces[1].piece, "▁a");
        assert_eq!(model.pieces[1].score, -1.5);
        assert_eq!(model.pieces[1].kind, PieceKind::Normal);
        assert!(model.trainer_spec.byte_fallback);
        assert_eq!(model.trainer_spec.unk_surface, " ⁇ ");
        assert_eq!(model.normalizer_spec.name, "nmt_nfkc");
        assert!(!model.normalizer_spec.add_dummy_prefix);
        assert!(model.normalizer_spec.remove_extra_whitespaces);
    }

    #[test]
    fn truncated_input_is_an_error_with_offset() {
        let mut m = Vec::new();
        bytes_field(1, &piece("abc", 0.0, None), &mut m);
        let cut = &m[..m.len() - 3];
        match parse_model_proto(cut, Path::new("x.model")) {
            Err(TokenizerError::Protobuf { offset, .. }) => assert!(offset <= cut.len()),
            other => panic!("expected a protobuf error, got {other:?}"),
        }
        assert!(parse_model_proto(&[0xff; 11], Path::new("x.model")).is_err());
        assert!(parse_model_proto(&[0x0b], Path::new("x.model")).is_err()); // wire type 3
    }
}
