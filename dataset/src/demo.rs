//! The embedded demo's data and tokenizer, generated deterministically by the project itself:
//! an AdvertiseGen-style dataset (`content` attribute strings → `summary` advertisements) split
//! into `train` / `dev`, a `pretrain` split of plain text over the same vocabularies for the demo
//! base model, and the small demo tokenizer trained on all three.
//!
//! The generator uses its own splitmix64 stream with fixed seeds and integer arithmetic only, so
//! the files are byte-identical on every platform and with any version of the dependencies. The
//! vocabularies and templates are in `lexicon`; `demo/data/*.json` and `demo/base/tokenizer.json`
//! in the repository are the output of `glm-tune demo-data` (a test checks they are current).
//!
//! The ad task: the summary names every attribute of the content, in content order, through one of
//! two clause templates per key, after one of two openers and before one of three closings. The
//! pretrain split never pairs an attribute string with an advertisement: it reads attribute
//! strings back as `key是value` lists, and otherwise holds intros, Q&A, free sentences and
//! continuations that use the same phrases in random combinations.

mod lexicon;

use std::collections::BTreeSet;
use std::path::Path;

use crate::error::DataError;
use crate::tokenizer::{ChatGlmTokenizer, HF_TOKENIZER_FILE, TokenizerError};

use lexicon::{
    AD_CLOSINGS, AD_OPENERS, COLOUR, CONTINUE_PROMPT, GARMENTS, Group, INTRO_PROMPT, KEYS,
    PLAIN_SENTENCES, QUESTIONS, TYPE_KEY, WRITE_PROMPT,
};

/// One split of the demo data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DemoSplit {
    /// The ad task, [`TRAIN_ROWS`] rows.
    Train,
    /// The ad task on [`DEV_ROWS`] attribute strings that occur in no other split.
    Dev,
    /// Plain text over the same vocabularies for pre-training the base model, [`PRETRAIN_ROWS`].
    Pretrain,
}

impl DemoSplit {
    /// All splits, in file-writing order.
    pub const ALL: [DemoSplit; 3] = [DemoSplit::Train, DemoSplit::Dev, DemoSplit::Pretrain];

    /// `train`, `dev` or `pretrain`.
    pub fn name(self) -> &'static str {
        match self {
            DemoSplit::Train => "train",
            DemoSplit::Dev => "dev",
            DemoSplit::Pretrain => "pretrain",
        }
    }

    /// The split's file name (`train.json`, ...).
    pub fn file_name(self) -> String {
        format!("{}.json", self.name())
    }

    fn seed(self) -> u64 {
        match self {
            DemoSplit::Train => 0x676c_6d2d_7472_6169,
            DemoSplit::Dev => 0x676c_6d2d_6465_7631,
            DemoSplit::Pretrain => 0x676c_6d2d_7072_6531,
        }
    }
}

/// Rows of the train split.
pub const TRAIN_ROWS: usize = 1000;
/// Rows of the dev split.
pub const DEV_ROWS: usize = 64;
/// Rows of the pretrain split.
pub const PRETRAIN_ROWS: usize = 3000;
/// Pieces of the demo tokenizer (90 ChatGLM special tokens and 256 byte pieces included).
pub const DEMO_VOCAB_SIZE: usize = 1000;
/// Longest learned piece of the demo tokenizer, in characters: words and short phrases (`复古`,
/// `风格十足`, `*颜色#`), so a phrase is cut the same way wherever it occurs.
pub const DEMO_MAX_PIECE_CHARS: usize = 4;
/// A `max_source_length` under which no demo prompt of any split is truncated (`main.py` keeps
/// `max_source_length - 1` prompt tokens for training, `- 2` for prediction); tested.
pub const DEMO_MAX_SOURCE_LENGTH: usize = 16;
/// A `max_target_length` under which no demo response of any split is truncated (training keeps
/// `max_target_length - 2` tokens); tested.
pub const DEMO_MAX_TARGET_LENGTH: usize = 32;
/// JSON key of the attribute string (the demo configs' `prompt_column`).
pub const CONTENT_KEY: &str = "content";
/// JSON key of the target text (the demo configs' `response_column`).
pub const SUMMARY_KEY: &str = "summary";

/// splitmix64 (Steele, Lea, Flood 2014): tiny, and fixed forever, unlike library RNGs.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform-enough index below `n` (modulo bias is irrelevant here; stability is not).
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

