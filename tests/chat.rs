//! Integration tests of `glm-tune chat` (driven through stdin) and `glm-tune predict` on small
//! random models with the demo tokenizer: the history template on the second turn, `/reset`,
//! `/prefix off|on`, single-prompt mode, merged-prefix-free loading, the refusal of a prefix
//! that does not fit, and predict = `run` with do_predict only.

#[path = "support/chat_model.rs"]
mod chat_model;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use chat_model::{Shape, write_model, write_prefix};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Run glm-tune with `stdin` piped in.
fn glm_tune(cwd: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_glm-tune"))
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .env_remove("GLM_TUNE_CACHE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("glm-tune runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// The answers of a chat transcript (the text after each `ChatGLM：` label).
fn answers(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("ChatGLM："))
        .map(str::to_string)
        .collect()
}

/// The `prompt: "..."` lines of --verbose, unescaped.
fn prompts(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("prompt: "))
        .map(|q| serde_json::from_str::<String>(q).expect("prompt is printed as a quoted string"))
        .collect()
}

const GREEDY: [&str; 5] = ["--greedy", "--max-new-tokens", "6", "--seed", "1"];

#[test]
fn chat_keeps_history_resets_and_switches_the_prefix() {
    let tmp = tempfile::tempdir().unwrap();
    let model = write_model(&tmp.path().join("model"), Shape::TINY, 1);
    let prefix = write_prefix(&tmp.path().join("prefix"), &model, 4, false, 7);
    let script = "hello\n你好\n/reset\nhello\n/prefix off\nhello\n/prefix\n/prefix on\nhello\n/help\n/bogus\n/quit\nnever read\n";
    let mut args = vec![
        "chat",
        "--model",
        model.to_str().unwrap(),
        "--prefix",
        prefix.to_str().unwrap(),
        "--verbose",
    ];
    args.extend(GREEDY);
    let out = glm_tune(tmp.path(), &args, script);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("loaded model")
            && stderr.contains("loaded prefix of")
            && stderr.contains("pre_seq_len 4"),
        "{stderr}"
    );

    let a = answers(&stdout);
    assert_eq!(a.len(), 5, "one answer per question:\n{stdout}");
    assert!(
        a.iter().all(|x| !x.trim().is_empty()),
        "empty answer:\n{stdout}"
    );
    let p = prompts(&stderr);
    assert_eq!(p.len(), 5, "{stderr}");
    // First turn: the bare query; second: the [Round i] template with the first answer.
    assert_eq!(p[0], "hello");
    assert_eq!(
        p[1],
        format!(
            "[Round 0]\n问：hello\n答：{}\n[Round 1]\n问：你好\n答：",
            a[0]
        )
    );
    // /reset empties the history: the same bare prompt and (greedy) the same answer again.
    assert!(stdout.contains("(history cleared"), "{stdout}");
    assert_eq!(p[2], "hello");
    assert_eq!(a[2], a[0]);
    // /prefix off keeps the history but answers with the base model: another answer.
    assert!(
        stdout.contains("(prefix off: the base model answers)"),
        "{stdout}"
    );
    assert_eq!(
        p[3],
        format!(
            "[Round 0]\n问：hello\n答：{}\n[Round 1]\n问：hello\n答：",
            a[2]
        )
    );
    let flags: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("prefix: "))
        .collect();
    assert_eq!(flags, ["on", "on", "on", "off", "on"]);
    assert!(
        stdout.contains("/reset        clear the conversation history"),
        "/help:\n{stdout}"
    );
    assert!(stdout.contains("(unknown command `/bogus`"), "{stdout}");
    assert!(
        !stdout.contains("never read"),
        "input after /quit was read:\n{stdout}"
    );
}

