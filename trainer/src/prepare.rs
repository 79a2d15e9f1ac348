//! Model preparation in the original's order (§8.2 of the reference): config, tokenizer, model,
//! optional prefix from `ptuning_checkpoint`, quantization, precision.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use dataset::ChatGlmTokenizer;
use glm_model::loader::{LoadOptions, LoadReport, load_with_config};
use glm_model::{ChatGlmConfig, ChatGlmModel, GlmBackend, Precision};
use prefix_encoder::{PrefixConfig, PrefixEncoder, checkpoint as prefix_checkpoint};

use crate::config::{self, Experiment};
use crate::error::TrainError;

/// A model ready for training or generation.
#[derive(Debug)]
pub struct Prepared<B: Backend> {
    pub tokenizer: ChatGlmTokenizer,
    /// The base config with the run's pre_seq_len / prefix_projection / quantization_bit.
    pub config: ChatGlmConfig,
    pub model: ChatGlmModel<B>,
    /// The P-Tuning v2 prefix (None for full fine-tuning).
    pub prefix: Option<PrefixEncoder<B>>,
    pub model_dir: PathBuf,
    pub load: LoadReport,
}

/// The model precision an experiment asks for.
pub fn model_precision(exp: &Experiment) -> Precision {
    match exp.effective_precision() {
        config::Precision::Fp16 => Precision::Fp16,
        config::Precision::Bf16 => Precision::Bf16,
        _ => Precision::Fp32,
    }
}

/// Check that the tokenizer's special ids are the model's (config.json), or explain the mix-up.
pub fn check_special_ids(
    tok: &ChatGlmTokenizer,
    cfg: &ChatGlmConfig,
    dir: &Path,
) -> Result<(), TrainError> {
    let pairs = [
        ("<sop> (bos_token_id)", tok.sop_id(), cfg.bos_token_id),
        ("<eop> (eos_token_id)", tok.eop_id(), cfg.eos_token_id),
        (
            "[gMASK] (gmask_token_id)",
            tok.gmask_id(),
            cfg.gmask_token_id,
        ),
        ("[MASK] (mask_token_id)", tok.mask_id(), cfg.mask_token_id),
        ("<pad> (pad_token_id)", tok.pad_id(), cfg.pad_token_id),
    ];
    for (what, t, c) in pairs {
        if t != c {
            return Err(TrainError::Invalid(format!(
                "{}: the tokenizer has {what} = {t} but config.json says {c}; the tokenizer files and config.json come from different revisions of the model (mixing files of different dates is the usual cause of `130004 is not in list`)",
                dir.display()
            )));
        }
    }
    if (tok.vocab_size() as u64) > cfg.vocab_size as u64 {
        return Err(TrainError::Invalid(format!(
            "{}: the tokenizer has {} pieces but the model only {} embedding rows",
            dir.display(),
            tok.vocab_size(),
            cfg.vocab_size
        )));
    }
    Ok(())
}

/// Load tokenizer, model and prefix for `exp` from `model_dir` onto `device`.
pub fn prepare<B: GlmBackend>(
    exp: &Experiment,
    model_dir: &Path,
    device: &B::Device,
) -> Result<Prepared<B>, TrainError> {
    let mut config = ChatGlmConfig::from_path(model_dir)?;
    config.pre_seq_len = exp.pre_seq_len;
    config.prefix_projection = Some(exp.prefix_projection);
    let tokenizer = ChatGlmTokenizer::from_dir(model_dir)?;
    check_special_ids(&tokenizer, &config, model_dir)?;
    let precision = model_precision(exp);
    // P-Tuning v2 freezes the embedding: an f16 table stays f16 (exact; half of an f32 copy).
    let options = LoadOptions {
        precision,
        quantization_bit: exp.quantization_bit.map(|b| b as u8),
        compact_frozen_embedding: exp.pre_seq_len.is_some(),
        ..Default::default()
    };
    let (model, load) = load_with_config::<B>(model_dir, &config, &options, device)?;
    // Pre-quantized or quantized on load: the model knows which (written into checkpoints).
    config.quantization_bit = model.config.quantization_bit;
    let prefix = match exp.pre_seq_len {
        None => None,
        Some(p) => Some(match &exp.ptuning_checkpoint {
            Some(dir) => {
                let (enc, info) = prefix_checkpoint::load::<B>(
                    dir,
                    &config,
                    Some((p, exp.prefix_projection)),
                    device,
                )?;
                tracing::info!(
                    "loaded the prefix of {} (pre_seq_len {})",
                    info.dir.display(),
                    info.pre_seq_len
                );
                enc
            }
            None => PrefixConfig::for_model(&config, p, exp.prefix_projection)
                .init::<B>(exp.seed, device),
        }),
    };
    Ok(Prepared {
        tokenizer,
        config,
        model,
        prefix,
        model_dir: model_dir.to_path_buf(),
        load,
    })
}
