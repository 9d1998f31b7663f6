//! The server's engine loop: one thread owns the model and runs continuous batching.
//!
//! Requests arrive over a bounded channel ([`Scheduler::submit`] fails when it is full, so the
//! server answers 503 instead of piling work up). Each sequence gets a KV slot of its own; every
//! step runs one [`Backend::forward_batch`] over the next token of every decoding sequence plus a
//! bounded chunk of prompt tokens of those still prefilling, so each weight block is read once
//! per step for all of them. New requests join between steps; a sequence whose client went away
//! is dropped before the next step. A slot remembers the tokens whose KV it holds: a new request
//! goes to the free slot sharing its longest prefix (or copies it from a busy one) and only the
//! rest of its prompt is computed.
//!
//! Results do not depend on batching: every token's computation reads only its own sequence,
//! so a greedy request gives the same tokens alone or among others.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::backend::{Backend, Forward};
use crate::grammar::JsonConstraint;
use crate::models::SeqStep;
use crate::sampler::{log_softmax, top_logprobs, Sampler, SamplerConfig, StopMatcher};
use crate::tokenizer::{Detokenizer, Tokenizer};

/// Where a request's results go. Implemented by the server over its channels.
pub trait Sink: Send {
    /// Deliver an event; false when the receiver is gone (the request is then cancelled).
    fn send(&mut self, ev: Event) -> bool;
    /// Whether the receiver is gone (client disconnected).
    fn is_closed(&self) -> bool;
}

/// How a completion may be shaped.
#[derive(Debug, Clone, Default)]
pub enum Constraint {
    #[default]
    None,
    /// One JSON object (constrained decoding; generation ends when it closes).
    JsonObject,
    /// One JSON value of any kind.
    JsonValue,
    /// A JSON value guided by this JSON schema (see [`crate::grammar`]).
    JsonSchema(serde_json::Value),
}

/// A completion request, already tokenized.
pub struct GenRequest {
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    pub sampling: SamplerConfig,
    pub stop: Vec<String>,
    /// `Some(n)`: report each token's log-probability and the `n` most likely alternatives.
    pub logprobs: Option<usize>,
    pub constraint: Constraint,
    pub sink: Box<dyn Sink>,
}

/// An embedding request: the tokens to pool.
pub struct EmbedRequest {
    pub tokens: Vec<u32>,
    pub sink: Box<dyn Sink>,
}

pub enum Job {
    Generate(GenRequest),
    Embed(EmbedRequest),
}

/// One alternative token with its log-probability.
#[derive(Debug, Clone)]
pub struct Alt {
    pub text: String,
    pub bytes: Vec<u8>,
    pub logprob: f32,
}

/// Log-probability information of a generated token.
#[derive(Debug, Clone)]
pub struct TokenLogprobs {
    pub chosen: Alt,
    pub top: Vec<Alt>,
}

/// Why a completion ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// End-of-generation token, a stop string, or a completed JSON value.
    Stop,
    /// `max_tokens` or the context size reached.
    Length,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Prompt tokens whose KV came from the prefix cache.
    pub cached_tokens: usize,
}

/// What the engine loop reports about a request.
#[derive(Debug, Clone)]
pub enum Event {
    /// Text released by a generated token (may be empty while held back for UTF-8 or a possible
    /// stop string); `logprobs` when asked for and the text came from a token.
    Token {
        text: String,
        logprobs: Option<TokenLogprobs>,
    },
    Done {
        finish: Finish,
        usage: Usage,
    },
    Embedding {
        vector: Vec<f32>,
        tokens: usize,
    },
    Error(String),
}

/// Engine loop settings.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Sequences decoded together (KV slots).
    pub n_parallel: usize,
    /// Requests that may wait for a slot before [`Scheduler::submit`] refuses more.
    pub queue_capacity: usize,
    /// Most prompt tokens computed per step (bounds the latency a long prompt adds to others).
    pub prefill_chunk: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            n_parallel: 4,
            queue_capacity: 64,
            prefill_chunk: 256,
        }
    }
}

