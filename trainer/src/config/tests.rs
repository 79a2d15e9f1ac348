//! End-to-end tests of the config module: round trip, precedence, unknown keys, type errors,
//! validation reporting several problems at once, model resolution and `check`'s preflight.

use std::fs;
use std::path::{Path, PathBuf};

use super::*;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, text).unwrap();
    path
}

/// A temp dir with one data file and a complete fake model directory.
struct Setup {
    tmp: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let model = tmp.path().join("model");
        fs::create_dir(&model).unwrap();
        for file in ["config.json", "ice_text.model", "pytorch_model.bin"] {
            write(&model, file, "{}");
        }
        write(
            tmp.path(),
            "train.json",
            "{\"content\": \"类型#裤\", \"summary\": \"宽松\"}\n{\"content\": \"a\", \"summary\": \"b\"}\n",
        );
        Setup { tmp }
    }

    fn dir(&self) -> &Path {
        self.tmp.path()
    }

    /// A valid training config plus `extra` lines.
    fn config(&self, extra: &str) -> PathBuf {
        let d = self.dir().display();
        let text = format!(
            "model_name_or_path = '{d}/model'\noutput_dir = '{d}/out'\ndo_train = true\n\
             train_file = '{d}/train.json'\nprompt_column = 'content'\nresponse_column = 'summary'\n{extra}"
        );
        write(self.dir(), "exp.toml", &text)
    }
}

fn none() -> Overrides {
    Overrides::default()
}

fn load(path: &Path, overrides: &Overrides) -> Result<Validated, ConfigErrors> {
    Experiment::load_with(path, overrides, None)
}

#[test]
fn minimal_config_gets_the_original_defaults() {
    let setup = Setup::new();
    let v = load(&setup.config(""), &none()).unwrap();
    let e = v.experiment();
    assert_eq!(e.max_source_length, 1024);
    assert_eq!(e.max_target_length, 128);
    assert_eq!(e.learning_rate, 5e-5);
    assert_eq!(e.max_steps_limit(), None);
    assert_eq!(e.generation_max_length(), 1024 + 128 + 1);
    assert_eq!(e.effective_val_max_target_length(), 128);
    assert_eq!(e.effective_precision(), Precision::Fp32);
    assert_eq!(e.resume_from_checkpoint, ResumeFromCheckpoint::No);
    assert!(e.do_sample && e.gradient_checkpointing && e.ignore_pad_token_for_loss);
    assert_eq!(v.model.source, ModelSource::LocalDir);
    assert_eq!(
        v.resolved.provenance_of("learning_rate"),
        Some(&Provenance::Default)
    );
    assert_eq!(
        v.resolved.provenance_of("do_train"),
        Some(&Provenance::File {
            path: setup.dir().join("exp.toml"),
            line: Some(3)
        })
    );
}

#[test]
fn saved_toml_round_trips() {
    let setup = Setup::new();
    let path = setup.config(
        "learning_rate = 2e-2\npre_seq_len = 128\nquantization_bit = 4\nmax_steps = 3000\n\
         device = 'cuda:1'\nprecision = 'bf16'\nlr_scheduler_type = 'cosine'\nnan_policy = 'skip'\n\
         source_prefix = \"say \\\"hi\\\"\\n\"\nadam_epsilon = 1e-7\nwarmup_ratio = 0.1\n\
         resume_from_checkpoint = 'ckpt/checkpoint-10'\ndata_seed = 7\ntop_k = 0\n",
    );
    let first = Experiment::resolve(&path, &none()).unwrap().experiment;
    let saved = first.to_toml();
    for key in KEYS {
        assert!(
            saved.contains(&format!("\n{} = ", key.name))
                || saved.contains(&format!("\n# {} is unset", key.name)),
            "{}",
            key.name
        );
    }
    let again_path = write(setup.dir(), "saved.toml", &saved);
    let again = Experiment::resolve(&again_path, &none()).unwrap();
    assert_eq!(again.experiment, first, "{saved}");
    assert_eq!(again.experiment.device, Device::Cuda(1));
    assert_eq!(
        again.experiment.resume_from_checkpoint,
        ResumeFromCheckpoint::Path("ckpt/checkpoint-10".into())
    );
    // Every key that has a value now comes from the saved file.
    for (key, value, provenance) in again.entries() {
        if value.is_some() {
            assert!(
                matches!(provenance, Provenance::File { line: Some(_), .. }),
                "{}: {provenance}",
                key.name
            );
        }
    }
}

