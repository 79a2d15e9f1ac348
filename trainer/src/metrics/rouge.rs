//! ROUGE-1/2/L exactly as `rouge_chinese.Rouge().get_scores(hyp, ref)[0]` (rouge_chinese 1.0.3,
//! default `exclusive=True`), applied to space-joined jieba tokens.
//!
//! Pipeline of the original for each side: `cut_sent` (four regex substitutions that insert `\n`
//! after sentence-final punctuation, `rstrip()`, `split("\n")`), drop empty pieces, normalise each
//! piece with `" ".join(piece.split())`, then flatten with `piece.split(" ")`. A piece made only of
//! whitespace survives the emptiness test (it is tested before normalising) and contributes one
//! empty-string word — reproduced here because it changes the counts.

use std::collections::HashSet;

use super::pyfloat::{py_isspace, py_split_whitespace};

/// Precision, recall and F of one ROUGE variant (fractions, not ×100).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Prf {
    /// Precision.
    pub p: f64,
    /// Recall.
    pub r: f64,
    /// `2·p·r / (p + r + 1e-8)`, evaluated as `2.0 * ((p * r) / (p + r + 1e-8))`.
    pub f: f64,
}

/// ROUGE-1, ROUGE-2 and ROUGE-L of one pair.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RougeScores {
    /// Unique unigrams.
    pub rouge1: Prf,
    /// Unique bigrams.
    pub rouge2: Prf,
    /// LCS over the flattened word lists.
    pub rougel: Prf,
}

/// Why the original `get_scores` raises instead of scoring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RougeDegenerate {
    /// `ValueError("Hypothesis is empty.")`: the prediction is empty or whitespace only.
    EmptyHypothesis,
    /// `ValueError("Reference is empty.")`: the label is empty or whitespace only.
    EmptyReference,
}

/// Score `hyp` against `reference`, both given as `' '.join(tokens)` strings.
pub fn rouge_scores(hyp: &str, reference: &str) -> Result<RougeScores, RougeDegenerate> {
    let hyp_sents = sentences(hyp);
    let ref_sents = sentences(reference);
    // rouge_n checks the hypothesis first, so an empty pair reports the hypothesis.
    if hyp_sents.is_empty() {
        return Err(RougeDegenerate::EmptyHypothesis);
    }
    if ref_sents.is_empty() {
        return Err(RougeDegenerate::EmptyReference);
    }
    let hyp_words = flatten(&hyp_sents);
    let ref_words = flatten(&ref_sents);
    Ok(RougeScores {
        rouge1: rouge_n(&hyp_words, &ref_words, 1),
        rouge2: rouge_n(&hyp_words, &ref_words, 2),
        rougel: rouge_l(&hyp_words, &ref_words),
    })
}

/// `[" ".join(s.split()) for s in cut_sent(text) if len(s) > 0]`.
fn sentences(text: &str) -> Vec<String> {
    cut_sent(text)
        .split('\n')
        .filter(|s| !s.is_empty())
        .map(|s| py_split_whitespace(s).collect::<Vec<_>>().join(" "))
        .collect()
}

/// `_split_into_words`: `itertools.chain(*[s.split(" ") for s in sentences])`.
fn flatten(sentences: &[String]) -> Vec<&str> {
    sentences.iter().flat_map(|s| s.split(' ')).collect()
}

fn is_stop(c: char) -> bool {
    matches!(c, '。' | '！' | '？' | '?')
}

fn is_close_quote(c: char) -> bool {
    matches!(c, '”' | '’')
}

/// `Rouge.cut_sent` up to (and including) `rstrip()`; the caller splits at `\n`.
fn cut_sent(para: &str) -> String {
    let chars: Vec<char> = para.chars().collect();
    // re.sub('([。！？\?])([^”’])', r"\1\n\2", para)
    let chars = insert_newlines(&chars, &[is_stop], |c| !is_close_quote(c));
    // re.sub('(\.{6})([^”’])', r"\1\n\2", para)
    let dot: fn(char) -> bool = |c| c == '.';
    let chars = insert_newlines(&chars, &[dot; 6], |c| !is_close_quote(c));
    // re.sub('(\…{2})([^”’])', r"\1\n\2", para)
    let ellipsis: fn(char) -> bool = |c| c == '…';
    let chars = insert_newlines(&chars, &[ellipsis; 2], |c| !is_close_quote(c));
    // re.sub('([。！？\?][”’])([^，。！？\?])', r'\1\n\2', para)
    let chars = insert_newlines(&chars, &[is_stop, is_close_quote], |c| {
        c != '，' && !is_stop(c)
    });
    let s: String = chars.into_iter().collect();
    s.trim_end_matches(py_isspace).to_string()
}

