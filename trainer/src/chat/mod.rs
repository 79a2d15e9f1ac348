//! Chat with a base model and an optional trained P-Tuning v2 prefix, as ChatGLM-6B's
//! `model.chat` / `stream_chat` (reference §3.12): the conversation history and its
//! `[Round i]\n问：…\n答：…\n` template (`conversation`), the model, tokenizer and prefix with
//! their load times plus one streamed answer per call (`engine`), and the incremental text shown
//! while an answer is generated (`stream`). `glm-tune chat` is a thin terminal loop over these.

pub mod conversation;
pub mod engine;
pub mod stream;

pub use conversation::{ChatInput, Conversation, HELP, parse_input};
pub use engine::{ChatEngine, LoadedPrefix, PrefixSource, Reply, SamplingSettings};
pub use stream::{StreamEnd, TextStream, stable_prefix_len};
