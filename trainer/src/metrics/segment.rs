//! Chinese word segmentation as Python `jieba.lcut(text)` (jieba 0.42.1: precise mode, HMM on,
//! default dictionary) on top of `jieba-rs`.
//!
//! `jieba-rs` 0.11 embeds the same dictionary and HMM and implements the same DAG / route /
//! Viterbi algorithm (same tie-breaking), but it departs from the Python package in four places.
//! This wrapper undoes three of them:
//!
//! 1. **Block regex.** Python cuts text into blocks with `[\u4E00-\u9FD5a-zA-Z0-9+#&._%-]+`;
//!    `jieba-rs` also counts U+9FD6–U+9FFF and the CJK extension blocks (U+3400…, U+F900…,
//!    U+20000…) as "han". Python emits each such character as a token of its own, `jieba-rs` may
//!    glue it to its neighbours through the HMM. We split blocks ourselves with the Python class
//!    and hand `jieba-rs` only Python-han runs; everything else becomes one token per character
//!    (`\r\n` kept together), exactly as `jieba.cut` does for non-han blocks.
//! 2. **HMM fallback regex.** For an out-of-vocabulary run the HMM splits non-CJK parts with
//!    `[a-zA-Z0-9]+(?:\.\d+)?%?`; `jieba-rs` uses a wider rule that keeps `.`, `_` and `-`
//!    between alphanumerics (`ChatGLM-6B` stays whole, Python gives `ChatGLM` `-` `6B`). No
//!    dictionary word contains `.`, `_` or `-`, so any such token can only come from that rule and
//!    is re-split with the Python regex ([`split_like_finalseg`]).
//! 3. **Dictionary total.** Python's `dict.txt` lists `B超 3 n` twice; Python adds both lines to the
//!    total frequency (60101967), `jieba-rs` de-duplicates (60101964). The total enters every
//!    route score as `ln(total)`, so a 3-count sentinel word that cannot occur inside a block
//!    (it starts with U+0000) restores Python's total.
//!
//! Not undone: `jieba-rs` stores the HMM emission log-probabilities rounded to 6 decimals (Python
//! keeps ~16 digits). This only matters for a Viterbi near-tie within ~1e-6; rounding Python's
//! own tables the same way changed no segmentation of 27,413 texts (AdvertiseGen dev and 5000
//! train rows, raw and NFKC, plus random mixes) nor of 20,000 random HMM-only strings. Against
//! Python jieba 0.42.1 this wrapper matched token for token on those 27,413 texts and on 6,000
//! more with inserted CJK-extension characters, emoji, `\r\n`, dots and dashes (raw `jieba-rs`
//! differed on 27 and 537 of them).

use std::sync::OnceLock;

use jieba_rs::Jieba;

/// Python's duplicate `B超 3 n` line, re-added under a name no text block can contain.
const TOTAL_SENTINEL: &str = "\u{0}jieba-0.42.1-duplicate-B超";
const TOTAL_SENTINEL_FREQ: usize = 3;

fn jieba() -> &'static Jieba {
    static JIEBA: OnceLock<Jieba> = OnceLock::new();
    JIEBA.get_or_init(|| {
        let mut j = Jieba::new();
        j.add_word(TOTAL_SENTINEL, Some(TOTAL_SENTINEL_FREQ), None);
        j
    })
}

/// Characters of Python jieba's `re_han_default` block class.
fn is_python_han(c: char) -> bool {
    matches!(c, '\u{4E00}'..='\u{9FD5}')
        || c.is_ascii_alphanumeric()
        || matches!(c, '+' | '#' | '&' | '.' | '_' | '%' | '-')
}

/// Segment `text` exactly like Python `jieba.lcut(text)` (see the module docs for the one
/// residual, theoretical difference). The concatenation of the tokens is `text`.
pub fn lcut(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(first) = rest.chars().next() {
        let han = is_python_han(first);
        let end = rest
            .char_indices()
            .find(|&(_, c)| is_python_han(c) != han)
            .map_or(rest.len(), |(i, _)| i);
        let (block, tail) = rest.split_at(end);
        if han {
            for token in jieba().cut(block, true) {
                if token.word.contains(['.', '_', '-']) {
                    split_like_finalseg(token.word, &mut out);
                } else {
                    out.push(token.word);
                }
            }
        } else {
            push_non_han_block(block, &mut out);
        }
        rest = tail;
    }
    out
}

