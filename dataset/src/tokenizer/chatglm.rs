//! ChatGLM's text handling around SentencePiece (`tokenization_chatglm.py` + HF `tokenize`).
//!
//! 1. [`SpecialSplitter`]: the HF layer cuts the text at literal occurrences of the registered
//!    special tokens (`<sop>`, `<eop>`, `<unk>`, `<pad>`, `[MASK]` — not `[gMASK]`) and strips
//!    Python whitespace (`str.isspace`) from the text next to each of them; every remaining
//!    non-empty chunk is encoded on its own (so it gets its own dummy prefix).
//! 2. [`substitute`]: in each chunk `\n` → `<n>`, `\t` → `<|tab|>`, and runs of spaces → the
//!    `<|blank_n|>` tokens, as `str.replace` for n = 80 down to 2 leaves them: a run of L spaces
//!    becomes ⌊L/80⌋ × `<|blank_80|>` followed by `<|blank_r|>` (r = L mod 80 ≥ 2) or one space.

use super::trie::PieceTrie;

/// Python's `str.isspace` (Unicode category Zs or bidi class WS/B/S) — a superset of Rust's
/// `char::is_whitespace` by U+001C..U+001F.
pub(crate) fn py_isspace(c: char) -> bool {
    matches!(
        c,
        '\t'..='\r'
            | '\u{1c}'..='\u{1f}'
            | ' '
            | '\u{85}'
            | '\u{a0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200a}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202f}'
            | '\u{205f}'
            | '\u{3000}'
    )
}

/// A piece of the input after the special-token split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunk<'a> {
    /// Ordinary text (already stripped next to special tokens; may be empty).
    Text(&'a str),
    /// A special token: index into [`SpecialSplitter::tokens`].
    Special(usize),
}

/// A registered special token and its whitespace-stripping behaviour.
#[derive(Debug, Clone)]
pub(crate) struct SplitToken {
    pub text: String,
    pub id: u32,
    /// Strip whitespace at the end of the preceding text.
    pub strip_left: bool,
    /// Strip whitespace at the start of the following text.
    pub strip_right: bool,
}

/// Splits text on the HF special tokens (leftmost, longest match).
#[derive(Debug, Clone)]
pub(crate) struct SpecialSplitter {
    pub(crate) tokens: Vec<SplitToken>,
    trie: PieceTrie,
}

impl SpecialSplitter {
    pub(crate) fn new(tokens: Vec<SplitToken>) -> SpecialSplitter {
        let trie = PieceTrie::build(
            tokens
                .iter()
                .enumerate()
                .map(|(i, t)| (t.text.as_bytes(), i as u32))
                .collect(),
        );
        SpecialSplitter { tokens, trie }
    }

    /// Whether `text` may contain a special token (cheap pre-check).
    #[inline]
    pub(crate) fn may_match(&self, text: &str) -> bool {
        text.bytes().any(|b| self.trie.starts_with_byte(b))
    }

    /// Split `text` into chunks (appended to `out`, cleared first) and strip whitespace next to
    /// special tokens as HF `tokenize` does for plain-string special tokens.
    pub(crate) fn split<'a>(&self, text: &'a str, out: &mut Vec<Chunk<'a>>) {
        out.clear();
        let bytes = text.as_bytes();
        let mut start = 0;
        let mut pos = 0;
        while pos < bytes.len() {
            if self.trie.starts_with_byte(bytes[pos])
                && let Some((len, idx)) = self.trie.longest_prefix(&bytes[pos..])
            {
                if pos > start {
                    out.push(Chunk::Text(&text[start..pos]));
                }
                out.push(Chunk::Special(idx as usize));
                pos += len;
                start = pos;
                continue;
            }
            pos += 1;
        }
        if start < bytes.len() {
            out.push(Chunk::Text(&text[start..]));
        }
        for i in 0..out.len() {
            let Chunk::Special(k) = out[i] else { continue };
            let tok = &self.tokens[k];
            if tok.strip_right
                && let Some(Chunk::Text(t)) = out.get_mut(i + 1)
            {
                *t = t.trim_start_matches(py_isspace);
            }
            if tok.strip_left
                && i > 0
                && let Some(Chunk::Text(t)) = out.get_mut(i - 1)
            {
                *t = t.trim_end_matches(py_isspace);
            }
        }
    }
}