#[test]
fn prefix_changes_the_answer_and_switches_back() {
    let tmp = tempfile::tempdir().unwrap();
    let model = write_model(&tmp.path().join("model"), Shape::TINY, 1);
    let prefix = write_prefix(&tmp.path().join("prefix"), &model, 4, false, 7);
    let mut args = vec![
        "chat",
        "--model",
        model.to_str().unwrap(),
        "--prefix",
        prefix.to_str().unwrap(),
    ];
    args.extend(GREEDY);
    let out = glm_tune(
        tmp.path(),
        &args,
        "hello\n/reset\n/prefix off\nhello\n/reset\n/prefix on\nhello\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let a = answers(&text(&out.stdout));
    assert_eq!(a.len(), 3, "{}", text(&out.stdout));
    assert_ne!(a[0], a[1], "the prefix must change the greedy answer");
    assert_eq!(
        a[0], a[2],
        "switching the prefix back on gives the prefix answer again"
    );
    // The base model without --prefix gives the prefix-off answer; /prefix on explains itself.
    let out = glm_tune(
        tmp.path(),
        &[
            &["chat", "--model", model.to_str().unwrap()][..],
            &GREEDY[..],
        ]
        .concat(),
        "/prefix on\nhello\n",
    );
    let stdout = text(&out.stdout);
    assert!(stdout.contains("no prefix is loaded"), "{stdout}");
    assert_eq!(answers(&stdout), [a[1].clone()]);
}

#[test]
fn single_prompt_mode_prints_only_the_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let model = write_model(&tmp.path().join("model"), Shape::TINY, 1);
    let prefix = write_prefix(&tmp.path().join("prefix"), &model, 4, false, 7);
    let m = model.to_str().unwrap();
    let p = prefix.to_str().unwrap();
    let interactive = glm_tune(
        tmp.path(),
        &[&["chat", "--model", m, "--prefix", p][..], &GREEDY[..]].concat(),
        "hello\n",
    );
    let expected = answers(&text(&interactive.stdout)).remove(0);
    let out = glm_tune(
        tmp.path(),
        &[
            &["chat", "--model", m, "--prefix", p, "--prompt", "hello"][..],
            &GREEDY[..],
        ]
        .concat(),
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("{expected}\n"),
        "stdout must hold the answer and nothing else"
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("loaded model") && stderr.contains(" s ("),
        "load time on stderr: {stderr}"
    );
    // Quantized on load (the original's quantization_bit): said on stderr, still answers.
    let out = glm_tune(
        tmp.path(),
        &[
            &[
                "chat",
                "--model",
                m,
                "--prefix",
                p,
                "--prompt",
                "hello",
                "--quantization-bit",
                "4",
            ][..],
            &GREEDY[..],
        ]
        .concat(),
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(", int4,"),
        "{}",
        text(&out.stderr)
    );
    assert!(!text(&out.stdout).trim().is_empty());
    // Sampling with a fixed seed is reproducible; another seed samples another answer.
    let sample = |seed: &str| {
        let flat = ["--top-p", "1", "--temperature", "3"];
        let out = glm_tune(
            tmp.path(),
            &[
                &[
                    "chat",
                    "--model",
                    m,
                    "--prompt",
                    "hello",
                    "--max-new-tokens",
                    "12",
                    "--seed",
                    seed,
                ][..],
                &flat[..],
            ]
            .concat(),
            "",
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    assert_eq!(sample("5"), sample("5"));
    assert_ne!(sample("5"), sample("6"));
}

/// `glm-tune chat --model MODEL --prefix PREFIX --prompt hi`, which must fail with exit code 1.
fn refused_chat(cwd: &Path, model: &Path, prefix: &Path) -> Output {
    let out = glm_tune(
        cwd,
        &[
            "chat",
            "--model",
            model.to_str().unwrap(),
            "--prefix",
            prefix.to_str().unwrap(),
            "--prompt",
            "hi",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    out
}

#[test]
fn a_prefix_that_does_not_fit_is_refused_with_both_values() {
    let tmp = tempfile::tempdir().unwrap();
    let model = write_model(&tmp.path().join("model"), Shape::TINY, 1);
    let other = write_model(
        &tmp.path().join("other"),
        Shape {
            layers: 3,
            ..Shape::TINY
        },
        1,
    );
    let foreign = write_prefix(&tmp.path().join("foreign"), &other, 4, false, 7);
    let out = refused_chat(tmp.path(), &model, &foreign);
    let err = text(&out.stderr);
    assert!(
        err.contains("was trained with num_layers = 3, but this run has num_layers = 2")
            && err.contains("use the base model this prefix was trained on"),
        "{err}"
    );
    assert!(text(&out.stdout).is_empty());

    // A checkpoint whose tensors are of another pre_seq_len than its config.json says.
    let edited = write_prefix(&tmp.path().join("edited"), &model, 4, false, 7);
    let cfg = fs::read_to_string(edited.join("config.json"))
        .unwrap()
        .replace("\"pre_seq_len\": 4", "\"pre_seq_len\": 8");
    fs::write(edited.join("config.json"), cfg).unwrap();
    let out = refused_chat(tmp.path(), &model, &edited);
    let err = text(&out.stderr);
    assert!(
        err.contains("has shape [4, 128] but this model needs [8, 128]"),
        "{err}"
    );
}

fn predict_config(
    dir: &Path,
    model: &Path,
    prefix: Option<&Path>,
    out: &Path,
    extra: &str,
) -> std::path::PathBuf {
    let data = chat_model::workspace().join("demo/data/dev.json");
    let path = dir.join("predict.toml");
    let ck = prefix
        .map(|p| format!("ptuning_checkpoint = \"{}\"\n", p.display()))
        .unwrap_or_default();
    fs::write(
        &path,
        format!(
            "do_train = true\ntrain_file = \"{data}\"\ntest_file = \"{data}\"\nprompt_column = \"content\"\nresponse_column = \"summary\"\n\
             model_name_or_path = \"{model}\"\noutput_dir = \"{out}\"\nmax_source_length = 24\nmax_target_length = 8\n\
             max_predict_samples = 5\nper_device_eval_batch_size = 2\ncache_dir = \"{cache}\"\n{ck}{extra}",
            data = data.display(),
            model = model.display(),
            out = out.display(),
            cache = dir.join("cache").display(),
        ),
    )
    .unwrap();
    path
}

#[test]
fn predict_is_run_with_do_predict_only_and_takes_the_prefix_settings_from_the_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let model = write_model(&tmp.path().join("model"), Shape::TINY, 1);
    let prefix = write_prefix(&tmp.path().join("prefix"), &model, 4, false, 7);
    let out_dir = tmp.path().join("out");
    // The training output dir, as evaluate.sh uses it: train results are kept.
    fs::create_dir_all(&out_dir).unwrap();
    fs::write(out_dir.join("all_results.json"), "{\"train_loss\": 3.5}").unwrap();
    let cfg = predict_config(tmp.path(), &model, Some(&prefix), &out_dir, "");
    let out = glm_tune(tmp.path(), &["predict", cfg.to_str().unwrap()], "");
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("pre_seq_len 4, prefix_projection false (from its config.json)"),
        "{stderr}"
    );
    assert!(stdout.contains("predict: 5 samples"), "{stdout}");
    let lines = fs::read_to_string(out_dir.join("generated_predictions.txt")).unwrap();
    assert_eq!(lines.lines().count(), 5);
    for l in lines.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert!(v["labels"].is_string() && v["predict"].is_string(), "{l}");
    }
    let results: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out_dir.join("predict_results.json")).unwrap())
            .unwrap();
    for k in [
        "predict_bleu-4",
        "predict_rouge-1",
        "predict_rouge-2",
        "predict_rouge-l",
        "predict_runtime",
        "predict_samples_per_second",
    ] {
        assert!(
            results.get(k).is_some(),
            "predict_results.json lacks {k}: {results}"
        );
    }
    assert!(
        !out_dir.join("train_results.json").exists(),
        "do_train must be forced off"
    );
    let all: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out_dir.join("all_results.json")).unwrap())
            .unwrap();
    assert_eq!(
        all["train_loss"], 3.5,
        "all_results.json is updated, not replaced: {all}"
    );
    assert!(all.get("predict_bleu-4").is_some(), "{all}");

    // A pre_seq_len that is not the checkpoint's: the precise mismatch message.
    let out = glm_tune(
        tmp.path(),
        &["predict", cfg.to_str().unwrap(), "--set", "pre_seq_len=8"],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("was trained with pre_seq_len = 4, but this run has pre_seq_len = 8: set pre_seq_len = 4"), "{err}");

    // pre_seq_len without a checkpoint would predict with a random prefix: refused.
    let cfg = predict_config(
        tmp.path(),
        &model,
        None,
        &tmp.path().join("out2"),
        "pre_seq_len = 4\n",
    );
    let out = glm_tune(tmp.path(), &["predict", cfg.to_str().unwrap()], "");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("untrained random prefix"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_prefix_trained_by_glm_tune_run_is_used_by_chat_and_predict() {
    let tmp = tempfile::tempdir().unwrap();
    let model = write_model(&tmp.path().join("model"), Shape::TINY, 1);
    let out_dir = tmp.path().join("run");
    let data = chat_model::workspace().join("demo/data");
    let cfg = tmp.path().join("train.toml");
    fs::write(
        &cfg,
        format!(
            "do_train = true\ntrain_file = \"{train}\"\ntest_file = \"{dev}\"\nprompt_column = \"content\"\nresponse_column = \"summary\"\n\
             model_name_or_path = \"{model}\"\noutput_dir = \"{out}\"\nmax_source_length = 16\nmax_target_length = 16\n\
             max_train_samples = 8\nmax_predict_samples = 2\nper_device_train_batch_size = 2\nmax_steps = 2\nsave_steps = 2\n\
             learning_rate = 2e-2\npre_seq_len = 4\nquantization_bit = 8\ncache_dir = \"{cache}\"\n",
            train = data.join("train.json").display(),
            dev = data.join("dev.json").display(),
            model = model.display(),
            out = out_dir.display(),
            cache = tmp.path().join("cache").display(),
        ),
    )
    .unwrap();
    let out = glm_tune(tmp.path(), &["run", cfg.to_str().unwrap()], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ck = out_dir.join("checkpoint-2");
    let args = [
        &[
            "chat",
            "--model",
            model.to_str().unwrap(),
            "--prefix",
            ck.to_str().unwrap(),
            "--prompt",
            "类型#裙",
        ][..],
        &GREEDY[..],
    ]
    .concat();
    let out = glm_tune(tmp.path(), &args, "");
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!text(&out.stdout).trim().is_empty());
    assert!(stderr.contains("pre_seq_len 4"), "{stderr}");
    assert!(
        !stderr.contains("WARN"),
        "the checkpoint fits this model and tokenizer: {stderr}"
    );
    assert!(
        stderr.contains("trained on an int8 base; add --quantization-bit 8"),
        "{stderr}"
    );
    // evaluate.sh: the training dir, ptuning_checkpoint set, pre_seq_len taken from the file.
    let out = glm_tune(
        tmp.path(),
        &[
            "predict",
            cfg.to_str().unwrap(),
            "--set",
            &format!("ptuning_checkpoint={}", ck.display()),
            "--set",
            "pre_seq_len=4",
        ],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        fs::read_to_string(out_dir.join("generated_predictions.txt"))
            .unwrap()
            .lines()
            .count(),
        2
    );
    let all: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out_dir.join("all_results.json")).unwrap())
            .unwrap();
    assert!(
        all.get("train_loss").is_some() && all.get("predict_rouge-l").is_some(),
        "{all}"
    );
}
