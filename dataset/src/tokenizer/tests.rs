//! Unit tests of the assembled tokenizer on the real `ice_text.model` (§6.2 / §6.5 tables, edge
//! inputs, `tokenizer.json` conversion) and on a freshly trained demo tokenizer.

use super::*;

fn shared_data() -> PathBuf {
    match std::env::var_os("GLM_TUNE_SHARED_DATA") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"),
    }
}

fn load_chatglm() -> ChatGlmTokenizer {
    let dir = shared_data().join("chatglm-6b");
    ChatGlmTokenizer::from_dir(&dir).unwrap_or_else(|e| panic!("{e}"))
}

/// The real tokenizer, loaded once for all tests.
fn chatglm() -> ChatGlmTokenizer {
    static TOK: std::sync::OnceLock<ChatGlmTokenizer> = std::sync::OnceLock::new();
    TOK.get_or_init(load_chatglm).clone()
}

#[test]
fn reference_table_6_2() {
    let tok = chatglm();
    let table: [(&str, &[u32]); 19] = [
        ("你好", &[5, 74874]),
        ("Hello world", &[19316, 398]),
        ("a\nb", &[104, 4, 178]),
        ("a  b\tc", &[104, 130009, 178, 130008, 169]),
        ("  lead", &[5, 130009, 17744]),
        ("trail  ", &[7887, 130009]),
        (" x", &[399]),
        ("x ", &[399]),
        ("１２３，ＡＢＣ", &[5, 9, 10, 13, 6, 12139]),
        ("2023年5月", &[5, 10, 8, 10, 13, 63830, 15, 63837]),
        ("😀", &[5, 129891]),
        ("[MASK]", &[130000]),
        ("[gMASK]", &[53, 199, 15475, 42]),
        ("a <pad> b", &[104, 3, 463]),
        ("\n", &[5, 4]),
        (" ", &[]),
        ("", &[]),
        (
            "类型#上衣*材质#牛仔布",
            &[5, 65421, 61, 75898, 32, 68554, 61, 77257, 64555],
        ),
        ("你好👋！", &[5, 74874, 130328, 130247, 130233, 130227, 35]),
    ];
    for (text, want) in table {
        assert_eq!(tok.encode(text, false), want, "{text:?}");
    }
    assert_eq!(
        tok.encode("晚上睡不着怎么办", true),
        vec![74747, 83400, 66846, 130001, 130004]
    );
    let prompt = "[Round 0]\n问：你好\n答：你好👋！我是人工智能助手 ChatGLM-6B，很高兴见到你，欢迎问我任何问题。\n[Round 1]\n问：介绍一下清华大学\n答：";
    let want: Vec<u32> = vec![
        53, 6945, 5, 8, 42, 4, 64286, 12, 74874, 4, 67342, 12, 74874, 130328, 130247, 130233,
        130227, 35, 65806, 68241, 75890, 14132, 5388, 340, 11, 21, 222, 6, 76693, 66877, 63852, 6,
        66430, 68747, 102501, 63823, 4, 52, 6945, 5, 9, 42, 4, 64286, 12, 83731, 72306, 4, 67342,
        12,
    ];
    assert_eq!(tok.encode(prompt, false), want);
    assert_eq!((tok.pad_id(), tok.unk_id(), tok.mask_id()), (3, 0, 130000));
    assert_eq!(
        (tok.gmask_id(), tok.sop_id(), tok.eop_id()),
        (130001, 130004, 130005)
    );
    assert_eq!(tok.vocab_size(), 130344);
    assert_eq!(tok.id_to_piece(130009), Some("<|blank_2|>"));
    assert_eq!(tok.id_to_piece(130344), None);
    assert_eq!(
        tok.build_inputs_with_special_tokens(&[7], Some(&[8])),
        vec![7, 130001, 130004, 8, 130005]
    );
}