/// Counters for `/metrics`, updated by the loop and the server.
#[derive(Debug, Default)]
pub struct Metrics {
    pub requests_total: AtomicU64,
    pub requests_rejected: AtomicU64,
    pub prompt_tokens_total: AtomicU64,
    pub cached_prompt_tokens_total: AtomicU64,
    pub completion_tokens_total: AtomicU64,
    pub queue_depth: AtomicU64,
    pub active_sequences: AtomicU64,
    /// Sum and count of the times from a request's admission to its first token, microseconds.
    pub ttft_us_sum: AtomicU64,
    pub ttft_count: AtomicU64,
    /// Time the loop spent running steps, microseconds, and the tokens those steps generated.
    pub busy_us: AtomicU64,
    pub steps_total: AtomicU64,
}

impl Metrics {
    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let busy_s = g(&self.busy_us) as f64 / 1e6;
        let tps = if busy_s > 0.0 {
            g(&self.completion_tokens_total) as f64 / busy_s
        } else {
            0.0
        };
        let ttft_n = g(&self.ttft_count);
        let ttft = if ttft_n > 0 {
            g(&self.ttft_us_sum) as f64 / 1e6 / ttft_n as f64
        } else {
            0.0
        };
        let mut s = String::new();
        let metric = |s: &mut String, name: &str, kind: &str, help: &str, v: String| {
            s.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"));
        };
        metric(
            &mut s,
            "ferro_requests_total",
            "counter",
            "Requests received.",
            g(&self.requests_total).to_string(),
        );
        metric(
            &mut s,
            "ferro_requests_rejected_total",
            "counter",
            "Requests refused because the queue was full.",
            g(&self.requests_rejected).to_string(),
        );
        metric(
            &mut s,
            "ferro_prompt_tokens_total",
            "counter",
            "Prompt tokens processed (cached ones included).",
            g(&self.prompt_tokens_total).to_string(),
        );
        metric(
            &mut s,
            "ferro_prompt_tokens_cached_total",
            "counter",
            "Prompt tokens whose KV came from the prefix cache.",
            g(&self.cached_prompt_tokens_total).to_string(),
        );
        metric(
            &mut s,
            "ferro_completion_tokens_total",
            "counter",
            "Tokens generated.",
            g(&self.completion_tokens_total).to_string(),
        );
        metric(
            &mut s,
            "ferro_queue_depth",
            "gauge",
            "Requests waiting for a slot.",
            g(&self.queue_depth).to_string(),
        );
        metric(
            &mut s,
            "ferro_active_sequences",
            "gauge",
            "Sequences being generated.",
            g(&self.active_sequences).to_string(),
        );
        metric(
            &mut s,
            "ferro_tokens_per_second",
            "gauge",
            "Generated tokens per second of engine busy time.",
            format!("{tps:.3}"),
        );
        metric(
            &mut s,
            "ferro_time_to_first_token_seconds_avg",
            "gauge",
            "Mean time from admission to the first generated token.",
            format!("{ttft:.6}"),
        );
        s.push_str(&format!(
            "# HELP ferro_time_to_first_token_seconds Time to first token.\n# TYPE ferro_time_to_first_token_seconds summary\nferro_time_to_first_token_seconds_sum {:.6}\nferro_time_to_first_token_seconds_count {}\n",
            g(&self.ttft_us_sum) as f64 / 1e6,
            ttft_n
        ));
        metric(
            &mut s,
            "ferro_steps_total",
            "counter",
            "Batched forward steps run.",
            g(&self.steps_total).to_string(),
        );
        s
    }
}

/// Why [`Scheduler::submit`] refused a job.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the server is overloaded: {0} requests are already waiting; retry later")]
    Full(usize),
    #[error("the engine has stopped")]
    Stopped,
}

/// Handle to the engine loop thread.
pub struct Scheduler {
    tx: Option<SyncSender<Job>>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    queue_capacity: usize,
    n_parallel: usize,
}