/// `re.sub("(P)(N)", r"\1\n\2", text)` for a fixed-length prefix pattern `P` (one predicate per
/// character) and a one-character class `N`: a left-to-right scan of non-overlapping matches, as
/// Python's `re.sub` does. `N` (negated classes) also matches `\n`.
fn insert_newlines(
    chars: &[char],
    prefix: &[fn(char) -> bool],
    next: impl Fn(char) -> bool,
) -> Vec<char> {
    let k = prefix.len();
    let mut out = Vec::with_capacity(chars.len() + 8);
    let mut i = 0;
    while i < chars.len() {
        let matched = i + k < chars.len()
            && prefix.iter().enumerate().all(|(j, p)| p(chars[i + j]))
            && next(chars[i + k]);
        if matched {
            out.extend_from_slice(&chars[i..i + k]);
            out.push('\n');
            out.push(chars[i + k]);
            i += k + 1;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

fn f_score(p: f64, r: f64) -> f64 {
    2.0 * ((p * r) / (p + r + 1e-8))
}

/// `rouge_n` with `exclusive=True`: n-grams collected as sets.
fn rouge_n(hyp: &[&str], reference: &[&str], n: usize) -> Prf {
    let h: HashSet<&[&str]> = hyp.windows(n).collect();
    let r: HashSet<&[&str]> = reference.windows(n).collect();
    let overlap = h.intersection(&r).count();
    let p = if h.is_empty() {
        0.0
    } else {
        overlap as f64 / h.len() as f64
    };
    let rec = if r.is_empty() {
        0.0
    } else {
        overlap as f64 / r.len() as f64
    };
    Prf {
        p,
        r: rec,
        f: f_score(p, rec),
    }
}

/// `rouge_l_summary_level` as rouge_chinese 1.0.3 computes it: one LCS over the whole flattened
/// word lists (with duplicates).
fn rouge_l(hyp: &[&str], reference: &[&str]) -> Prf {
    let llcs = lcs_len(reference, hyp) as f64;
    let r = llcs / reference.len() as f64;
    let p = llcs / hyp.len() as f64;
    Prf {
        p,
        r,
        f: f_score(p, r),
    }
}

fn lcs_len(x: &[&str], y: &[&str]) -> usize {
    let mut prev = vec![0usize; y.len() + 1];
    let mut cur = vec![0usize; y.len() + 1];
    for xi in x {
        for (j, yj) in y.iter().enumerate() {
            cur[j + 1] = if xi == yj {
                prev[j] + 1
            } else {
                prev[j + 1].max(cur[j])
            };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[y.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sents(s: &str) -> Vec<String> {
        sentences(s)
    }

    #[test]
    fn cut_sent_follows_the_regexes() {
        // Expected from Python: [" ".join(s.split()) for s in Rouge().cut_sent(x) if len(s) > 0]
        assert_eq!(sents("a 。 b ？ ” c"), ["a 。", "b ？", "” c"]);
        assert_eq!(sents("好？”好"), ["好？”", "好"]);
        assert_eq!(sents("a ....... b"), ["a ......", ". b"]);
        assert_eq!(sents("x……y"), ["x……", "y"]);
        assert_eq!(sents("a \n \n b  "), ["a", "", "b"]);
        assert_eq!(sents(" \u{1C}\n "), Vec::<String>::new());
    }

    #[test]
    fn whitespace_only_sentence_counts_as_an_empty_word() {
        // Python: Rouge().get_scores("a \n \n b", "a b")[0]["rouge-1"] -> p = 2/3 (words a, "", b).
        let s = rouge_scores("a \n \n b", "a b").unwrap();
        assert_eq!(s.rouge1.p, 2.0 / 3.0);
        assert_eq!(s.rouge1.r, 1.0);
        assert_eq!(s.rougel.p, 2.0 / 3.0);
    }

    #[test]
    fn empty_sides_are_reported() {
        assert_eq!(
            rouge_scores("  \n", "a"),
            Err(RougeDegenerate::EmptyHypothesis)
        );
        assert_eq!(rouge_scores("", ""), Err(RougeDegenerate::EmptyHypothesis));
        assert_eq!(rouge_scores("a", " "), Err(RougeDegenerate::EmptyReference));
    }

    #[test]
    fn unique_ngrams_and_lcs_with_duplicates() {
        // "宝宝" vs "宝宝 宝宝 宝宝": unigram sets equal, no hyp bigram, LCS 1 of 3.
        let s = rouge_scores("宝宝", "宝宝 宝宝 宝宝").unwrap();
        assert_eq!((s.rouge1.p, s.rouge1.r), (1.0, 1.0));
        assert_eq!(
            s.rouge2,
            Prf {
                p: 0.0,
                r: 0.0,
                f: 0.0
            }
        );
        assert_eq!((s.rougel.p, s.rougel.r), (1.0, 1.0 / 3.0));
        assert_eq!(s.rougel.f, 0.4999999962500001);
    }
}
