//! `ChatEngine`: tokenizer, model and optional prefix loaded once (with their load times), and
//! one answer per call generated as `model.chat` does — prompt tokenized with `[gMASK] <sop>` and
//! the tokenizer-built mask/positions, sampling with the original's chat settings, the new ids
//! decoded and post-processed after every token so the caller can stream them.
//!
//! The prefix comes from `--prefix` (a checkpoint directory, whose own `config.json` gives
//! pre_seq_len and projection) or from a merged model directory (`glm-tune export --merge`),
//! whose `transformer.prefix_encoder.*` tensors the loader reports. Its per-layer keys/values are
//! computed once at load; switching it off and on costs nothing.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::backend::Backend;
use dataset::ChatGlmTokenizer;
use dataset::preprocess::{SpecialIds, tokenizer_attention_mask, tokenizer_position_ids};
use glm_model::generate::{GenerationConfig, PromptBatch, generate};
use glm_model::loader::{LoadOptions, LoadReport, load_with_config};
use glm_model::{ChatGlmConfig, ChatGlmModel, GlmBackend, Past};
use prefix_encoder::checkpoint::{self as prefix_checkpoint, PrefixCheckpointInfo};
use prefix_encoder::{PrefixError, base_fingerprint};

use crate::chat_text::chat_postprocess;
use crate::error::TrainError;
use crate::prepare::check_special_ids;

/// Decoding settings of the chat (defaults: the original `model.chat`).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingSettings {
    /// Sample (true, the original) or greedy.
    pub do_sample: bool,
    /// 0.95 in the original.
    pub temperature: f32,
    /// 50: Hugging Face's default, implicit in the original.
    pub top_k: usize,
    /// 0.7 in the original.
    pub top_p: f32,
    /// Total length, prompt (with the history) plus answer: 2048 in the original.
    pub max_length: usize,
    /// At most this many new tokens per answer (no limit in the original).
    pub max_new_tokens: Option<usize>,
    /// Seed of the first answer's sampling; answer k uses `seed + k`.
    pub seed: u64,
}

impl Default for SamplingSettings {
    fn default() -> Self {
        Self {
            do_sample: true,
            temperature: 0.95,
            top_k: 50,
            top_p: 0.7,
            max_length: 2048,
            max_new_tokens: None,
            seed: 0,
        }
    }
}

/// Where the prefix came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrefixSource {
    /// A prefix checkpoint directory (`--prefix`).
    Checkpoint(PathBuf),
    /// The `transformer.prefix_encoder.*` tensors of a merged model directory.
    Merged(PathBuf),
}

/// A loaded prefix: what its checkpoint says about itself and its keys/values for one row.
#[derive(Debug, Clone)]
pub struct LoadedPrefix<B: Backend> {
    pub info: PrefixCheckpointInfo,
    pub source: PrefixSource,
    /// Seconds to load it and compute its keys/values.
    pub seconds: f64,
    past: Past<B>,
}

/// One generated answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The post-processed answer (what `model.chat` returns and appends to the history).
    pub answer: String,
    /// The generated token ids (`<eop>` not included).
    pub ids: Vec<u32>,
    /// Tokens of the prompt (history included, `[gMASK] <sop>` included).
    pub prompt_tokens: usize,
    /// Tokens generated (`<eop>` not counted).
    pub new_tokens: usize,
    /// Stopped by the caller (Ctrl-C) before `<eop>`.
    pub interrupted: bool,
    /// Stopped by `max_length` / `max_new_tokens` before `<eop>`.
    pub truncated: bool,
    /// Generation time.
    pub seconds: f64,
}

/// Model, tokenizer and prefix of a chat session.
#[derive(Debug)]
pub struct ChatEngine<B: GlmBackend> {
    pub tokenizer: ChatGlmTokenizer,
    pub model: ChatGlmModel<B>,
    /// The model load (its `seconds` is the load time).
    pub load: LoadReport,
    pub prefix: Option<LoadedPrefix<B>>,
    pub settings: SamplingSettings,
    prefix_on: bool,
    replies: u64,
}