impl Scheduler {
    /// Start the loop; it takes the model (its KV cache is resized to `n_parallel` slots, at
    /// most [`Backend::max_slots`]: [`Scheduler::n_parallel`] says how many it got).
    pub fn spawn(
        model: impl Into<Backend>,
        tokenizer: Arc<Tokenizer>,
        cfg: SchedulerConfig,
    ) -> std::io::Result<Scheduler> {
        let mut model = model.into();
        let n_parallel = cfg.n_parallel.clamp(1, model.max_slots());
        model
            .set_slots(n_parallel)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let (tx, rx) = mpsc::sync_channel(cfg.queue_capacity.max(1));
        let metrics = Arc::new(Metrics::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (m, st) = (metrics.clone(), stop.clone());
        let prefill_chunk = cfg.prefill_chunk.max(1);
        let thread = std::thread::Builder::new().name("ferro-engine".into()).spawn(move || {
            let mut lp = Loop {
                model,
                tok: &tokenizer,
                rx,
                metrics: m,
                stop: st,
                prefill_chunk,
                slots: (0..n_parallel).map(|_| Slot::default()).collect(),
                seqs: Vec::new(),
                clock: 0,
                logits: Vec::new(),
                work: Vec::new(),
            };
            lp.run();
        })?;
        Ok(Scheduler {
            tx: Some(tx),
            metrics,
            stop,
            thread: Some(thread),
            queue_capacity: cfg.queue_capacity.max(1),
            n_parallel,
        })
    }

    /// Sequences decoded together (the KV slots the model got).
    pub fn n_parallel(&self) -> usize {
        self.n_parallel
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Queue a job; refuses at once when the queue is full.
    pub fn submit(&self, job: Job) -> Result<(), SubmitError> {
        let tx = self.tx.as_ref().ok_or(SubmitError::Stopped)?;
        self.metrics.queue_depth.fetch_add(1, Ordering::Relaxed);
        match tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
                match e {
                    TrySendError::Full(_) => {
                        self.metrics.requests_rejected.fetch_add(1, Ordering::Relaxed);
                        Err(SubmitError::Full(self.queue_capacity))
                    }
                    TrySendError::Disconnected(_) => Err(SubmitError::Stopped),
                }
            }
        }
    }

