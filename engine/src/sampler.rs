//! Token sampling with llama.cpp's default chain (common/sampling.cpp): repetition penalties,
//! top-k, top-p, min-p, temperature, then a seeded draw. Temperature <= 0 is greedy. Also
//! log-probabilities for the server and a [`StopMatcher`] for stop strings in streamed text.

use std::hash::{BuildHasher, Hasher};

/// Sampling parameters; `Default` gives llama.cpp's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerConfig {
    /// <= 0 means greedy (argmax after penalties).
    pub temperature: f32,
    /// Keep the k most likely tokens; <= 0 disables.
    pub top_k: i32,
    /// Nucleus: smallest set with cumulative probability >= top_p; >= 1 disables.
    pub top_p: f32,
    /// Drop tokens with probability < min_p * max probability; <= 0 disables.
    pub min_p: f32,
    /// Divide positive / multiply negative logits of recent tokens; 1 disables.
    pub repeat_penalty: f32,
    /// How many of the last tokens the penalties look at; 0 disables, -1 means all.
    pub repeat_last_n: i32,
    /// Subtracted once from the logit of every recent token.
    pub presence_penalty: f32,
    /// Subtracted per occurrence from the logit of every recent token.
    pub frequency_penalty: f32,
    /// RNG seed; `None` picks a random one.
    pub seed: Option<u64>,
    /// Added to the logits of these token ids first (ids past the vocabulary are ignored;
    /// -inf bans a token).
    pub logit_bias: Vec<(u32, f32)>,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: None,
            logit_bias: Vec::new(),
        }
    }
}

impl SamplerConfig {
    /// Greedy decoding (temperature 0), other settings default.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }
}

/// xoshiro256++ seeded through SplitMix64: small, fast and reproducible across platforms.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Self {
            s: [next(), next(), next(), next()],
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// A seed from the process's random hasher keys and the clock.
fn random_seed() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    h.write_u64(now);
    h.finish()
}

/// One candidate token.
#[derive(Debug, Clone, Copy)]
struct Cand {
    id: u32,
    logit: f32,
}

/// Stateful sampler: holds the config, the RNG and scratch space.
#[derive(Debug, Clone)]
pub struct Sampler {
    cfg: SamplerConfig,
    seed: u64,
    rng: Rng,
    cands: Vec<Cand>,
    probs: Vec<f32>,
}

impl Sampler {
    pub fn new(cfg: SamplerConfig) -> Self {
        let seed = cfg.seed.unwrap_or_else(random_seed);
        Self {
            cfg,
            seed,
            rng: Rng::new(seed),
            cands: Vec::new(),
            probs: Vec::new(),
        }
    }

    pub fn config(&self) -> &SamplerConfig {
        &self.cfg
    }

    /// The seed in use (the random one when the config gave none).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Restarts the random sequence from the seed.
    pub fn reset(&mut self) {
        self.rng = Rng::new(self.seed);
    }

