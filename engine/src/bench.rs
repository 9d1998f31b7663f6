//! Throughput measurement with llama-bench's method (llama.cpp `tools/llama-bench`), so the
//! numbers of `ferro bench` and `llama-bench` can be held side by side.
//!
//! - **pp N** (prompt processing): one batch of N random valid token ids (the first one BOS when
//!   the model adds it) evaluated from an empty context, logits of the last token only.
//! - **tg N** (text generation): N tokens fed one at a time from an empty context, each a random
//!   valid id (BOS first when the model adds it), logits of every step computed. No sampling: it
//!   measures the model, not the sampler.
//! - **tg N x P** (parallel generation, as llama.cpp's `llama-batched-bench`): P sequences,
//!   each in its own KV cache slot, generate N tokens each in N batched steps of P tokens (one
//!   per sequence), as the server's continuous batching decodes them; tokens/s is the aggregate
//!   P * N / time.
//!
//! Each test runs once untimed as warm-up (tg warms up with one token, as llama-bench does),
//! then `reps` timed times; the result is the mean and sample standard deviation of the
//! per-repetition tokens/s. "From an empty context" needs no clearing: positions from 0 are
//! overwritten and attention never reads past the current position.

use std::time::Instant;

use ferro_gguf::Gguf;

use crate::backend::Forward;
use crate::models::{Logits, ModelError, SeqStep};
use crate::sampler::Rng;

/// One test: a prompt batch or a run of single-token steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Test {
    /// `pp{n}`: `n` prompt tokens in one batch.
    Prompt(usize),
    /// `tg{n}`: `n` tokens generated one by one.
    Gen(usize),
    /// `tg{n}x{p}`: `p` sequences generating `n` tokens each, one batched step per token.
    Parallel(usize, usize),
}

impl Test {
    /// llama-bench's name: "pp512", "tg128".
    pub fn name(self) -> String {
        match self {
            Test::Prompt(n) => format!("pp{n}"),
            Test::Gen(n) => format!("tg{n}"),
            Test::Parallel(n, p) => format!("tg{n}x{p}"),
        }
    }

    /// Tokens one repetition evaluates.
    pub fn n_tokens(self) -> usize {
        match self {
            Test::Prompt(n) | Test::Gen(n) => n,
            Test::Parallel(n, p) => n * p,
        }
    }

    /// Context positions the test needs (per sequence).
    pub fn n_ctx(self) -> usize {
        match self {
            Test::Prompt(n) | Test::Gen(n) | Test::Parallel(n, _) => n,
        }
    }

    /// KV cache slots the test needs.
    pub fn n_slots(self) -> usize {
        match self {
            Test::Parallel(_, p) => p,
            _ => 1,
        }
    }
}

/// The timings of one test.
#[derive(Debug, Clone)]
pub struct TestResult {
    pub test: Test,
    /// Seconds of each timed repetition.
    pub samples_s: Vec<f64>,
}

impl TestResult {
    /// Tokens/s of each repetition.
    pub fn samples_ts(&self) -> Vec<f64> {
        let n = self.test.n_tokens() as f64;
        self.samples_s.iter().map(|&s| n / s.max(1e-12)).collect()
    }

    /// Mean tokens/s over the repetitions.
    pub fn tokens_per_second(&self) -> f64 {
        mean_sd(&self.samples_ts()).0
    }

    /// Sample standard deviation of the tokens/s (0 with one repetition).
    pub fn stddev(&self) -> f64 {
        mean_sd(&self.samples_ts()).1
    }
}