impl<B: GlmBackend> ChatEngine<B> {
    /// Load the model directory `model_dir` (config, tokenizer, weights) and the prefix of
    /// `prefix_dir` — or the merged prefix of `model_dir` when it has one and `prefix_dir` is
    /// `None`. The prefix is switched on when there is one. A prefix that does not fit the model
    /// (layers, hidden size, heads, or tensors of another pre_seq_len) is refused.
    pub fn load(
        model_dir: &Path,
        prefix_dir: Option<&Path>,
        options: &LoadOptions,
        settings: SamplingSettings,
        device: &B::Device,
    ) -> Result<Self, TrainError> {
        let config = ChatGlmConfig::from_path(model_dir)?;
        let tokenizer = ChatGlmTokenizer::from_dir(model_dir)?;
        check_special_ids(&tokenizer, &config, model_dir)?;
        let (model, load) = load_with_config::<B>(model_dir, &config, options, device)?;
        let prefix = match prefix_dir {
            Some(dir) => {
                if !load.prefix_tensors.is_empty() {
                    tracing::warn!(
                        "{} holds a merged prefix; using the prefix of {} instead",
                        model_dir.display(),
                        dir.display()
                    );
                }
                Some(load_prefix(
                    &model,
                    &tokenizer,
                    dir,
                    PrefixSource::Checkpoint(dir.to_path_buf()),
                    device,
                )?)
            }
            None if !load.prefix_tensors.is_empty() => {
                let merged = load_prefix(
                    &model,
                    &tokenizer,
                    model_dir,
                    PrefixSource::Merged(model_dir.to_path_buf()),
                    device,
                );
                Some(merged.map_err(|e| match e {
                    TrainError::Prefix(PrefixError::NotAPrefix { reason, .. }) => TrainError::Invalid(format!(
                        "{} holds {} tensor(s) but cannot be used as a merged P-Tuning model: {reason} (write merged models with `glm-tune export --merge`)",
                        model_dir.display(),
                        load.prefix_tensors.join(", ")
                    )),
                    other => other,
                })?)
            }
            None => None,
        };
        let prefix_on = prefix.is_some();
        Ok(Self {
            tokenizer,
            model,
            load,
            prefix,
            settings,
            prefix_on,
            replies: 0,
        })
    }

    /// Whether answers use the prefix now.
    pub fn prefix_on(&self) -> bool {
        self.prefix_on && self.prefix.is_some()
    }

    /// Switch the prefix on or off (`/prefix on|off`); switching on needs a loaded prefix.
    pub fn set_prefix(&mut self, on: bool) -> Result<(), TrainError> {
        if on && self.prefix.is_none() {
            return Err(TrainError::Invalid(
                "no prefix is loaded: start glm-tune chat with --prefix CHECKPOINT (or a model merged by `glm-tune export --merge`)".into(),
            ));
        }
        self.prefix_on = on;
        Ok(())
    }

    /// The prompt's token ids: the text, then `[gMASK] <sop>` (the tokenizer's special tokens).
    pub fn prompt_ids(&self, prompt: &str) -> Vec<u32> {
        self.tokenizer.encode(prompt, true)
    }

    /// The prompt as one generation row with the tokenizer-built mask and 2D positions.
    pub fn encode(&self, prompt: &str) -> PromptBatch {
        let ids = self.prompt_ids(prompt);
        let sp = SpecialIds::of(&self.tokenizer);
        PromptBatch {
            mask: tokenizer_attention_mask(&ids, &sp),
            positions: tokenizer_position_ids(&ids, &sp),
            ids: vec![ids],
        }
    }

    /// Generate the answer to `prompt` (already holding the history template). After every
    /// token `on_answer` receives the post-processed answer so far; `stop` returning true ends
    /// generation after the current token (the answer so far is kept, `interrupted` is set).
    pub fn reply(
        &mut self,
        prompt: &str,
        on_answer: &mut dyn FnMut(&str),
        stop: &dyn Fn() -> bool,
    ) -> Result<Reply, TrainError> {
        let batch = self.encode(prompt);
        let n = batch.ids[0].len();
        let s = &self.settings;
        let max_length = s
            .max_new_tokens
            .map_or(s.max_length, |m| s.max_length.min(n + m));
        if n >= max_length {
            return Err(TrainError::Invalid(format!(
                "the prompt is {n} tokens long (the conversation so far included), which leaves no room below max_length {}: start a new conversation with /reset, or raise --max-length",
                s.max_length
            )));
        }
        let eos = self.model.config.eos_token_id;
        let cfg = GenerationConfig {
            max_length,
            do_sample: s.do_sample,
            temperature: s.temperature,
            top_k: s.top_k,
            top_p: s.top_p,
            seed: s.seed.wrapping_add(self.replies),
            suppress_from: Some(self.tokenizer.vocab_size()),
            ..GenerationConfig::greedy(max_length, eos, self.model.config.pad_token_id)
        };
        self.replies += 1;
        let past = if self.prefix_on {
            self.prefix.as_ref().map(|p| &p.past)
        } else {
            None
        };
        let tok = &self.tokenizer;
        let mut ids: Vec<u32> = Vec::new();
        let mut ended = false;
        let start = Instant::now();
        let out = generate(&self.model, &batch, past, &cfg, false, &mut |ev| {
            let t = ev.tokens[0];
            if t == eos {
                ended = true;
            } else {
                ids.push(t);
                on_answer(&chat_postprocess(&tok.decode(&ids, false, true)));
            }
            !stop()
        })?;
        Ok(Reply {
            answer: chat_postprocess(&tok.decode(&ids, false, true)),
            prompt_tokens: n,
            new_tokens: ids.len(),
            ids,
            interrupted: out.interrupted && !ended,
            truncated: !out.interrupted && !ended,
            seconds: start.elapsed().as_secs_f64(),
        })
    }
}

