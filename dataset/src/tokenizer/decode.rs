//! Ids → text, as `ChatGLMTokenizer.decode` in transformers 4.27.1.
//!
//! Order: every pad id is removed (always); with `skip_special_tokens` the ids of the HF special
//! tokens (bos, eos, unk, pad, mask) are dropped; SentencePiece `DecodePieces` (CONTROL → nothing,
//! `<unk>` → `" ⁇ "`, runs of byte pieces re-assembled as UTF-8 with U+FFFD for each malformed byte,
//! `▁` → space, the leading `▁` of pieces is dropped while the text is still empty); then
//! ChatGLM's reverse substitutions on the *text* (`<n>` → newline, `<|tab|>` → tab,
//! `<|blank_n|>` → n spaces, n = 2..=80); then, if asked, HF `clean_up_tokenization`.

use std::borrow::Cow;

use super::normalize::{SPACE_SYMBOL, valid_char_len};
use super::sentencepiece_model::PieceKind;
use super::unigram::Vocab;

/// Settings of the SentencePiece decoder.
#[derive(Debug, Clone)]
pub(crate) struct SpDecoder {
    /// Text of the unknown piece (`trainer_spec.unk_surface`, default `" ⁇ "`).
    pub unk_surface: String,
    /// Drop a leading `▁` at the start of the text (add_dummy_prefix || remove_extra_whitespaces).
    pub strip_bos_ws: bool,
    /// remove_extra_whitespaces: keep dropping leading `▁` until some text was produced.
    pub remove_extra_whitespaces: bool,
}

impl SpDecoder {
    /// SentencePiece `Decode` of an id sequence (ids must be `< vocab.len()`).
    pub(crate) fn decode(&self, vocab: &Vocab, ids: &[u32]) -> String {
        let mut text = String::new();
        let mut bytes: Vec<u8> = Vec::new();
        let mut is_bos_ws = true;
        let mut bos_ws_seen = false;
        for &id in ids {
            let kind = vocab.kind(id).unwrap_or(PieceKind::Unknown);
            if kind == PieceKind::Byte {
                if let Some(b) = vocab.byte_value(id) {
                    bytes.push(b);
                }
                continue;
            }
            flush_bytes(&mut bytes, &mut text);
            if bos_ws_seen || !text.is_empty() {
                is_bos_ws = false;
            }
            bos_ws_seen = false;
            match kind {
                PieceKind::Control => {}
                PieceKind::Unknown => text.push_str(&self.unk_surface),
                _ => {
                    let mut piece = vocab.pieces[id as usize].as_str();
                    if is_bos_ws
                        && self.strip_bos_ws
                        && let Some(rest) = piece.strip_prefix(SPACE_SYMBOL)
                    {
                        piece = rest;
                        // With remove_extra_whitespaces every leading `▁` piece is dropped.
                        bos_ws_seen = !self.remove_extra_whitespaces;
                    }
                    if piece.contains(SPACE_SYMBOL) {
                        text.push_str(&piece.replace(SPACE_SYMBOL, " "));
                    } else {
                        text.push_str(piece);
                    }
                }
            }
        }
        flush_bytes(&mut bytes, &mut text);
        text
    }
}

/// Append the UTF-8 characters of `bytes` (U+FFFD per malformed byte) and clear it.
fn flush_bytes(bytes: &mut Vec<u8>, text: &mut String) {
    let mut off = 0;
    while off < bytes.len() {
        match valid_char_len(&bytes[off..]) {
            Some(n) => {
                text.push_str(std::str::from_utf8(&bytes[off..off + n]).unwrap_or("\u{fffd}"));
                off += n;
            }
            None => {
                text.push('\u{fffd}');
                off += 1;
            }
        }
    }
    bytes.clear();
}

/// ChatGLM `SPTokenizer.postprocess`: `<n>`, `<|tab|>` and `<|blank_n|>` (2 ≤ n ≤ `max_blank`) back
/// to whitespace. One left-to-right pass; equivalent to the reference's sequence of `str.replace`
/// calls because no pattern can overlap another or be formed by a replacement.
pub(crate) fn postprocess(text: &str, max_blank: usize) -> Cow<'_, str> {
    if !text.contains('<') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('<') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(r) = tail.strip_prefix("<n>") {
            out.push('\n');
            rest = r;
        } else if let Some(r) = tail.strip_prefix("<|tab|>") {
            out.push('\t');
            rest = r;
        } else if let Some((n, r)) = blank_token(tail, max_blank) {
            out.extend(std::iter::repeat_n(' ', n));
            rest = r;
        } else {
            out.push('<');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// `<|blank_n|>` at the start of `s` with n written canonically (no leading zero) and in range.
fn blank_token(s: &str, max_blank: usize) -> Option<(usize, &str)> {
    let r = s.strip_prefix("<|blank_")?;
    let digits = r.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 4 || r.starts_with('0') {
        return None;
    }
    let n: usize = r[..digits].parse().ok()?;
    let after = r[digits..].strip_prefix("|>")?;
    (2..=max_blank).contains(&n).then_some((n, after))
}

/// HF `PreTrainedTokenizerBase.clean_up_tokenization` (transformers 4.27.1), applied in order.
pub(crate) fn clean_up_tokenization(text: String) -> String {
    const RULES: [(&str, &str); 10] = [
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ];
    let mut text = text;
    if !text.contains(' ') {
        return text;
    }
    for (from, to) in RULES {
        if text.contains(from) {
            text = text.replace(from, to);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postprocess_rules() {
        assert_eq!(
            postprocess("a<n>b<|tab|>c<|blank_2|>d<|blank_80|>e", 80),
            format!("a\nb\tc  d{}e", " ".repeat(80))
        );
        assert_eq!(
            postprocess("<|blank_1|><|blank_81|><|blank_02|><|blank_|><n", 80),
            "<|blank_1|><|blank_81|><|blank_02|><|blank_|><n"
        );
        assert_eq!(postprocess("<<n>>", 80), "<\n>");
        assert_eq!(postprocess("plain", 80), "plain");
    }

    #[test]
    fn clean_up_rules_in_order() {
        assert_eq!(
            clean_up_tokenization("I can't do it . Yes , ok ! why ?".into()),
            "I can't do it. Yes, ok! why?"
        );
        assert_eq!(
            clean_up_tokenization("he 's we 're I 'm they 've do n't".into()),
            "he's we're I'm they've don't"
        );
        assert_eq!(clean_up_tokenization("a ' b".into()), "a'b");
        // Python's replace does not rescan: "  ." becomes " ." in one pass.
        assert_eq!(clean_up_tokenization("x  .".into()), "x .");
        assert_eq!(clean_up_tokenization("无空格".into()), "无空格");
    }

    #[test]
    fn malformed_bytes_become_replacement_characters() {
        let mut t = String::new();
        let mut b = vec![0xf0, 0x9f, 0x91, b'a', 0xe4, 0xbd, 0xa0];
        flush_bytes(&mut b, &mut t);
        assert_eq!(t, "\u{fffd}\u{fffd}\u{fffd}a你");
        assert!(b.is_empty());
    }
}