/// A garment with its attributes: `(key index into KEYS, value index)`, in key order.
struct Item {
    garment: usize,
    attrs: Vec<(usize, usize)>,
}

impl Item {
    fn random(rng: &mut SplitMix64) -> Item {
        let garment = rng.below(GARMENTS.len());
        let group = GARMENTS[garment].1;
        let mut keys = applicable_keys(group);
        // 2..=5 attributes besides the type: a partial Fisher–Yates draw, then key order.
        let n = 2 + rng.below(4);
        for i in 0..n {
            let j = i + rng.below(keys.len() - i);
            keys.swap(i, j);
        }
        keys.truncate(n);
        keys.sort_unstable();
        let attrs = keys
            .into_iter()
            .map(|k| (k, rng.below(KEYS[k].values.len())))
            .collect();
        Item { garment, attrs }
    }

    fn name(&self) -> &'static str {
        GARMENTS[self.garment].0
    }

    fn group(&self) -> Group {
        GARMENTS[self.garment].1
    }

    fn value(&self, attr: (usize, usize)) -> &'static str {
        KEYS[attr.0].values[attr.1]
    }

    /// `类型#连衣裙*颜色#红色*...`
    fn content(&self) -> String {
        let mut s = format!("{TYPE_KEY}#{}", self.name());
        for &a in &self.attrs {
            s.push_str(&format!("*{}#{}", KEYS[a.0].name, self.value(a)));
        }
        s
    }

    /// The advertisement (the demo task).
    fn advertisement(&self, rng: &mut SplitMix64) -> String {
        let mut s = fill(rng.pick(AD_OPENERS), self);
        let mut clauses: Vec<String> = self
            .attrs
            .iter()
            .map(|&a| KEYS[a.0].ad[rng.below(2)].replace("{v}", self.value(a)))
            .collect();
        clauses.push(rng.pick(AD_CLOSINGS).to_string());
        s.push_str(&clauses.join(","));
        s.push('。');
        s
    }

    /// `连衣裙:颜色是红色,面料是真丝,...。` — the attribute string described in the plain
    /// (non-advertising) style of the pre-training text, one plain phrase per attribute.
    fn plain_description(&self, rng: &mut SplitMix64) -> String {
        let clauses: Vec<String> = self
            .attrs
            .iter()
            .map(|&a| KEYS[a.0].plain[rng.below(2)].replace("{v}", self.value(a)))
            .collect();
        format!("{}:{}。", self.name(), clauses.join(","))
    }

    /// `类型是连衣裙,颜色是红色,...。` (the pretrain reading of an attribute string).
    fn listing(&self) -> String {
        let mut parts = vec![format!("{TYPE_KEY}是{}", self.name())];
        parts.extend(
            self.attrs
                .iter()
                .map(|&a| format!("{}是{}", KEYS[a.0].name, self.value(a))),
        );
        parts.join(",") + "。"
    }
}

fn applicable_keys(group: Group) -> Vec<usize> {
    (0..KEYS.len())
        .filter(|&k| KEYS[k].groups.contains(&group))
        .collect()
}

/// Replace `{t}` (garment), `{m}` (measure word) and `{c}` (category) in a template.
fn fill(template: &str, item: &Item) -> String {
    template
        .replace("{t}", item.name())
        .replace("{m}", item.group().measure())
        .replace("{c}", item.group().category())
}

/// One clause about a random attribute that `group` can have: ad or plain phrasing.
fn random_phrase(rng: &mut SplitMix64, group: Group) -> String {
    let keys = applicable_keys(group);
    let key = &KEYS[rng.pick(&keys)];
    let value = rng.pick(key.values);
    let template = if rng.below(2) == 0 {
        key.ad[rng.below(2)]
    } else {
        key.plain[rng.below(2)]
    };
    template.replace("{v}", value)
}

/// A free sentence about a random garment: a plain sentence and one or two phrases.
fn free_sentence(rng: &mut SplitMix64) -> String {
    let item = Item {
        garment: rng.below(GARMENTS.len()),
        attrs: Vec::new(),
    };
    let mut parts = vec![fill(rng.pick(PLAIN_SENTENCES), &item)];
    for _ in 0..1 + rng.below(2) {
        parts.push(random_phrase(rng, item.group()));
    }
    parts.join(",") + "。"
}