    /// Stop taking jobs, finish the running ones and wait for the loop to end.
    pub fn shutdown(&mut self) {
        self.tx = None;
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A KV slot: the tokens whose keys and values it holds, and whether a sequence uses it.
#[derive(Debug, Default)]
struct Slot {
    cached: Vec<u32>,
    busy: bool,
    /// Step clock of the last use (least recently used slots are reused first).
    last_used: u64,
}

/// A running completion.
struct Seq<'t> {
    slot: usize,
    /// Prompt then generated tokens.
    tokens: Vec<u32>,
    n_prompt: usize,
    /// Tokens whose KV is in the slot.
    n_past: usize,
    n_gen: usize,
    max_tokens: usize,
    sampler: Sampler,
    detok: Detokenizer<'t>,
    stop: StopMatcher,
    logprobs: Option<usize>,
    json: Option<JsonConstraint>,
    sink: Box<dyn Sink>,
    cached: usize,
    admitted: Instant,
    first_token: bool,
}

struct Loop<'t> {
    model: Backend,
    tok: &'t Tokenizer,
    rx: Receiver<Job>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    prefill_chunk: usize,
    slots: Vec<Slot>,
    seqs: Vec<Seq<'t>>,
    clock: u64,
    /// The step's logits and one sequence's sampling copy, reused from step to step: fresh
    /// vectors of this size (megabytes) are new pages that the kernel clears on every step.
    logits: Vec<f32>,
    work: Vec<f32>,
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Candidates kept after masking (enough for any top-k/top-p cut).
const CONSTRAINED_CANDIDATES: usize = 64;

impl<'t> Loop<'t> {
    fn run(&mut self) {
        loop {
            if !self.admit() {
                break;
            }
            if self.seqs.is_empty() {
                continue;
            }
            self.drop_cancelled();
            if self.seqs.is_empty() {
                continue;
            }
            let t0 = Instant::now();
            self.step();
            self.metrics
                .busy_us
                .fetch_add(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
            self.metrics.steps_total.fetch_add(1, Ordering::Relaxed);
        }
        // Shut down: tell whoever is still waiting.
        for mut s in std::mem::take(&mut self.seqs) {
            s.sink.send(Event::Error("the server is shutting down".into()));
        }
    }

    /// Take jobs while slots are free. Blocks when nothing runs. False when the loop should end.
    fn admit(&mut self) -> bool {
        loop {
            if !self.slots.iter().any(|s| !s.busy) {
                return true;
            }
            let job = if self.seqs.is_empty() {
                match self.rx.recv_timeout(Duration::from_millis(50)) {
                    Ok(j) => j,
                    Err(RecvTimeoutError::Timeout) => {
                        if self.stop.load(Ordering::SeqCst) {
                            // Finish what was queued before the stop, then end.
                            match self.rx.try_recv() {
                                Ok(j) => j,
                                Err(_) => return false,
                            }
                        } else {
                            continue;
                        }
                    }
                    Err(RecvTimeoutError::Disconnected) => return false,
                }
            } else {
                match self.rx.try_recv() {
                    Ok(j) => j,
                    Err(_) => return true,
                }
            };
            self.metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
            match job {
                Job::Generate(r) => self.start(r),
                Job::Embed(r) => self.embed(r),
            }
        }
    }

    /// Pick a free slot for `prompt`: the one sharing the longest prefix, else the least recently
    /// used. Returns the slot and how many prompt tokens it already holds.
    fn assign_slot(&mut self, prompt: &[u32]) -> Option<(usize, usize)> {
        let free = (0..self.slots.len()).filter(|&i| !self.slots[i].busy);
        let best = free
            .map(|i| (i, common_prefix(&self.slots[i].cached, prompt)))
            .max_by_key(|&(i, l)| (l, std::cmp::Reverse(self.slots[i].last_used)))?;
        let (slot, mut reuse) = best;
        // A busy slot may hold a longer prefix (the same system prompt): copy its KV.
        let donor = (0..self.slots.len())
            .filter(|&i| i != slot)
            .map(|i| (i, common_prefix(&self.slots[i].cached, prompt)))
            .max_by_key(|&(_, l)| l);
        // At least the last prompt token is computed: its logits start the generation.
        let limit = prompt.len().saturating_sub(1);
        if let Some((d, l)) = donor {
            let l = l.min(limit);
            if l > reuse + 16 {
                match self.model.copy_prefix(d, slot, l) {
                    Ok(()) => {
                        self.slots[slot].cached = prompt[..l].to_vec();
                        reuse = l;
                    }
                    // The slot's own prefix is still right: compute the rest.
                    Err(e) => tracing::warn!("copying a cached prefix: {e}"),
                }
            }
        }
        let reuse = reuse.min(limit);
        self.slots[slot].cached.truncate(reuse);
        Some((slot, reuse))
    }

    fn start(&mut self, mut r: GenRequest) {
        if r.sink.is_closed() {
            return;
        }
        let n_ctx = self.model.n_ctx();
        if r.prompt.is_empty() || r.prompt.len() >= n_ctx {
            r.sink.send(Event::Error(format!(
                "the prompt has {} tokens; the context holds {n_ctx}",
                r.prompt.len()
            )));
            return;
        }
        let Some((slot, reuse)) = self.assign_slot(&r.prompt) else {
            r.sink.send(Event::Error("no free slot".into()));
            return;
        };
        self.clock += 1;
        self.slots[slot].busy = true;
        self.slots[slot].last_used = self.clock;
        self.metrics.active_sequences.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .prompt_tokens_total
            .fetch_add(r.prompt.len() as u64, Ordering::Relaxed);
        self.metrics
            .cached_prompt_tokens_total
            .fetch_add(reuse as u64, Ordering::Relaxed);
        let json = match r.constraint {
            Constraint::None => None,
            Constraint::JsonObject => Some(JsonConstraint::object()),
            Constraint::JsonValue => Some(JsonConstraint::any_value()),
            Constraint::JsonSchema(ref schema) => Some(JsonConstraint::schema(schema)),
        };
        // The context bounds the generation too.
        let max_tokens = r.max_tokens.min(n_ctx - r.prompt.len());
        self.seqs.push(Seq {
            slot,
            n_prompt: r.prompt.len(),
            tokens: r.prompt,
            n_past: reuse,
            n_gen: 0,
            max_tokens,
            sampler: Sampler::new(r.sampling),
            detok: self.tok.detokenizer(),
            stop: StopMatcher::new(&r.stop),
            logprobs: r.logprobs,
            json,
            sink: r.sink,
            cached: reuse,
            admitted: Instant::now(),
            first_token: false,
        });
    }

    fn embed(&mut self, mut r: EmbedRequest) {
        if r.sink.is_closed() {
            return;
        }
        let n_ctx = self.model.n_ctx();
        if r.tokens.is_empty() || r.tokens.len() > n_ctx {
            r.sink.send(Event::Error(format!(
                "the input has {} tokens; the context holds {n_ctx}",
                r.tokens.len()
            )));
            return;
        }
        // Use the least recently used free slot; its cache is overwritten.
        let Some(slot) = (0..self.slots.len())
            .filter(|&i| !self.slots[i].busy)
            .min_by_key(|&i| self.slots[i].last_used)
        else {
            r.sink.send(Event::Error("no free slot".into()));
            return;
        };
        self.slots[slot].cached.clear();
        self.metrics
            .prompt_tokens_total
            .fetch_add(r.tokens.len() as u64, Ordering::Relaxed);
        match self.model.embed(slot, &r.tokens) {
            Ok(vector) => r.sink.send(Event::Embedding {
                vector,
                tokens: r.tokens.len(),
            }),
            Err(e) => r.sink.send(Event::Error(e.to_string())),
        };
    }

    fn drop_cancelled(&mut self) {
        let mut i = 0;
        while i < self.seqs.len() {
            if self.seqs[i].sink.is_closed() {
                let s = self.seqs.swap_remove(i);
                self.release(&s);
            } else {
                i += 1;
            }
        }
    }

    /// Free a finished sequence's slot, keeping the tokens whose KV it holds.
    fn release(&mut self, s: &Seq) {
        let slot = &mut self.slots[s.slot];
        slot.busy = false;
        slot.cached.clear();
        slot.cached.extend_from_slice(&s.tokens[..s.n_past]);
        self.metrics.active_sequences.fetch_sub(1, Ordering::Relaxed);
    }

    /// One batched forward step over every sequence, then sampling.
    fn step(&mut self) {
        let mut budget = self.prefill_chunk;
        // (seq index, tokens range) of each participant.
        let mut plan: Vec<(usize, usize, usize, bool)> = Vec::with_capacity(self.seqs.len());
        for (i, s) in self.seqs.iter().enumerate() {
            let remaining = s.tokens.len() - s.n_past;
            if s.n_past >= s.n_prompt {
                // Decoding: the last sampled token.
                plan.push((i, s.n_past, s.tokens.len(), true));
            } else if budget > 0 {
                let take = remaining.min(budget);
                budget -= take;
                plan.push((i, s.n_past, s.n_past + take, s.n_past + take == s.tokens.len()));
            }
        }
        let steps: Vec<SeqStep> = plan
            .iter()
            .map(|&(i, a, b, logits)| SeqStep {
                slot: self.seqs[i].slot,
                pos: a,
                tokens: &self.seqs[i].tokens[a..b],
                logits,
            })
            .collect();
        let n_vocab = self.model.n_vocab();
        match self.model.forward_batch(&steps) {
            Ok(l) => {
                self.logits.clear();
                self.logits.extend_from_slice(l);
            }
            Err(e) => {
                // Nothing of this step can be trusted: fail its sequences, keep the server.
                let msg = e.to_string();
                let mut failed: Vec<usize> = plan.iter().map(|p| p.0).collect();
                failed.sort_unstable_by(|a, b| b.cmp(a));
                for i in failed {
                    let mut s = self.seqs.swap_remove(i);
                    s.n_past = 0;
                    s.sink.send(Event::Error(msg.clone()));
                    self.release(&s);
                }
                return;
            }
        }
        let mut row = 0;
        let mut finished = Vec::new();
        for &(i, _, b, wants) in &plan {
            let s = &mut self.seqs[i];
            s.n_past = b;
            if !wants {
                continue;
            }
            let l = &self.logits[row * n_vocab..(row + 1) * n_vocab];
            row += 1;
            if let Some(f) = sample_next(self.tok, s, l, &mut self.work, &self.metrics) {
                finished.push((i, f));
            }
        }
        finished.sort_unstable_by_key(|f| std::cmp::Reverse(f.0));
        for (i, finish) in finished {
            let mut s = self.seqs.swap_remove(i);
            let mut tail = s.detok.flush();
            if !s.stop.stopped() {
                let out = s.stop.push(&tail);
                tail = out.text;
                if !out.stopped {
                    tail.push_str(&s.stop.flush());
                }
            } else {
                tail.clear();
            }
            if !tail.is_empty() {
                s.sink.send(Event::Token {
                    text: tail,
                    logprobs: None,
                });
            }
            s.sink.send(Event::Done {
                finish,
                usage: Usage {
                    prompt_tokens: s.n_prompt,
                    completion_tokens: s.n_gen,
                    cached_tokens: s.cached,
                },
            });
            self.release(&s);
        }
    }
}

/// Mask the logits of tokens that would break the JSON being generated; end-of-generation is
/// allowed only once it is complete. Keeps the best [`CONSTRAINED_CANDIDATES`] allowed tokens.
fn mask_json(tok: &Tokenizer, c: &JsonConstraint, logits: &mut [f32]) {
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    order.sort_unstable_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]).then(a.cmp(&b)));
    let mut keep = vec![false; logits.len()];
    let mut kept = 0;
    for &id in &order {
        if kept >= CONSTRAINED_CANDIDATES || logits[id as usize] == f32::NEG_INFINITY {
            break;
        }
        let ok = if tok.is_eog(id) {
            c.is_complete()
        } else {
            !tok.is_control(id) && c.accepts(tok.token_to_piece(id))
        };
        if ok {
            keep[id as usize] = true;
            kept += 1;
        }
    }
    for (l, k) in logits.iter_mut().zip(&keep) {
        if !k {
            *l = f32::NEG_INFINITY;
        }
    }
}

