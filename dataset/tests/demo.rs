//! The embedded demo's generated data and tokenizer: deterministic, equal to the committed files
//! under `demo/` (regenerate them with `glm-tune demo-data --out demo`, never by hand), dev
//! disjoint from the other splits, readable by the data pipeline, fully covered by the demo
//! tokenizer and short enough for the demo's `max_source_length` / `max_target_length`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use dataset::demo::{
    DEMO_MAX_SOURCE_LENGTH, DEMO_MAX_TARGET_LENGTH, DEMO_VOCAB_SIZE, DEV_ROWS, DemoSplit,
    PRETRAIN_ROWS, TRAIN_ROWS, build_demo_tokenizer, demo_file_text, generate_demo,
    write_demo_data,
};
use dataset::preprocess::{DataArgs, SpecialIds, preprocess_train};
use dataset::source::{Columns, read_examples};
use dataset::tokenizer::ChatGlmTokenizer;

const REGENERATE: &str = "regenerate with `cargo run --release -p glm-tune -- demo-data --out demo` \
                          from the workspace root and commit the result";

fn demo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../demo")
}

fn committed_tokenizer() -> ChatGlmTokenizer {
    ChatGlmTokenizer::from_dir(&demo_dir().join("base")).unwrap()
}

fn contents(split: DemoSplit) -> BTreeSet<String> {
    generate_demo(split).into_iter().map(|(c, _)| c).collect()
}

#[test]
fn generator_is_deterministic_and_sized() {
    for (split, rows) in [
        (DemoSplit::Train, TRAIN_ROWS),
        (DemoSplit::Dev, DEV_ROWS),
        (DemoSplit::Pretrain, PRETRAIN_ROWS),
    ] {
        let a = generate_demo(split);
        assert_eq!(a.len(), rows, "{}", split.name());
        assert_eq!(
            a,
            generate_demo(split),
            "{} differs between calls",
            split.name()
        );
        for (content, summary) in &a {
            assert!(!content.trim().is_empty() && !summary.trim().is_empty());
            assert!(!content.contains('\n') && !summary.contains('\n'));
        }
    }
    // The ad splits have distinct attribute strings; the splits differ from each other.
    assert_eq!(contents(DemoSplit::Train).len(), TRAIN_ROWS);
    assert_eq!(contents(DemoSplit::Dev).len(), DEV_ROWS);
}

#[test]
fn committed_data_files_are_current() {
    for split in DemoSplit::ALL {
        let path = demo_dir().join("data").join(split.file_name());
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; {REGENERATE}", path.display()));
        assert!(
            committed == demo_file_text(split),
            "{} differs from what the generator produces; {REGENERATE}",
            path.display()
        );
    }
}

#[test]
fn dev_attribute_strings_occur_in_no_other_split() {
    let dev = contents(DemoSplit::Dev);
    let train = contents(DemoSplit::Train);
    let pretrain = contents(DemoSplit::Pretrain);
    assert!(dev.is_disjoint(&train));
    assert!(dev.is_disjoint(&pretrain));
    // The pretrain split reads attribute strings too, but never answers one with an ad.
    let train_summaries: BTreeSet<String> = generate_demo(DemoSplit::Train)
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    assert!(
        generate_demo(DemoSplit::Pretrain)
            .iter()
            .all(|(_, s)| !train_summaries.contains(s))
    );
}

#[test]
fn every_row_reads_back_through_read_examples() {
    let dir = tempfile::tempdir().unwrap();
    write_demo_data(dir.path()).unwrap();
    let columns = Columns {
        prompt: "content".into(),
        response: "summary".into(),
        history: None,
    };
    for split in DemoSplit::ALL {
        let (examples, report) =
            read_examples(&dir.path().join(split.file_name()), &columns).unwrap();
        assert_eq!(report.skipped_empty, 0, "{}", split.name());
        assert_eq!(report.blank_lines, 0, "{}", split.name());
        let rows = generate_demo(split);
        assert_eq!(examples.len(), rows.len());
        for (ex, (content, summary)) in examples.iter().zip(&rows) {
            assert_eq!((&ex.prompt, &ex.response), (content, summary));
        }
    }
}

#[test]
fn tokenizer_is_deterministic_and_equals_the_committed_one() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.json");
    let b = dir.path().join("b.json");
    build_demo_tokenizer()
        .unwrap()
        .save_tokenizer_json(&a)
        .unwrap();
    // Another caller's thread pool must not change the result.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    pool.install(build_demo_tokenizer)
        .unwrap()
        .save_tokenizer_json(&b)
        .unwrap();
    let a = std::fs::read(&a).unwrap();
    assert!(a == std::fs::read(&b).unwrap(), "two trainings differ");
    let committed_path = demo_dir().join("base/tokenizer.json");
    let committed = std::fs::read(&committed_path)
        .unwrap_or_else(|e| panic!("{}: {e}; {REGENERATE}", committed_path.display()));
    assert!(
        a == committed,
        "{} differs from a fresh training; {REGENERATE}",
        committed_path.display()
    );
}

