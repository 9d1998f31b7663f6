//! `ferro tokenize MODEL TEXT [--no-special]`: the token ids of TEXT as a JSON array.
//! By default as llama.cpp's add_special=true, parse_special=true: BOS when the model's metadata
//! asks for it, and special tokens such as `<|im_start|>` in the text become their ids.

use anyhow::Result;
use ferro_engine::tokenizer::Tokenizer;
use ferro_gguf::Gguf;

use crate::store;

#[derive(clap::Args)]
pub struct Args {
    /// A GGUF file or a store name.
    pub model: String,
    /// The text to tokenize (`-` reads stdin).
    pub text: String,
    /// Add no BOS/EOS and treat special-token text as plain text.
    #[arg(long)]
    pub no_special: bool,
}

pub fn run(args: Args) -> Result<()> {
    let path = store::resolve_model(Some(&args.model))?;
    let g = Gguf::open(&path)?;
    let tok = Tokenizer::from_gguf(&g)?;
    let text = if args.text == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        args.text
    };
    let special = !args.no_special;
    let ids = tok.encode(&text, special, special);
    println!("{}", serde_json::to_string(&ids)?);
    Ok(())
}
