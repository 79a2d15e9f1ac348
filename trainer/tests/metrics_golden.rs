//! Golden test of `trainer::metrics` against `metrics/pairs.json`: 30 (prediction, label) pairs run
//! through the original `compute_metrics` (jieba 0.42.1, rouge_chinese 1.0.3, nltk 3.10.4).
//! Checks jieba tokens token for token, raw ROUGE p/r/f and raw BLEU, the stored rounded scores,
//! the average over the pairs that did not fail, and the empty-prediction policy for the pairs
//! that made the reference abort (`reference_error`).

#[path = "../../tests/support/fixtures.rs"]
mod fixtures;

use serde_json::Value;
use trainer::metrics::{MetricsAccumulator, PairStatus, compute_metrics, pair_details};

const FILE: &str = "metrics/pairs.json";

struct Golden {
    pairs: Vec<Value>,
    average: Value,
    average_over: Vec<usize>,
    tol: f64,
}

fn load() -> Golden {
    let m = fixtures::Manifest::load();
    let tol = m.entry(FILE).sub_tol("scores");
    assert_eq!(
        tol.rel, 0.0,
        "{FILE}: only an absolute score tolerance is expected"
    );
    let v = m.json(FILE);
    let pairs = v["pairs"].as_array().expect("pairs").clone();
    let average_over = v["average_over_indices"]
        .as_array()
        .expect("average_over_indices")
        .iter()
        .map(|i| i.as_u64().expect("index") as usize)
        .collect();
    Golden {
        pairs,
        average: v["average"].clone(),
        average_over,
        tol: tol.abs,
    }
}

fn text(p: &Value, key: &str) -> String {
    p[key]
        .as_str()
        .unwrap_or_else(|| panic!("pair has no string {key}"))
        .to_string()
}

