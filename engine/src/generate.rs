//! The generation loop: prefill the prompt in one batched forward pass, then decode one token
//! at a time, handing each to a callback as it is made.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use crate::backend::Forward;
use crate::models::{Logits, ModelError};

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced an end-of-generation token (not included in the output).
    EndOfGeneration,
    /// `max_tokens` were generated.
    MaxTokens,
    /// The context is full.
    ContextFull,
    /// The callback asked to stop (a stop string, Ctrl-C ...).
    Callback,
}

/// What a generation produced, with timings.
#[derive(Debug, Clone)]
pub struct Generation {
    /// Generated token ids (the end-of-generation token excluded).
    pub tokens: Vec<u32>,
    pub stop: StopReason,
    pub prompt_tokens: usize,
    pub prompt_time: Duration,
    pub gen_time: Duration,
}

impl Generation {
    /// Prompt processing speed, tokens per second.
    pub fn prompt_tps(&self) -> f64 {
        self.prompt_tokens as f64 / self.prompt_time.as_secs_f64().max(1e-9)
    }

    /// Generation speed, tokens per second (the first token comes from the prefill).
    pub fn gen_tps(&self) -> f64 {
        self.tokens.len().saturating_sub(1) as f64 / self.gen_time.as_secs_f64().max(1e-9)
    }
}

/// Index of the largest logit (the first on ties, as llama.cpp's greedy sampler).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Generate after `prompt`, which follows `cached`: the tokens whose keys and values are
/// already in the KV cache at positions `0..cached.len()` (a chat continues its conversation
/// this way; pass `&[]` to start from an empty cache).
///
/// `sample(logits, history)` picks the next token from the logits (it may modify them);
/// `history` is every token of the sequence so far. `is_eog` says which tokens end the
/// generation. `on_token(id)` sees each generated token as it is made and may stop the loop.
/// After return the cache holds `cached.len() + prompt.len() + tokens.len()` positions (minus one
/// when the last generated token was not run through the model).
pub fn generate(
    model: &mut dyn Forward,
    cached: &[u32],
    prompt: &[u32],
    max_tokens: usize,
    mut sample: impl FnMut(&mut [f32], &[u32]) -> u32,
    is_eog: impl Fn(u32) -> bool,
    mut on_token: impl FnMut(u32) -> ControlFlow<()>,
) -> Result<Generation, ModelError> {
    let n_ctx = model.n_ctx();
    let n_past = cached.len();
    if n_past + prompt.len() > n_ctx || prompt.is_empty() {
        return Err(ModelError::ContextFull {
            n_tokens: prompt.len(),
            pos: n_past,
            n_ctx,
        });
    }
    let mut history: Vec<u32> = cached.iter().chain(prompt).copied().collect();
    let t0 = Instant::now();
    let mut logits = model.forward(prompt, n_past, Logits::Last)?.to_vec();
    let prompt_time = t0.elapsed();
    let t1 = Instant::now();
    let mut pos = n_past + prompt.len();
    let mut tokens = Vec::new();
    let stop = loop {
        if tokens.len() >= max_tokens {
            break StopReason::MaxTokens;
        }
        let next = sample(&mut logits, &history);
        if is_eog(next) {
            break StopReason::EndOfGeneration;
        }
        tokens.push(next);
        history.push(next);
        if on_token(next).is_break() {
            break StopReason::Callback;
        }
        if tokens.len() >= max_tokens {
            break StopReason::MaxTokens;
        }
        if pos >= n_ctx {
            break StopReason::ContextFull;
        }
        logits.copy_from_slice(model.forward(&[next], pos, Logits::Last)?);
        pos += 1;
    };
    Ok(Generation {
        tokens,
        stop,
        prompt_tokens: prompt.len(),
        prompt_time,
        gen_time: t1.elapsed(),
    })
}

/// Greedy generation of up to `max_tokens` tokens after `prompt` from an empty cache.
pub fn greedy(
    model: &mut dyn Forward,
    prompt: &[u32],
    max_tokens: usize,
    is_eog: impl Fn(u32) -> bool,
) -> Result<Vec<u32>, ModelError> {
    let g = generate(
        model,
        &[],
        prompt,
        max_tokens,
        |l, _| argmax(l),
        is_eog,
        |_| ControlFlow::Continue(()),
    )?;
    Ok(g.tokens)
}
