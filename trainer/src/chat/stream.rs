//! Streaming an answer while it is generated: after every token the whole answer so far is
//! decoded and post-processed (as `stream_chat` does), and only its *stable* part is shown — text
//! that later tokens can no longer change.
//!
//! What may still change at the end of the text, and is therefore held back:
//! - U+FFFD: an incomplete UTF-8 sequence of byte pieces (the next byte piece completes it);
//! - whitespace: `strip()` removes it if nothing follows;
//! - ASCII `, ! : ; ?`: they turn full-width if the next character is a CJK ideograph;
//! - a proper prefix of `[[训练时间]]` (replaced by `2023年` once complete);
//! - a space followed by a proper prefix of what HF's `clean_up_tokenization` contracts
//!   (` n't`, ` 'm`, ` 's`, ` 've`, ` 're`, ` ' `): the space disappears once complete.
//!
//! If a later text still does not extend what was shown (an unforeseen rewrite), nothing more is
//! shown until the end, where [`TextStream::finish`] reports a rewrite.

use crate::metrics::py_isspace;

/// Contractions of `clean_up_tokenization` that remove the space before them.
const CLEANUP_TAILS: [&str; 6] = [" n't", " 'm", " 's", " 've", " 're", " ' "];
/// Replaced by `2023年` in the post-processing.
const TRAINING_TIME: &str = "[[训练时间]]";

/// Byte length of the part of `text` (a post-processed answer so far) that no later token can
/// change (see the module documentation).
pub fn stable_prefix_len(text: &str) -> usize {
    let mut end = text.len();
    while let Some(c) = text[..end].chars().next_back() {
        if c == '\u{FFFD}' || py_isspace(c) || matches!(c, ',' | '!' | ':' | ';' | '?') {
            end -= c.len_utf8();
        } else {
            break;
        }
    }
    let t = &text[..end];
    // The earliest start of a non-empty proper prefix of a pattern that ends the text.
    let mut cut = end;
    for (i, _) in t.char_indices().rev().take(TRAINING_TIME.chars().count()) {
        let tail = &t[i..];
        if tail.len() < TRAINING_TIME.len() && TRAINING_TIME.starts_with(tail) {
            cut = cut.min(i);
        }
    }
    if let Some(space) = t.rfind(' ') {
        let tail = &t[space..];
        if CLEANUP_TAILS
            .iter()
            .any(|p| tail.len() < p.len() && p.starts_with(tail))
        {
            cut = cut.min(space);
        }
    }
    cut
}

/// How a streamed answer ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    /// Show this text after what was shown: together they are the final answer.
    Append(String),
    /// What was shown is not a prefix of the final answer (a rare late rewrite); this is the
    /// whole final answer.
    Rewrite(String),
}

/// The text shown so far of one streamed answer.
#[derive(Debug, Clone, Default)]
pub struct TextStream {
    shown: String,
}

impl TextStream {
    /// Nothing shown yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Given the post-processed answer so far, the new text to show (possibly empty).
    pub fn update(&mut self, answer_so_far: &str) -> String {
        let stable = &answer_so_far[..stable_prefix_len(answer_so_far)];
        match stable.strip_prefix(self.shown.as_str()) {
            Some(delta) if !delta.is_empty() => {
                let delta = delta.to_string();
                self.shown.push_str(&delta);
                delta
            }
            _ => String::new(),
        }
    }

    /// The end of the answer: what remains to be shown of `final_answer`.
    pub fn finish(&mut self, final_answer: &str) -> StreamEnd {
        let end = match final_answer.strip_prefix(self.shown.as_str()) {
            Some(rest) => StreamEnd::Append(rest.to_string()),
            None => StreamEnd::Rewrite(final_answer.to_string()),
        };
        self.shown = final_answer.to_string();
        end
    }

    /// Everything shown so far.
    pub fn shown(&self) -> &str {
        &self.shown
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat_text::chat_postprocess;

    #[test]
    fn holds_back_what_may_still_change() {
        assert_eq!(stable_prefix_len("你好"), "你好".len());
        assert_eq!(stable_prefix_len("你好\u{FFFD}\u{FFFD}"), "你好".len());
        assert_eq!(stable_prefix_len("abc  "), 3);
        assert_eq!(stable_prefix_len("a,"), 1);
        assert_eq!(stable_prefix_len("a?\u{FFFD}"), 1);
        assert_eq!(stable_prefix_len("我的[[训练"), "我的".len());
        assert_eq!(stable_prefix_len("我的["), "我的".len());
        assert_eq!(
            stable_prefix_len("a [b"),
            4,
            "`[b` cannot become [[训练时间]]"
        );
        assert_eq!(stable_prefix_len("I can n"), 5);
        assert_eq!(stable_prefix_len("I can n'"), 5);
        assert_eq!(stable_prefix_len("I can no"), 8);
        assert_eq!(stable_prefix_len("it '"), 2);
        assert_eq!(stable_prefix_len(""), 0);
    }

    /// Streaming any sequence of growing raw texts shows exactly the final post-processed answer.
    fn stream_all(raw_steps: &[&str]) -> (String, Vec<String>) {
        let mut s = TextStream::new();
        let mut shown = String::new();
        let mut deltas = Vec::new();
        for raw in raw_steps {
            let d = s.update(&chat_postprocess(raw));
            shown.push_str(&d);
            deltas.push(d);
        }
        let fin = chat_postprocess(raw_steps.last().copied().unwrap_or(""));
        match s.finish(&fin) {
            StreamEnd::Append(rest) => shown.push_str(&rest),
            StreamEnd::Rewrite(all) => shown = all,
        }
        assert_eq!(shown, fin);
        (shown, deltas)
    }

    #[test]
    fn streamed_text_is_the_final_answer() {
        let (shown, deltas) = stream_all(&[
            "你",
            "你好",
            "你好,",
            "你好,\u{FFFD}",
            "你好,世",
            "你好,世界 ",
            "你好,世界 !",
        ]);
        assert_eq!(shown, "你好，世界 !");
        assert_eq!(deltas, ["你", "好", "，", "", "世", "界", ""]);
        // A mark after a non-ideograph waits for its right neighbour.
        let (shown, deltas) = stream_all(&["ab", "ab,", "ab,中"]);
        assert_eq!(shown, "ab，中");
        assert_eq!(deltas, ["ab", "", "，中"]);
        let (shown, _) = stream_all(&["截止于[[", "截止于[[训练时间", "截止于[[训练时间]]"]);
        assert_eq!(shown, "截止于2023年");
    }

    #[test]
    fn no_replacement_character_is_ever_shown_for_a_split_character() {
        // "好" = E5 A5 BD arriving one byte piece at a time.
        let steps = ["你\u{FFFD}", "你\u{FFFD}\u{FFFD}", "你好"];
        let (_, deltas) = stream_all(&steps);
        assert!(deltas.iter().all(|d| !d.contains('\u{FFFD}')), "{deltas:?}");
    }

    #[test]
    fn an_unforeseen_rewrite_is_reported() {
        let mut s = TextStream::new();
        assert_eq!(s.update("abc"), "abc");
        assert_eq!(s.update("xbcd"), "");
        assert_eq!(s.finish("xbcd"), StreamEnd::Rewrite("xbcd".into()));
    }
}
