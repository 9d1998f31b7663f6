//! `ferro gen-model --arch ARCH --shape tiny|1b|8b --quant q4_0|q4_k_m|q8_0 --out FILE [--seed N]`:
//! a synthetic GGUF with real shapes, random weights and a real tokenizer copied from a store
//! model (SmolLM2's GPT-2 BPE vocabulary of 49152 for llama/mistral/qwen2/phi3, gemma3-270m's
//! SentencePiece vocabulary of 262144 for gemma3).

use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use ferro_engine::gen_model::{generate_model, GenArch, GenOptions, GenQuant, GenShape};
use ferro_gguf::Gguf;

use crate::store;

#[derive(clap::Args)]
pub struct Args {
    /// llama, mistral, qwen2, phi3 or gemma3.
    #[arg(long)]
    pub arch: String,
    /// tiny (2 layers, width 256), 1b (Llama-3.2-1B dims) or 8b (Llama-3-8B dims).
    #[arg(long, default_value = "tiny")]
    pub shape: String,
    /// q4_0, q4_k_m or q8_0.
    #[arg(long, default_value = "q4_0")]
    pub quant: String,
    /// Output file (written atomically).
    #[arg(long)]
    pub out: std::path::PathBuf,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(args: Args) -> Result<()> {
    let arch = GenArch::from_name(&args.arch)
        .ok_or_else(|| anyhow!("unknown --arch '{}' (llama, mistral, qwen2, phi3, gemma3)", args.arch))?;
    let shape =
        GenShape::from_name(&args.shape).ok_or_else(|| anyhow!("unknown --shape '{}' (tiny, 1b, 8b)", args.shape))?;
    let quant = GenQuant::from_name(&args.quant)
        .ok_or_else(|| anyhow!("unknown --quant '{}' (q4_0, q4_k_m, q8_0)", args.quant))?;
    let source = if arch == GenArch::Gemma3 {
        "gemma3-270m"
    } else {
        "smollm2-135m-instruct"
    };
    let src = Gguf::open(store::resolve_model(Some(source))?)?;
    let t0 = Instant::now();
    let opts = GenOptions {
        arch,
        shape,
        quant,
        seed: args.seed,
    };
    let d = generate_model(&opts, &src, &args.out).with_context(|| format!("writing {}", args.out.display()))?;
    let bytes = std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "wrote {} ({:.1} MiB in {:.1} s): {} {}x{} layers, {} heads / {} kv, ffn {}, vocab {} (tokenizer of {source})",
        args.out.display(),
        bytes as f64 / (1 << 20) as f64,
        t0.elapsed().as_secs_f64(),
        arch.gguf_arch(),
        d.n_layer,
        d.n_embd,
        d.n_head,
        d.n_head_kv,
        d.n_ff,
        d.n_vocab
    );
    Ok(())
}
