//! The experiment schema: every key of an experiment TOML file, declared once with its type,
//! default, the `ptuning/main.py` flag it mirrors and its documentation. The `experiment_schema!`
//! macro turns that single declaration into the [`Experiment`] struct (with rustdoc), the
//! [`KEYS`] table (which feeds `--help`, the README reference and the comments of the saved
//! TOML) and the per-key extraction from the layered figment.

use std::path::PathBuf;

use figment::Figment;

use super::types::{Device, KeyType, LrSchedulerType, NanPolicy, Precision, ResumeFromCheckpoint};

/// Documentation and default of one experiment key (one row of the reference table).
#[derive(Debug, Clone, Copy)]
pub struct KeyDoc {
    /// The key as written in the TOML file.
    pub name: &'static str,
    /// Human-readable type ("float", "bool", "cpu | cuda | cuda:N", ...).
    pub type_name: &'static str,
    /// True when the key may be left unset.
    pub optional: bool,
    /// True when the key has no default and must be given.
    pub required: bool,
    /// The flag of the original `ptuning/main.py` with the same meaning; `None` for glm-tune
    /// extensions.
    pub mirrors: Option<&'static str>,
    /// The documentation, one source line per line (leading spaces of doc comments kept).
    pub doc: &'static str,
    shown_default: Option<&'static str>,
    default_value: fn() -> Option<toml::Value>,
}

impl KeyDoc {
    /// The first sentence of the documentation (the comment line of the key in saved TOML
    /// files).
    pub fn summary(&self) -> String {
        let paragraph = self.doc_paragraph();
        let mut from = 0;
        while let Some(i) = paragraph[from..].find(". ") {
            let end = from + i + 1;
            // "e.g." and "i.e." do not end a sentence.
            if !(paragraph[..end].ends_with("e.g.") || paragraph[..end].ends_with("i.e.")) {
                return paragraph[..end].to_owned();
            }
            from = end;
        }
        paragraph
    }

    /// The documentation as one paragraph (doc lines joined by spaces).
    pub fn doc_paragraph(&self) -> String {
        self.doc
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The default as a TOML value; `None` for required keys and keys unset by default.
    pub fn default_value(&self) -> Option<toml::Value> {
        (self.default_value)()
    }

    /// The default for documentation: a TOML value, `required`, `unset`, or a description
    /// such as `= max_target_length` for keys whose default depends on other keys.
    pub fn default_text(&self) -> String {
        if let Some(shown) = self.shown_default {
            return shown.to_owned();
        }
        if self.required {
            return "required".to_owned();
        }
        match self.default_value() {
            Some(v) => super::render::render_value(&v),
            None => "unset".to_owned(),
        }
    }

    /// The mirrored original flag, or `glm-tune extension`.
    pub fn mirrors_text(&self) -> &'static str {
        self.mirrors.unwrap_or("glm-tune extension")
    }

    /// The environment variable that overrides this key (`GLM_TUNE_<KEY>`).
    pub fn env_var(&self) -> String {
        format!(
            "{}{}",
            super::load::ENV_PREFIX,
            self.name.to_ascii_uppercase()
        )
    }
}

/// Looks a key up in [`KEYS`].
pub fn key_doc(name: &str) -> Option<&'static KeyDoc> {
    KEYS.iter().find(|k| k.name == name)
}

/// Why a key could not be extracted from the layered sources.
#[derive(Debug)]
pub(crate) enum ExtractError {
    /// A required key is absent from every layer.
    Missing,
    /// The value does not deserialize into the key's type.
    Type(Box<figment::Error>),
}

macro_rules! key_default {
    (required) => {
        None
    };
    ({ $($e:tt)* }) => {
        Some({ $($e)* })
    };
}

macro_rules! is_required {
    (required) => {
        true
    };
    ({ $($e:tt)* }) => {
        false
    };
}

macro_rules! default_doc {
    (required) => {
        "Required."
    };
    ({ $($e:tt)* }) => {
        concat!("Default: `", stringify!($($e)*), "`.")
    };
}

macro_rules! shown {
    () => {
        None
    };
    ($shown:literal) => {
        Some($shown)
    };
}

