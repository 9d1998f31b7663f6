//! `ferro run [MODEL] [PROMPT]`: generate from a prompt (through the chat template unless
//! `--raw`), streaming tokens to stdout; with no prompt on a terminal, a chat REPL.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use ferro_engine::chat_template::{ChatMessage, ChatTemplate};
use ferro_engine::generate::{generate, Generation, StopReason};
use ferro_engine::sampler::{Sampler, SamplerConfig};
use ferro_engine::tokenizer::Tokenizer;
use ferro_engine::{Backend, Forward, ModelOptions};
use ferro_gguf::Gguf;

use crate::commands::DeviceArgs;
use crate::store;

#[derive(clap::Args)]
pub struct Args {
    /// A GGUF file or a store name (default: the default model). A single argument that is
    /// neither is taken as the prompt.
    pub model: Option<String>,
    /// The prompt; `-` reads it from stdin. Omitted on a terminal: interactive chat.
    pub prompt: Option<String>,
    /// Most tokens to generate (-1: until the model stops or the context is full).
    #[arg(short = 'n', long = "max-tokens", default_value_t = -1, allow_negative_numbers = true)]
    pub max_tokens: i64,
    /// Sampling temperature; 0 (or below) is greedy.
    #[arg(long, default_value_t = 0.8, allow_negative_numbers = true)]
    pub temp: f32,
    /// Keep the k most likely tokens (0 or below: all).
    #[arg(long = "top-k", default_value_t = 40, allow_negative_numbers = true)]
    pub top_k: i32,
    /// Nucleus sampling threshold (1: off).
    #[arg(long = "top-p", default_value_t = 0.95, allow_negative_numbers = true)]
    pub top_p: f32,
    /// Drop tokens below min-p times the most likely one's probability (0: off).
    #[arg(long = "min-p", default_value_t = 0.05, allow_negative_numbers = true)]
    pub min_p: f32,
    /// Penalty on the last 64 tokens (1: off).
    #[arg(long = "repeat-penalty", default_value_t = 1.0, allow_negative_numbers = true)]
    pub repeat_penalty: f32,
    /// Random seed (default: random).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Context size in tokens (0: the model's, at most 4096).
    #[arg(short = 'c', long = "ctx-size", default_value_t = 0)]
    pub ctx_size: usize,
    /// Worker threads (default: all cores).
    #[arg(short = 't', long = "threads", default_value_t = 0, value_parser = super::parse_threads)]
    pub threads: usize,
    /// System message for the chat template.
    #[arg(long)]
    pub system: Option<String>,
    /// Feed the prompt as is: no chat template (BOS per metadata, special tokens parsed).
    #[arg(long)]
    pub raw: bool,
    /// Print one JSON object {"prompt_tokens", "tokens", "text"} instead of streaming.
    #[arg(long)]
    pub json: bool,
    /// Timings and speeds on stderr.
    #[arg(short = 'v', long)]
    pub verbose: bool,
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// Whether a lone positional argument names a model rather than being a prompt.
fn looks_like_model(arg: &str) -> bool {
    Path::new(arg).is_file()
        || arg.ends_with(".gguf")
        || store::known(arg).is_some()
        || store::Store::from_env().ok().and_then(|s| s.get(arg)).is_some()
}

/// Everything a generation needs besides the prompt.
struct Session {
    model: Backend,
    tok: Tokenizer,
    sampler: Sampler,
    gguf: Arc<Gguf>,
    verbose: bool,
}

impl Session {
    /// Generate after `prompt` (following the `cached` tokens), streaming to stdout unless
    /// `quiet`; returns the generation and its text.
    fn generate(
        &mut self,
        cached: &[u32],
        prompt: &[u32],
        max_tokens: i64,
        quiet: bool,
    ) -> Result<(Generation, String)> {
        let n_ctx = self.model.n_ctx();
        let n_past = cached.len();
        if n_past + prompt.len() >= n_ctx {
            bail!(
                "the prompt is {} tokens, too long for the context of {n_ctx} tokens (raise -c/--ctx-size)",
                n_past + prompt.len()
            );
        }
        let room = n_ctx - n_past - prompt.len();
        let wanted = requested(max_tokens);
        let max = wanted.min(room);
        let Session {
            model, tok, sampler, ..
        } = self;
        let mut detok = tok.detokenizer();
        let mut text = String::new();
        let mut stdout = std::io::stdout().lock();
        let mut gen = generate(
            model,
            cached,
            prompt,
            max,
            |logits, hist| sampler.sample(logits, hist),
            |id| tok.is_eog(id),
            |id| {
                let piece = detok.push(id);
                if !quiet && !piece.is_empty() {
                    let _ = stdout.write_all(piece.as_bytes());
                    let _ = stdout.flush();
                }
                text.push_str(&piece);
                ControlFlow::Continue(())
            },
        )?;
        let rest = detok.flush();
        if !quiet && !rest.is_empty() {
            let _ = stdout.write_all(rest.as_bytes());
        }
        text.push_str(&rest);
        // The room left in the context, not -n, ended it: say so (llama.cpp's "context full").
        if gen.stop == StopReason::MaxTokens && max < wanted {
            gen.stop = StopReason::ContextFull;
            drop(stdout);
            eprintln!(
                "\n[the context of {n_ctx} tokens is full after {} generated; raise -c/--ctx-size for more]",
                gen.tokens.len()
            );
        }
        Ok((gen, text))
    }