#[test]
fn committed_tokenizer_has_the_chatglm_special_tokens() {
    let tok = committed_tokenizer();
    assert_eq!(tok.vocab_size(), DEMO_VOCAB_SIZE);
    for (id, piece) in [
        (tok.unk_id(), "<unk>"),
        (tok.pad_id(), "<pad>"),
        (tok.mask_id(), "[MASK]"),
        (tok.gmask_id(), "[gMASK]"),
        (tok.sop_id(), "<sop>"),
        (tok.eop_id(), "<eop>"),
    ] {
        assert_eq!(tok.id_to_piece(id), Some(piece));
    }
    assert_eq!(tok.piece_to_id("<n>"), Some(4));
    let ids = tok.encode("类型#裙", true);
    assert_eq!(&ids[ids.len() - 2..], &[tok.gmask_id(), tok.sop_id()]);
}

#[test]
fn every_text_round_trips_with_learned_pieces_only() {
    let tok = committed_tokenizer();
    let fallback: BTreeSet<u32> = (0..tok.vocab_size() as u32)
        .filter(|&id| tok.id_to_piece(id).is_some_and(|p| p.starts_with("<0x")))
        .collect();
    assert_eq!(fallback.len(), 256);
    let mut used = Vec::new();
    for split in DemoSplit::ALL {
        let (mut prompts, mut responses) = (BTreeSet::new(), BTreeSet::new());
        for (content, summary) in generate_demo(split) {
            for (text, seen) in [(&content, &mut prompts), (&summary, &mut responses)] {
                let ids = tok.encode(text, false);
                assert!(!ids.contains(&tok.unk_id()), "<unk> in {text}");
                assert!(
                    ids.iter().all(|id| !fallback.contains(id)),
                    "byte fallback in {text}"
                );
                assert_eq!(&tok.decode(&ids, false, true), text);
                seen.extend(ids);
            }
        }
        used.push((split, prompts, responses));
    }
    // The prefix cannot train embeddings or output rows: every piece of the ad task must have been
    // read (prompts) or written (responses) by the base model during pre-training.
    let (_, pre_prompts, pre_responses) = &used[2];
    let pre_all: BTreeSet<u32> = pre_prompts.union(pre_responses).copied().collect();
    for (split, prompts, responses) in &used[..2] {
        let unseen: Vec<_> = prompts.difference(&pre_all).collect();
        assert!(
            unseen.is_empty(),
            "{} prompt pieces unseen: {unseen:?}",
            split.name()
        );
        let unwritten: Vec<_> = responses.difference(pre_responses).collect();
        assert!(
            unwritten.is_empty(),
            "{} response pieces never in a pretrain response: {unwritten:?}",
            split.name()
        );
    }
}

#[test]
fn demo_lengths_fit_without_truncation() {
    let tok = committed_tokenizer();
    let args = DataArgs {
        max_source_length: DEMO_MAX_SOURCE_LENGTH,
        max_target_length: DEMO_MAX_TARGET_LENGTH,
        ..DataArgs::new("content", "summary")
    };
    let sp = SpecialIds::of(&tok);
    let dir = tempfile::tempdir().unwrap();
    write_demo_data(dir.path()).unwrap();
    for split in DemoSplit::ALL {
        let (examples, _) =
            read_examples(&dir.path().join(split.file_name()), &args.columns()).unwrap();
        let rows = preprocess_train(&tok, &examples, &args).unwrap();
        for (ex, row) in examples.iter().zip(&rows) {
            let a = tok.encode(&ex.prompt, false).len();
            let b = tok.encode(&ex.response, false).len();
            // Prediction keeps max_source_length - 2 prompt tokens, training keeps
            // max_target_length - 2 response tokens.
            assert!(a + 2 <= DEMO_MAX_SOURCE_LENGTH, "{}: {a} tokens", ex.prompt);
            assert!(
                b + 2 <= DEMO_MAX_TARGET_LENGTH,
                "{}: {b} tokens",
                ex.response
            );
            assert_eq!(row.input_ids.len(), args.train_seq_len());
            assert_eq!(row.input_ids[a + b + 2], sp.eop);
            assert_eq!(row.labels.iter().filter(|&&l| l >= 0).count(), b + 2);
        }
    }
}