/// Load the prefix of `dir` for `model`, checked against it, and compute its keys/values.
fn load_prefix<B: GlmBackend>(
    model: &ChatGlmModel<B>,
    tokenizer: &ChatGlmTokenizer,
    dir: &Path,
    source: PrefixSource,
    device: &B::Device,
) -> Result<LoadedPrefix<B>, TrainError> {
    let start = Instant::now();
    let (encoder, info) = prefix_checkpoint::load::<B>(dir, &model.config, None, device)?;
    let expected = base_fingerprint(&model.config);
    if let Some(fp) = info.base_fingerprint.as_ref().filter(|fp| **fp != expected) {
        tracing::warn!(
            "the prefix of {} was trained on a base model `{fp}`, this model is `{expected}`; answers may be garbage",
            dir.display()
        );
    }
    if let Some(fp) = info
        .tokenizer_fingerprint
        .as_ref()
        .filter(|fp| **fp != tokenizer.fingerprint())
    {
        tracing::warn!(
            "the prefix of {} was trained with another tokenizer (fingerprint {fp}); answers may be garbage",
            dir.display()
        );
    }
    let past = encoder.past_key_values(1, model.precision.dtype(), false);
    Ok(LoadedPrefix {
        info,
        source,
        seconds: start.elapsed().as_secs_f64(),
        past,
    })
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use burn::backend::Flex;
    use glm_model::Precision;
    use glm_model::init::{SaveDtype, random_model, save_pretrained};

    use super::*;

    /// A random model with the demo tokenizer (whatever it answers, lengths and stops are exact).
    fn engine(dir: &Path, settings: SamplingSettings) -> ChatEngine<Flex> {
        let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../demo/base");
        let tok = ChatGlmTokenizer::from_dir(&demo).unwrap();
        let mut cfg = ChatGlmConfig::with_shape(32, 2, 2, 64, tok.vocab_size());
        (
            cfg.bos_token_id,
            cfg.eos_token_id,
            cfg.mask_token_id,
            cfg.gmask_token_id,
            cfg.pad_token_id,
        ) = (
            tok.sop_id(),
            tok.eop_id(),
            tok.mask_id(),
            tok.gmask_id(),
            tok.pad_id(),
        );
        let model = random_model::<Flex>(&cfg, Precision::Fp32, 1, &Default::default());
        save_pretrained(&model, &cfg, dir, SaveDtype::F32).unwrap();
        std::fs::copy(demo.join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
        ChatEngine::load(
            dir,
            None,
            &LoadOptions::default(),
            settings,
            &Default::default(),
        )
        .unwrap()
    }

    #[test]
    fn lengths_stops_and_the_prompt_layout() {
        let tmp = tempfile::tempdir().unwrap();
        let settings = SamplingSettings {
            max_new_tokens: Some(5),
            seed: 3,
            ..Default::default()
        };
        let mut e = engine(tmp.path(), settings);
        let ids = e.prompt_ids("hello");
        assert_eq!(
            ids[ids.len() - 2..],
            [e.tokenizer.gmask_id(), e.tokenizer.sop_id()]
        );
        let batch = e.encode("hello");
        let n = ids.len();
        assert_eq!((batch.mask.len(), batch.positions.len()), (n * n, 2 * n));

        let mut seen = 0;
        let r = e.reply("hello", &mut |_| seen += 1, &|| false).unwrap();
        assert_eq!(r.prompt_tokens, n);
        assert_eq!(r.new_tokens, r.ids.len());
        assert!(r.new_tokens <= 5 && !r.interrupted);
        assert_eq!(
            r.truncated,
            r.new_tokens == 5,
            "cut by max_new_tokens unless <eop> came first"
        );
        assert_eq!(seen, r.new_tokens, "one callback per (non-<eop>) token");
        assert!(
            !e.prefix_on() && e.set_prefix(true).is_err(),
            "no prefix loaded"
        );

        // A stop request ends generation after the current token.
        e.settings.max_new_tokens = Some(50);
        let calls = Cell::new(0);
        let r = e
            .reply("hello", &mut |_| calls.set(calls.get() + 1), &|| {
                calls.get() >= 2
            })
            .unwrap();
        if r.interrupted {
            assert_eq!(r.ids.len(), 2, "{r:?}");
        } else {
            assert!(r.ids.len() < 2, "only <eop> ends it before the stop: {r:?}");
        }

        // A prompt that leaves no room below max_length is refused with the way out.
        e.settings.max_length = n;
        let err = e
            .reply("hello", &mut |_| {}, &|| false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/reset") && err.contains("--max-length"),
            "{err}"
        );
    }
}