/// Mean and sample standard deviation (n - 1 in the denominator, as llama-bench).
pub fn mean_sd(xs: &[f64]) -> (f64, f64) {
    if xs.is_empty() {
        return (0.0, 0.0);
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    if xs.len() < 2 {
        return (mean, 0.0);
    }
    let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// The first token of every sequence: BOS when the model's tokenizer adds it.
pub fn bos_token(g: &Gguf) -> Option<u32> {
    let add = g.get_bool("tokenizer.ggml.add_bos_token").unwrap_or(false);
    let id = g.get_u64("tokenizer.ggml.bos_token_id")?;
    if add {
        u32::try_from(id).ok()
    } else {
        None
    }
}

/// Size of a model as llama-bench reports it: bytes of all tensors and their element count.
pub fn model_size(g: &Gguf) -> (u64, u64) {
    g.tensors()
        .iter()
        .fold((0, 0), |(b, p), t| (b + t.n_bytes, p + t.n_elements()))
}

/// Decode speed the memory bound allows: every weight byte read once per token at `gbs` GB/s.
pub fn bound_tokens_per_second(weight_bytes: usize, gbs: f64) -> f64 {
    if weight_bytes == 0 {
        return 0.0;
    }
    gbs * 1e9 / weight_bytes as f64
}

/// Runs tests on one model with a fixed random sequence of tokens.
pub struct Bench<'m> {
    model: &'m mut dyn Forward,
    rng: Rng,
    bos: Option<u32>,
}

impl<'m> Bench<'m> {
    /// `seed` fixes the random token ids.
    pub fn new(model: &'m mut dyn Forward, seed: u64) -> Self {
        let bos = bos_token(model.gguf()).filter(|&b| (b as usize) < model.n_vocab());
        Bench {
            model,
            rng: Rng::new(seed),
            bos,
        }
    }

    fn random_token(&mut self) -> u32 {
        (self.rng.next_u64() % self.model.n_vocab() as u64) as u32
    }

    fn first_token(&mut self) -> u32 {
        match self.bos {
            Some(b) => b,
            None => self.random_token(),
        }
    }

    /// One untimed warm-up run, then `reps` timed ones.
    pub fn run(&mut self, test: Test, reps: usize) -> Result<TestResult, ModelError> {
        let n_ctx = self.model.n_ctx();
        if test.n_ctx() > n_ctx || test.n_tokens() == 0 {
            return Err(ModelError::ContextFull {
                n_tokens: test.n_tokens(),
                pos: 0,
                n_ctx,
            });
        }
        if test.n_slots() > self.model.n_slots() {
            return Err(ModelError::BadSlot {
                slot: test.n_slots() - 1,
                n_slots: self.model.n_slots(),
            });
        }
        let warmup = match test {
            Test::Prompt(n) => Test::Prompt(n),
            Test::Gen(_) => Test::Gen(1),
            Test::Parallel(_, p) => Test::Parallel(1, p),
        };
        self.once(warmup)?;
        let mut samples_s = Vec::with_capacity(reps);
        for _ in 0..reps {
            samples_s.push(self.once(test)?);
        }
        Ok(TestResult { test, samples_s })
    }

    /// One repetition; seconds it took (token generation outside the timed part).
    fn once(&mut self, test: Test) -> Result<f64, ModelError> {
        match test {
            Test::Prompt(n) => {
                let mut tokens = Vec::with_capacity(n);
                tokens.push(self.first_token());
                while tokens.len() < n {
                    let t = self.random_token();
                    tokens.push(t);
                }
                let t0 = Instant::now();
                let logits = self.model.forward(&tokens, 0, Logits::Last)?;
                std::hint::black_box(logits.first());
                Ok(t0.elapsed().as_secs_f64())
            }
            Test::Gen(n) => {
                let mut tokens = Vec::with_capacity(n);
                tokens.push(self.first_token());
                while tokens.len() < n {
                    let t = self.random_token();
                    tokens.push(t);
                }
                let t0 = Instant::now();
                for (pos, &tok) in tokens.iter().enumerate() {
                    let logits = self.model.forward(&[tok], pos, Logits::Last)?;
                    std::hint::black_box(logits.first());
                }
                Ok(t0.elapsed().as_secs_f64())
            }
            Test::Parallel(n, p) => {
                // tokens[pos][seq]
                let mut tokens = Vec::with_capacity(n);
                for pos in 0..n {
                    let row: Vec<u32> = (0..p)
                        .map(|_| {
                            if pos == 0 {
                                self.first_token()
                            } else {
                                self.random_token()
                            }
                        })
                        .collect();
                    tokens.push(row);
                }
                let t0 = Instant::now();
                for (pos, row) in tokens.iter().enumerate() {
                    let steps: Vec<SeqStep> = row
                        .iter()
                        .enumerate()
                        .map(|(slot, t)| SeqStep {
                            slot,
                            pos,
                            tokens: std::slice::from_ref(t),
                            logits: true,
                        })
                        .collect();
                    let logits = self.model.forward_batch(&steps)?;
                    std::hint::black_box(logits.first());
                }
                Ok(t0.elapsed().as_secs_f64())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_sd() {
        let (m, s) = mean_sd(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert!((m - 5.0).abs() < 1e-12);
        assert!((s - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
        assert_eq!(mean_sd(&[3.0]), (3.0, 0.0));
        assert_eq!(mean_sd(&[]), (0.0, 0.0));
    }

    #[test]
    fn result_statistics_are_of_tokens_per_second() {
        let r = TestResult {
            test: Test::Gen(10),
            samples_s: vec![1.0, 0.5],
        };
        assert_eq!(r.samples_ts(), vec![10.0, 20.0]);
        assert!((r.tokens_per_second() - 15.0).abs() < 1e-12);
        assert!((r.stddev() - 50f64.sqrt()).abs() < 1e-12);
        assert_eq!(Test::Prompt(512).name(), "pp512");
        assert_eq!(Test::Gen(128).name(), "tg128");
    }

    #[test]
    fn bound_is_bandwidth_over_bytes() {
        assert!((bound_tokens_per_second(2_000_000_000, 20.0) - 10.0).abs() < 1e-9);
        assert_eq!(bound_tokens_per_second(0, 20.0), 0.0);
    }

    #[test]
    fn runs_a_tiny_model_and_rejects_tests_longer_than_the_context() {
        use crate::gen_model::{generate_model, GenArch, GenOptions, GenQuant, GenShape};
        use crate::models::{Model, ModelOptions};
        use ferro_gguf::{GgufWriter, MetaValue};

        let dir = std::env::temp_dir().join(format!("ferro-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut w = GgufWriter::new();
        w.set("general.architecture", MetaValue::String("llama".into()))
            .unwrap();
        w.set("tokenizer.ggml.model", MetaValue::String("gpt2".into())).unwrap();
        w.set(
            "tokenizer.ggml.tokens",
            MetaValue::strings((0..300).map(|i| format!("t{i}"))),
        )
        .unwrap();
        let src_path = dir.join("tok.gguf");
        w.write_file(&src_path).unwrap();
        let src = Gguf::open(&src_path).unwrap();
        let out = dir.join("tiny.gguf");
        let opts = GenOptions {
            arch: GenArch::Llama,
            shape: GenShape::Tiny,
            quant: GenQuant::Q4_0,
            seed: 1,
        };
        generate_model(&opts, &src, &out).unwrap();
        let mut model = Model::load(
            &out,
            &ModelOptions {
                n_ctx: 16,
                n_batch: 16,
                threads: 1,
                ..ModelOptions::default()
            },
        )
        .unwrap();
        let g = model.gguf().clone();
        let (bytes, params) = model_size(&g);
        assert!(bytes > 0 && params > bytes, "Q4_0 packs more than one weight a byte");
        let mut b = Bench::new(&mut model, 42);
        let pp = b.run(Test::Prompt(16), 2).unwrap();
        assert_eq!(pp.samples_s.len(), 2);
        assert!(pp.tokens_per_second() > 0.0);
        let tg = b.run(Test::Gen(8), 1).unwrap();
        assert_eq!(tg.samples_s.len(), 1);
        assert!(matches!(
            b.run(Test::Prompt(17), 1),
            Err(ModelError::ContextFull { .. })
        ));
        std::fs::remove_dir_all(&dir).ok();
    }
}