/// Attribute strings of the dev split (in no other split).
fn dev_items() -> Vec<Item> {
    let mut rng = SplitMix64(DemoSplit::Dev.seed());
    unique_items(&mut rng, DEV_ROWS, &BTreeSet::new())
}

/// `n` items with distinct content strings that are not in `exclude`.
fn unique_items(rng: &mut SplitMix64, n: usize, exclude: &BTreeSet<String>) -> Vec<Item> {
    let mut seen = BTreeSet::new();
    let mut items = Vec::with_capacity(n);
    while items.len() < n {
        let item = Item::random(rng);
        let content = item.content();
        if !exclude.contains(&content) && seen.insert(content) {
            items.push(item);
        }
    }
    items
}

/// The rows `(content, summary)` of a split, the same on every run and platform.
pub fn generate_demo(split: DemoSplit) -> Vec<(String, String)> {
    let dev = dev_items();
    let mut rng = SplitMix64(split.seed());
    match split {
        DemoSplit::Dev => dev
            .iter()
            .map(|item| (item.content(), item.advertisement(&mut rng)))
            .collect(),
        DemoSplit::Train => {
            let exclude = dev.iter().map(Item::content).collect();
            unique_items(&mut rng, TRAIN_ROWS, &exclude)
                .iter()
                .map(|item| (item.content(), item.advertisement(&mut rng)))
                .collect()
        }
        DemoSplit::Pretrain => {
            let exclude: BTreeSet<String> = dev.iter().map(Item::content).collect();
            (0..PRETRAIN_ROWS)
                .map(|i| pretrain_row(&mut rng, i, &exclude))
                .collect()
        }
    }
}

/// Row `i` of the pretrain split: five kinds in turn.
fn pretrain_row(rng: &mut SplitMix64, i: usize, exclude: &BTreeSet<String>) -> (String, String) {
    match i % 5 {
        // An attribute string read back as a list, or described in the plain style (never a
        // dev string): the base model learns to read attribute strings, not to advertise.
        0 => loop {
            let item = Item::random(rng);
            let content = item.content();
            if !exclude.contains(&content) {
                let text = if (i / 5).is_multiple_of(2) {
                    item.listing()
                } else {
                    item.plain_description(rng)
                };
                break (content, text);
            }
        },
        // "Introduce the red dress."
        1 => {
            let item = Item {
                garment: rng.below(GARMENTS.len()),
                attrs: Vec::new(),
            };
            let colour = rng.pick(KEYS[COLOUR].values);
            let prompt = fill(INTRO_PROMPT, &item).replace("{v}", colour);
            // The second sentence starts with an ad opener directly followed by a phrase, as
            // an advertisement's first clause does: the pieces at that seam (e.g. `搭`+`配`
            // after a garment name) are then written in pre-training too.
            let mut text = format!(
                "{colour}的{}是很常见的{}。{}",
                item.name(),
                item.group().category(),
                fill(rng.pick(AD_OPENERS), &item)
            );
            text.push_str(&random_phrase(rng, item.group()));
            text.push(',');
            text.push_str(&random_phrase(rng, item.group()));
            text.push('。');
            (prompt, text)
        }
        // Q&A: three values of one key, then an example.
        2 => {
            let item = Item {
                garment: rng.below(GARMENTS.len()),
                attrs: Vec::new(),
            };
            let (key, question) = rng.pick(QUESTIONS);
            let key_name = KEYS[key].name;
            let values = KEYS[key].values;
            let mut picks = Vec::with_capacity(3);
            while picks.len() < 3 {
                let v = rng.below(values.len());
                if !picks.contains(&v) {
                    picks.push(v);
                }
            }
            let template = KEYS[key].ad[rng.below(2)];
            let answer = format!(
                "{}的{key_name}可以是{}、{}或{}。比如{}{}。",
                item.name(),
                values[picks[0]],
                values[picks[1]],
                values[picks[2]],
                fill(rng.pick(AD_OPENERS), &item),
                template.replace("{v}", values[picks[0]]),
            );
            (fill(question, &item), answer)
        }
        // Continue a sentence from its first 3..=8 characters.
        3 => {
            let sentence = free_sentence(rng);
            let cut = 3 + rng.below(6);
            let split = sentence
                .char_indices()
                .nth(cut)
                .map_or(sentence.len(), |(b, _)| b);
            (
                format!("{CONTINUE_PROMPT}{}", &sentence[..split]),
                sentence[split..].to_string(),
            )
        }
        // Free text.
        _ => (WRITE_PROMPT.to_string(), free_sentence(rng)),
    }
}