    /// Picks the next token. `logits` (one per vocabulary entry) is modified by the penalties;
    /// `history` is every token so far (prompt and generated), the penalties use its tail.
    /// NaN logits count as -inf. An empty `logits` gives 0.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        if logits.is_empty() {
            return 0;
        }
        for l in logits.iter_mut() {
            if l.is_nan() {
                *l = f32::NEG_INFINITY;
            } else if *l == f32::INFINITY {
                *l = f32::MAX;
            }
        }
        for &(id, bias) in &self.cfg.logit_bias {
            if let Some(l) = logits.get_mut(id as usize) {
                *l += bias;
            }
        }
        apply_penalties(&self.cfg, logits, history);

        if self.cfg.temperature <= 0.0 {
            return argmax(logits);
        }

        let cands = &mut self.cands;
        cands.clear();
        cands.extend(
            logits
                .iter()
                .enumerate()
                .map(|(i, &logit)| Cand { id: i as u32, logit }),
        );
        // Higher logit first, ties to the lower id.
        let order = |a: &Cand, b: &Cand| b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id));

        // top-k (always leaves the candidates sorted).
        let k = self.cfg.top_k;
        if k > 0 && (k as usize) < cands.len() {
            let k = k as usize;
            cands.select_nth_unstable_by(k - 1, order);
            cands.truncate(k);
        }
        cands.sort_unstable_by(order);
        if cands[0].logit == f32::NEG_INFINITY {
            // Nothing is possible; fall back to the first (lowest) id.
            return cands[0].id;
        }

        // top-p over the softmax of the remaining candidates.
        let p = self.cfg.top_p;
        if p < 1.0 {
            softmax_into(cands, &mut self.probs);
            let mut cum = 0.0f32;
            let mut keep = cands.len();
            for (i, &pr) in self.probs.iter().enumerate() {
                cum += pr;
                if cum >= p {
                    keep = i + 1;
                    break;
                }
            }
            cands.truncate(keep.max(1));
        }

        // min-p on logits: keep logit >= max + ln(min_p).
        let mp = self.cfg.min_p;
        if mp > 0.0 && mp <= 1.0 {
            let min_logit = cands[0].logit + mp.ln();
            let keep = cands.iter().take_while(|c| c.logit >= min_logit).count();
            cands.truncate(keep.max(1));
        }

        // temperature, then draw.
        let t = self.cfg.temperature;
        for c in cands.iter_mut() {
            c.logit = (c.logit / t).min(f32::MAX);
        }
        softmax_into(cands, &mut self.probs);
        let r = self.rng.next_f64() as f32;
        let mut cum = 0.0f32;
        for (c, &pr) in cands.iter().zip(&self.probs) {
            cum += pr;
            if r < cum {
                return c.id;
            }
        }
        // Rounding left r above the last cumulative sum: take the last candidate with mass.
        cands
            .iter()
            .zip(&self.probs)
            .rev()
            .find(|(_, p)| **p > 0.0)
            .map_or(cands[0].id, |(c, _)| c.id)
    }
}

/// Index of the largest logit, ties to the lowest id; NaN never wins.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    let mut found = false;
    for (i, &v) in logits.iter().enumerate() {
        if !v.is_nan() && (!found || v > best_v) {
            best = i;
            best_v = v;
            found = true;
        }
    }
    best as u32
}

/// llama.cpp's `llama_sampler_penalties_apply` over the last `repeat_last_n` tokens of `history`.
fn apply_penalties(cfg: &SamplerConfig, logits: &mut [f32], history: &[u32]) {
    let no_op = cfg.repeat_penalty == 1.0 && cfg.frequency_penalty == 0.0 && cfg.presence_penalty == 0.0;
    if no_op || cfg.repeat_last_n == 0 || history.is_empty() {
        return;
    }
    let n = if cfg.repeat_last_n < 0 {
        history.len()
    } else {
        (cfg.repeat_last_n as usize).min(history.len())
    };
    let mut counts: std::collections::HashMap<u32, u32> = std::collections::HashMap::new();
    for &t in &history[history.len() - n..] {
        *counts.entry(t).or_default() += 1;
    }
    for (&t, &count) in &counts {
        let Some(l) = logits.get_mut(t as usize) else {
            continue;
        };
        if *l <= 0.0 {
            *l *= cfg.repeat_penalty;
        } else {
            *l /= cfg.repeat_penalty;
        }
        *l -= count as f32 * cfg.frequency_penalty + cfg.presence_penalty;
    }
}

/// Softmax of sorted candidates (largest first) into `probs`.
fn softmax_into(cands: &[Cand], probs: &mut Vec<f32>) {
    probs.clear();
    let max = cands[0].logit;
    let mut sum = 0.0f32;
    for c in cands {
        let e = (c.logit - max).exp();
        probs.push(e);
        sum += e;
    }
    for p in probs.iter_mut() {
        *p /= sum;
    }
}

