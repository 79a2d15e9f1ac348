//! SentencePiece normalisation of one text chunk (`Normalizer::Normalize`, sentencepiece 0.2).
//!
//! Per position: a user-defined symbol (`<n>`, `<|tab|>`, `<|blank_n|>`) is copied verbatim
//! (longest match); otherwise the longest charsmap rule applies (NFKC-style mapping); otherwise one
//! UTF-8 character is copied (an invalid byte becomes U+FFFD). Around that: leading units that
//! normalise to exactly " " are dropped, `▁` is prepended (dummy prefix), a space right after a
//! space is dropped, spaces become `▁`, and trailing `▁` are removed. The output can therefore
//! start with a lone `▁` before a user symbol (`"  lead"` → `▁<|blank_2|>lead`), but a segment
//! after `<n>` gets none (`a<n>b` → `▁a<n>b`) — both as in the reference.
//!
//! For a `tokenizer.json` whose normaliser is not a SentencePiece charsmap, the `tokenizers`
//! normaliser is applied to each stretch between user symbols and its characters are fed through
//! the same whitespace rules.

use tokenizers::{NormalizedString, Normalizer as _, NormalizerWrapper};

use super::charsmap::Charsmap;
use super::trie::PieceTrie;

/// U+2581, SentencePiece's whitespace marker.
pub(crate) const SPACE_SYMBOL: &str = "\u{2581}";

/// Unicode normalisation rule set.
#[derive(Debug, Clone)]
pub(crate) enum UnicodeNorm {
    /// No mapping (identity).
    Identity,
    /// SentencePiece precompiled charsmap, longest match.
    Charsmap(Charsmap),
    /// A normaliser from a `tokenizer.json`.
    Hf(NormalizerWrapper),
}

/// Whitespace options of `NormalizerSpec`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WhitespaceOptions {
    pub add_dummy_prefix: bool,
    pub remove_extra_whitespaces: bool,
    pub escape_whitespaces: bool,
}

/// The normaliser of one tokenizer.
#[derive(Debug, Clone)]
pub(crate) struct SpNormalizer {
    pub(crate) unicode: UnicodeNorm,
    /// User-defined symbols (value unused), matched before any normalisation.
    user: PieceTrie,
    pub(crate) ws: WhitespaceOptions,
}

/// Accumulates normalised units with SentencePiece's whitespace rules.
struct Sink<'a> {
    out: &'a mut Vec<u8>,
    ws: WhitespaceOptions,
    /// Still skipping leading units that are exactly " ".
    heading: bool,
    is_prev_space: bool,
}

impl Sink<'_> {
    #[inline]
    fn push(&mut self, unit: &[u8]) {
        if self.heading {
            if self.ws.remove_extra_whitespaces && unit == b" " {
                return;
            }
            self.heading = false;
            if self.ws.add_dummy_prefix {
                self.push_space();
            }
            self.is_prev_space = self.ws.remove_extra_whitespaces;
        }
        let mut s = unit;
        if self.is_prev_space {
            while let [b' ', rest @ ..] = s {
                s = rest;
            }
        }
        if !s.is_empty() {
            if self.ws.escape_whitespaces && s.contains(&b' ') {
                for &b in s {
                    if b == b' ' {
                        self.push_space()
                    } else {
                        self.out.push(b)
                    }
                }
            } else {
                self.out.extend_from_slice(s);
            }
            self.is_prev_space = s.last() == Some(&b' ');
        }
        if !self.ws.remove_extra_whitespaces {
            self.is_prev_space = false;
        }
    }

    #[inline]
    fn push_space(&mut self) {
        if self.ws.escape_whitespaces {
            self.out.extend_from_slice(SPACE_SYMBOL.as_bytes());
        } else {
            self.out.push(b' ');
        }
    }

    fn finish(self) {
        if self.ws.remove_extra_whitespaces {
            let sp: &[u8] = if self.ws.escape_whitespaces {
                SPACE_SYMBOL.as_bytes()
            } else {
                b" "
            };
            while self.out.ends_with(sp) {
                self.out.truncate(self.out.len() - sp.len());
            }
        }
    }
}