/// A split as the committed file holds it: one `{"content": ..., "summary": ...}` object per line
/// (Python `json.dumps(..., ensure_ascii=False)` style), UTF-8, `\n` after every line.
pub fn demo_file_text(split: DemoSplit) -> String {
    let quote = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    let mut out = String::new();
    for (content, summary) in generate_demo(split) {
        out.push_str(&format!(
            "{{\"{CONTENT_KEY}\": {}, \"{SUMMARY_KEY}\": {}}}\n",
            quote(&content),
            quote(&summary)
        ));
    }
    out
}

/// Write `train.json`, `dev.json` and `pretrain.json` into `dir` (created if missing).
pub fn write_demo_data(dir: &Path) -> Result<(), DataError> {
    std::fs::create_dir_all(dir).map_err(|source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    for split in DemoSplit::ALL {
        let path = dir.join(split.file_name());
        std::fs::write(&path, demo_file_text(split))
            .map_err(|source| DataError::Io { path, source })?;
    }
    Ok(())
}

/// Every text of the demo data (prompts and responses of all splits): the tokenizer's corpus.
pub fn demo_texts() -> Vec<String> {
    DemoSplit::ALL
        .iter()
        .flat_map(|&s| generate_demo(s))
        .flat_map(|(c, s)| [c, s])
        .collect()
}

/// Train the demo tokenizer ([`DEMO_VOCAB_SIZE`] pieces of at most [`DEMO_MAX_PIECE_CHARS`]
/// characters) on [`demo_texts`]. Deterministic: the
/// same `tokenizer.json` bytes every run.
pub fn build_demo_tokenizer() -> Result<ChatGlmTokenizer, TokenizerError> {
    ChatGlmTokenizer::train_demo_tokenizer_with(
        demo_texts().into_iter(),
        DEMO_VOCAB_SIZE,
        DEMO_MAX_PIECE_CHARS,
    )
}

/// Build the demo tokenizer and save it as `dir/tokenizer.json` (`dir` created if missing).
pub fn write_demo_tokenizer(dir: &Path) -> Result<ChatGlmTokenizer, TokenizerError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| TokenizerError::io(dir, "cannot create the directory", e))?;
    let tok = build_demo_tokenizer()?;
    tok.save_tokenizer_json(&dir.join(HF_TOKENIZER_FILE))?;
    Ok(tok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_the_reference_sequence() {
        // First outputs for seed 0 (Vigna's splitmix64.c).
        let mut r = SplitMix64(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
    }

    #[test]
    fn every_attribute_appears_in_its_advertisement() {
        let mut rng = SplitMix64(7);
        for _ in 0..200 {
            let item = Item::random(&mut rng);
            assert!((2..=5).contains(&item.attrs.len()));
            let ad = item.advertisement(&mut rng);
            assert!(ad.contains(item.name()), "{ad}");
            for &a in &item.attrs {
                assert!(ad.contains(item.value(a)), "{ad} lacks {}", item.value(a));
            }
        }
    }

    #[test]
    fn lexicon_indices_name_the_right_keys() {
        assert_eq!(KEYS[COLOUR].name, "颜色");
        let names: BTreeSet<&str> = KEYS.iter().map(|k| k.name).collect();
        assert_eq!(names.len(), KEYS.len());
        assert!(!names.contains(TYPE_KEY));
        let asked: Vec<&str> = QUESTIONS.iter().map(|&(k, _)| KEYS[k].name).collect();
        assert_eq!(asked, ["颜色", "材质", "场合", "图案", "风格"]);
        // Questions are asked about any garment.
        assert!(QUESTIONS.iter().all(|&(k, _)| KEYS[k].groups.len() == 5));
    }

    #[test]
    fn keys_apply_to_their_groups_only() {
        let mut rng = SplitMix64(11);
        for _ in 0..200 {
            let item = Item::random(&mut rng);
            for &(k, _) in &item.attrs {
                assert!(KEYS[k].groups.contains(&item.group()));
            }
            assert!(item.attrs.windows(2).all(|w| w[0].0 < w[1].0));
        }
    }
}