/// log-softmax of `logits` (NaN counts as -inf).
pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits
        .iter()
        .copied()
        .filter(|v| !v.is_nan())
        .fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return vec![f32::NEG_INFINITY; logits.len()];
    }
    let sum: f64 = logits
        .iter()
        .filter(|v| !v.is_nan())
        .map(|&v| ((v - max) as f64).exp())
        .sum();
    let lse = max as f64 + sum.ln();
    logits
        .iter()
        .map(|&v| {
            if v.is_nan() {
                f32::NEG_INFINITY
            } else {
                (v as f64 - lse) as f32
            }
        })
        .collect()
}

/// A token with its log-probability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenLogprob {
    pub id: u32,
    pub logprob: f32,
}

/// The `n` most likely tokens with their log-probabilities, most likely first (ties: lower id).
pub fn top_logprobs(logits: &[f32], n: usize) -> Vec<TokenLogprob> {
    let lp = log_softmax(logits);
    let mut all: Vec<TokenLogprob> = lp
        .iter()
        .enumerate()
        .map(|(i, &logprob)| TokenLogprob { id: i as u32, logprob })
        .collect();
    let order = |a: &TokenLogprob, b: &TokenLogprob| b.logprob.total_cmp(&a.logprob).then(a.id.cmp(&b.id));
    let n = n.min(all.len());
    if n == 0 {
        return Vec::new();
    }
    if n < all.len() {
        all.select_nth_unstable_by(n - 1, order);
        all.truncate(n);
    }
    all.sort_unstable_by(order);
    all
}

/// What [`StopMatcher::push`] decided.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StopOutput {
    /// Text safe to show now.
    pub text: String,
    /// A stop string completed: generation should end; `text` is everything before it.
    pub stopped: bool,
}

/// Watches streamed text for stop strings. Text that might be the start of a stop string is held
/// back until it is known not to be; when a stop string completes, the text before it is
/// released and the stop string itself is dropped.
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
    done: bool,
}