#[test]
fn precedence_file_env_set() {
    let setup = Setup::new();
    let path = setup.config("learning_rate = 1e-3\nseed = 1\nmax_steps = 10\n");
    let overrides = Overrides {
        env: vec![
            ("GLM_TUNE_LEARNING_RATE".into(), "2e-3".into()),
            ("GLM_TUNE_SEED".into(), "2".into()),
            ("GLM_TUNE_PROMPT_COLUMN".into(), "123".into()),
            ("GLM_TUNE_FIXTURES".into(), "/somewhere".into()),
            ("GLM_TUNE_SHARED_DATA".into(), "/somewhere".into()),
            ("GLM_TUNE_BIN".into(), "/somewhere/glm-tune".into()),
            ("GLM_TUNE_WORKSPACE".into(), "/somewhere".into()),
            ("GLM_TUNE_LERNING_RATE".into(), "1".into()),
            ("OTHER".into(), "x".into()),
        ],
        sets: vec![
            "learning_rate=3e-3".into(),
            "learning_rate = 4e-3".into(),
            "device=cuda".into(),
        ],
    };
    let r = Experiment::resolve(&path, &overrides).unwrap();
    let e = &r.experiment;
    assert_eq!(e.learning_rate, 4e-3);
    assert_eq!(e.seed, 2);
    assert_eq!(e.max_steps, 10);
    assert_eq!(e.logging_steps, 500);
    assert_eq!(e.device, Device::Cuda(0));
    assert_eq!(
        e.prompt_column.as_deref(),
        Some("123"),
        "string keys keep the raw text"
    );
    assert_eq!(
        r.provenance_of("learning_rate"),
        Some(&Provenance::Set {
            arg: "learning_rate = 4e-3".into()
        })
    );
    assert_eq!(
        r.provenance_of("seed"),
        Some(&Provenance::Env {
            var: "GLM_TUNE_SEED".into()
        })
    );
    assert_eq!(
        r.provenance_of("max_steps"),
        Some(&Provenance::File {
            path: path.clone(),
            line: Some(9)
        })
    );
    assert_eq!(r.provenance_of("logging_steps"), Some(&Provenance::Default));
    assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
    assert!(
        r.warnings[0].contains("GLM_TUNE_LERNING_RATE")
            && r.warnings[0].contains("GLM_TUNE_LEARNING_RATE")
    );
    assert_eq!(
        r.provenance_of("learning_rate").unwrap().to_string(),
        "--set learning_rate = 4e-3"
    );
    assert_eq!(
        r.provenance_of("seed").unwrap().to_string(),
        "env GLM_TUNE_SEED"
    );
}

#[test]
fn unknown_keys_name_file_line_and_closest_key() {
    let setup = Setup::new();
    let path = setup.config("learning_rte = 1e-2\n\n[training]\nepochs = 3\n");
    let overrides = Overrides {
        sets: vec!["pre_seq_length=8".into(), "noequals".into()],
        ..none()
    };
    let errors = Experiment::resolve(&path, &overrides).unwrap_err();
    let file = path.display().to_string();
    assert_eq!(
        errors.problems,
        vec![
            Problem::UnknownKey {
                key: "learning_rte".into(),
                origin: format!("{file} line 7"),
                suggestion: "learning_rate"
            },
            Problem::UnknownKey {
                key: "training".into(),
                origin: format!("{file} line 9"),
                suggestion: "train_file"
            },
            Problem::UnknownKey {
                key: "pre_seq_length".into(),
                origin: "--set pre_seq_length=8".into(),
                suggestion: "pre_seq_len"
            },
            Problem::MalformedSet {
                arg: "noequals".into()
            },
        ]
    );
    let text = errors.to_string();
    assert!(
        text.contains(&format!(
            "unknown key `learning_rte` ({file} line 7); did you mean `learning_rate`?"
        )),
        "{text}"
    );
}

#[test]
fn type_errors_name_key_and_expected_type() {
    let setup = Setup::new();
    let path = setup.config(
        "learning_rate = 'fast'\nmax_source_length = -5\ndevice = 'gpu'\nlr_scheduler_type = 'cosine_with_restarts'\n",
    );
    let overrides = Overrides {
        sets: vec!["do_eval=maybe".into()],
        ..none()
    };
    let errors = Experiment::resolve(&path, &overrides).unwrap_err();
    let keys: Vec<&str> = errors.problems.iter().flat_map(Problem::keys).collect();
    assert_eq!(
        keys,
        [
            "max_source_length",
            "do_eval",
            "learning_rate",
            "lr_scheduler_type",
            "device"
        ]
    );
    let text = errors.to_string();
    let file = path.display();
    for expected in [
        format!("`learning_rate` (file {file}:7) must be float: found string \"fast\""),
        format!("`max_source_length` (file {file}:8) must be integer >= 0"),
        "`do_eval` (--set do_eval=maybe) must be bool: found string \"maybe\"".to_owned(),
        format!(
            "`device` (file {file}:9) must be cpu | cuda | cuda:N | vulkan: invalid device `gpu`"
        ),
        "unknown value `cosine_with_restarts`, expected one of `linear`".to_owned(),
    ] {
        assert!(text.contains(&expected), "missing {expected:?} in\n{text}");
    }
}