macro_rules! mirrors_opt {
    (extension) => {
        None
    };
    ($flag:literal) => {
        Some($flag)
    };
}

macro_rules! mirrors_doc {
    (extension) => {
        "glm-tune extension (no such flag in `ptuning/main.py`)."
    };
    ($flag:literal) => {
        concat!("Mirrors `", $flag, "` of `ptuning/main.py`.")
    };
}

macro_rules! experiment_schema {
    ($(
        $(#[doc = $doc:literal])+
        $name:ident : $ty:ty = $default:tt, mirrors = $mirrors:tt $(, shown = $shown:literal)? ;
    )+) => {
        /// One run of glm-tune: the flags of THUDM's `ptuning/main.py` (same names, meanings and
        /// defaults) plus a few glm-tune extensions. Obtain a validated one through
        /// [`Experiment::load`](crate::config::Experiment::load).
        #[derive(Debug, Clone, PartialEq)]
        pub struct Experiment {
            $(
                $(#[doc = $doc])+
                #[doc = ""]
                #[doc = concat!(default_doc!($default), " ", mirrors_doc!($mirrors))]
                pub $name: $ty,
            )+
        }

        /// Every experiment key, in the order of [`Experiment`]'s fields.
        pub static KEYS: &[KeyDoc] = &[$(
            KeyDoc {
                name: stringify!($name),
                type_name: <$ty as KeyType>::TYPE_NAME,
                optional: <$ty as KeyType>::OPTIONAL,
                required: is_required!($default),
                mirrors: mirrors_opt!($mirrors),
                doc: concat!($($doc, "\n"),+),
                shown_default: shown!($($shown)?),
                default_value: || {
                    let default: Option<$ty> = key_default!($default);
                    default.and_then(|v| v.to_toml_value())
                },
            },
        )+];

        impl Experiment {
            /// The value of every key, in [`KEYS`] order (`None` = unset).
            pub fn values(&self) -> Vec<Option<toml::Value>> {
                vec![$( KeyType::to_toml_value(&self.$name) ),+]
            }

            /// Extracts every key from `fig`; a key that is missing or of the wrong type is
            /// reported to `on_error` and replaced by its default (or an empty placeholder for
            /// required keys) so that the remaining keys can still be validated.
            pub(crate) fn extract(
                fig: &Figment,
                on_error: &mut dyn FnMut(&'static str, ExtractError),
            ) -> Experiment {
                Experiment {$(
                    $name: {
                        let default: Option<$ty> = key_default!($default);
                        if fig.contains(stringify!($name)) {
                            match fig.extract_inner::<$ty>(stringify!($name)) {
                                Ok(value) => value,
                                Err(e) => {
                                    on_error(stringify!($name), ExtractError::Type(Box::new(e)));
                                    default.unwrap_or_default()
                                }
                            }
                        } else {
                            match default {
                                Some(value) => value,
                                None => {
                                    on_error(stringify!($name), ExtractError::Missing);
                                    Default::default()
                                }
                            }
                        }
                    },
                )+}
            }
        }
    };
}

experiment_schema! {
    // ---- model (ModelArguments of ptuning/arguments.py) ----
    /// Base model: a local directory or a Hugging Face id such as `THUDM/chatglm-6b`, looked up
    /// in the local Hugging Face cache (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
    /// `~/.cache/huggingface/hub`). Relative paths are relative to the current directory.
    model_name_or_path: String = required, mirrors = "--model_name_or_path";
    /// P-tuning checkpoint directory whose prefix encoder is loaded on top of the base model
    /// (for evaluation/prediction or to continue from a trained prefix); needs `pre_seq_len`.
    ptuning_checkpoint: Option<PathBuf> = { None }, mirrors = "--ptuning_checkpoint";
    /// Number of prefix tokens of P-Tuning v2; unset = full fine-tuning of all weights.
    pre_seq_len: Option<usize> = { None }, mirrors = "--pre_seq_len";
    /// Use the two-layer MLP prefix encoder (Embedding, Linear, tanh, Linear) instead of a plain
    /// embedding of the past key/values.
    prefix_projection: bool = { false }, mirrors = "--prefix_projection";
    /// Quantize the frozen base model to 4 or 8 bits (weight-only); unset = no quantization.
    quantization_bit: Option<usize> = { None }, mirrors = "--quantization_bit";

    // ---- data (DataTrainingArguments) ----
    /// Training data, JSON lines (one object per line). Relative paths are relative to the
    /// current directory, as in the original.
    train_file: Option<PathBuf> = { None }, mirrors = "--train_file";
    /// Evaluation data (JSON lines), used by `do_eval`; loaded (and so checked) whenever given.
    validation_file: Option<PathBuf> = { None }, mirrors = "--validation_file";
    /// Prediction data (JSON lines), used by `do_predict`; loaded (and so checked) whenever given.
    test_file: Option<PathBuf> = { None }, mirrors = "--test_file";
    /// Column holding the input text (`content` for AdvertiseGen).
    prompt_column: Option<String> = { None }, mirrors = "--prompt_column";
    /// Column holding the target text (`summary` for AdvertiseGen).
    response_column: Option<String> = { None }, mirrors = "--response_column";
    /// Column holding the chat history, a list of [query, response] pairs; when set, prompts use
    /// the `[Round i]` template of `model.chat`.
    history_column: Option<String> = { None }, mirrors = "--history_column";
    /// Text prepended to every prompt.
    source_prefix: String = { String::new() }, mirrors = "--source_prefix";
    /// Re-tokenize the data even if a tokenized cache exists.
    overwrite_cache: bool = { false }, mirrors = "--overwrite_cache";
    /// Maximum prompt length in tokens (train keeps `max_source_length - 1` prompt tokens,
    /// eval `max_source_length - 2`, plus `[gMASK]` and `<sop>`).
    max_source_length: usize = { 1024 }, mirrors = "--max_source_length";
    /// Maximum answer length in tokens for training (`max_target_length - 2` answer tokens plus
    /// `<sop>` and `<eop>`).
    max_target_length: usize = { 128 }, mirrors = "--max_target_length";
    /// Maximum label length for evaluation/prediction; unset = `max_target_length`.
    val_max_target_length: Option<usize> = { None }, mirrors = "--val_max_target_length",
        shown = "= max_target_length";
    /// Keep only the first N training examples (for debugging); unset = all.
    max_train_samples: Option<usize> = { None }, mirrors = "--max_train_samples";
    /// Keep only the first N evaluation examples; unset = all.
    max_eval_samples: Option<usize> = { None }, mirrors = "--max_eval_samples";
    /// Keep only the first N prediction examples; unset = all.
    max_predict_samples: Option<usize> = { None }, mirrors = "--max_predict_samples";
    /// Replace padding in the labels by -100 so that it does not count in the loss.
    ignore_pad_token_for_loss: bool = { true }, mirrors = "--ignore_pad_token_for_loss";
    /// Directory of the tokenized-data cache; unset = no cache. (In `main.py`, `--cache_dir` is
    /// the Hugging Face download cache; glm-tune downloads nothing, so the key holds the
    /// tokenized data instead.)
    cache_dir: Option<PathBuf> = { None }, mirrors = extension;

    // ---- training (Seq2SeqTrainingArguments of transformers 4.27) ----
    /// Directory for checkpoints, logs, results and the resolved `experiment.toml`.
    output_dir: PathBuf = required, mirrors = "--output_dir";
    /// Allow training into an existing, non-empty `output_dir`.
    overwrite_output_dir: bool = { false }, mirrors = "--overwrite_output_dir";
    /// Run training on `train_file`.
    do_train: bool = { false }, mirrors = "--do_train";
    /// Evaluate on `validation_file` after training.
    do_eval: bool = { false }, mirrors = "--do_eval";
    /// Predict on `test_file` and write `generated_predictions.txt`.
    do_predict: bool = { false }, mirrors = "--do_predict";
    /// Resume training: `true` = the latest `checkpoint-N` in `output_dir`, or a checkpoint
    /// path; restores the prefix, optimizer, scheduler and RNG state.
    resume_from_checkpoint: ResumeFromCheckpoint = { ResumeFromCheckpoint::No },
        mirrors = "--resume_from_checkpoint";
    /// Micro-batch size for training.
    per_device_train_batch_size: usize = { 8 }, mirrors = "--per_device_train_batch_size";
    /// Batch size for evaluation and prediction.
    per_device_eval_batch_size: usize = { 8 }, mirrors = "--per_device_eval_batch_size";
    /// Micro-batches accumulated per optimizer step (effective batch = this times the
    /// micro-batch size).
    gradient_accumulation_steps: usize = { 1 }, mirrors = "--gradient_accumulation_steps";
    /// Peak learning rate of AdamW.
    learning_rate: f64 = { 5e-5 }, mirrors = "--learning_rate";
    /// AdamW decoupled weight decay (biases and LayerNorm weights excluded).
    weight_decay: f64 = { 0.0 }, mirrors = "--weight_decay";
    /// AdamW beta1.
    adam_beta1: f64 = { 0.9 }, mirrors = "--adam_beta1";
    /// AdamW beta2.
    adam_beta2: f64 = { 0.999 }, mirrors = "--adam_beta2";
    /// AdamW epsilon, added to sqrt(v) before bias correction (`adamw_hf`).
    adam_epsilon: f64 = { 1e-8 }, mirrors = "--adam_epsilon";
    /// Clip the global L2 norm of the gradients to this value; 0 = no clipping.
    max_grad_norm: f64 = { 1.0 }, mirrors = "--max_grad_norm";
    /// Number of epochs, used when `max_steps` is -1.
    num_train_epochs: f64 = { 3.0 }, mirrors = "--num_train_epochs";
    /// Total number of optimizer steps; -1 = derive it from `num_train_epochs`.
    max_steps: i64 = { -1 }, mirrors = "--max_steps";
    /// Learning-rate schedule over the optimizer steps.
    lr_scheduler_type: LrSchedulerType = { LrSchedulerType::Linear }, mirrors = "--lr_scheduler_type";
    /// Linear warm-up steps; when > 0 it wins over `warmup_ratio`.
    warmup_steps: usize = { 0 }, mirrors = "--warmup_steps";
    /// Linear warm-up as a fraction of the total steps.
    warmup_ratio: f64 = { 0.0 }, mirrors = "--warmup_ratio";
    /// Log loss and learning rate every N optimizer steps.
    logging_steps: usize = { 500 }, mirrors = "--logging_steps";
    /// Write `checkpoint-N` every N optimizer steps.
    save_steps: usize = { 500 }, mirrors = "--save_steps";
    /// Keep at most N checkpoints (oldest deleted first); unset = keep all.
    save_total_limit: Option<usize> = { None }, mirrors = "--save_total_limit";
    /// Seed of the prefix initialisation, dropout and sampling.
    seed: u64 = { 42 }, mirrors = "--seed";
    /// Seed of the data order; unset = `seed`.
    data_seed: Option<u64> = { None }, mirrors = "--data_seed", shown = "= seed";
    /// Evaluate/predict by generating text and scoring it with BLEU-4 and ROUGE.
    predict_with_generate: bool = { false }, mirrors = "--predict_with_generate";

    // ---- generation (hard-coded in main.py's evaluate/predict calls) ----
    /// Beams for generation (1 = no beam search).
    num_beams: usize = { 1 }, mirrors = "--num_beams";
    /// Sample during generation (main.py passes `do_sample=True`); false = greedy/beam search.
    do_sample: bool = { true }, mirrors = extension;
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches top_p
    /// (main.py passes 0.7).
    top_p: f64 = { 0.7 }, mirrors = extension;
    /// Keep only the k most likely tokens before top-p; 0 = off (transformers' default 50,
    /// which main.py keeps).
    top_k: usize = { 50 }, mirrors = extension;
    /// Softmax temperature for sampling (main.py passes 0.95).
    temperature: f64 = { 0.95 }, mirrors = extension;
    /// Total generation length, prompt (with its padding) included; unset =
    /// `max_source_length + max_target_length + 1`, as main.py passes.
    max_length: Option<usize> = { None }, mirrors = extension,
        shown = "= max_source_length + max_target_length + 1";

    // ---- execution (glm-tune extensions) ----
    /// Where to run: `cpu`, `cuda` (= `cuda:0`) or `cuda:N` (needs a build with `--features cuda`),
    /// or `vulkan` (any Vulkan GPU; needs a build with `--features vulkan`).
    device: Device = { Device::Cpu }, mirrors = extension;
    /// Precision of the frozen base model: `auto` = fp16 on a GPU, CUDA or Vulkan (the
    /// original's `model.half()`), and fp32 on CPU; or `fp32`, `fp16`, `bf16`. The prefix encoder stays fp32.
    precision: Precision = { Precision::Auto }, mirrors = extension;
    /// Recompute each layer's activations in the backward pass to save memory (main.py always
    /// enables it).
    gradient_checkpointing: bool = { true }, mirrors = extension;
    /// On a NaN/Inf loss or gradient: `stop` the run with an error, or `skip` that optimizer
    /// step.
    nan_policy: NanPolicy = { NanPolicy::Stop }, mirrors = extension;
}

impl Experiment {
    /// `max_steps` as an optimizer-step budget; `None` when training runs for
    /// `num_train_epochs` instead (`max_steps <= 0`).
    pub fn max_steps_limit(&self) -> Option<u64> {
        u64::try_from(self.max_steps).ok().filter(|&s| s > 0)
    }

    /// The label length for evaluation/prediction (`val_max_target_length`, else
    /// `max_target_length`).
    pub fn effective_val_max_target_length(&self) -> usize {
        self.val_max_target_length.unwrap_or(self.max_target_length)
    }

    /// The total generation length (`max_length`, else
    /// `max_source_length + max_target_length + 1` as main.py).
    pub fn generation_max_length(&self) -> usize {
        self.max_length
            .unwrap_or(self.max_source_length + self.max_target_length + 1)
    }

    /// The seed of the data order (`data_seed`, else `seed`).
    pub fn effective_data_seed(&self) -> u64 {
        self.data_seed.unwrap_or(self.seed)
    }

    /// The concrete precision of the frozen base on the configured device.
    pub fn effective_precision(&self) -> Precision {
        self.precision.resolve(self.device)
    }

    /// True for P-Tuning v2 (`pre_seq_len` set), false for full fine-tuning.
    pub fn is_ptuning(&self) -> bool {
        self.pre_seq_len.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_are_unique_and_documented() {
        let mut names: Vec<_> = KEYS.iter().map(|k| k.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), KEYS.len());
        for key in KEYS {
            assert!(!key.summary().is_empty(), "{} has no doc", key.name);
            assert!(
                key.summary().ends_with('.') || key.summary().ends_with(')'),
                "{}",
                key.name
            );
        }
    }

    #[test]
    fn original_defaults() {
        let get = |name: &str| key_doc(name).unwrap().default_value();
        assert_eq!(get("max_source_length"), Some(toml::Value::Integer(1024)));
        assert_eq!(get("max_target_length"), Some(toml::Value::Integer(128)));
        assert_eq!(
            get("per_device_train_batch_size"),
            Some(toml::Value::Integer(8))
        );
        assert_eq!(get("learning_rate"), Some(toml::Value::Float(5e-5)));
        assert_eq!(get("max_steps"), Some(toml::Value::Integer(-1)));
        assert_eq!(get("num_train_epochs"), Some(toml::Value::Float(3.0)));
        assert_eq!(get("adam_epsilon"), Some(toml::Value::Float(1e-8)));
        assert_eq!(
            get("ignore_pad_token_for_loss"),
            Some(toml::Value::Boolean(true))
        );
        assert_eq!(
            get("lr_scheduler_type"),
            Some(toml::Value::String("linear".into()))
        );
        assert_eq!(
            get("resume_from_checkpoint"),
            Some(toml::Value::Boolean(false))
        );
        assert_eq!(get("pre_seq_len"), None);
        assert!(key_doc("output_dir").unwrap().required);
        assert!(key_doc("model_name_or_path").unwrap().required);
        assert_eq!(key_doc("pre_seq_len").unwrap().default_text(), "unset");
        assert_eq!(key_doc("learning_rate").unwrap().default_text(), "5e-5");
        assert_eq!(key_doc("data_seed").unwrap().default_text(), "= seed");
        assert_eq!(
            key_doc("device").unwrap().mirrors_text(),
            "glm-tune extension"
        );
        assert_eq!(key_doc("seed").unwrap().env_var(), "GLM_TUNE_SEED");
    }
}
