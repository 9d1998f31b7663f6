//! `ferro serve [MODEL]`: the OpenAI-compatible server (see `crate::server`).

use clap::Args as ClapArgs;

use crate::commands::DeviceArgs;
use crate::server::{self, ServerConfig};

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// A model name in the store or a path to a .gguf file (default: smollm2-135m-instruct).
    pub model: Option<String>,
    /// Address to bind. The default serves this machine only; 0.0.0.0 exposes the server.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0 picks a free one; the chosen address is printed).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Require `Authorization: Bearer KEY` on /v1 routes.
    #[arg(long, env = "FERRO_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Sequences decoded together in one batched step, each with its own KV cache slot (the
    /// GPU allocates them at load).
    #[arg(long, short = 'n', default_value_t = 4)]
    pub parallel: usize,
    /// Context size per sequence (0: the model's, at most 4096).
    #[arg(short = 'c', long = "ctx-size", default_value_t = 0)]
    pub ctx_size: usize,
    /// Allow browser requests from this origin (e.g. http://localhost:3000).
    #[arg(long)]
    pub cors: Option<String>,
    /// Worker threads (0: one per core).
    #[arg(long, short = 't', default_value_t = 0, value_parser = super::parse_threads)]
    pub threads: usize,
    /// Requests that may wait for a free sequence before the server answers 503.
    #[arg(long, default_value_t = 64)]
    pub queue: usize,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 4 << 20)]
    pub max_body: usize,
    #[command(flatten)]
    pub device: DeviceArgs,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    a.device.device()?;
    if a.parallel == 0 || a.parallel > 256 {
        anyhow::bail!("--parallel must be between 1 and 256");
    }
    server::run(ServerConfig {
        model_path: crate::store::resolve_model(a.model.as_deref())?,
        host: a.host,
        port: a.port,
        api_key: a.api_key,
        n_parallel: a.parallel,
        n_ctx: a.ctx_size,
        cors: a.cors,
        threads: a.threads,
        queue: a.queue,
        body_limit: a.max_body,
        device: a.device,
    })
}