fn alt(tok: &Tokenizer, id: u32, logprob: f32) -> Alt {
    let bytes = tok.token_to_piece(id).to_vec();
    Alt {
        text: String::from_utf8_lossy(&bytes).into_owned(),
        bytes,
        logprob,
    }
}

/// Sample the next token of `s` from `logits` and report it (`work`: scratch for the sampler's
/// copy of the logits). Returns how the sequence ended, if it did.
fn sample_next(tok: &Tokenizer, s: &mut Seq, logits: &[f32], work: &mut Vec<f32>, metrics: &Metrics) -> Option<Finish> {
    work.clear();
    work.extend_from_slice(logits);
    if let Some(c) = &s.json {
        if c.is_complete() {
            return Some(Finish::Stop);
        }
        mask_json(tok, c, work);
    }
    let id = s.sampler.sample(work, &s.tokens);
    if !s.first_token {
        s.first_token = true;
        metrics
            .ttft_us_sum
            .fetch_add(s.admitted.elapsed().as_micros() as u64, Ordering::Relaxed);
        metrics.ttft_count.fetch_add(1, Ordering::Relaxed);
    }
    if tok.is_eog(id) {
        return Some(Finish::Stop);
    }
    let logprobs = s.logprobs.map(|n| {
        let lp = log_softmax(logits);
        TokenLogprobs {
            chosen: alt(tok, id, lp[id as usize]),
            top: top_logprobs(logits, n)
                .into_iter()
                .map(|t| alt(tok, t.id, t.logprob))
                .collect(),
        }
    });
    s.tokens.push(id);
    s.n_gen += 1;
    metrics.completion_tokens_total.fetch_add(1, Ordering::Relaxed);
    let piece = s.detok.push(id);
    let out = s.stop.push(&piece);
    let json_done = match &mut s.json {
        Some(c) => {
            c.advance(tok.token_to_piece(id));
            c.is_complete()
        }
        None => false,
    };
    if !s.sink.send(Event::Token {
        text: out.text,
        logprobs,
    }) {
        // The receiver went away: the next step drops the sequence.
    }
    if out.stopped || json_done {
        return Some(Finish::Stop);
    }
    if s.n_gen >= s.max_tokens {
        return Some(Finish::Length);
    }
    None
}
