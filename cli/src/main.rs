//! The `ferro` binary: the command enum and dispatch. Each command lives in `commands/<name>.rs`
//! with `pub fn run(args) -> anyhow::Result<()>`.
#![forbid(unsafe_code)]

mod commands;
mod server;
mod store;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ferro",
    version,
    about = "LLM inference for GGUF models, from scratch in Rust"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Download a model into the store: a known name or an http(s) URL of a .gguf file.
    Pull(commands::pull::Args),
    /// List the models in the store.
    List(commands::list::Args),
    /// Remove a model from the store.
    Rm(commands::rm::Args),
    /// Show a model's architecture, size, hyperparameters and metadata.
    Info(commands::info::Args),
    /// Generate text from a prompt (chat template unless --raw), or chat without one.
    Run(commands::run::Args),
    /// Measure perplexity on a text file, as llama-perplexity does.
    Perplexity(commands::perplexity::Args),
    /// Write a synthetic model: real shapes, random weights, a real tokenizer.
    GenModel(commands::gen_model::Args),
    /// Print the token ids of a text as a JSON array.
    Tokenize(commands::tokenize::Args),
    /// Measure prompt and generation speed as llama-bench does, or the memory bandwidth.
    Bench(commands::bench::Args),
    /// Serve a model over an OpenAI-compatible HTTP API (chat, completions, embeddings).
    Serve(commands::serve::Args),
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Commands::Pull(a) => commands::pull::run(a),
        Commands::List(a) => commands::list::run(a),
        Commands::Rm(a) => commands::rm::run(a),
        Commands::Info(a) => commands::info::run(a),
        Commands::Run(a) => commands::run::run(a),
        Commands::Perplexity(a) => commands::perplexity::run(a),
        Commands::GenModel(a) => commands::gen_model::run(a),
        Commands::Tokenize(a) => commands::tokenize::run(a),
        Commands::Bench(a) => commands::bench::run(a),
        Commands::Serve(a) => commands::serve::run(a),
    }
}

/// Log lines on stderr, filtered by `FERRO_LOG` (tracing's env-filter syntax). The server logs
/// its requests (`info`); other commands print only warnings (e.g. `--device auto` falling back
/// to the CPU). wgpu's own chatter is kept to errors unless `FERRO_LOG` asks for it.
fn init_logging(server: bool) {
    let default = if server { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRO_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{default},wgpu_core=error,wgpu_hal=error,naga=error"))
    });
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if server {
        fmt.try_init()
    } else {
        fmt.without_time().with_target(false).try_init()
    };
}

/// One line, whatever the message holds.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// An error and its causes joined by ": ", leaving out a cause whose text an earlier message
/// already holds (library errors that name their source in their own message).
fn error_text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if out.contains(&s) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&s);
    }
    out
}

fn main() {
    // Mesa's device-select Vulkan layer prints "XDG_RUNTIME_DIR is invalid" on headless machines
    // whenever adapters are probed (`--device auto`); it selects nothing ferro needs. Set here,
    // before any thread exists.
    if std::env::var_os("NODEVICE_SELECT").is_none() {
        std::env::set_var("NODEVICE_SELECT", "1");
    }
    // A bug must still reach the user as one line, never as a panic message and backtrace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("error: internal error: {}{at}", one_line(&msg));
        std::process::exit(1);
    }));
    let cli = Cli::parse();
    init_logging(matches!(cli.command, Commands::Serve(_)));
    if let Err(e) = dispatch(cli) {
        eprintln!("error: {}", one_line(&error_text(&e)));
        std::process::exit(1);
    }
}