/// `" ".join(text.strip().split())` with Python whitespace (the `remove_space` option).
pub(crate) fn collapse_python_whitespace(text: &str) -> String {
    text.split(py_isspace)
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `<|blank_n|>` strings for n = 0..=max (entries 0 and 1 unused).
pub(crate) fn blank_tokens(max_blank: usize) -> Vec<String> {
    (0..=max_blank).map(|n| format!("<|blank_{n}|>")).collect()
}

/// ChatGLM `_preprocess`: newline, tab and space-run substitutions, appended to `out`.
pub(crate) fn substitute(chunk: &str, blanks: &[String], out: &mut String) {
    let max_blank = blanks.len().saturating_sub(1);
    let bytes = chunk.as_bytes();
    let mut last = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' | b'\t' => {
                out.push_str(&chunk[last..i]);
                out.push_str(if bytes[i] == b'\n' { "<n>" } else { "<|tab|>" });
                i += 1;
                last = i;
            }
            b' ' => {
                let run_start = i;
                while i < bytes.len() && bytes[i] == b' ' {
                    i += 1;
                }
                let run = i - run_start;
                if run >= 2 && max_blank >= 2 {
                    out.push_str(&chunk[last..run_start]);
                    for _ in 0..run / max_blank {
                        out.push_str(&blanks[max_blank]);
                    }
                    match run % max_blank {
                        0 => {}
                        1 => out.push(' '),
                        r => out.push_str(&blanks[r]),
                    }
                    last = i;
                }
            }
            _ => i += 1,
        }
    }
    out.push_str(&chunk[last..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn splitter() -> SpecialSplitter {
        SpecialSplitter::new(
            ["<sop>", "<eop>", "<unk>", "<pad>", "[MASK]"]
                .iter()
                .enumerate()
                .map(|(i, t)| SplitToken {
                    text: t.to_string(),
                    id: i as u32,
                    strip_left: true,
                    strip_right: true,
                })
                .collect(),
        )
    }

    fn split(s: &str) -> Vec<Chunk<'_>> {
        let mut out = Vec::new();
        splitter().split(s, &mut out);
        out
    }

    #[test]
    fn special_split_strips_python_whitespace() {
        use Chunk::*;
        assert_eq!(split("a <pad> b"), vec![Text("a"), Special(3), Text("b")]);
        assert_eq!(split("a<sop>b"), vec![Text("a"), Special(0), Text("b")]);
        assert_eq!(
            split("x\n\u{1f}[MASK]\u{3000}y"),
            vec![Text("x"), Special(4), Text("y")]
        );
        assert_eq!(
            split("a <sop> <eop> b"),
            vec![Text("a"), Special(0), Text(""), Special(1), Text("b")]
        );
        assert_eq!(
            split("[gMASK] <so<sop>"),
            vec![Text("[gMASK] <so"), Special(0)]
        );
        assert_eq!(split(""), vec![]);
        assert_eq!(split("  plain  "), vec![Text("  plain  ")]);
        // ZERO WIDTH SPACE is not Python whitespace.
        assert_eq!(split("\u{200b}<eop>"), vec![Text("\u{200b}"), Special(1)]);
        let s = splitter();
        assert!(s.may_match("x<y") && !s.may_match("纯文本"));
    }

    #[test]
    fn added_token_flags_control_stripping() {
        let s = SpecialSplitter::new(vec![SplitToken {
            text: "<x>".into(),
            id: 9,
            strip_left: true,
            strip_right: false,
        }]);
        let mut out = Vec::new();
        s.split("a <x> b", &mut out);
        assert_eq!(
            out,
            vec![Chunk::Text("a"), Chunk::Special(0), Chunk::Text(" b")]
        );
    }

    fn sub(s: &str) -> String {
        let mut out = String::new();
        substitute(s, &blank_tokens(80), &mut out);
        out
    }

    #[test]
    fn substitutions() {
        assert_eq!(sub("a\nb\tc"), "a<n>b<|tab|>c");
        assert_eq!(sub("a  b   c d"), "a<|blank_2|>b<|blank_3|>c d");
        assert_eq!(sub(&" ".repeat(81)), "<|blank_80|> ");
        assert_eq!(sub(&" ".repeat(162)), "<|blank_80|><|blank_80|><|blank_2|>");
        assert_eq!(sub(&" ".repeat(160)), "<|blank_80|><|blank_80|>");
        assert_eq!(sub(" x "), " x ");
        assert_eq!(sub(""), "");
        assert_eq!(sub("中 \n\t  文"), "中 <n><|tab|><|blank_2|>文");
    }

    #[test]
    fn python_whitespace() {
        assert!(py_isspace('\u{1c}') && py_isspace('\u{85}') && py_isspace('\u{3000}'));
        assert!(!py_isspace('\u{200b}') && !py_isspace('a') && !py_isspace('\u{180e}'));
        assert_eq!(collapse_python_whitespace("  a \t b\u{3000}c  "), "a b c");
    }
}
