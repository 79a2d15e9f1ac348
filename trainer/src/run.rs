//! `glm-tune run`: one experiment end to end — prepare the model, train, evaluate/predict by
//! generation, write the original's result files into `output_dir`.

use std::path::PathBuf;

use burn::module::AutodiffModule;
use dataset::cache::CacheOptions;
use dataset::preprocess::DataArgs;
use serde_json::{Map, Value};

use crate::checkpoint::list_checkpoints;
use crate::config::{Experiment, ResumeFromCheckpoint, Validated};
use crate::device::{WithBackend, dispatch};
use crate::error::TrainError;
use crate::predict::{PredictSummary, Split, predict};
use crate::prepare::{Prepared, prepare};
use crate::state::write_json;
use crate::step::TrainBackend;
use crate::train::{RunHooks, TrainSummary, train, train_results};

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub output_dir: PathBuf,
    pub train: Option<TrainSummary>,
    pub eval: Option<PredictSummary>,
    pub predict: Option<PredictSummary>,
    /// `all_results.json` content.
    pub all_results: Map<String, Value>,
}

/// Run a validated experiment on the backend its `device` key selects.
pub fn run(validated: &Validated, hooks: &RunHooks) -> Result<RunReport, TrainError> {
    let device = validated.experiment().device;
    dispatch(device, RunJob { validated, hooks })?
}

struct RunJob<'a> {
    validated: &'a Validated,
    hooks: &'a RunHooks,
}

impl WithBackend for RunJob<'_> {
    type Output = Result<RunReport, TrainError>;
    fn run<B: TrainBackend>(self, device: B::Device) -> Self::Output {
        run_on::<B>(self.validated, self.hooks, &device)
    }
}

/// The data settings of an experiment.
pub fn data_args(exp: &Experiment) -> DataArgs {
    let mut a = DataArgs::new(
        exp.prompt_column.clone().unwrap_or_default(),
        exp.response_column.clone().unwrap_or_default(),
    );
    a.history_column = exp.history_column.clone();
    a.source_prefix = exp.source_prefix.clone();
    a.max_source_length = exp.max_source_length;
    a.max_target_length = exp.max_target_length;
    a.val_max_target_length = exp.val_max_target_length;
    a.ignore_pad_token_for_loss = exp.ignore_pad_token_for_loss;
    a
}

/// The tokenized-data cache of an experiment (`cache_dir`, else `$GLM_TUNE_CACHE`, else beside
/// `output_dir`).
pub fn cache_options(exp: &Experiment) -> CacheOptions {
    let dir = exp
        .cache_dir
        .clone()
        .unwrap_or_else(|| CacheOptions::default_dir(&exp.output_dir));
    CacheOptions::in_dir(dir, exp.overwrite_cache)
}

/// The checkpoint to resume from, if any.
fn resume_dir(exp: &Experiment) -> Result<Option<PathBuf>, TrainError> {
    match &exp.resume_from_checkpoint {
        ResumeFromCheckpoint::No => Ok(None),
        ResumeFromCheckpoint::Path(p) => {
            if !p.join("trainer_state.json").exists() {
                return Err(TrainError::Resume {
                    path: p.clone(),
                    reason: "not a complete glm-tune checkpoint (no trainer_state.json)".into(),
                });
            }
            Ok(Some(p.clone()))
        }
        ResumeFromCheckpoint::Latest => match list_checkpoints(&exp.output_dir).pop() {
            Some((_, p)) => Ok(Some(p)),
            None => Err(TrainError::Resume {
                path: exp.output_dir.clone(),
                reason: "resume_from_checkpoint = true but output_dir has no complete checkpoint-N"
                    .into(),
            }),
        },
    }
}

