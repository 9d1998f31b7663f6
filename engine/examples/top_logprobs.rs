//! Greedy decoding printing per step the chosen token and the top-k log-probabilities, in the
//! format of scripts/llama-logits.cpp, to compare ferro with llama.cpp step by step:
//!
//! `top_logprobs MODEL -p 1,2,3 [-p 4,5] [-n 16] [-k 8] [-t THREADS] [-c CTX] [-b BATCH] [--dump FILE]`
//!
//! `-b 1` runs the prompt one token at a time (matrix-vector products, as llama.cpp with `-b 1`).
//! `--dump FILE` writes every step's raw logits (f32 little-endian, n_vocab per step).

use std::io::Write;

use ferro_engine::{Logits, Model, ModelOptions};

fn parse_ids(s: &str) -> Result<Vec<u32>, std::num::ParseIntError> {
    s.split(',')
        .filter(|t| !t.trim().is_empty())
        .map(|t| t.trim().parse())
        .collect()
}

/// `(id, log-probability)` of the `k` largest logits, largest first (lower id first on ties).
fn top_k(logits: &[f32], k: usize) -> Vec<(usize, f64)> {
    let max = logits.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
    let lse = max + logits.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx.into_iter().map(|i| (i, logits[i] as f64 - lse)).collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let usage = "usage: top_logprobs MODEL -p IDS [-p IDS...] [-n N] [-k K] [-t T] [-c CTX] [-b BATCH] [--dump FILE]";
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or(usage)?;
    let (mut prompts, mut n_gen, mut k, mut threads, mut n_ctx, mut dump) = (Vec::new(), 16, 8, 0, 256, None);
    let mut n_batch = ModelOptions::default().n_batch;
    while let Some(a) = args.next() {
        let v = args.next().ok_or(usage)?;
        match a.as_str() {
            "-p" => prompts.push(parse_ids(&v)?),
            "-n" => n_gen = v.parse()?,
            "-k" => k = v.parse()?,
            "-t" => threads = v.parse()?,
            "-c" => n_ctx = v.parse()?,
            "-b" => n_batch = v.parse()?,
            "--dump" => dump = Some(std::io::BufWriter::new(std::fs::File::create(v)?)),
            _ => return Err(usage.into()),
        }
    }
    let mut m = Model::load(
        &path,
        &ModelOptions {
            n_ctx,
            n_batch,
            threads,
            ..ModelOptions::default()
        },
    )?;
    let mut out = Vec::new();
    for prompt in &prompts {
        let (mut tokens, mut top) = (Vec::new(), Vec::new());
        let mut logits = m.forward(prompt, 0, Logits::Last)?.to_vec();
        for step in 0..n_gen {
            if let Some(f) = dump.as_mut() {
                for v in &logits {
                    f.write_all(&v.to_le_bytes())?;
                }
            }
            let t = top_k(&logits, k);
            let next = t[0].0 as u32;
            top.push(t.iter().map(|&(i, lp)| serde_json::json!([i, lp])).collect::<Vec<_>>());
            tokens.push(next);
            if step + 1 < n_gen {
                logits = m.forward(&[next], prompt.len() + step, Logits::Last)?.to_vec();
            }
        }
        out.push(serde_json::json!({ "prompt_tokens": prompt, "tokens": tokens, "top": top }));
    }
    println!("{}", serde_json::json!({ "n_vocab": m.n_vocab(), "prompts": out }));
    Ok(())
}
