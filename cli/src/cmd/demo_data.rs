//! `glm-tune demo-data --out DIR`: writes the embedded demo's generated files — the data splits
//! `DIR/data/{train,dev,pretrain}.json` and the demo tokenizer `DIR/base/tokenizer.json` — exactly
//! as the repository's `demo/` holds them (`--out demo` regenerates those).

use std::path::PathBuf;

use anyhow::Context;
use dataset::demo::{self, DemoSplit};

/// Arguments of `glm-tune demo-data`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory to write into (created if missing; existing files are overwritten).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

/// Generates the demo splits and trains the demo tokenizer (deterministic: same bytes every run).
pub fn run(args: Args) -> anyhow::Result<()> {
    let data = args.out.join("data");
    demo::write_demo_data(&data)
        .with_context(|| format!("writing the demo data into {}", data.display()))?;
    for split in DemoSplit::ALL {
        let path = data.join(split.file_name());
        println!(
            "{}: {} rows",
            path.display(),
            demo::generate_demo(split).len()
        );
    }
    let base = args.out.join("base");
    let tok = demo::write_demo_tokenizer(&base)
        .with_context(|| format!("writing the demo tokenizer into {}", base.display()))?;
    println!(
        "{}: {} pieces",
        base.join(dataset::tokenizer::HF_TOKENIZER_FILE).display(),
        tok.vocab_size()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn writes_the_layout_of_the_committed_demo_directory() {
        let out = tempfile::tempdir().unwrap();
        run(Args {
            out: out.path().to_path_buf(),
        })
        .unwrap();
        let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../demo");
        let mut files: Vec<String> = DemoSplit::ALL
            .iter()
            .map(|s| format!("data/{}", s.file_name()))
            .collect();
        files.push("base/tokenizer.json".into());
        for file in files {
            let written = std::fs::read(out.path().join(&file)).unwrap();
            assert!(
                written == std::fs::read(committed.join(&file)).unwrap(),
                "demo/{file} is stale: run `glm-tune demo-data --out demo`"
            );
        }
    }
}
