//! Golden test of the ChatGLM tokenizer against the reference (`tokenizer/cases.json`, found
//! through the fixture manifest): every case is checked for `tokens`, `ids`, `ids_with_special`
//! and the four decode variants, every raw-id decode case for its three variants; all mismatches
//! are collected and reported together.

#[path = "../../tests/support/fixtures.rs"]
mod fixtures;

use dataset::tokenizer::ChatGlmTokenizer;
use serde_json::Value;

fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("id list")
        .iter()
        .map(|x| u32::try_from(x.as_i64().expect("integer id")).expect("non-negative id"))
        .collect()
}

fn str_of(v: &Value) -> &str {
    v.as_str().expect("string")
}

#[test]
fn tokenizer_matches_reference_cases() {
    let manifest = fixtures::Manifest::load();
    let entry = manifest.entry("tokenizer/cases.json");
    assert_eq!(
        entry.tol(),
        fixtures::Tol::EXACT,
        "tokenizer cases are exact"
    );
    let doc = manifest.json("tokenizer/cases.json");
    let tok = ChatGlmTokenizer::from_dir(&fixtures::shared_data().join("chatglm-6b"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(tok.vocab_size(), 130344);

    let mut failures = Vec::new();
    let mut check = |what: String, ok: bool, got: String, want: String| {
        if !ok {
            failures.push(format!("{what}\n      got:  {got}\n      want: {want}"));
        }
    };

    let cases = doc["cases"].as_array().expect("cases");
    for (i, case) in cases.iter().enumerate() {
        let text = str_of(&case["text"]);
        let label = format!(
            "case {i} ({}) {text:?}",
            case["origin"].as_str().unwrap_or("?")
        );

        let want_tokens: Vec<String> = case["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| str_of(t).to_string())
            .collect();
        let got_tokens = tok.tokenize(text);
        check(
            format!("{label}: tokens"),
            got_tokens == want_tokens,
            format!("{got_tokens:?}"),
            format!("{want_tokens:?}"),
        );

        let want_ids = ids_of(&case["ids"]);
        let got_ids = tok.encode(text, false);
        check(
            format!("{label}: ids"),
            got_ids == want_ids,
            format!("{got_ids:?}"),
            format!("{want_ids:?}"),
        );

        let want_special = ids_of(&case["ids_with_special"]);
        let got_special = tok.encode(text, true);
        check(
            format!("{label}: ids_with_special"),
            got_special == want_special,
            format!("{got_special:?}"),
            format!("{want_special:?}"),
        );

        let pairs = tok.encode_with_pieces(text, false);
        let (pair_ids, pair_pieces): (Vec<u32>, Vec<String>) = pairs.into_iter().unzip();
        check(
            format!("{label}: encode_with_pieces"),
            pair_ids == want_ids && pair_pieces == want_tokens,
            format!("{pair_ids:?} {pair_pieces:?}"),
            format!("{want_ids:?} {want_tokens:?}"),
        );

        // Decodes are of the reference ids, so a decode failure is independent of encoding.
        let decodes = [
            ("decode", &want_ids, false, true),
            ("decode_no_cleanup", &want_ids, false, false),
            ("decode_with_special", &want_special, false, true),
            (
                "decode_with_special_skip_special",
                &want_special,
                true,
                true,
            ),
        ];
        for (key, ids, skip, clean) in decodes {
            let want = str_of(&case[key]);
            let got = tok.decode(ids, skip, clean);
            check(
                format!("{label}: {key}"),
                got == want,
                format!("{got:?}"),
                format!("{want:?}"),
            );
        }
    }

    let decode_cases = doc["decode_cases"].as_array().expect("decode_cases");
    for (i, case) in decode_cases.iter().enumerate() {
        let ids = ids_of(&case["ids"]);
        for (key, skip, clean) in [
            ("decode", false, true),
            ("decode_skip_special", true, true),
            ("decode_no_cleanup", false, false),
        ] {
            let want = str_of(&case[key]);
            let got = tok.decode(&ids, skip, clean);
            check(
                format!("decode_case {i} {ids:?}: {key}"),
                got == want,
                format!("{got:?}"),
                format!("{want:?}"),
            );
        }
    }

    assert!(
        failures.is_empty(),
        "{} of {} checks failed ({} cases, {} decode cases):\n  {}",
        failures.len(),
        cases.len() * 8 + decode_cases.len() * 3,
        cases.len(),
        decode_cases.len(),
        failures.join("\n  ")
    );
}