/// SentencePiece `IsValidDecodeUTF8`: the byte length of the character at the start of `s`, or
/// `None` when it is malformed (then one byte is consumed and U+FFFD produced).
#[inline]
pub(crate) fn valid_char_len(s: &[u8]) -> Option<usize> {
    let b0 = *s.first()?;
    let trail = |i: usize| s.get(i).is_some_and(|&b| b & 0xc0 == 0x80);
    let cp_ok = |cp: u32| cp < 0xd800 || (0xe000..=0x10ffff).contains(&cp);
    if b0 < 0x80 {
        return Some(1);
    }
    if b0 & 0xe0 == 0xc0 && trail(1) {
        let cp = (u32::from(b0 & 0x1f) << 6) | u32::from(s[1] & 0x3f);
        if cp >= 0x80 && cp_ok(cp) {
            return Some(2);
        }
    } else if b0 & 0xf0 == 0xe0 && trail(1) && trail(2) {
        let cp =
            (u32::from(b0 & 0x0f) << 12) | (u32::from(s[1] & 0x3f) << 6) | u32::from(s[2] & 0x3f);
        if cp >= 0x800 && cp_ok(cp) {
            return Some(3);
        }
    } else if b0 & 0xf8 == 0xf0 && trail(1) && trail(2) && trail(3) {
        let cp = (u32::from(b0 & 0x07) << 18)
            | (u32::from(s[1] & 0x3f) << 12)
            | (u32::from(s[2] & 0x3f) << 6)
            | u32::from(s[3] & 0x3f);
        if cp >= 0x10000 && cp_ok(cp) {
            return Some(4);
        }
    }
    None
}

const REPLACEMENT: &[u8] = "\u{fffd}".as_bytes();

impl SpNormalizer {
    pub(crate) fn new(
        unicode: UnicodeNorm,
        user_symbols: &[&str],
        ws: WhitespaceOptions,
    ) -> SpNormalizer {
        let user = PieceTrie::build(user_symbols.iter().map(|s| (s.as_bytes(), 0)).collect());
        SpNormalizer { unicode, user, ws }
    }

    /// Normalise `input`, appending the result (valid UTF-8) to `out` (cleared first).
    pub(crate) fn normalize(&self, input: &str, out: &mut Vec<u8>) {
        out.clear();
        if input.is_empty() {
            return;
        }
        let mut sink = Sink {
            out,
            ws: self.ws,
            heading: true,
            is_prev_space: false,
        };
        match &self.unicode {
            UnicodeNorm::Identity => self.normalize_with(input.as_bytes(), &mut sink, |_| None),
            UnicodeNorm::Charsmap(map) => {
                self.normalize_with(input.as_bytes(), &mut sink, |s| map.longest_match(s))
            }
            UnicodeNorm::Hf(norm) => self.normalize_hf(input, norm, &mut sink),
        }
        sink.finish();
    }

    /// The SentencePiece loop with a prefix rule `rule(rest) -> Some((consumed, replacement))`.
    #[inline]
    fn normalize_with<'m>(
        &self,
        bytes: &[u8],
        sink: &mut Sink<'_>,
        rule: impl Fn(&[u8]) -> Option<(usize, &'m str)>,
    ) {
        let mut pos = 0;
        while pos < bytes.len() {
            let rest = &bytes[pos..];
            if self.user.starts_with_byte(rest[0])
                && let Some((len, _)) = self.user.longest_prefix(rest)
            {
                sink.push(&rest[..len]);
                pos += len;
                continue;
            }
            if let Some((len, rep)) = rule(rest) {
                sink.push(rep.as_bytes());
                pos += len;
                continue;
            }
            match valid_char_len(rest) {
                Some(len) => {
                    sink.push(&rest[..len]);
                    pos += len;
                }
                None => {
                    sink.push(REPLACEMENT);
                    pos += 1;
                }
            }
        }
    }