fn strings(p: &Value, key: &str) -> Vec<String> {
    p[key]
        .as_array()
        .unwrap_or_else(|| panic!("pair has no list {key}"))
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

fn close(what: &str, got: f64, want: &Value, tol: f64) {
    let want = want
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: golden value is not a number"));
    assert!(
        (got - want).abs() <= tol,
        "{what}: got {got}, want {want} (abs tol {tol})"
    );
}

#[test]
fn jieba_tokens_match_python_jieba() {
    let g = load();
    for (i, p) in g.pairs.iter().enumerate() {
        let (pred, label) = (text(p, "decoded_pred"), text(p, "decoded_label"));
        let d = pair_details(&pred, &label);
        assert_eq!(
            d.pred_tokens,
            strings(p, "jieba_pred"),
            "pair {i} ({}): prediction tokens",
            p["kind"]
        );
        assert_eq!(
            d.label_tokens,
            strings(p, "jieba_label"),
            "pair {i} ({}): label tokens",
            p["kind"]
        );
    }
}

#[test]
fn per_pair_scores_match() {
    let g = load();
    let mut scored = 0;
    for (i, p) in g.pairs.iter().enumerate() {
        if p.get("reference_error").is_some() {
            continue;
        }
        let (pred, label) = (text(p, "decoded_pred"), text(p, "decoded_label"));
        let d = pair_details(&pred, &label);
        let kind = &p["kind"];
        assert_eq!(d.status, PairStatus::Scored, "pair {i} ({kind})");
        let rouge = d.rouge.expect("scored pair has ROUGE");
        let raw = &p["rouge_raw"];
        for (name, prf) in [
            ("rouge-1", rouge.rouge1),
            ("rouge-2", rouge.rouge2),
            ("rouge-l", rouge.rougel),
        ] {
            for (stat, got) in [("p", prf.p), ("r", prf.r), ("f", prf.f)] {
                close(
                    &format!("pair {i} ({kind}) raw {name}.{stat}"),
                    got,
                    &raw[name][stat],
                    1e-12,
                );
            }
        }
        close(
            &format!("pair {i} ({kind}) raw bleu"),
            d.bleu,
            &p["bleu_raw"],
            1e-12,
        );
        let cm = &p["compute_metrics"];
        close(
            &format!("pair {i} ({kind}) rouge-1"),
            d.scores.rouge1,
            &cm["rouge-1"],
            g.tol,
        );
        close(
            &format!("pair {i} ({kind}) rouge-2"),
            d.scores.rouge2,
            &cm["rouge-2"],
            g.tol,
        );
        close(
            &format!("pair {i} ({kind}) rouge-l"),
            d.scores.rougel,
            &cm["rouge-l"],
            g.tol,
        );
        close(
            &format!("pair {i} ({kind}) bleu-4"),
            d.scores.bleu4,
            &cm["bleu-4"],
            g.tol,
        );
        // The rounding itself is reproduced exactly, so the stored values are bit-identical
        // (they have at most 7 digits, which serde_json parses exactly).
        for (got, key) in [
            (d.scores.rouge1, "rouge-1"),
            (d.scores.rouge2, "rouge-2"),
            (d.scores.rougel, "rouge-l"),
            (d.scores.bleu4, "bleu-4"),
        ] {
            assert_eq!(
                got,
                cm[key].as_f64().unwrap(),
                "pair {i} ({kind}) {key} not bit-identical"
            );
        }
        scored += 1;
    }
    assert_eq!(
        scored,
        g.average_over.len(),
        "every non-failing pair is scored"
    );
}

#[test]
fn average_over_non_failing_pairs_matches() {
    let g = load();
    let preds: Vec<String> = g
        .average_over
        .iter()
        .map(|&i| text(&g.pairs[i], "decoded_pred"))
        .collect();
    let labels: Vec<String> = g
        .average_over
        .iter()
        .map(|&i| text(&g.pairs[i], "decoded_label"))
        .collect();
    let r = compute_metrics(&preds, &labels);
    assert_eq!(
        (r.count, r.empty_predictions, r.empty_references),
        (g.average_over.len(), 0, 0)
    );
    close("average rouge-1", r.rouge1, &g.average["rouge-1"], g.tol);
    close("average rouge-2", r.rouge2, &g.average["rouge-2"], g.tol);
    close("average rouge-l", r.rougel, &g.average["rouge-l"], g.tol);
    close("average bleu-4", r.bleu4, &g.average["bleu-4"], g.tol);
    // np.mean's pairwise summation is reproduced: the averages are bit-identical too.
    let exact = exact_average();
    assert_eq!(
        [r.rouge1, r.rouge2, r.rougel, r.bleu4],
        ["rouge-1", "rouge-2", "rouge-l", "bleu-4"].map(|k| exact[k])
    );
}

/// The `average` numbers parsed from their literal text with `str::parse` (correctly rounded):
/// serde_json's default float parser can be 1 ulp off for 17-digit literals such as these.
fn exact_average() -> std::collections::HashMap<String, f64> {
    let m = fixtures::Manifest::load();
    let raw = std::fs::read_to_string(m.path(FILE)).unwrap();
    let start = raw.find("\"average\":").expect("average key") + "\"average\":".len();
    let body = &raw[start..];
    let body = &body[body.find('{').unwrap() + 1..body.find('}').unwrap()];
    body.split(',')
        .map(|kv| {
            let (k, v) = kv.split_once(':').expect("key: value");
            (
                k.trim().trim_matches('"').to_string(),
                v.trim().parse::<f64>().expect("number"),
            )
        })
        .collect()
}

#[test]
fn failing_pairs_are_empty_predictions_scored_zero_and_counted() {
    let g = load();
    let failing: Vec<usize> = (0..g.pairs.len())
        .filter(|i| !g.average_over.contains(i))
        .collect();
    assert!(!failing.is_empty(), "{FILE} has pairs with reference_error");
    for &i in &failing {
        let p = &g.pairs[i];
        assert_eq!(
            p["reference_error"], "ValueError: Hypothesis is empty.",
            "pair {i}"
        );
        let d = pair_details(
            p["decoded_pred"].as_str().unwrap(),
            p["decoded_label"].as_str().unwrap(),
        );
        assert_eq!(d.status, PairStatus::EmptyPrediction, "pair {i}");
        assert_eq!(
            [
                d.scores.rouge1,
                d.scores.rouge2,
                d.scores.rougel,
                d.scores.bleu4
            ],
            [0.0; 4],
            "pair {i}"
        );
    }

    // All 30 pairs streamed: the failing ones count as zeros.
    let mut acc = MetricsAccumulator::new();
    for p in &g.pairs {
        acc.push(
            p["decoded_pred"].as_str().unwrap(),
            p["decoded_label"].as_str().unwrap(),
        );
    }
    let all = acc.finish();
    assert_eq!(
        (all.count, all.empty_predictions),
        (g.pairs.len(), failing.len())
    );
    let expected =
        g.average["rouge-1"].as_f64().unwrap() * g.average_over.len() as f64 / g.pairs.len() as f64;
    assert!(
        (all.rouge1 - expected).abs() <= g.tol,
        "all-pairs rouge-1 {} vs {expected}",
        all.rouge1
    );
}
