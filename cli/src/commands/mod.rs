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

use ferro_engine::{Backend, Device, ModelError, ModelOptions};
use ferro_gguf::Gguf;

/// `--device` of the commands that run a model.
#[derive(clap::Args, Debug, Clone)]
pub struct DeviceArgs {
    /// Where the forward pass runs: cpu, gpu (any adapter wgpu finds, software ones included)
    /// or auto (a hardware GPU when one can run the model, else the CPU).
    #[arg(long, default_value = "auto")]
    pub device: String,
}

impl DeviceArgs {
    /// The parsed `--device`; an unknown name is an error.
    pub fn device(&self) -> anyhow::Result<Device> {
        Ok(self.device.parse::<Device>()?)
    }

    /// Loads the model on the chosen device. A GPU failure names the flag that asked for it.
    pub fn load(&self, gguf: Arc<Gguf>, opts: &ModelOptions) -> anyhow::Result<Backend> {
        let device = self.device()?;
        match Backend::load(gguf, opts, device) {
            Ok(b) => Ok(b),
            Err(e @ ModelError::Gpu(_)) => anyhow::bail!("--device {device}: {e}"),
            Err(e) => Err(e.into()),
        }
    }
}
