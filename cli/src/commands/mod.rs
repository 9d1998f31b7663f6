//! One module per subcommand.

pub mod bench;
pub mod gen_model;
pub mod info;
pub mod list;
pub mod perplexity;
pub mod pull;
pub mod rm;
pub mod run;
pub mod serve;
pub mod tokenize;

use std::sync::Arc;

use ferro_engine::{Backend, Device, KvType, ModelError, ModelOptions};
use ferro_gguf::Gguf;

/// `--device` of the commands that run a model.
#[derive(clap::Args, Debug, Clone)]
pub struct DeviceArgs {
    /// Where the forward pass runs: cpu, gpu (any adapter wgpu finds, software ones included)
    /// or auto (a hardware GPU when one can run the model, else the CPU).
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Element type of the KV cache: f32 (keys and values exactly as computed: the CPU's
    /// default) or f16 (half the memory on the CPU and faster decode at long contexts; the
    /// GPU's default, values rounded as llama.cpp's cache rounds them); greedy output may part
    /// between the two at near ties. `FERRO_CACHE_TYPE` sets it too.
    #[arg(long, value_name = "TYPE", value_parser = parse_cache_type)]
    pub cache_type: Option<KvType>,
}

fn parse_cache_type(s: &str) -> Result<KvType, String> {
    s.parse()
}

/// `-t/--threads` of the commands that run a model: 0 (one per core) up to
/// [`ferro_engine::MAX_THREADS`].
pub fn parse_threads(s: &str) -> Result<usize, String> {
    let n: usize = s.trim().parse().map_err(|e| format!("{e}"))?;
    if n > ferro_engine::MAX_THREADS {
        return Err(format!("at most {} threads", ferro_engine::MAX_THREADS));
    }
    Ok(n)
}

impl DeviceArgs {
    /// The parsed `--device`; an unknown name is an error.
    pub fn device(&self) -> anyhow::Result<Device> {
        Ok(self.device.parse::<Device>()?)
    }

    /// Loads the model on the chosen device. A GPU failure names the flag that asked for it.
    pub fn load(&self, gguf: Arc<Gguf>, opts: &ModelOptions) -> anyhow::Result<Backend> {
        let device = self.device()?;
        let opts = ModelOptions {
            cache_type: self.cache_type.or(opts.cache_type),
            ..opts.clone()
        };
        match Backend::load(gguf, &opts, device) {
            Ok(b) => Ok(b),
            Err(e @ ModelError::Gpu(_)) => anyhow::bail!("--device {device}: {e}"),
            Err(e) => Err(e.into()),
        }
    }
}
