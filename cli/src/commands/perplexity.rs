//! `ferro perplexity MODEL -f FILE [-c 512]`: llama-perplexity's measurement (see
//! `ferro_engine::perplexity`). Progress per chunk goes to stderr; the last line on stdout is
//! `PPL = <value> +/- <stderr>`.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use ferro_engine::perplexity::perplexity;
use ferro_engine::tokenizer::Tokenizer;
use ferro_engine::ModelOptions;
use ferro_gguf::Gguf;

use crate::commands::DeviceArgs;
use crate::store;

#[derive(clap::Args)]
pub struct Args {
    /// A GGUF file or a store name (default: the default model).
    pub model: Option<String>,
    /// The text file to measure.
    #[arg(short = 'f', long = "file")]
    pub file: std::path::PathBuf,
    /// Tokens per chunk (the context each chunk is evaluated in).
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512)]
    pub ctx_size: usize,
    /// Worker threads (default: all cores).
    #[arg(short = 't', long = "threads", default_value_t = 0, value_parser = super::parse_threads)]
    pub threads: usize,
    #[command(flatten)]
    pub device: DeviceArgs,
}

pub fn run(args: Args) -> Result<()> {
    args.device.device()?;
    if args.ctx_size < 4 {
        bail!(
            "-c/--ctx-size must be at least 4 tokens for perplexity; got {}",
            args.ctx_size
        );
    }
    let path = store::resolve_model(args.model.as_deref())?;
    let text = std::fs::read_to_string(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?;
    let g = Arc::new(Gguf::open(&path)?);
    let tok = Tokenizer::from_gguf(&g)?;
    let mut model = args.device.load(
        g,
        &ModelOptions {
            n_ctx: args.ctx_size,
            n_batch: args.ctx_size.min(256),
            threads: args.threads,
            ..ModelOptions::default()
        },
    )?;
    // As llama-perplexity: specials added per metadata, special tokens in the text not parsed.
    let tokens = tok.encode(&text, true, false);
    let n_chunks = tokens.len() / args.ctx_size.max(1);
    if n_chunks == 0 {
        bail!(
            "{} has {} tokens, fewer than one chunk of {} (use a smaller -c)",
            args.file.display(),
            tokens.len(),
            args.ctx_size
        );
    }
    let bos = if tok.add_bos() { tok.bos_id() } else { None };
    eprintln!(
        "perplexity: {} tokens, {n_chunks} chunks of {}, scoring the second half of each, on {}",
        tokens.len(),
        args.ctx_size,
        model.describe()
    );
    let t0 = Instant::now();
    let stats = perplexity(&mut model, &tokens, args.ctx_size, bos, |c, n, s| {
        eprintln!(
            "[{}/{n}] PPL = {:.4} +/- {:.5}  ({:.1} s)",
            c + 1,
            s.ppl(),
            s.stderr(),
            t0.elapsed().as_secs_f64()
        );
    })?;
    println!("PPL = {:.4} +/- {:.5}", stats.ppl(), stats.stderr());
    Ok(())
}