fn run_on<B: TrainBackend>(
    validated: &Validated,
    hooks: &RunHooks,
    device: &B::Device,
) -> Result<RunReport, TrainError> {
    let exp = validated.experiment();
    if (exp.do_eval || exp.do_predict) && !exp.predict_with_generate {
        return Err(TrainError::Invalid(
            "do_eval/do_predict evaluate by generation: set predict_with_generate = true (as the original's evaluate.sh does)".into(),
        ));
    }
    let out = exp.output_dir.clone();
    std::fs::create_dir_all(&out).map_err(|e| TrainError::io(&out, e))?;
    let experiment_toml = exp.to_toml();
    std::fs::write(out.join("experiment.toml"), &experiment_toml)
        .map_err(|e| TrainError::io(out.join("experiment.toml"), e))?;
    let resume = resume_dir(exp)?;
    // The memory plan before anything is loaded (`glm-tune plan` prints the same table).
    crate::plan::MemoryPlan::new(&crate::plan::PlanInput::from_experiment(
        exp,
        &validated.model.dir,
    )?)
    .log();

    let mut prepared = prepare::<B>(exp, &validated.model.dir, device)?;
    let args = data_args(exp);
    let cache = cache_options(exp);
    let mut all = Map::new();
    let mut report = RunReport {
        output_dir: out.clone(),
        train: None,
        eval: None,
        predict: None,
        all_results: Map::new(),
    };

    if exp.do_train {
        let path = exp
            .train_file
            .clone()
            .ok_or_else(|| TrainError::Invalid("do_train needs train_file".into()))?;
        let (rows, rep) = dataset::cache::load_or_build_train(
            &cache,
            &prepared.tokenizer,
            &path,
            &args,
            exp.max_train_samples,
        )?;
        tracing::info!(
            "train: {} rows from {} ({} skipped as empty; cache: {:?})",
            rep.rows,
            path.display(),
            rep.skipped_empty,
            rep.cache
        );
        if let Some(first) = rows.first() {
            tracing::info!("input_ids {:?}", first.input_ids);
            tracing::info!(
                "inputs {}",
                prepared.tokenizer.decode(&first.input_ids, false, true)
            );
            let labels: Vec<u32> = first
                .labels
                .iter()
                .filter(|&&t| t >= 0)
                .map(|&t| t as u32)
                .collect();
            tracing::info!("labels {}", prepared.tokenizer.decode(&labels, false, true));
        }
        let summary = train::<B>(
            exp,
            &experiment_toml,
            &mut prepared,
            &rows,
            &out,
            resume,
            hooks,
            device,
        )?;
        let results = train_results(&summary, exp);
        write_json(
            &out.join("train_results.json"),
            &Value::Object(results.clone()),
        )?;
        crate::plot::write_loss_plot(&out.join("training_loss.png"), &summary.log)
            .map_err(|e| TrainError::Invalid(format!("training_loss.png: {e}")))?;
        all.extend(results);
        report.train = Some(summary);
    }

    if exp.do_eval || exp.do_predict {
        let inference = Prepared::<B::InnerBackend> {
            tokenizer: prepared.tokenizer.clone(),
            config: prepared.config.clone(),
            model: prepared.model.valid(),
            prefix: prepared.prefix.as_ref().map(|p| p.valid()),
            model_dir: prepared.model_dir.clone(),
            load: prepared.load.clone(),
        };
        for (enabled, split, file, max) in [
            (
                exp.do_eval,
                Split::Eval,
                exp.validation_file.clone(),
                exp.max_eval_samples,
            ),
            (
                exp.do_predict,
                Split::Predict,
                exp.test_file.clone(),
                exp.max_predict_samples,
            ),
        ] {
            if !enabled {
                continue;
            }
            let path = file.ok_or_else(|| {
                TrainError::Invalid(format!("do_{} needs a data file", split.prefix()))
            })?;
            let (rows, rep) = dataset::cache::load_or_build_eval(
                &cache,
                &inference.tokenizer,
                &path,
                &args,
                max,
            )?;
            tracing::info!(
                "{}: {} rows from {}",
                split.prefix(),
                rep.rows,
                path.display()
            );
            let summary = predict(exp, &inference, &rows, split, &out, hooks)?;
            let mut results = summary.results.clone();
            if let Some(t) = &report.train {
                results.insert(
                    "epoch".into(),
                    serde_json::json!(crate::metrics::py_round(t.epoch, 2)),
                );
            }
            write_json(
                &out.join(format!("{}_results.json", split.prefix())),
                &Value::Object(results.clone()),
            )?;
            all.extend(results);
            let interrupted = summary.interrupted;
            match split {
                Split::Eval => report.eval = Some(summary),
                Split::Predict => report.predict = Some(summary),
            }
            if interrupted {
                return Err(TrainError::Interrupted {
                    step: 0,
                    resume: hooks.resume_hint.clone(),
                });
            }
        }
    }
    // HF `save_metrics(combined=True)`: update an existing all_results.json (a predict-only run
    // in the training output_dir, as evaluate.sh does, keeps the train_* entries).
    let all_path = out.join("all_results.json");
    let mut combined = match std::fs::read_to_string(&all_path)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
    {
        Some(Value::Object(previous)) => previous,
        _ => Map::new(),
    };
    combined.extend(all.clone());
    write_json(&all_path, &Value::Object(combined))?;
    report.all_results = all;
    Ok(report)
}