    /// `tokenizers` normaliser applied between user symbols, then fed character by character.
    fn normalize_hf(&self, input: &str, norm: &NormalizerWrapper, sink: &mut Sink<'_>) {
        let bytes = input.as_bytes();
        let mut seg_start = 0;
        let mut pos = 0;
        let flush = |seg: &str, sink: &mut Sink<'_>| {
            if seg.is_empty() {
                return;
            }
            let mut ns = NormalizedString::from(seg);
            let text = match norm.normalize(&mut ns) {
                Ok(()) => ns.get().to_string(),
                Err(e) => {
                    tracing::warn!(
                        "tokenizer.json normalizer failed on a text segment ({e}); using it unnormalized"
                    );
                    seg.to_string()
                }
            };
            let mut buf = [0u8; 4];
            for c in text.chars() {
                sink.push(c.encode_utf8(&mut buf).as_bytes());
            }
        };
        while pos < bytes.len() {
            if self.user.starts_with_byte(bytes[pos])
                && let Some((len, _)) = self.user.longest_prefix(&bytes[pos..])
            {
                // A user symbol is valid UTF-8 and starts with a lead byte, so a match starts and
                // ends on character boundaries of `input`.
                flush(input.get(seg_start..pos).unwrap_or(""), sink);
                sink.push(&bytes[pos..pos + len]);
                pos += len;
                seg_start = pos;
                continue;
            }
            pos += 1;
        }
        flush(input.get(seg_start..).unwrap_or(""), sink);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(user: &[&str]) -> SpNormalizer {
        SpNormalizer::new(
            UnicodeNorm::Identity,
            user,
            WhitespaceOptions {
                add_dummy_prefix: true,
                remove_extra_whitespaces: true,
                escape_whitespaces: true,
            },
        )
    }

    fn norm(n: &SpNormalizer, s: &str) -> String {
        let mut out = Vec::new();
        n.normalize(s, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn whitespace_rules() {
        let n = sp(&["<n>", "<|blank_2|>"]);
        assert_eq!(norm(&n, ""), "");
        assert_eq!(norm(&n, "   "), "");
        assert_eq!(norm(&n, " x  y "), "▁x▁y");
        assert_eq!(norm(&n, "a<n>b"), "▁a<n>b");
        assert_eq!(norm(&n, "<n>"), "▁<n>");
        assert_eq!(norm(&n, "<|blank_2|>lead"), "▁<|blank_2|>lead");
        assert_eq!(norm(&n, "a <n> b"), "▁a▁<n>▁b");
        assert_eq!(norm(&n, "trail<|blank_2|>"), "▁trail<|blank_2|>");
    }

    #[test]
    fn hf_normalizer_path_matches_identity_on_plain_text() {
        let ws = WhitespaceOptions {
            add_dummy_prefix: true,
            remove_extra_whitespaces: true,
            escape_whitespaces: true,
        };
        let n = SpNormalizer::new(
            UnicodeNorm::Hf(tokenizers::normalizers::NFKC.into()),
            &["<n>"],
            ws,
        );
        assert_eq!(norm(&n, " ＡＢ<n>ｃ  d "), "▁AB<n>c▁d");
        assert_eq!(norm(&n, "<n>"), "▁<n>");
    }

    #[test]
    fn utf8_validation_as_sentencepiece() {
        assert_eq!(valid_char_len("a".as_bytes()), Some(1));
        assert_eq!(valid_char_len("é".as_bytes()), Some(2));
        assert_eq!(valid_char_len("你".as_bytes()), Some(3));
        assert_eq!(valid_char_len("👋".as_bytes()), Some(4));
        assert_eq!(valid_char_len(&[0xf0, 0x9f, 0x91]), None);
        assert_eq!(valid_char_len(&[0xed, 0xa0, 0x80]), None); // surrogate
        assert_eq!(valid_char_len(&[0xc0, 0x80]), None); // overlong
        assert_eq!(valid_char_len(&[0x80]), None);
    }
}