#[test]
fn decode_rules_6_5() {
    let tok = chatglm();
    assert_eq!(
        tok.decode(&[130001, 130004, 5, 74874, 130005, 130000, 0], false, true),
        "你好 ⁇ "
    );
    assert_eq!(
        tok.decode(&[130001, 130004, 5, 74874, 130005, 130000, 0], true, true),
        "你好"
    );
    assert_eq!(tok.decode(&[3, 3, 5, 74874, 3], false, true), "你好");
    let ids = tok.encode("I can't do it . Yes , ok\nnew  line\tTab", false);
    assert_eq!(
        tok.decode(&ids, false, true),
        "I can't do it. Yes, ok\nnew  line\tTab"
    );
    assert_eq!(
        tok.decode(&ids, false, false),
        "I can't do it . Yes , ok\nnew  line\tTab"
    );
    // A truncated byte sequence decodes to one U+FFFD per byte, as SentencePiece does.
    assert_eq!(
        tok.decode(&[130328, 130247, 130233], false, true),
        "\u{fffd}\u{fffd}\u{fffd}"
    );
    // Ids past the tokenizer's 130344 pieces (the model has 130528 rows) read as <unk>.
    assert_eq!(tok.decode(&[5, 74874, 130400], false, true), "你好 ⁇ ");
    assert_eq!(
        tok.decode(&[5, 74874, 130400, u32::MAX], true, true),
        "你好"
    );
    // The reverse substitutions work on the text, whatever pieces spelled it.
    let lt = tok.piece_to_id("<").unwrap();
    let n = tok.piece_to_id("n").unwrap();
    let gt = tok.piece_to_id(">").unwrap();
    assert_eq!(tok.decode(&[104, lt, n, gt, 178], false, true), "a\nb");
}

/// Deterministic pseudo-random generator for the robustness test.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[test]
fn no_panics_on_odd_inputs() {
    let tok = chatglm();
    let fixed = [
        "",
        " ",
        "\u{3000}\u{3000}",
        "\t\n\r\u{b}\u{c}\u{1c}\u{85}",
        "\0",
        "a\0b",
        "\u{301}\u{301}",
        "\u{fffd}",
        "\u{10ffff}\u{e000}\u{feff}",
        "<|blank_",
        "<|blank_2|",
        "<0xF0><0x9F>",
        "<sop><eop><pad><unk>[MASK][gMASK]",
        "  <sop>  ",
        "<<<<>>>>",
        "▁▁▁ ▁",
        "\r\n\r\n",
    ];
    for text in fixed {
        let ids = tok.encode(text, true);
        assert!(
            ids.iter().all(|&id| (id as usize) < tok.vocab_size()),
            "{text:?}"
        );
        let _ = tok.decode(&ids, false, true);
        let _ = tok.tokenize(text);
    }
    let mut rng = Lcg(7);
    let ranges: [(u32, u32); 8] = [
        (0, 0x80),
        (0x80, 0x800),
        (0x4e00, 0x9fff),
        (0x3000, 0x3100),
        (0xff00, 0xfff0),
        (0x1f300, 0x1fa00),
        (0x20000, 0x2a6df),
        (0, 0x110000),
    ];
    for _ in 0..300 {
        let len = (rng.next() % 40) as usize;
        let text: String = (0..len)
            .filter_map(|_| {
                let (lo, hi) = ranges[(rng.next() % ranges.len() as u64) as usize];
                char::from_u32(lo + (rng.next() as u32) % (hi - lo))
            })
            .collect();
        let ids = tok.encode(&text, false);
        assert!(
            ids.iter().all(|&id| (id as usize) < tok.vocab_size()),
            "{text:?}"
        );
        let _ = tok.decode(&ids, true, true);
    }
    let random_ids: Vec<u32> = (0..2000).map(|_| (rng.next() % 140_000) as u32).collect();
    let _ = tok.decode(&random_ids, false, true);
    let _ = tok.decode(&random_ids, true, false);
    // A large input (1 MB) with long space runs and many special tokens.
    let big = "数据 ".repeat(50_000) + &" ".repeat(100_000) + &"x<sop>\n".repeat(20_000);
    let ids = tok.encode(&big, true);
    assert!(ids.len() > 100_000);
}