/// A non-han block: Python splits it with `(\r\n|\s)` and then emits every remaining character
/// on its own, so each character is a token except `\r\n`, which stays one.
fn push_non_han_block<'a>(block: &'a str, out: &mut Vec<&'a str>) {
    let mut i = 0;
    while i < block.len() {
        let rest = &block[i..];
        let len = if rest.starts_with("\r\n") {
            2
        } else {
            rest.chars().next().map_or(rest.len(), char::len_utf8)
        };
        out.push(&rest[..len]);
        i += len;
    }
}

/// `re.split("([a-zA-Z0-9]+(?:\.\d+)?%?)", s)` minus empty pieces, as `jieba.finalseg.cut`
/// applies it to non-CJK parts of an out-of-vocabulary run. `s` is ASCII here (it comes from a
/// Python-han block without CJK characters), so `\d` is an ASCII digit.
pub(crate) fn split_like_finalseg<'a>(s: &'a str, out: &mut Vec<&'a str>) {
    let b = s.as_bytes();
    let mut gap_start = 0;
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_alphanumeric() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && b[i].is_ascii_alphanumeric() {
            i += 1;
        }
        if i + 1 < b.len() && b[i] == b'.' && b[i + 1].is_ascii_digit() {
            i += 1;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
        }
        if i < b.len() && b[i] == b'%' {
            i += 1;
        }
        if gap_start < start {
            out.push(&s[gap_start..start]);
        }
        out.push(&s[start..i]);
        gap_start = i;
    }
    if gap_start < b.len() {
        out.push(&s[gap_start..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finalseg(s: &str) -> Vec<&str> {
        let mut v = Vec::new();
        split_like_finalseg(s, &mut v);
        v
    }

    #[test]
    fn finalseg_regex_matches_python_re_split() {
        // Expected values from Python `[x for x in re_skip.split(s) if x]`.
        assert_eq!(finalseg("ChatGLM-6B"), ["ChatGLM", "-", "6B"]);
        assert_eq!(finalseg("v1.2.3"), ["v1.2", ".", "3"]);
        assert_eq!(finalseg("1.5a%"), ["1.5", "a%"]);
        assert_eq!(finalseg("a.b"), ["a", ".", "b"]);
        assert_eq!(finalseg("--x__"), ["--", "x", "__"]);
        assert_eq!(finalseg("......"), ["......"]);
        assert_eq!(finalseg("3.5%%"), ["3.5%", "%"]);
    }

    #[test]
    fn matches_python_jieba_on_mixed_text() {
        // Expected tokens produced by Python jieba 0.42.1 `jieba.lcut`.
        assert_eq!(
            lcut("ChatGLM-6B 是一个开源的对话模型"),
            [
                "ChatGLM", "-", "6B", " ", "是", "一个", "开源", "的", "对话", "模型"
            ]
        );
        assert_eq!(
            lcut("Hello world, this is a test."),
            [
                "Hello", " ", "world", ",", " ", "this", " ", "is", " ", "a", " ", "test", "."
            ]
        );
        assert_eq!(lcut("a\r\n\nb"), ["a", "\r\n", "\n", "b"]);
        assert!(lcut("").is_empty());
    }

    #[test]
    fn extension_ideographs_and_connectors_follow_python() {
        // Python jieba 0.42.1 output; raw jieba-rs glues U+3400/U+9FFF to their neighbours and
        // keeps `T-shirt` and `v1.2.3-beta` whole.
        let s = "㐀中文鿿混合😀 T-shirt很好看v1.2.3-beta\r\n";
        assert_eq!(
            lcut(s),
            [
                "㐀", "中文", "鿿", "混合", "😀", " ", "T", "-", "shirt", "很", "好看", "v1.2",
                ".", "3", "-", "beta", "\r\n"
            ]
        );
        assert_eq!(lcut(s).concat(), s);
    }

    #[test]
    fn dictionary_total_is_pythons() {
        // `jieba.dt.total` of jieba 0.42.1.
        assert!(
            format!("{:?}", jieba()).contains("total_freq: 60101967"),
            "{:?}",
            jieba()
        );
    }
}
