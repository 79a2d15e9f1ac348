//! The binary dataset cache: reuse, `overwrite_cache`, invalidation by input content and
//! arguments, and detection of corrupt / truncated files (rebuilt with a warning, never trusted).

#[path = "../../tests/support/fixtures.rs"]
mod fixtures;

use std::path::{Path, PathBuf};

use dataset::cache::{
    BuildReason, CacheOptions, CacheStatus, DatasetReport, RowKind, cache_path, load_or_build_eval,
    load_or_build_train,
};
use dataset::error::DataError;
use dataset::preprocess::{DataArgs, preprocess_eval, preprocess_train, select_first};
use dataset::source::read_examples;
use dataset::tokenizer::ChatGlmTokenizer;

fn tokenizer() -> ChatGlmTokenizer {
    ChatGlmTokenizer::from_dir(&fixtures::shared_data().join("chatglm-6b")).unwrap()
}

fn args() -> DataArgs {
    DataArgs {
        max_source_length: 64,
        max_target_length: 64,
        ..DataArgs::new("content", "summary")
    }
}

/// The first `n` lines of AdvertiseGen dev, plus one record with an empty summary.
fn dev_subset(dir: &Path, n: usize) -> PathBuf {
    let dev =
        std::fs::read_to_string(fixtures::shared_data().join("advertisegen/dev.json")).unwrap();
    let mut lines: Vec<&str> = dev.lines().take(n).collect();
    lines.insert(3, r#"{"content": "类型#裙", "summary": ""}"#);
    let p = dir.join("dev_subset.json");
    std::fs::write(&p, lines.join("\n")).unwrap();
    p
}

fn built(r: &DatasetReport) -> Option<&BuildReason> {
    match &r.cache {
        CacheStatus::Built { reason, .. } => Some(reason),
        _ => None,
    }
}

#[test]
fn train_cache_is_reused_invalidated_and_repaired() {
    let tok = tokenizer();
    let dir = tempfile::tempdir().unwrap();
    let input = dev_subset(dir.path(), 40);
    let cache = CacheOptions::in_dir(dir.path().join("cache"), false);
    let a = args();

    let (rows, rep) = load_or_build_train(&cache, &tok, &input, &a, None).unwrap();
    assert_eq!(built(&rep), Some(&BuildReason::Missing));
    assert_eq!(
        (rep.rows_in_file, rep.selected, rep.skipped_empty, rep.rows),
        (41, 41, 1, 40)
    );
    assert_eq!(rep.skipped_lines, vec![4]);
    let (examples, _) = read_examples(&input, &a.columns()).unwrap();
    assert_eq!(rows, preprocess_train(&tok, &examples, &a).unwrap());

    // Hit: identical rows and report counts.
    let (again, rep2) = load_or_build_train(&cache, &tok, &input, &a, None).unwrap();
    let file = cache_path(&cache, &tok, &input, &a, None, RowKind::Train)
        .unwrap()
        .unwrap();
    assert_eq!(rep2.cache, CacheStatus::Hit(file.clone()));
    assert_eq!(
        (rep2.skipped_empty, rep2.skipped_lines.clone(), rep2.rows),
        (1, vec![4], 40)
    );
    assert_eq!(again, rows);

    // overwrite_cache rebuilds.
    let over = CacheOptions {
        overwrite_cache: true,
        ..cache.clone()
    };
    let (_, rep3) = load_or_build_train(&over, &tok, &input, &a, None).unwrap();
    assert_eq!(built(&rep3), Some(&BuildReason::Overwrite));

    // Corrupt one payload byte: detected, rebuilt, rewritten.
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&file, &bytes).unwrap();
    let (fixed, rep4) = load_or_build_train(&cache, &tok, &input, &a, None).unwrap();
    assert!(
        matches!(built(&rep4), Some(BuildReason::Corrupt(why)) if why.contains("checksum")),
        "{:?}",
        rep4.cache
    );
    assert_eq!(fixed, rows);
    assert!(matches!(
        load_or_build_train(&cache, &tok, &input, &a, None)
            .unwrap()
            .1
            .cache,
        CacheStatus::Hit(_)
    ));

    // Truncated, and not a cache file at all.
    let good = std::fs::read(&file).unwrap();
    for (bad, expect) in [
        (&good[..good.len() - 7], "truncated"),
        (&good[..20], "truncated"),
        (&b"hello world"[..], "truncated"),
    ] {
        std::fs::write(&file, bad).unwrap();
        let (r, rep) = load_or_build_train(&cache, &tok, &input, &a, None).unwrap();
        assert!(
            matches!(built(&rep), Some(BuildReason::Corrupt(why)) if why.contains(expect)),
            "{:?}",
            rep.cache
        );
        assert_eq!(r, rows);
    }
    let mut wrong_magic = good.clone();
    wrong_magic[0] = b'X';
    std::fs::write(&file, &wrong_magic).unwrap();
    let (_, rep) = load_or_build_train(&cache, &tok, &input, &a, None).unwrap();
    assert!(
        matches!(built(&rep), Some(BuildReason::Corrupt(why)) if why.contains("magic")),
        "{:?}",
        rep.cache
    );

    // Arguments are part of the key: a different length or sample limit is a different file.
    let shorter = DataArgs {
        max_source_length: 16,
        ..a.clone()
    };
    let (short_rows, rep) = load_or_build_train(&cache, &tok, &input, &shorter, None).unwrap();
    assert_eq!(built(&rep), Some(&BuildReason::Missing));
    assert_eq!(short_rows[0].input_ids.len(), 16 + 64);
    let (few, rep) = load_or_build_train(&cache, &tok, &input, &a, Some(5)).unwrap();
    assert_eq!(built(&rep), Some(&BuildReason::Missing));
    // max_train_samples = 5 selects records 0..5, one of which (index 3) is empty.
    assert_eq!((rep.selected, rep.skipped_empty, few.len()), (5, 1, 4));
    assert_eq!(
        few,
        preprocess_train(&tok, select_first(&examples, Some(5)), &a).unwrap()
    );

    // A changed input file at the same path is never served from the old cache.
    let text = std::fs::read_to_string(&input)
        .unwrap()
        .replacen("简约", "复杂", 1);
    std::fs::write(&input, text).unwrap();
    let (changed, rep) = load_or_build_train(&cache, &tok, &input, &a, None).unwrap();
    assert_eq!(built(&rep), Some(&BuildReason::Missing));
    assert_ne!(changed, rows);
    let (examples, _) = read_examples(&input, &a.columns()).unwrap();
    assert_eq!(changed, preprocess_train(&tok, &examples, &a).unwrap());

    // No temp files are left behind by the atomic writes.
    for e in std::fs::read_dir(dir.path().join("cache")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(name.ends_with(".glmds") && !name.contains(".tmp"), "{name}");
    }
}