    fn report(&self, g: &Generation) {
        if self.verbose {
            eprintln!(
                "\nprompt: {} tokens in {:.2} s ({:.1} tok/s); generated: {} tokens in {:.2} s ({:.1} tok/s); stop: {:?}; on {}",
                g.prompt_tokens,
                g.prompt_time.as_secs_f64(),
                g.prompt_tps(),
                g.tokens.len(),
                g.gen_time.as_secs_f64(),
                g.gen_tps(),
                g.stop,
                self.model.describe(),
            );
        }
    }

    /// Tokens of a rendered chat: BOS added per metadata unless the template already wrote it.
    fn encode_chat(&self, rendered: &str) -> Vec<u32> {
        let bos_text = self
            .tok
            .bos_id()
            .and_then(|b| self.tok.token_str(b))
            .map(|s| s.into_owned());
        let has_bos = bos_text.is_some_and(|b| !b.is_empty() && rendered.starts_with(&b));
        self.tok.encode(rendered, !has_bos, true)
    }
}

/// The sampling options' values that mean something: finite numbers, probabilities in 0..=1.
fn check_sampling(args: &Args) -> Result<()> {
    for (name, v, lo, hi) in [
        ("--temp", args.temp, f32::NEG_INFINITY, f32::INFINITY),
        ("--top-p", args.top_p, 0.0, 1.0),
        ("--min-p", args.min_p, 0.0, 1.0),
        ("--repeat-penalty", args.repeat_penalty, 0.0, f32::INFINITY),
    ] {
        if !v.is_finite() || v < lo || v > hi {
            match (lo.is_finite(), hi.is_finite()) {
                (true, true) => bail!("{name} must be between {lo} and {hi}; got {v}"),
                (true, false) => bail!("{name} must be a finite number of at least {lo}; got {v}"),
                _ => bail!("{name} must be a finite number; got {v}"),
            }
        }
    }
    // A penalty divides the repeated tokens' positive logits: 0 would make them infinite.
    if args.repeat_penalty == 0.0 {
        bail!("--repeat-penalty must be greater than 0 (1 is off); got 0");
    }
    Ok(())
}

pub fn run(args: Args) -> Result<()> {
    args.device.device()?;
    check_sampling(&args)?;
    let (model_arg, prompt) = match (args.model.clone(), args.prompt.clone()) {
        (Some(m), None) if !looks_like_model(&m) => (None, Some(m)),
        other => other,
    };
    let path: PathBuf = store::resolve_model(model_arg.as_deref())?;
    let t0 = Instant::now();
    let gguf = Arc::new(Gguf::open(&path)?);
    let tok = Tokenizer::from_gguf(&gguf)?;
    let model = args.device.load(
        gguf.clone(),
        &ModelOptions {
            n_ctx: args.ctx_size,
            threads: args.threads,
            ..ModelOptions::default()
        },
    )?;
    if args.verbose {
        let hp = model.hparams();
        eprintln!(
            "loaded {} ({}, {} layers, context {}, KV cache {:.1} MiB) on {} in {:.2} s",
            path.display(),
            hp.arch_name,
            hp.n_layer,
            model.n_ctx(),
            model.kv_cache_bytes() as f64 / (1 << 20) as f64,
            model.describe(),
            t0.elapsed().as_secs_f64()
        );
    }
    let sampler = Sampler::new(SamplerConfig {
        temperature: args.temp,
        top_k: args.top_k,
        top_p: args.top_p,
        min_p: args.min_p,
        repeat_penalty: args.repeat_penalty,
        seed: args.seed,
        ..SamplerConfig::default()
    });
    let mut s = Session {
        model,
        tok,
        sampler,
        gguf,
        verbose: args.verbose,
    };
    let prompt = match prompt.as_deref() {
        Some("-") => Some(read_stdin(args.raw)?),
        Some(p) => Some(p.to_string()),
        None if std::io::stdin().is_terminal() => None,
        None => Some(read_stdin(args.raw)?),
    };
    let Some(prompt) = prompt else {
        return repl(&mut s, &args);
    };
    let tokens = if args.raw {
        s.tok.encode(&prompt, true, true)
    } else {
        let tmpl = ChatTemplate::from_gguf(&s.gguf, &s.tok)?;
        let mut msgs = Vec::new();
        if let Some(sys) = &args.system {
            msgs.push(ChatMessage::system(sys.clone()));
        }
        msgs.push(ChatMessage::user(prompt));
        s.encode_chat(&tmpl.render(&msgs, true)?)
    };
    if tokens.is_empty() {
        bail!("the prompt is empty");
    }
    let (g, text) = s.generate(&[], &tokens, args.max_tokens, args.json)?;
    if args.json {
        let out = serde_json::json!({ "prompt_tokens": tokens, "tokens": g.tokens, "text": text });
        println!("{out}");
    } else {
        println!();
    }
    s.report(&g);
    Ok(())
}

/// The tokens `-n` asks for (negative: no limit).
fn requested(max_tokens: i64) -> usize {
    usize::try_from(max_tokens).unwrap_or(usize::MAX)
}

/// The prompt on stdin. A chat prompt loses the line break that ends it (`echo question |
/// ferro run` asks what `ferro run question` asks); a `--raw` one is tokenized as it is.
fn read_stdin(raw: bool) -> Result<String> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .read_to_end(&mut bytes)
        .context("reading the prompt from stdin")?;
    let mut s = String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "the prompt on stdin is not valid UTF-8 (byte {})",
            e.utf8_error().valid_up_to()
        )
    })?;
    if !raw {
        let trimmed = s.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t));
        if let Some(t) = trimmed {
            s.truncate(t.len());
        }
    }
    Ok(s)
}

