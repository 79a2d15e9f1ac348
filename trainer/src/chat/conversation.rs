//! The state of one chat: the (query, answer) history, the prompt the original builds from it,
//! and what a typed line means (a question or a `/command`).

use dataset::preprocess::build_prompt;

/// The commands of the chat loop, for `/help`.
pub const HELP: &str = "\
/reset        clear the conversation history (start a new conversation)
/prefix off   answer with the base model only (the trained prefix switched off)
/prefix on    answer with the trained prefix again
/prefix       show whether the prefix is on
/help         this list
/quit         leave (also /exit, end of input, or Ctrl-C at the prompt)
Ctrl-C while an answer is being generated stops that answer and keeps what was generated.";

/// A conversation: the turns so far, as `model.chat`'s `history` list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conversation {
    history: Vec<(String, String)>,
}

impl Conversation {
    /// An empty conversation.
    pub fn new() -> Self {
        Self::default()
    }

    /// The model prompt for `query`: the query itself with no history, else every past turn as
    /// `[Round i]\n问：{q}\n答：{a}\n` followed by `[Round n]\n问：{query}\n答：` (the template of
    /// `model.chat` and of `main.py`'s history column, reference §7.2).
    pub fn prompt(&self, query: &str) -> String {
        build_prompt(query, &self.history, "", false)
    }

    /// Record a finished (or interrupted) turn; `answer` is the post-processed answer, as the
    /// original appends `(query, response)`.
    pub fn push(&mut self, query: &str, answer: &str) {
        self.history.push((query.to_string(), answer.to_string()));
    }

    /// Forget every turn.
    pub fn reset(&mut self) {
        self.history.clear();
    }

    /// The turns so far.
    pub fn history(&self) -> &[(String, String)] {
        &self.history
    }

    /// Number of turns so far.
    pub fn turns(&self) -> usize {
        self.history.len()
    }
}

/// What one input line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatInput {
    /// A question for the model (the line without its terminator).
    Query(String),
    /// A blank line: nothing to do.
    Empty,
    /// `/reset`: clear the history.
    Reset,
    /// `/prefix on|off` (`Some`), or `/prefix` alone to show the state (`None`).
    Prefix(Option<bool>),
    /// `/help`.
    Help,
    /// `/quit` or `/exit`.
    Quit,
    /// A line starting with `/` that is no command; the message says what is accepted.
    Unknown(String),
}

/// Interpret one line typed at the prompt (its `\n` / `\r\n` terminator is ignored).
pub fn parse_input(line: &str) -> ChatInput {
    let line = line.trim_end_matches(['\n', '\r']);
    let trimmed = line.trim();
    if trimmed.is_empty() {
        return ChatInput::Empty;
    }
    if !trimmed.starts_with('/') {
        return ChatInput::Query(line.to_string());
    }
    let mut words = trimmed.split_whitespace();
    let command = words.next().unwrap_or_default();
    let arg = words.next();
    let extra = words.next();
    match (command, arg, extra) {
        ("/reset" | "/clear", None, _) => ChatInput::Reset,
        ("/help" | "/?", None, _) => ChatInput::Help,
        ("/quit" | "/exit", None, _) => ChatInput::Quit,
        ("/prefix", None, _) => ChatInput::Prefix(None),
        ("/prefix", Some("on"), None) => ChatInput::Prefix(Some(true)),
        ("/prefix", Some("off"), None) => ChatInput::Prefix(Some(false)),
        ("/prefix", Some(_), _) => {
            ChatInput::Unknown(format!("`{trimmed}`: use `/prefix on` or `/prefix off`"))
        }
        ("/reset" | "/clear" | "/help" | "/?" | "/quit" | "/exit", Some(_), _) => {
            ChatInput::Unknown(format!("`{command}` takes no argument"))
        }
        _ => ChatInput::Unknown(format!(
            "unknown command `{command}`; /help lists the commands"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_prompt_is_the_bare_query_then_the_round_template() {
        let mut c = Conversation::new();
        assert_eq!(c.prompt("你好"), "你好");
        c.push("你好", "你好👋!");
        assert_eq!(
            c.prompt("介绍一下"),
            "[Round 0]\n问：你好\n答：你好👋!\n[Round 1]\n问：介绍一下\n答："
        );
        c.push("介绍一下", "好的");
        assert_eq!(
            c.prompt("谢谢"),
            "[Round 0]\n问：你好\n答：你好👋!\n[Round 1]\n问：介绍一下\n答：好的\n[Round 2]\n问：谢谢\n答："
        );
        assert_eq!(c.turns(), 2);
        c.reset();
        assert_eq!(c.turns(), 0);
        assert_eq!(c.prompt("谢谢"), "谢谢");
    }

    #[test]
    fn commands_and_queries() {
        assert_eq!(
            parse_input("hello world\n"),
            ChatInput::Query("hello world".into())
        );
        assert_eq!(
            parse_input("  indented question\r\n"),
            ChatInput::Query("  indented question".into())
        );
        assert_eq!(parse_input("   \n"), ChatInput::Empty);
        assert_eq!(parse_input("/reset\n"), ChatInput::Reset);
        assert_eq!(parse_input(" /prefix off "), ChatInput::Prefix(Some(false)));
        assert_eq!(parse_input("/prefix on"), ChatInput::Prefix(Some(true)));
        assert_eq!(parse_input("/prefix"), ChatInput::Prefix(None));
        assert_eq!(parse_input("/help"), ChatInput::Help);
        assert_eq!(parse_input("/quit"), ChatInput::Quit);
        assert_eq!(parse_input("/exit"), ChatInput::Quit);
        assert!(
            matches!(parse_input("/prefix maybe"), ChatInput::Unknown(m) if m.contains("/prefix on"))
        );
        assert!(
            matches!(parse_input("/reset now"), ChatInput::Unknown(m) if m.contains("no argument"))
        );
        assert!(matches!(parse_input("/frobnicate"), ChatInput::Unknown(m) if m.contains("/help")));
    }
}