impl StopMatcher {
    /// Empty stop strings are ignored.
    pub fn new<S: AsRef<str>>(stops: impl IntoIterator<Item = S>) -> Self {
        Self {
            stops: stops
                .into_iter()
                .map(|s| s.as_ref().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            held: String::new(),
            done: false,
        }
    }

    /// Whether a stop string has been seen.
    pub fn stopped(&self) -> bool {
        self.done
    }

    /// Feeds the next piece of generated text.
    pub fn push(&mut self, piece: &str) -> StopOutput {
        if self.done {
            return StopOutput {
                text: String::new(),
                stopped: true,
            };
        }
        self.held.push_str(piece);
        if let Some(pos) = self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min() {
            let text = self.held[..pos].to_string();
            self.held.clear();
            self.done = true;
            return StopOutput { text, stopped: true };
        }
        // Hold back the longest suffix that is a proper prefix of some stop string.
        let mut hold = 0;
        for s in &self.stops {
            let max = s.len().saturating_sub(1).min(self.held.len());
            for len in (1..=max).rev() {
                let start = self.held.len() - len;
                if self.held.is_char_boundary(start) && s.starts_with(&self.held[start..]) {
                    hold = hold.max(len);
                    break;
                }
            }
        }
        let cut = self.held.len() - hold;
        let text = self.held[..cut].to_string();
        self.held.drain(..cut);
        StopOutput { text, stopped: false }
    }

    /// Releases held-back text at the end of generation (no stop string completed).
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_llama_cpp() {
        let c = SamplerConfig::default();
        assert_eq!(c.temperature, 0.8);
        assert_eq!(c.top_k, 40);
        assert_eq!(c.top_p, 0.95);
        assert_eq!(c.min_p, 0.05);
        assert_eq!(c.repeat_penalty, 1.0);
        assert_eq!(c.repeat_last_n, 64);
        assert_eq!(c.seed, None);
    }

    #[test]
    fn greedy_ties_go_to_lowest_id() {
        let mut s = Sampler::new(SamplerConfig::greedy());
        let mut l = vec![1.0, 3.0, 3.0, 2.0];
        assert_eq!(s.sample(&mut l, &[]), 1);
    }

    #[test]
    fn repeat_penalty_changes_greedy_choice() {
        let cfg = SamplerConfig {
            repeat_penalty: 2.0,
            ..SamplerConfig::greedy()
        };
        let mut s = Sampler::new(cfg);
        let mut l = vec![0.0, 3.0, 2.0];
        assert_eq!(s.sample(&mut l, &[1]), 2);
        assert_eq!(l[1], 1.5);
        // Negative logits are multiplied.
        let mut l = vec![-1.0, -3.0];
        s.sample(&mut l, &[0]);
        assert_eq!(l[0], -2.0);
    }

    #[test]
    fn min_p_removes_unlikely_tokens() {
        let cfg = SamplerConfig {
            top_k: 0,
            top_p: 1.0,
            min_p: 0.5,
            temperature: 1.0,
            seed: Some(7),
            ..SamplerConfig::default()
        };
        let mut s = Sampler::new(cfg);
        for _ in 0..200 {
            // p(1)/p(0) = e^-5 < 0.5: only token 0 survives.
            let mut l = vec![5.0, 0.0];
            assert_eq!(s.sample(&mut l, &[]), 0);
        }
    }

    #[test]
    fn temperature_sampling_follows_the_distribution() {
        let cfg = SamplerConfig {
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            temperature: 1.0,
            seed: Some(42),
            ..SamplerConfig::default()
        };
        let mut s = Sampler::new(cfg);
        let mut hits = [0u32; 2];
        for _ in 0..4000 {
            // p = [0.731, 0.269]
            let mut l = vec![1.0, 0.0];
            hits[s.sample(&mut l, &[]) as usize] += 1;
        }
        let p0 = hits[0] as f64 / 4000.0;
        assert!((p0 - 0.731).abs() < 0.04, "p0 = {p0}");
    }

    #[test]
    fn log_softmax_normalizes() {
        let lp = log_softmax(&[1.0, 2.0, 3.0]);
        let total: f64 = lp.iter().map(|&x| (x as f64).exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
        let top = top_logprobs(&[1.0, 3.0, 2.0], 2);
        assert_eq!(top.iter().map(|t| t.id).collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn stop_matcher_holds_partial_matches() {
        let mut m = StopMatcher::new(["</s>", "\n\nUser:"]);
        assert_eq!(m.push("Hello <").text, "Hello ");
        assert_eq!(m.push("b>").text, "<b>");
        assert_eq!(m.push(" done\n").text, " done");
        let out = m.push("\nUser: hi");
        assert!(out.stopped);
        assert_eq!(out.text, "");
        assert!(m.stopped());
    }

    #[test]
    fn stop_matcher_flushes_the_tail() {
        let mut m = StopMatcher::new(["STOP"]);
        assert_eq!(m.push("abcST").text, "abc");
        assert_eq!(m.flush(), "ST");
        let mut m = StopMatcher::new(["é!"]);
        assert_eq!(m.push("caf").text, "caf");
        assert_eq!(m.push("é").text, "");
        let out = m.push("!x");
        assert!(out.stopped);
        assert_eq!(out.text, "");
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn expected_argmax(l: &[f32]) -> u32 {
            let mut best = 0;
            for (i, &v) in l.iter().enumerate() {
                if v > l[best] {
                    best = i;
                }
            }
            best as u32
        }

        fn extreme() -> impl Strategy<Value = f32> {
            prop_oneof![
                -1e4f32..1e4,
                Just(f32::INFINITY),
                Just(f32::NEG_INFINITY),
                Just(f32::NAN),
                Just(f32::MAX),
                Just(f32::MIN),
                Just(0.0f32),
            ]
        }

        proptest! {
            #[test]
            fn greedy_picks_argmax(l in prop::collection::vec(-100f32..100.0, 1..300)) {
                let mut s = Sampler::new(SamplerConfig::greedy());
                prop_assert_eq!(s.sample(&mut l.clone(), &[]), expected_argmax(&l));
            }

            #[test]
            fn top_k_one_is_greedy(
                l in prop::collection::vec(-100f32..100.0, 1..300),
                seed in any::<u64>(),
                temp in 0.1f32..3.0,
            ) {
                let cfg = SamplerConfig { top_k: 1, temperature: temp, seed: Some(seed), ..SamplerConfig::default() };
                let mut s = Sampler::new(cfg);
                prop_assert_eq!(s.sample(&mut l.clone(), &[]), expected_argmax(&l));
            }

            #[test]
            fn same_seed_same_sequence(
                l in prop::collection::vec(-5f32..5.0, 2..100),
                seed in any::<u64>(),
            ) {
                let cfg = SamplerConfig { seed: Some(seed), top_k: 0, top_p: 0.9, min_p: 0.01, temperature: 1.5, repeat_penalty: 1.1, ..SamplerConfig::default() };
                let run = || {
                    let mut s = Sampler::new(cfg.clone());
                    let mut hist = Vec::new();
                    for _ in 0..30 {
                        let t = s.sample(&mut l.clone(), &hist);
                        hist.push(t);
                    }
                    hist
                };
                prop_assert_eq!(run(), run());
            }

            #[test]
            fn extreme_logits_give_valid_ids(
                l in prop::collection::vec(extreme(), 1..200),
                seed in any::<u64>(),
                temp in prop_oneof![Just(0.0f32), 0.01f32..5.0],
                top_k in 0i32..50,
                top_p in 0.0f32..1.0,
                min_p in 0.0f32..1.0,
                hist in prop::collection::vec(0u32..300, 0..20),
            ) {
                let cfg = SamplerConfig { seed: Some(seed), temperature: temp, top_k, top_p, min_p, repeat_penalty: 1.3, presence_penalty: 0.5, frequency_penalty: 0.2, ..SamplerConfig::default() };
                let mut s = Sampler::new(cfg);
                // `lm` ends up holding the penalized logits (NaN as -inf).
                let mut lm = l.clone();
                let id = s.sample(&mut lm, &hist) as usize;
                prop_assert!(id < l.len());
                // Whenever some token is possible, an impossible one is never chosen.
                if lm.iter().any(|v| *v > f32::NEG_INFINITY) {
                    prop_assert!(lm[id] > f32::NEG_INFINITY, "picked {} = {}", id, l[id]);
                }
                let lp = log_softmax(&l);
                prop_assert!(lp.iter().all(|v| !v.is_nan()));
            }

            #[test]
            fn stop_matcher_emits_exactly_the_text_before_the_stop(
                text in "[ab<> ]{0,40}",
                cuts in prop::collection::vec(0usize..40, 0..8),
            ) {
                let stop = "<ab>";
                let mut m = StopMatcher::new([stop]);
                let mut bounds: Vec<usize> = cuts.into_iter().filter(|&c| c < text.len()).collect();
                bounds.push(0);
                bounds.push(text.len());
                bounds.sort_unstable();
                bounds.dedup();
                let mut out = String::new();
                let mut stopped = false;
                for w in bounds.windows(2) {
                    let o = m.push(&text[w[0]..w[1]]);
                    out.push_str(&o.text);
                    if o.stopped { stopped = true; break; }
                }
                if !stopped { out.push_str(&m.flush()); }
                match text.find(stop) {
                    Some(p) => { prop_assert!(stopped); prop_assert_eq!(&out, &text[..p]); }
                    None => { prop_assert!(!stopped); prop_assert_eq!(&out, &text); }
                }
            }
        }
    }
}