/// The chat REPL: one user line per turn, the whole conversation re-rendered through the
/// template each turn and only the tokens after the cached prefix evaluated.
fn repl(s: &mut Session, args: &Args) -> Result<()> {
    let tmpl = ChatTemplate::from_gguf(&s.gguf, &s.tok)?;
    let base: Vec<ChatMessage> = args.system.iter().map(|t| ChatMessage::system(t.clone())).collect();
    let mut msgs = base.clone();
    // Tokens whose keys and values are in the cache, in order from position 0.
    let mut cached: Vec<u32> = Vec::new();
    eprintln!(
        "chat with {} — /clear starts over, /exit or Ctrl-D quits",
        s.model.hparams().arch_name
    );
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        eprint!("> ");
        let _ = std::io::stderr().flush();
        let Some(line) = lines.next() else { break };
        let line = line?;
        match line.trim() {
            "" => continue,
            "/exit" | "/quit" => break,
            "/clear" => {
                msgs = base.clone();
                cached.clear();
                eprintln!("(conversation cleared)");
                continue;
            }
            _ => {}
        }
        msgs.push(ChatMessage::user(line));
        let all = s.encode_chat(&tmpl.render(&msgs, true)?);
        let mut keep = cached.iter().zip(&all).take_while(|(a, b)| a == b).count();
        if keep == all.len() {
            keep -= 1; // at least one token must run to get logits
        }
        match s.generate(&all[..keep], &all[keep..], args.max_tokens, false) {
            Ok((g, text)) => {
                println!();
                s.report(&g);
                cached = all;
                // The last generated token was not run through the model when it ended the turn.
                cached.extend_from_slice(&g.tokens[..g.tokens.len().saturating_sub(1)]);
                msgs.push(ChatMessage::assistant(text));
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                msgs.pop();
            }
        }
    }
    Ok(())
}
