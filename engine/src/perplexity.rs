//! Perplexity as llama.cpp's `llama-perplexity` measures it.
//!
//! The text's tokens (BOS first when the model adds one) are cut into chunks of `n_ctx`;
//! each chunk is evaluated from an empty cache with BOS in its first position (when the model
//! adds BOS), and only the second half of each chunk is scored: the logits at positions
//! `n_ctx/2 .. n_ctx-1` predict the tokens after them. PPL = exp(mean NLL); its error is
//! propagated from the standard error of the mean NLL, as llama-perplexity prints it.

use crate::backend::Forward;
use crate::models::{Logits, ModelError};

/// Running totals, and the result once all chunks are done.
#[derive(Debug, Clone, Copy, Default)]
pub struct PerplexityStats {
    /// Chunks evaluated so far.
    pub chunks: usize,
    /// Tokens scored so far.
    pub count: usize,
    nll: f64,
    nll2: f64,
}

impl PerplexityStats {
    fn add(&mut self, nll: f64) {
        self.nll += nll;
        self.nll2 += nll * nll;
        self.count += 1;
    }

    /// exp(mean negative log-likelihood).
    pub fn ppl(&self) -> f64 {
        (self.nll / self.count.max(1) as f64).exp()
    }

    /// Standard error of the PPL estimate (llama-perplexity's `+/-`).
    pub fn stderr(&self) -> f64 {
        if self.count < 2 {
            return 0.0;
        }
        let n = self.count as f64;
        let mean = self.nll / n;
        let var = self.nll2 / n - mean * mean;
        if var <= 0.0 {
            return 0.0;
        }
        (var / (n - 1.0)).sqrt() * self.ppl()
    }
}

/// Tokens per forward call while scoring (bounds the `[n][n_vocab]` logits buffer).
const LOGIT_BATCH: usize = 128;

/// Negative log-likelihood of `target` under `logits` (log-softmax with an f64 sum).
fn nll(logits: &[f32], target: u32) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&v| ((v - max) as f64).exp()).sum();
    -((logits[target as usize] - max) as f64 - sum.ln())
}

/// Measure the perplexity of `tokens` (already tokenized as the model adds specials) in
/// chunks of `n_ctx`. `bos` is put in the first position of each chunk. `progress` sees the
/// running stats after each chunk.
pub fn perplexity(
    model: &mut dyn Forward,
    tokens: &[u32],
    n_ctx: usize,
    bos: Option<u32>,
    mut progress: impl FnMut(usize, usize, &PerplexityStats),
) -> Result<PerplexityStats, ModelError> {
    if n_ctx < 4 || n_ctx > model.n_ctx() {
        return Err(ModelError::ContextFull {
            n_tokens: n_ctx,
            pos: 0,
            n_ctx: model.n_ctx(),
        });
    }
    let n_chunks = tokens.len() / n_ctx;
    if n_chunks == 0 {
        return Err(ModelError::ContextFull {
            n_tokens: n_ctx,
            pos: 0,
            n_ctx: tokens.len(),
        });
    }
    let n_vocab = model.n_vocab();
    let first = n_ctx / 2;
    let mut stats = PerplexityStats::default();
    let mut input = vec![0u32; n_ctx];
    for c in 0..n_chunks {
        let chunk = &tokens[c * n_ctx..(c + 1) * n_ctx];
        input.copy_from_slice(chunk);
        if let Some(b) = bos {
            input[0] = b;
        }
        model.forward(&input[..first], 0, Logits::None)?;
        // Score positions first..n_ctx-1 (the last position predicts past the chunk).
        let mut p = first;
        while p < n_ctx - 1 {
            let m = LOGIT_BATCH.min(n_ctx - 1 - p);
            let logits = model.forward(&input[p..p + m], p, Logits::All)?;
            for i in 0..m {
                stats.add(nll(&logits[i * n_vocab..(i + 1) * n_vocab], chunk[p + i + 1]));
            }
            p += m;
        }
        stats.chunks += 1;
        progress(c, n_chunks, &stats);
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nll_of_uniform_logits_is_log_vocab() {
        let l = vec![0.5f32; 1000];
        assert!((nll(&l, 3) - (1000f64).ln()).abs() < 1e-9);
    }

    #[test]
    fn stats_match_hand_computation() {
        let mut s = PerplexityStats::default();
        for v in [1.0, 2.0, 3.0] {
            s.add(v);
        }
        assert!((s.ppl() - 2f64.exp()).abs() < 1e-12);
        // sample variance of the mean: var = 2/3 population, /(n-1) = 1/3
        assert!((s.stderr() - (1.0f64 / 3.0).sqrt() * 2f64.exp()).abs() < 1e-12);
    }
}
