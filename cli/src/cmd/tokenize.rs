//! `glm-tune tokenize --model DIR "text"`: the ids and pieces the ChatGLM tokenizer produces,
//! to debug prompts.

use std::path::PathBuf;

use dataset::ChatGlmTokenizer;

/// Arguments of `glm-tune tokenize`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model directory with `ice_text.model` (+ `tokenizer_config.json`) or `tokenizer.json`.
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// Append `[gMASK] <sop>` as the model's inputs have.
    #[arg(long)]
    special: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// The text to tokenize.
    text: String,
}

/// Tokenize and print.
pub fn run(args: Args) -> anyhow::Result<()> {
    let tok = ChatGlmTokenizer::from_dir(&args.model)?;
    let pieces = tok.encode_with_pieces(&args.text, args.special);
    let ids: Vec<u32> = pieces.iter().map(|(i, _)| *i).collect();
    if args.json {
        let v = serde_json::json!({
            "ids": ids,
            "pieces": pieces.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>(),
            "decoded": tok.decode(&ids, false, true),
        });
        println!("{v}");
        return Ok(());
    }
    println!("{} tokens", ids.len());
    for (id, piece) in &pieces {
        println!("{id:>8}  {piece}");
    }
    println!("ids: {ids:?}");
    println!("decoded: {:?}", tok.decode(&ids, false, true));
    Ok(())
}
