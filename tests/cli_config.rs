//! Integration tests of the real `glm-tune` binary for the experiment commands: exit codes and
//! messages of `config`, `check`, unknown keys, type errors and `--help`. Every run gets a clean
//! environment (no inherited `GLM_TUNE_*` or Hugging Face variables) and, unless a test says
//! otherwise, the workspace root as current directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn shared_data() -> PathBuf {
    let dir = workspace().join("../shared/data/advertisegen");
    assert!(
        dir.is_dir(),
        "{} is missing: the shared data must sit beside the checkout",
        dir.display()
    );
    dir
}

/// `glm-tune ARGS` in `cwd` with only PATH, HOME and `env` set.
fn glm_tune(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_glm-tune"));
    cmd.args(args).current_dir(cwd).env_clear();
    for var in ["PATH", "HOME"] {
        if let Some(value) = std::env::var_os(var) {
            cmd.env(var, value);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("glm-tune runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The line of `glm-tune config` output for `key`, split into columns.
fn row(stdout: &str, key: &str) -> Vec<String> {
    let line = stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(key))
        .unwrap_or_else(|| panic!("no row for {key} in\n{stdout}"));
    line.split_whitespace().map(str::to_owned).collect()
}

/// A temp dir with a complete fake model and `exp.toml` training on the shared AdvertiseGen
/// rows; `extra` is appended to the experiment.
fn valid_setup(extra: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("chatglm-6b");
    fs::create_dir(&model).unwrap();
    for file in ["config.json", "ice_text.model", "pytorch_model.bin"] {
        fs::write(model.join(file), "{}").unwrap();
    }
    let data = shared_data();
    let experiment = format!(
        "model_name_or_path = 'chatglm-6b'\noutput_dir = 'out'\ndo_train = true\ndo_predict = true\npredict_with_generate = true\n\
         train_file = '{}'\ntest_file = '{}'\nprompt_column = 'content'\nresponse_column = 'summary'\n\
         pre_seq_len = 8\nmax_steps = 2\n{extra}",
        data.join("train_first5000.json").display(),
        data.join("dev.json").display(),
    );
    fs::write(tmp.path().join("exp.toml"), experiment).unwrap();
    tmp
}

#[test]
fn help_lists_subcommands_and_every_key() {
    let out = glm_tune(&workspace(), &["--help"], &[]);
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("config") && stdout.contains("check"),
        "{stdout}"
    );

    for sub in ["config", "check"] {
        let out = glm_tune(&workspace(), &[sub, "--help"], &[]);
        assert_eq!(out.status.code(), Some(0));
        let stdout = text(&out.stdout);
        assert!(stdout.contains("--set <KEY=VALUE>"), "{stdout}");
        for key in [
            "model_name_or_path",
            "pre_seq_len",
            "quantization_bit",
            "lr_scheduler_type",
            "nan_policy",
            "device",
        ] {
            assert!(
                stdout.contains(&format!("\n  {key} = <")),
                "{sub} --help lacks {key}"
            );
        }
        assert!(
            stdout.contains("default: 5e-5; mirrors --learning_rate"),
            "{stdout}"
        );
        // -h stays short.
        let short = text(&glm_tune(&workspace(), &[sub, "-h"], &[]).stdout);
        assert!(!short.contains("pre_seq_len = <"), "{short}");
    }
}

#[test]
fn config_prints_every_key_with_its_origin() {
    let out = glm_tune(
        &workspace(),
        &[
            "config",
            "configs/adgen.toml",
            "--set",
            "learning_rate=1e-2",
            "--set",
            "seed=3",
            "--set",
            "seed=4",
        ],
        &[("GLM_TUNE_MAX_STEPS", "50"), ("GLM_TUNE_TOP_P", "0.5")],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        row(&stdout, "learning_rate"),
        ["learning_rate", "0.01", "--set", "learning_rate=1e-2"]
    );
    assert_eq!(row(&stdout, "seed"), ["seed", "4", "--set", "seed=4"]);
    assert_eq!(
        row(&stdout, "max_steps"),
        ["max_steps", "50", "env", "GLM_TUNE_MAX_STEPS"]
    );
    assert_eq!(
        row(&stdout, "top_p"),
        ["top_p", "0.5", "env", "GLM_TUNE_TOP_P"]
    );
    let pre = row(&stdout, "pre_seq_len");
    assert_eq!(pre[..3], ["pre_seq_len", "128", "file"]);
    assert!(pre[3].starts_with("configs/adgen.toml:"), "{pre:?}");
    assert_eq!(
        row(&stdout, "model_name_or_path")[1],
        "\"THUDM/chatglm-6b\""
    );
    assert_eq!(
        row(&stdout, "adam_epsilon"),
        ["adam_epsilon", "1e-8", "default"]
    );
    assert_eq!(
        row(&stdout, "ptuning_checkpoint"),
        ["ptuning_checkpoint", "(unset)", "default"]
    );
    let rows = stdout.lines().filter(|l| !l.starts_with('#')).count();
    assert_eq!(
        rows,
        1 + trainer::config::KEYS.len(),
        "header + one row per key:\n{stdout}"
    );
}

#[test]
fn config_toml_output_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let first = glm_tune(
        &workspace(),
        &[
            "config",
            "configs/adgen.toml",
            "--toml",
            "--set",
            "device=cuda:1",
        ],
        &[],
    );
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let saved = tmp.path().join("experiment.toml");
    fs::write(&saved, &first.stdout).unwrap();
    let again = glm_tune(
        &workspace(),
        &["config", saved.to_str().unwrap(), "--toml"],
        &[],
    );
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    assert_eq!(text(&again.stdout), text(&first.stdout));
    assert!(text(&first.stdout).contains("\ndevice = \"cuda:1\"\n"));
}

#[test]
fn unknown_keys_and_type_errors_exit_2_with_all_problems() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("typo.toml");
    fs::write(
        &path,
        "model_name_or_path = 'm'\noutput_dir = 'o'\nlearning_rte = 1e-2\nmax_steps = 'many'\nquantization_bit = 4.5\n",
    )
    .unwrap();
    let out = glm_tune(
        tmp.path(),
        &["config", "typo.toml", "--set", "presq_len=3"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    for needle in [
        "4 problems in experiment typo.toml",
        "unknown key `learning_rte` (typo.toml line 3); did you mean `learning_rate`?",
        "unknown key `presq_len` (--set presq_len=3); did you mean `pre_seq_len`?",
        "`max_steps` (file typo.toml:4) must be integer: found string \"many\"",
        "`quantization_bit` (file typo.toml:5) must be integer >= 0: found float `4.5`",
    ] {
        assert!(stderr.contains(needle), "missing {needle:?} in\n{stderr}");
    }
    assert!(out.stdout.is_empty());
}

#[test]
fn missing_or_invalid_experiment_file_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let out = glm_tune(tmp.path(), &["config", "nope.toml"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("cannot read experiment file nope.toml"),
        "{}",
        text(&out.stderr)
    );

    fs::write(tmp.path().join("broken.toml"), "do_train = \n").unwrap();
    let out = glm_tune(tmp.path(), &["check", "broken.toml"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("broken.toml is not valid TOML"),
        "{}",
        text(&out.stderr)
    );

    // Usage errors are clap's exit code 2 as well.
    let out = glm_tune(tmp.path(), &["config"], &[]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn check_adgen_without_data_and_model_lists_everything() {
    let cache = tempfile::tempdir().unwrap();
    let out = glm_tune(
        &workspace(),
        &["check", "configs/adgen.toml", "--set", "pre_seq_len=0"],
        &[("HF_HUB_CACHE", cache.path().to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    for needle in [
        "4 problems in experiment configs/adgen.toml",
        "`train_file`: AdvertiseGen/train.json does not exist",
        "`validation_file`: AdvertiseGen/dev.json does not exist",
        "`pre_seq_len`: must be >= 1",
        "model `THUDM/chatglm-6b` not found",
        "models--THUDM--chatglm-6b/snapshots (Hugging Face cache, $HF_HUB_CACHE): does not exist",
        "huggingface-cli download THUDM/chatglm-6b",
    ] {
        assert!(stderr.contains(needle), "missing {needle:?} in\n{stderr}");
    }
}

#[test]
fn check_accepts_a_complete_experiment() {
    let tmp = valid_setup("");
    let out = glm_tune(tmp.path(), &["check", "exp.toml"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("exp.toml: OK\n"), "{stdout}");
    assert!(
        stdout.contains("P-Tuning v2, pre_seq_len 8, no quantization, fp32 on cpu"),
        "{stdout}"
    );
}

#[test]
fn check_reports_columns_output_dir_and_encoding() {
    let tmp = valid_setup("history_column = 'history'\nprecision = 'fp16'\n");
    fs::create_dir(tmp.path().join("out")).unwrap();
    fs::write(tmp.path().join("out/log.txt"), "previous run").unwrap();
    let gbk = shared_data().join("train_first5000.gbk.json");
    let out = glm_tune(
        tmp.path(),
        &[
            "check",
            "exp.toml",
            "--set",
            &format!("test_file={}", gbk.display()),
        ],
        &[("RUST_LOG", "warn")],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    for needle in [
        "3 problems in experiment exp.toml",
        "column `history` is missing in",
        "train_first5000.json line 1 (its keys: content, summary)",
        "train_first5000.gbk.json line 1 is not UTF-8",
        "out exists and is not empty; set overwrite_output_dir = true",
        "precision = \"fp16\" on the CPU",
    ] {
        assert!(stderr.contains(needle), "missing {needle:?} in\n{stderr}");
    }
}