#[test]
fn missing_required_keys_and_bad_toml() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write(tmp.path(), "empty.toml", "do_train = false\n");
    let errors = Experiment::resolve(&path, &none()).unwrap_err();
    assert_eq!(
        errors.problems,
        vec![
            Problem::MissingKey {
                key: "model_name_or_path"
            },
            Problem::MissingKey { key: "output_dir" }
        ]
    );

    let path = write(
        tmp.path(),
        "bad.toml",
        "do_train = true\nlearning_rate = \n",
    );
    let errors = Experiment::resolve(&path, &none()).unwrap_err();
    assert!(
        matches!(&errors.problems[..], [Problem::Syntax { message, .. }] if message.contains("line 2")),
        "{errors}"
    );

    let errors = Experiment::resolve(&tmp.path().join("nope.toml"), &none()).unwrap_err();
    assert!(
        matches!(&errors.problems[..], [Problem::UnreadableConfig { .. }]),
        "{errors}"
    );
}

#[test]
fn validation_lists_every_problem_at_once() {
    let setup = Setup::new();
    fs::create_dir(setup.dir().join("out")).unwrap();
    write(&setup.dir().join("out"), "old.txt", "x");
    let d = setup.dir().display();
    let path = write(
        setup.dir(),
        "bad.toml",
        &format!(
            "model_name_or_path = '{d}/model'\noutput_dir = '{d}/out'\ndo_train = true\ndo_predict = true\n\
             test_file = '{d}/missing.json'\nprompt_column = 'content'\nresponse_column = 'summary'\n\
             pre_seq_len = 0\nmax_source_length = 2\nquantization_bit = 3\nlearning_rate = 0.0\nnum_beams = 0\n\
             precision = 'fp16'\n"
        ),
    );
    let errors = load(&path, &none()).unwrap_err();
    let text = errors.to_string();
    for needle in [
        "`do_train`, `train_file`: do_train needs train_file",
        "`pre_seq_len`: must be >= 1",
        "`max_source_length`: must be >= 3 (got 2)",
        "`quantization_bit`: must be 4 or 8 (got 3)",
        "`learning_rate`: must be > 0 (got 0)",
        "`num_beams`: must be >= 1",
        "missing.json does not exist",
        "out exists and is not empty; set overwrite_output_dir = true",
        "`predict_with_generate`: do_eval/do_predict score generated text",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    assert_eq!(errors.problems.len(), 9, "{text}");

    // Overwriting or resuming lifts the output_dir rule.
    let ok = setup.config("overwrite_output_dir = true\n");
    assert!(load(&ok, &none()).is_ok());
    fs::create_dir(setup.dir().join("out/checkpoint-20")).unwrap();
    let resume = setup.config("resume_from_checkpoint = true\n");
    assert!(load(&resume, &none()).is_ok());
    assert_eq!(
        latest_checkpoint(&setup.dir().join("out")),
        Some(setup.dir().join("out/checkpoint-20"))
    );
}

#[test]
fn failed_keys_do_not_trigger_follow_up_rules() {
    let setup = Setup::new();
    let path = setup.config("learning_rate = 'x'\nmax_source_length = 1\n");
    let errors = load(&path, &none()).unwrap_err();
    let keys: Vec<Vec<&str>> = errors.problems.iter().map(Problem::keys).collect();
    assert_eq!(
        keys,
        vec![vec!["learning_rate"], vec!["max_source_length"]],
        "{errors}"
    );
}

#[test]
fn fp16_on_cpu_is_a_warning() {
    let setup = Setup::new();
    let v = load(&setup.config("precision = 'fp16'\n"), &none()).unwrap();
    assert!(
        v.resolved.warnings.iter().any(|w| w.contains("fp16")),
        "{:?}",
        v.resolved.warnings
    );
}

#[test]
fn hub_id_resolves_through_a_fake_cache() {
    let setup = Setup::new();
    let hub = setup.dir().join("hub");
    let snapshot = hub.join("models--THUDM--chatglm-6b/snapshots/0123abc");
    fs::create_dir_all(&snapshot).unwrap();
    for file in [
        "config.json",
        "ice_text.model",
        "pytorch_model-00001-of-00001.bin",
    ] {
        write(&snapshot, file, "{}");
    }
    let path = setup.config("model_name_or_path = 'THUDM/chatglm-6b'\n");
    // The later duplicate key is a TOML error; replace the first line instead.
    let text = fs::read_to_string(&path).unwrap();
    let text: String = text.lines().skip(1).map(|l| format!("{l}\n")).collect();
    fs::write(&path, text).unwrap();
    let cache = HfCache {
        hub_dir: hub,
        chosen_by: "$HF_HUB_CACHE".into(),
    };
    let v = Experiment::check_with(&path, &none(), Some(&cache)).unwrap();
    assert_eq!(v.model.dir, snapshot);

    let empty = HfCache {
        hub_dir: setup.dir().join("nothing"),
        chosen_by: "$HF_HOME/hub".into(),
    };
    let errors = Experiment::check_with(&path, &none(), Some(&empty)).unwrap_err();
    let text = errors.to_string();
    assert!(
        text.contains("huggingface-cli download THUDM/chatglm-6b"),
        "{text}"
    );
    assert!(
        text.contains(
            "nothing/models--THUDM--chatglm-6b/snapshots (Hugging Face cache, $HF_HOME/hub)"
        ),
        "{text}"
    );
}

#[test]
fn check_reads_columns_and_model_files() {
    let setup = Setup::new();
    write(
        setup.dir(),
        "dev.json",
        "\n{\"prompt\": \"q\", \"summary\": \"a\"}\n",
    );
    fs::remove_file(setup.dir().join("model/ice_text.model")).unwrap();
    let d = setup.dir().display();
    let path = setup.config(&format!(
        "do_eval = true\npredict_with_generate = true\nvalidation_file = '{d}/dev.json'\nhistory_column = 'history'\n"
    ));
    let errors = Experiment::check_with(&path, &none(), None).unwrap_err();
    let text = errors.to_string();
    assert!(text.contains("column `history` is missing in"), "{text}");
    assert!(
        text.contains("train.json line 1 (its keys: content, summary)"),
        "{text}"
    );
    assert!(text.contains("column `content` is missing in"), "{text}");
    assert!(
        text.contains("dev.json line 2 (its keys: prompt, summary)"),
        "{text}"
    );
    assert!(
        text.contains("no tokenizer (ice_text.model or tokenizer.json)"),
        "{text}"
    );
    assert_eq!(errors.problems.len(), 3, "{text}");
    // `load` does not look inside the files.
    assert!(load(&path, &none()).is_ok());
}

#[test]
fn adgen_config_is_the_seed_command() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/adgen.toml");
    let r = Experiment::resolve(&path, &none()).unwrap();
    let e = &r.experiment;
    assert!(e.do_train && e.overwrite_cache && e.overwrite_output_dir && e.predict_with_generate);
    assert!(!e.do_eval && !e.do_predict);
    assert_eq!(
        e.train_file.as_deref(),
        Some(Path::new("AdvertiseGen/train.json"))
    );
    assert_eq!(
        e.validation_file.as_deref(),
        Some(Path::new("AdvertiseGen/dev.json"))
    );
    assert_eq!(
        (e.prompt_column.as_deref(), e.response_column.as_deref()),
        (Some("content"), Some("summary"))
    );
    assert_eq!(e.model_name_or_path, "THUDM/chatglm-6b");
    assert_eq!(
        e.output_dir,
        Path::new("output/adgen-chatglm-6b-pt-128-2e-2")
    );
    assert_eq!((e.max_source_length, e.max_target_length), (64, 64));
    assert_eq!(
        (e.per_device_train_batch_size, e.per_device_eval_batch_size),
        (1, 1)
    );
    assert_eq!(e.gradient_accumulation_steps, 16);
    assert_eq!(
        (e.max_steps, e.logging_steps, e.save_steps),
        (3000, 10, 1000)
    );
    assert_eq!(e.learning_rate, 2e-2);
    assert_eq!((e.pre_seq_len, e.quantization_bit), (Some(128), Some(4)));
    // Every key given in the file has its own comment line right above it.
    let text = fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut given = 0;
    for (i, line) in lines.iter().enumerate() {
        if !line.starts_with('#') && line.contains(" = ") {
            given += 1;
            assert!(
                i > 0 && lines[i - 1].starts_with("# "),
                "no comment above {line}"
            );
        }
    }
    assert_eq!(given, 21);
}
