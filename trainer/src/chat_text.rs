//! Post-processing of a chat answer, as ChatGLM-6B's `process_response` in `modeling_chatglm.py`
//! (used by `model.chat` / `stream_chat`, not by `main.py`'s evaluation; reference §3.12).
//!
//! The original:
//! ```python
//! response = response.strip()
//! response = response.replace("[[训练时间]]", "2023年")
//! for ascii, full in [[",", "，"], ["!", "！"], [":", "："], [";", "；"], ["\?", "？"]]:
//!     response = re.sub(r"([\u4e00-\u9fff])%s" % ascii, r"\1%s" % full, response)
//!     response = re.sub(r"%s([\u4e00-\u9fff])" % ascii, r"%s\1" % full, response)
//! ```
//! Each `re.sub` consumes the ideograph with the mark, but an ideograph is never one of the marks,
//! so consecutive matches never compete: the first pass converts every mark whose left neighbour is
//! an ideograph, the second every remaining mark whose right neighbour is one. Neighbours are
//! never changed into or out of ideographs by either pass, so both reduce to one scan of the
//! original neighbours, which is what [`chat_postprocess`] does.

use crate::metrics::py_isspace;

/// `process_response`: Python `strip()`, `[[训练时间]]` → `2023年`, then ASCII `,` `!` `:` `;` `?`
/// next to a CJK Unified Ideograph (U+4E00–U+9FFF) become `，` `！` `：` `；` `？`.
pub fn chat_postprocess(text: &str) -> String {
    let replaced = text
        .trim_matches(py_isspace)
        .replace("[[训练时间]]", "2023年");
    let chars: Vec<char> = replaced.chars().collect();
    let is_ideograph = |c: Option<&char>| matches!(c, Some('\u{4E00}'..='\u{9FFF}'));
    chars
        .iter()
        .enumerate()
        .map(|(i, &c)| match full_width(c) {
            Some(full)
                if is_ideograph(i.checked_sub(1).and_then(|j| chars.get(j)))
                    || is_ideograph(chars.get(i + 1)) =>
            {
                full
            }
            _ => c,
        })
        .collect()
}

fn full_width(c: char) -> Option<char> {
    match c {
        ',' => Some('，'),
        '!' => Some('！'),
        ':' => Some('：'),
        ';' => Some('；'),
        '?' => Some('？'),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::chat_postprocess;

    // Expected values produced by running the original `process_response` in Python.

    #[test]
    fn converts_marks_next_to_ideographs() {
        assert_eq!(
            chat_postprocess("你好,我是ChatGLM-6B!很高兴见到你:)"),
            "你好，我是ChatGLM-6B！很高兴见到你：)"
        );
        assert_eq!(chat_postprocess("为什么?因为;所以"), "为什么？因为；所以");
        assert_eq!(chat_postprocess("a,中"), "a，中");
        assert_eq!(chat_postprocess("中,,中"), "中，，中");
        assert_eq!(chat_postprocess("中,,,中"), "中，,，中");
    }

    #[test]
    fn leaves_ascii_context_alone() {
        assert_eq!(
            chat_postprocess("Hello, world! a:b; c?"),
            "Hello, world! a:b; c?"
        );
        // U+3400 (extension A) and full-width letters are outside [\u4e00-\u9fff].
        assert_eq!(chat_postprocess("㐀,Ａ!"), "㐀,Ａ!");
        assert_eq!(chat_postprocess("鿿?"), "鿿？");
    }

    #[test]
    fn strips_and_replaces_training_time() {
        assert_eq!(
            chat_postprocess("  \n我的训练截止于[[训练时间]],谢谢\u{1F} "),
            "我的训练截止于2023年，谢谢"
        );
        assert_eq!(chat_postprocess("[[训练时间]]"), "2023年");
        assert_eq!(chat_postprocess(" \t "), "");
    }
}
