//! Unit tests of the public metrics API: the golden table of reference §8.6 (values produced by
//! jieba 0.42.1 / rouge_chinese 1.0.3 / nltk 3.10.4 / numpy running `compute_metrics`), the
//! degenerate-pair policy, the accumulator and the results-JSON keys.

use super::*;

/// dev.json line 1 summary as decoded by the ChatGLM tokenizer (NFKC turns `，` into `,`).
const DEV0_LABEL: &str = "简约而不简单的牛仔外套,白色的衣身十分百搭。衣身多处有做旧破洞设计,打破单调乏味,\
增加一丝造型看点。衣身后背处有趣味刺绣装饰,丰富层次感,彰显别样时尚。";
/// ptuning/README.md example 1, "Output[微调后]", with ASCII commas.
const README_OUTPUT: &str = "这是一款简约的牛仔外套,破洞设计,将牛仔布破洞,带来一种随意与个性。破洞的牛仔外套,\
展现出时尚气息,带来一种休闲感。同时,刺绣图案,让整件外套更加立体。";

fn scores(r1: f64, r2: f64, rl: f64, b: f64) -> PairScores {
    PairScores {
        rouge1: r1,
        rouge2: r2,
        rougel: rl,
        bleu4: b,
    }
}

#[test]
fn readme_table_example_output() {
    assert_eq!(
        score_pair(README_OUTPUT, DEV0_LABEL),
        scores(30.7692, 12.0482, 28.8889, 13.9796)
    );
}

#[test]
fn readme_table_single_char() {
    assert_eq!(score_pair("短", DEV0_LABEL), scores(0.0, 0.0, 0.0, 0.0));
}

#[test]
fn readme_table_english() {
    assert_eq!(
        score_pair(
            "Hello world , this is a test.",
            "Hello world, this is the test."
        ),
        scores(87.5, 71.4286, 87.5, 78.22)
    );
}

#[test]
fn readme_table_empty_prediction_scores_zero_and_is_counted() {
    let d = pair_details("", DEV0_LABEL);
    assert_eq!(d.status, PairStatus::EmptyPrediction);
    assert_eq!(d.scores, PairScores::default());
    let r = compute_metrics(&["", " \n\t", "短"], &[DEV0_LABEL, DEV0_LABEL, DEV0_LABEL]);
    assert_eq!(
        (r.count, r.empty_predictions, r.empty_references),
        (3, 2, 0)
    );
    assert_eq!((r.rouge1, r.bleu4), (0.0, 0.0));
}

#[test]
fn empty_label_scores_zero_and_is_counted() {
    let d = pair_details("短", "   ");
    assert_eq!(d.status, PairStatus::EmptyReference);
    let r = compute_metrics(&["短".to_string()], &["".to_string()]);
    assert_eq!(
        (r.count, r.empty_predictions, r.empty_references),
        (1, 0, 1)
    );
}

#[test]
fn averages_are_numpy_means_of_the_rounded_scores() {
    // Python compute_metrics on the three scoring rows of the table together.
    let preds = [README_OUTPUT, "短", "Hello world , this is a test."];
    let labels = [DEV0_LABEL, DEV0_LABEL, "Hello world, this is the test."];
    let r = compute_metrics(&preds, &labels);
    assert_eq!(r.rouge1, 39.423066666666664);
    assert_eq!(r.rouge2, 27.825599999999998);
    assert_eq!(r.rougel, 38.7963);
    assert_eq!(r.bleu4, 30.7332);
    assert_eq!((r.count, r.empty_predictions), (3, 0));
}

#[test]
fn accumulator_streams_the_same_report() {
    let mut acc = MetricsAccumulator::new();
    assert!(acc.is_empty());
    assert_eq!(acc.finish().count, 0);
    let first = acc.push(README_OUTPUT, DEV0_LABEL);
    assert_eq!(first, scores(30.7692, 12.0482, 28.8889, 13.9796));
    acc.push("", DEV0_LABEL);
    acc.push(
        "Hello world , this is a test.",
        "Hello world, this is the test.",
    );
    let streamed = acc.finish();
    let batch = compute_metrics(
        &[README_OUTPUT, "", "Hello world , this is a test."],
        &[DEV0_LABEL, DEV0_LABEL, "Hello world, this is the test."],
    );
    assert_eq!(streamed, batch);
    assert_eq!(streamed.empty_predictions, 1);
    assert_eq!(streamed.rouge1, (30.7692 + 0.0 + 87.5) / 3.0);
}

#[test]
fn mismatched_lengths_pair_like_zip() {
    let r = compute_metrics(&["短", "长"], &[DEV0_LABEL]);
    assert_eq!(r.count, 1);
}

#[test]
fn results_json_has_the_hf_keys_and_rounding() {
    let report = MetricsReport {
        rouge1: 31.5,
        rouge2: 7.25,
        rougel: 24.125,
        bleu4: 8.0625,
        count: 1070,
        ..Default::default()
    };
    let m = to_results_json("predict", &report, 1234.567891, 1070, 16);
    let keys: Vec<&str> = m.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "predict_bleu-4",
            "predict_rouge-1",
            "predict_rouge-2",
            "predict_rouge-l",
            "predict_runtime",
            "predict_samples",
            "predict_samples_per_second",
            "predict_steps_per_second",
        ]
    );
    assert_eq!(m["predict_runtime"], 1234.5679);
    assert_eq!(m["predict_samples"], 1070);
    // 1070 / 1234.567891 = 0.86670…; ceil(1070 / 16) = 67 steps → 0.05427…
    assert_eq!(m["predict_samples_per_second"], 0.867);
    assert_eq!(m["predict_steps_per_second"], 0.054);
    assert_eq!(m["predict_bleu-4"], 8.0625);
    let e = to_results_json("eval", &report, 0.0, 0, 1);
    assert!(e.contains_key("eval_rouge-l") && !e.contains_key("eval_samples_per_second"));
}