#[test]
fn eval_cache_round_trips_and_disabled_cache_builds() {
    let tok = tokenizer();
    let dir = tempfile::tempdir().unwrap();
    let input = dev_subset(dir.path(), 30);
    let a = DataArgs {
        max_source_length: 32,
        val_max_target_length: Some(20),
        ..args()
    };
    let cache = CacheOptions::in_dir(dir.path().join("c"), false);
    let (rows, rep) = load_or_build_eval(&cache, &tok, &input, &a, Some(25)).unwrap();
    assert_eq!(built(&rep), Some(&BuildReason::Missing));
    let (examples, _) = read_examples(&input, &a.columns()).unwrap();
    let direct = preprocess_eval(&tok, select_first(&examples, Some(25)), &a).unwrap();
    assert_eq!(rows, direct);
    assert!(
        rows.iter()
            .all(|r| r.labels.len() <= 20 && r.seq_len() <= 32)
    );
    let (hit, rep) = load_or_build_eval(&cache, &tok, &input, &a, Some(25)).unwrap();
    assert!(matches!(rep.cache, CacheStatus::Hit(_)));
    assert_eq!(hit, direct);
    // Train and eval rows of the same file never share a cache file.
    let t = cache_path(&cache, &tok, &input, &a, Some(25), RowKind::Train).unwrap();
    let e = cache_path(&cache, &tok, &input, &a, Some(25), RowKind::Eval).unwrap();
    assert_ne!(t, e);

    let (rows2, rep) =
        load_or_build_eval(&CacheOptions::disabled(), &tok, &input, &a, Some(25)).unwrap();
    assert_eq!(rep.cache, CacheStatus::Disabled);
    assert_eq!(rows2, direct);
}

#[test]
fn unusable_inputs_are_errors() {
    let tok = tokenizer();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("all_empty.json");
    std::fs::write(
        &p,
        "{\"content\": \"a\", \"summary\": \"\"}\n{\"content\": null, \"summary\": \"b\"}\n",
    )
    .unwrap();
    let e = load_or_build_train(&CacheOptions::disabled(), &tok, &p, &args(), None).unwrap_err();
    assert!(matches!(e, DataError::NoRows { selected: 2, .. }), "{e}");
    let bad_args = DataArgs {
        max_target_length: 1,
        ..args()
    };
    let e = load_or_build_train(&CacheOptions::disabled(), &tok, &p, &bad_args, None).unwrap_err();
    assert!(
        matches!(e, DataError::InvalidArgs(_)) && e.to_string().contains("max_target_length"),
        "{e}"
    );
}