#[test]
fn plain_text_round_trips() {
    let tok = chatglm();
    for text in [
        "你好，世界",
        "ChatGLM-6B 是一个开源的、支持中英双语的对话语言模型",
        "a  b\tc\nd",
        "多个   空格",
        "👨‍👩‍👧",
    ] {
        let ids = tok.encode(text, true);
        let back = tok.decode(&ids, true, false);
        // NFKC maps the full-width comma; ZWJ becomes a space (the charsmap), as in the reference.
        let want = text.replace('，', ",").replace('\u{200d}', " ");
        assert_eq!(back, want, "{text:?}");
    }
}

#[test]
fn sentencepiece_model_converts_to_an_equivalent_tokenizer_json() {
    let tok = chatglm();
    let dir = tempfile::tempdir().unwrap();
    tok.save_tokenizer_json(&dir.path().join(HF_TOKENIZER_FILE))
        .unwrap();
    let json_tok = ChatGlmTokenizer::from_dir(dir.path()).unwrap();
    assert_eq!(json_tok.vocab_size(), tok.vocab_size());
    assert_eq!(
        json_tok.source_files(),
        vec![dir.path().join(HF_TOKENIZER_FILE)]
    );
    assert_ne!(json_tok.fingerprint(), tok.fingerprint());
    let rows = std::fs::read_to_string(shared_data().join("advertisegen/dev.json")).unwrap();
    let mut texts: Vec<String> = Vec::new();
    for line in rows.lines().take(200) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        texts.push(v["content"].as_str().unwrap().to_string());
        texts.push(v["summary"].as_str().unwrap().to_string());
    }
    texts.extend(
        [
            "  lead\n\tx  ",
            "１２３，ＡＢＣ 😀 👋 𠀀 ＜n＞ <n> a <pad> b",
            "café naïve",
            "",
        ]
        .map(String::from),
    );
    for t in &texts {
        let ids = tok.encode(t, true);
        assert_eq!(json_tok.encode(t, true), ids, "{t:?}");
        assert_eq!(
            json_tok.decode(&ids, false, true),
            tok.decode(&ids, false, true),
            "{t:?}"
        );
    }
}

#[test]
fn demo_tokenizer_trains_saves_and_reloads() {
    let corpus = [
        "类型#上衣*版型#宽松*颜色#黑色*风格#简约",
        "这款上衣采用宽松的版型，黑色的配色简约大方，穿着舒适。",
        "简约的设计搭配宽松版型，时尚又百搭。",
        "类型#裙*材质#牛仔布*风格#复古",
        "复古的牛仔布半身裙，\n搭配  简约上衣\t非常好看。",
        "Hello world, this is a small demo corpus.",
    ];
    let texts = || corpus.iter().cycle().take(60).map(|s| s.to_string());
    assert!(train_demo_tokenizer(texts(), 100).is_err());
    let tok = train_demo_tokenizer(texts(), 600).unwrap();
    assert!(
        tok.vocab_size() <= 600 && tok.vocab_size() > 90 + 256,
        "{}",
        tok.vocab_size()
    );
    assert_eq!((tok.unk_id(), tok.pad_id(), tok.mask_id()), (0, 3, 5));
    assert_eq!((tok.gmask_id(), tok.sop_id(), tok.eop_id()), (6, 8, 9));
    assert_eq!(tok.piece_to_id("<n>"), Some(4));
    assert!(tok.source_files().is_empty());

    let dir = tempfile::tempdir().unwrap();
    tok.save_tokenizer_json(&dir.path().join(HF_TOKENIZER_FILE))
        .unwrap();
    let loaded = ChatGlmTokenizer::from_dir(dir.path()).unwrap();
    assert_eq!(loaded.fingerprint(), tok.fingerprint());
    assert_eq!(loaded.vocab_size(), tok.vocab_size());
    let unseen = "完全没见过的字：龘𠀀 and tabs\tand  spaces\n新行";
    for text in corpus.iter().copied().chain([unseen]) {
        let ids = loaded.encode(text, true);
        assert_eq!(ids, tok.encode(text, true), "{text:?}");
        assert_eq!(&ids[ids.len() - 2..], &[6, 8]);
        let back = loaded.decode(&ids, true, false);
        assert_eq!(back, text.replace('，', ",").replace('：', ":"), "{text:?}");
    }
    // Control tokens are not matched from text, user symbols are.
    let ids = loaded.encode("[gMASK]\n", false);
    assert!(!ids.contains(&6) && ids.ends_with(&[4]), "{ids:?}");
    let ids = loaded.encode("x<sop>y", false);
    assert!(ids.contains(&8));
}

