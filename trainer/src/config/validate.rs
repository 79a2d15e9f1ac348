//! Semantic validation of a resolved [`Experiment`]: value ranges, combinations of keys, the
//! files it names (exist, readable) and the `output_dir` policy. Every rule runs; all problems
//! come back together.

use std::fs::File;
use std::path::Path;

use super::error::Problem;
use super::model_path::{HfCache, ResolvedModel, resolve_model};
use super::schema::Experiment;
use super::types::{Device, Precision, ResumeFromCheckpoint};

/// The outcome of [`validate`].
#[derive(Debug, Clone, PartialEq)]
pub struct Validation {
    /// Every problem found.
    pub problems: Vec<Problem>,
    /// Accepted but questionable settings.
    pub warnings: Vec<String>,
    /// The model directory, when `model_name_or_path` resolved.
    pub model: Option<ResolvedModel>,
}

/// Runs every rule on `exp`; `cache` is the Hugging Face cache for `model_name_or_path`.
pub fn validate(exp: &Experiment, cache: Option<&HfCache>) -> Validation {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let mut bad =
        |keys: &[&'static str], message: String| problems.push(Problem::invalid(keys, message));

    if exp.model_name_or_path.is_empty() {
        bad(
            &["model_name_or_path"],
            "must not be empty (a model directory or a Hugging Face id)".into(),
        );
    }
    if exp.output_dir.as_os_str().is_empty() {
        bad(&["output_dir"], "must not be empty".into());
    }

    // ---- what to do ----
    if !(exp.do_train || exp.do_eval || exp.do_predict) {
        bad(
            &["do_train", "do_eval", "do_predict"],
            "nothing to do: set at least one of them to true".into(),
        );
    }
    if exp.do_train && exp.train_file.is_none() {
        bad(
            &["do_train", "train_file"],
            "do_train needs train_file (a JSON-lines file)".into(),
        );
    }
    if exp.do_eval && exp.validation_file.is_none() {
        bad(
            &["do_eval", "validation_file"],
            "do_eval needs validation_file (a JSON-lines file)".into(),
        );
    }
    if exp.do_predict && exp.test_file.is_none() {
        bad(
            &["do_predict", "test_file"],
            "do_predict needs test_file (a JSON-lines file)".into(),
        );
    }
    if (exp.do_eval || exp.do_predict) && !exp.predict_with_generate {
        bad(
            &["predict_with_generate"],
            "do_eval/do_predict score generated text (BLEU-4/ROUGE): set predict_with_generate = true, as the original's evaluate.sh does".into(),
        );
    }
    let has_data =
        exp.train_file.is_some() || exp.validation_file.is_some() || exp.test_file.is_some();
    if has_data && exp.prompt_column.is_none() {
        bad(
            &["prompt_column"],
            "must be set when data files are given (e.g. \"content\")".into(),
        );
    }
    if has_data && exp.response_column.is_none() {
        bad(
            &["response_column"],
            "must be set when data files are given (e.g. \"summary\")".into(),
        );
    }

    // ---- model ----
    match exp.pre_seq_len {
        Some(0) => bad(
            &["pre_seq_len"],
            "must be >= 1 (leave it unset for full fine-tuning)".into(),
        ),
        None if exp.ptuning_checkpoint.is_some() => bad(
            &["ptuning_checkpoint", "pre_seq_len"],
            "loading a P-tuning checkpoint needs pre_seq_len (the value it was trained with)"
                .into(),
        ),
        None if exp.prefix_projection => {
            warnings.push("prefix_projection has no effect without pre_seq_len".into());
        }
        _ => {}
    }
    if let Some(bits) = exp.quantization_bit.filter(|b| !matches!(b, 4 | 8)) {
        bad(
            &["quantization_bit"],
            format!("must be 4 or 8 (got {bits}); leave it unset for no quantization"),
        );
    }

    // ---- lengths ----
    if exp.max_source_length < 3 {
        bad(
            &["max_source_length"],
            format!(
                "must be >= 3 (got {}): the prompt keeps max_source_length - 2 tokens plus [gMASK] <sop>",
                exp.max_source_length
            ),
        );
    }
    if exp.max_target_length < 3 {
        bad(
            &["max_target_length"],
            format!(
                "must be >= 3 (got {}): the answer keeps max_target_length - 2 tokens plus <sop> <eop>",
                exp.max_target_length
            ),
        );
    }
    if let Some(n) = exp.val_max_target_length.filter(|&n| n < 3) {
        bad(
            &["val_max_target_length"],
            format!("must be >= 3 (got {n})"),
        );
    }
    if let Some(max_length) = exp.max_length.filter(|&m| m <= exp.max_source_length) {
        bad(
            &["max_length", "max_source_length"],
            format!(
                "max_length ({max_length}) counts the prompt too and must exceed max_source_length ({})",
                exp.max_source_length
            ),
        );
    }
    for (key, value) in [
        ("max_train_samples", exp.max_train_samples),
        ("max_eval_samples", exp.max_eval_samples),
        ("max_predict_samples", exp.max_predict_samples),
    ] {
        if value == Some(0) {
            bad(
                &[key],
                "must be >= 1 (leave it unset for all examples)".into(),
            );
        }
    }

    // ---- optimisation ----
    for (key, value) in [
        (
            "per_device_train_batch_size",
            exp.per_device_train_batch_size,
        ),
        ("per_device_eval_batch_size", exp.per_device_eval_batch_size),
        (
            "gradient_accumulation_steps",
            exp.gradient_accumulation_steps,
        ),
        ("logging_steps", exp.logging_steps),
        ("save_steps", exp.save_steps),
        ("num_beams", exp.num_beams),
    ] {
        if value == 0 {
            bad(&[key], "must be >= 1".into());
        }
    }
    if exp.save_total_limit == Some(0) {
        bad(
            &["save_total_limit"],
            "must be >= 1 (leave it unset to keep every checkpoint)".into(),
        );
    }
    if !(exp.learning_rate.is_finite() && exp.learning_rate > 0.0) {
        bad(
            &["learning_rate"],
            format!("must be > 0 (got {})", exp.learning_rate),
        );
    }
    let nonnegative = [
        ("weight_decay", exp.weight_decay),
        ("max_grad_norm", exp.max_grad_norm),
    ];
    for (key, value) in nonnegative {
        if !(value.is_finite() && value >= 0.0) {
            bad(&[key], format!("must be >= 0 (got {value})"));
        }
    }
    for (key, value) in [
        ("adam_beta1", exp.adam_beta1),
        ("adam_beta2", exp.adam_beta2),
    ] {
        if !(0.0..1.0).contains(&value) {
            bad(&[key], format!("must be in [0, 1) (got {value})"));
        }
    }
    if !(exp.adam_epsilon.is_finite() && exp.adam_epsilon > 0.0) {
        bad(
            &["adam_epsilon"],
            format!("must be > 0 (got {})", exp.adam_epsilon),
        );
    }
    if !(0.0..=1.0).contains(&exp.warmup_ratio) {
        bad(
            &["warmup_ratio"],
            format!("must be in [0, 1] (got {})", exp.warmup_ratio),
        );
    }
    if exp.max_steps == 0 || exp.max_steps < -1 {
        bad(
            &["max_steps"],
            format!(
                "must be > 0, or -1 to train for num_train_epochs (got {})",
                exp.max_steps
            ),
        );
    }
    if exp.do_train
        && exp.max_steps == -1
        && !(exp.num_train_epochs.is_finite() && exp.num_train_epochs > 0.0)
    {
        bad(
            &["num_train_epochs", "max_steps"],
            format!(
                "num_train_epochs must be > 0 when max_steps is -1 (got {})",
                exp.num_train_epochs
            ),
        );
    }

    // ---- generation ----
    if !(exp.top_p > 0.0 && exp.top_p <= 1.0) {
        bad(&["top_p"], format!("must be in (0, 1] (got {})", exp.top_p));
    }
    if !(exp.temperature.is_finite() && exp.temperature > 0.0) {
        bad(
            &["temperature"],
            format!("must be > 0 (got {})", exp.temperature),
        );
    }

    // ---- execution ----
    if exp.device == Device::Cpu {
        match exp.precision {
            Precision::Fp16 => warnings.push(
                "precision = \"fp16\" on the CPU is emulated and slow; \"auto\" uses fp32 there"
                    .into(),
            ),
            Precision::Bf16 => warnings.push(
                "precision = \"bf16\" on the CPU is emulated and slow; \"auto\" uses fp32 there"
                    .into(),
            ),
            _ => {}
        }
    }

    // ---- files ----
    for (key, path) in [
        ("train_file", &exp.train_file),
        ("validation_file", &exp.validation_file),
        ("test_file", &exp.test_file),
    ] {
        if let Some(Err(message)) = path.as_deref().map(readable_file) {
            bad(&[key], message);
        }
    }
    if let Some(dir) = exp.ptuning_checkpoint.as_ref().filter(|d| !d.is_dir()) {
        bad(
            &["ptuning_checkpoint"],
            format!("{} is not a directory", dir.display()),
        );
    }
    if let Some(dir) = exp.cache_dir.as_ref().filter(|d| d.exists() && !d.is_dir()) {
        bad(
            &["cache_dir"],
            format!("{} exists and is not a directory", dir.display()),
        );
    }

    // ---- output_dir policy (as HF's run scripts: only training refuses a used directory) ----
    let out = &exp.output_dir;
    if out.as_os_str().is_empty() {
        // Reported above.
    } else if out.exists() && !out.is_dir() {
        bad(
            &["output_dir"],
            format!("{} exists and is not a directory", out.display()),
        );
    } else if exp.do_train
        && !exp.overwrite_output_dir
        && !exp.resume_from_checkpoint.is_set()
        && !is_empty_dir(out)
    {
        bad(
            &["output_dir", "overwrite_output_dir"],
            format!(
                "{} exists and is not empty; set overwrite_output_dir = true, resume_from_checkpoint = true, or choose another output_dir",
                out.display()
            ),
        );
    }
    match &exp.resume_from_checkpoint {
        ResumeFromCheckpoint::Latest if exp.do_train && latest_checkpoint(out).is_none() => bad(
            &["resume_from_checkpoint", "output_dir"],
            format!(
                "resume_from_checkpoint = true but {} has no checkpoint-N directory",
                out.display()
            ),
        ),
        ResumeFromCheckpoint::Path(dir) if !dir.is_dir() => {
            bad(
                &["resume_from_checkpoint"],
                format!("{} is not a directory", dir.display()),
            );
        }
        _ => {}
    }

    let model = if exp.model_name_or_path.is_empty() {
        None
    } else {
        match resolve_model(&exp.model_name_or_path, cache) {
            Ok(model) => Some(model),
            Err(e) => {
                problems.push(Problem::ModelNotFound(e));
                None
            }
        }
    };
    Validation {
        problems,
        warnings,
        model,
    }
}

/// `Err` with a message naming the file unless `path` is a regular, readable file.
fn readable_file(path: &Path) -> Result<(), String> {
    if !path.exists() {
        let cwd = std::env::current_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        return Err(format!(
            "{} does not exist (relative paths are relative to the current directory {cwd})",
            path.display()
        ));
    }
    if !path.is_file() {
        return Err(format!("{} is not a file", path.display()));
    }
    File::open(path)
        .map(|_| ())
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).map_or(true, |mut entries| entries.next().is_none())
}

/// The `checkpoint-N` directory with the largest N in `output_dir`, as HF's
/// `get_last_checkpoint`.
pub fn latest_checkpoint(output_dir: &Path) -> Option<std::path::PathBuf> {
    std::fs::read_dir(output_dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let step: u64 = name.strip_prefix("checkpoint-")?.parse().ok()?;
            Some((step, e.path()))
        })
        .max_by_key(|(step, _)| *step)
        .map(|(_, path)| path)
}