#[test]
fn loading_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let e = ChatGlmTokenizer::from_dir(dir.path()).unwrap_err();
    assert!(matches!(e, TokenizerError::NoModelFiles { .. }), "{e}");
    std::fs::write(dir.path().join(SENTENCEPIECE_FILE), b"\x0a\xff\xff\xff").unwrap();
    let e = ChatGlmTokenizer::from_dir(dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("ice_text.model") && e.contains("malformed"),
        "{e}"
    );
    std::fs::remove_file(dir.path().join(SENTENCEPIECE_FILE)).unwrap();
    std::fs::write(dir.path().join(HF_TOKENIZER_FILE), b"{\"model\": 1}").unwrap();
    let e = ChatGlmTokenizer::from_dir(dir.path())
        .unwrap_err()
        .to_string();
    assert!(e.contains("tokenizer.json"), "{e}");
    let e = ChatGlmTokenizer::from_dir(&dir.path().join("missing"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing"), "{e}");
}

#[test]
fn fingerprint_and_sources() {
    let tok = chatglm();
    let fp = tok.fingerprint();
    assert_eq!(fp.len(), 64);
    assert!(fp.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(fp, load_chatglm().fingerprint());
    let names: Vec<_> = tok
        .source_files()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec![SENTENCEPIECE_FILE, CONFIG_FILE]);
    let dbg = format!("{tok:?}");
    assert!(dbg.contains("130344"), "{dbg}");
}

#[test]
fn api_shapes() {
    fn assert_traits<T: Clone + Send + Sync + std::fmt::Debug + 'static>() {}
    assert_traits::<ChatGlmTokenizer>();
    let tok = chatglm();
    let pairs = tok.encode_with_pieces("a<sop>b", true);
    let want: Vec<(u32, String)> = [
        (104, "▁a"),
        (130004, "<sop>"),
        (463, "▁b"),
        (130001, "[gMASK]"),
        (130004, "<sop>"),
    ]
    .iter()
    .map(|(i, p)| (*i, p.to_string()))
    .collect();
    assert_eq!(pairs, want);
    assert_eq!(tok.tokenize("a<sop>b"), vec!["▁a", "<sop>", "▁b"]);
    // Threads share one tokenizer; each has its own scratch buffers.
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let t = tok.clone();
            std::thread::spawn(move || t.encode(&format!("第{i}行\n内容  文本"), true))
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(
            h.join().unwrap(),
            tok.encode(&format!("第{i}行\n内容  文本"), true)
        );
    }
}

#[test]
fn charsmap_agrees_with_tokenizers_precompiled_on_single_characters() {
    // For one character the `tokenizers` `Precompiled` normaliser (grapheme, shortest rule) and
    // SentencePiece's longest-rule lookup must agree; this checks the double-array reader
    // against an independent implementation over the BMP, planes 1–2 and the tag block.
    use tokenizers::Normalizer as _;
    let tok = chatglm();
    let Origin::SentencePiece {
        charsmap: Some(map),
    } = &tok.inner.origin
    else {
        panic!("ice_text.model has a charsmap")
    };
    let pre = tokenizers::normalizers::Precompiled::from(&map.to_blob()).unwrap();
    let mut mapped = 0;
    for cp in (0..0x30000u32).chain(0xe0000..0xe0200) {
        let Some(c) = char::from_u32(cp) else {
            continue;
        };
        let s = c.to_string();
        let ours = match map.longest_match(s.as_bytes()) {
            Some((len, rep)) if len == s.len() => {
                mapped += 1;
                rep.to_string()
            }
            _ => s.clone(),
        };
        let mut ns = tokenizers::NormalizedString::from(s.as_str());
        pre.normalize(&mut ns).unwrap();
        assert_eq!(ours, ns.get(), "U+{cp:04X}");
    }
    assert!(mapped > 1000, "{mapped}");
}
