//! Where the forward pass runs: the CPU [`Model`] or the GPU [`GpuModel`] (WGSL shaders through
//! wgpu), chosen by `--device cpu|gpu|auto`.
//!
//! - [`Forward`] is what the generation loop, perplexity and the benchmark need: a forward pass
//!   over a batch of tokens at a position, and the context and vocabulary sizes. [`Model`] and
//!   [`Backend`] implement it, so those callers run on either device unchanged.
//! - [`Backend`] also carries the server's multi-sequence API ([`Backend::forward_batch`] and
//!   friends). The GPU allocates its KV cache slots at load ([`ModelOptions::n_slots`]):
//!   [`Backend::max_slots`] is that number there and the scheduler clamps `--parallel` to it.
//! - [`Device::Auto`] takes the GPU when wgpu finds a hardware adapter (a software one such as
//!   lavapipe does not count) that can run the model, and the CPU otherwise; [`Device::Gpu`]
//!   takes whatever adapter wgpu offers (lavapipe included) and fails when there is none.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use ferro_gguf::Gguf;
pub use ferro_shaders::{list_adapters, AdapterSummary};
use ferro_shaders::{GpuContext, GpuModel, SeqTokens};

use crate::models::{Hparams, Logits, Model, ModelError, ModelOptions, Result, SeqStep};

/// A forward pass over a batch of tokens: what [`generate`](crate::generate::generate),
/// [`perplexity`](crate::perplexity::perplexity) and [`Bench`](crate::bench::Bench) call.
pub trait Forward {
    /// Run `tokens` at positions `pos..pos + tokens.len()`, filling the KV cache, and return
    /// the logits asked for (see [`Model::forward`]).
    fn forward(&mut self, tokens: &[u32], pos: usize, which: Logits) -> Result<&[f32]>;
    /// Positions the KV cache holds.
    fn n_ctx(&self) -> usize;
    fn n_vocab(&self) -> usize;
    /// The model's file (tokenizer and special tokens live in its metadata).
    fn gguf(&self) -> &Arc<Gguf>;
    /// Independent sequences the KV cache holds now.
    fn n_slots(&self) -> usize;
    /// One step of several sequences, each in its own slot (see [`Model::forward_batch`]).
    fn forward_batch(&mut self, seqs: &[SeqStep]) -> Result<&[f32]>;
}

impl Forward for Model {
    fn forward(&mut self, tokens: &[u32], pos: usize, which: Logits) -> Result<&[f32]> {
        Model::forward(self, tokens, pos, which)
    }
    fn n_ctx(&self) -> usize {
        Model::n_ctx(self)
    }
    fn n_vocab(&self) -> usize {
        Model::n_vocab(self)
    }
    fn gguf(&self) -> &Arc<Gguf> {
        Model::gguf(self)
    }
    fn n_slots(&self) -> usize {
        Model::n_slots(self)
    }
    fn forward_batch(&mut self, seqs: &[SeqStep]) -> Result<&[f32]> {
        Model::forward_batch(self, seqs)
    }
}

/// `--device`: where to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    Cpu,
    Gpu,
    /// The GPU when a hardware adapter can run the model, else the CPU.
    #[default]
    Auto,
}

/// An unknown `--device` value.
#[derive(Debug, thiserror::Error)]
#[error("unknown device '{0}' (expected cpu, gpu or auto)")]
pub struct UnknownDevice(pub String);

impl FromStr for Device {
    type Err = UnknownDevice;
    fn from_str(s: &str) -> std::result::Result<Self, UnknownDevice> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(Device::Cpu),
            "gpu" => Ok(Device::Gpu),
            "auto" => Ok(Device::Auto),
            _ => Err(UnknownDevice(s.to_string())),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Device::Cpu => "cpu",
            Device::Gpu => "gpu",
            Device::Auto => "auto",
        })
    }
}

/// Whether `auto` may use this adapter: a hardware GPU, not a CPU implementation of the API.
pub fn is_hardware(a: &AdapterSummary) -> bool {
    a.device_type != "Cpu"
}

/// The model on the GPU, with what the CPU side needs to answer like [`Model`].
pub struct GpuBackend {
    gguf: Arc<Gguf>,
    hp: Hparams,
    model: GpuModel,
    n_ctx: usize,
    /// Slots in use ([`Backend::set_slots`]; at most the model's `n_slots`).
    n_slots: usize,
    /// Logits of the last call: `[n_vocab]` or `[n_tokens][n_vocab]`.
    logits: Vec<f32>,
}

impl GpuBackend {
    /// Uploads the model of `gguf` to the device of `ctx` with a KV cache of `opts.n_slots`
    /// sequences of `opts.n_ctx` positions (0: the smaller of 4096 and the training context, as
    /// the CPU).
    pub fn load(ctx: Arc<GpuContext>, gguf: Arc<Gguf>, opts: &ModelOptions) -> Result<GpuBackend> {
        let hp = Hparams::from_gguf(&gguf)?;
        let n_ctx = if opts.n_ctx == 0 {
            hp.n_ctx_train.min(4096)
        } else {
            opts.n_ctx
        };
        let n_slots = opts.n_slots.max(1);
        let kv_f16 = opts.cache_type != Some(crate::KvType::F32);
        let model = GpuModel::from_gguf_with(ctx, &gguf, n_ctx, n_slots, kv_f16)?;
        Ok(GpuBackend {
            gguf,
            hp,
            model,
            n_ctx,
            n_slots: 1,
            logits: Vec::new(),
        })
    }

    /// The adapter the model runs on.
    pub fn adapter(&self) -> AdapterSummary {
        self.model.context().adapter()
    }

    /// A slot in use ([`Backend::set_slots`]).
    fn check_slot(&self, slot: usize) -> Result<()> {
        if slot >= self.n_slots {
            return Err(ModelError::BadSlot {
                slot,
                n_slots: self.n_slots,
            });
        }
        Ok(())
    }

    fn check(&self, tokens: &[u32], pos: usize) -> Result<()> {
        if pos + tokens.len() > self.n_ctx {
            return Err(ModelError::ContextFull {
                n_tokens: tokens.len(),
                pos,
                n_ctx: self.n_ctx,
            });
        }
        let n_vocab = self.hp.n_vocab;
        if let Some(&id) = tokens.iter().find(|&&t| t as usize >= n_vocab) {
            return Err(ModelError::BadToken { id, n_vocab });
        }
        Ok(())
    }

    fn forward(&mut self, tokens: &[u32], pos: usize, which: Logits) -> Result<&[f32]> {
        if tokens.is_empty() {
            return Ok(&[]);
        }
        self.check(tokens, pos)?;
        match which {
            Logits::Last => self.logits = self.model.forward(tokens, pos)?,
            Logits::All => self.logits = self.model.forward_all(tokens, pos)?,
            Logits::None => {
                self.model.forward(tokens, pos)?;
                self.logits.clear();
            }
        }
        Ok(&self.logits)
    }
}

/// A model on the device `--device` chose.
pub enum Backend {
    Cpu(Box<Model>),
    Gpu(Box<GpuBackend>),
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Backend({})", self.describe())
    }
}

impl From<Model> for Backend {
    fn from(m: Model) -> Self {
        Backend::Cpu(Box::new(m))
    }
}

impl Backend {
    /// Loads the model of `gguf` on `device`. `gpu` fails when wgpu has no adapter or the model
    /// cannot run there; `auto` then (or when the only adapter is a software one) uses the CPU,
    /// logging why at `warn` when a hardware GPU was there but could not be used.
    pub fn load(gguf: Arc<Gguf>, opts: &ModelOptions, device: Device) -> Result<Backend> {
        match device {
            Device::Cpu => Ok(Model::from_gguf(gguf, opts)?.into()),
            Device::Gpu => {
                let ctx = Arc::new(GpuContext::new()?);
                Ok(Backend::Gpu(Box::new(GpuBackend::load(ctx, gguf, opts)?)))
            }
            Device::Auto => {
                // The CPU model first: a file it cannot run fails here, before any GPU probing,
                // and it is the fallback. Its KV cache is not yet touched, but on x86 its
                // weights are a repacked copy (`ModelOptions::repack`): while the GPU loads, the
                // host holds the model twice, until the CPU model is dropped below.
                let cpu = Model::from_gguf(gguf.clone(), opts)?;
                let ctx = match GpuContext::new() {
                    Ok(c) if is_hardware(&c.adapter()) => Arc::new(c),
                    _ => return Ok(cpu.into()),
                };
                let adapter = ctx.adapter();
                match GpuBackend::load(ctx, gguf, opts) {
                    Ok(g) => Ok(Backend::Gpu(Box::new(g))),
                    Err(e) => {
                        tracing::warn!("{adapter}: {e}; running on the CPU");
                        Ok(cpu.into())
                    }
                }
            }
        }
    }

    /// Whether the forward pass runs on the GPU.
    pub fn is_gpu(&self) -> bool {
        matches!(self, Backend::Gpu(_))
    }

    /// The backend as llama-bench names it: "CPU", or the GPU API ("Vulkan", "Metal", "Dx12").
    pub fn name(&self) -> String {
        match self {
            Backend::Cpu(_) => "CPU".into(),
            Backend::Gpu(g) => g.adapter().backend,
        }
    }

    /// One line for logs: "CPU (avx2 kernels)" or "GPU: NVIDIA H100 (Vulkan, DiscreteGpu, ...)".
    pub fn describe(&self) -> String {
        match self {
            Backend::Cpu(_) => format!("CPU ({} kernels)", ferro_kernels::kernel_path()),
            Backend::Gpu(g) => format!("GPU: {}", g.adapter()),
        }
    }

    pub fn hparams(&self) -> &Hparams {
        match self {
            Backend::Cpu(m) => m.hparams(),
            Backend::Gpu(g) => &g.hp,
        }
    }

    /// Bytes of weights a decode step reads (every matrix once, one embedding row aside).
    pub fn weight_bytes(&self) -> usize {
        match self {
            Backend::Cpu(m) => m.weight_bytes(),
            Backend::Gpu(g) => {
                let mut n: u64 = g.gguf.tensors().iter().map(|t| t.n_bytes).sum();
                let tied = g.gguf.tensors().iter().all(|t| t.name != "output.weight");
                if !tied {
                    if let Ok((embd, _)) = g.gguf.tensor("token_embd.weight") {
                        n -= embd.n_bytes - embd.n_bytes / embd.n_rows().max(1);
                    }
                }
                n as usize
            }
        }
    }

    /// Bytes the KV cache holds (all slots).
    pub fn kv_cache_bytes(&self) -> usize {
        match self {
            Backend::Cpu(m) => m.kv_cache_bytes(),
            // f32 keys and values for every layer and position, as GpuModel allocates them
            // (per slot, as the CPU's before `set_slots`).
            Backend::Gpu(g) => g.hp.n_layer * g.n_ctx * (g.hp.k_dim() + g.hp.v_dim()) * 4,
        }
    }

    /// Most independent sequences the KV cache can hold ([`Backend::set_slots`]).
    pub fn max_slots(&self) -> usize {
        match self {
            Backend::Cpu(_) => usize::MAX,
            Backend::Gpu(g) => g.model.hparams().n_slots,
        }
    }

    /// Hold `n_slots` sequences of `n_ctx()` positions each (everything cached is dropped);
    /// at most [`Backend::max_slots`].
    pub fn set_slots(&mut self, n_slots: usize) -> Result<()> {
        match self {
            Backend::Cpu(m) => m.set_slots(n_slots),
            Backend::Gpu(g) => {
                let max = g.model.hparams().n_slots;
                if n_slots > max {
                    return Err(ModelError::BadSlot {
                        slot: n_slots - 1,
                        n_slots: max,
                    });
                }
                g.n_slots = n_slots.max(1);
                Ok(())
            }
        }
    }

    /// Sequences the KV cache holds.
    pub fn n_slots(&self) -> usize {
        match self {
            Backend::Cpu(m) => m.n_slots(),
            Backend::Gpu(g) => g.n_slots,
        }
    }

    /// Copy the first `n` cached positions of slot `from` into slot `to`.
    pub fn copy_prefix(&mut self, from: usize, to: usize, n: usize) -> Result<()> {
        match self {
            Backend::Cpu(m) => {
                m.copy_prefix(from, to, n);
                Ok(())
            }
            Backend::Gpu(g) => Ok(g.model.copy_prefix(from, to, n)?),
        }
    }

    /// One step of several sequences, each in its own slot (see [`Model::forward_batch`]).
    pub fn forward_batch(&mut self, seqs: &[SeqStep]) -> Result<&[f32]> {
        match self {
            Backend::Cpu(m) => m.forward_batch(seqs),
            Backend::Gpu(g) => {
                for st in seqs {
                    g.check_slot(st.slot)?;
                }
                for st in seqs.iter().filter(|st| !st.tokens.is_empty()) {
                    g.check(st.tokens, st.pos)?;
                }
                let steps: Vec<SeqTokens> = seqs
                    .iter()
                    .map(|st| SeqTokens {
                        slot: st.slot,
                        pos: st.pos,
                        tokens: st.tokens,
                        logits: st.logits,
                    })
                    .collect();
                g.logits = g.model.forward_multi(&steps)?;
                Ok(&g.logits)
            }
        }
    }

    /// Sentence embedding of `tokens` (see [`Model::embed`]): the mean of the final normed
    /// hidden states, scaled to unit length.
    pub fn embed(&mut self, slot: usize, tokens: &[u32]) -> Result<Vec<f32>> {
        match self {
            Backend::Cpu(m) => m.embed(slot, tokens),
            Backend::Gpu(g) => {
                g.check_slot(slot)?;
                g.check(tokens, 0)?;
                let mut sum = g.model.hidden_sum(slot, tokens)?;
                crate::models::unit_length(&mut sum);
                Ok(sum)
            }
        }
    }
}

impl Forward for Backend {
    fn forward(&mut self, tokens: &[u32], pos: usize, which: Logits) -> Result<&[f32]> {
        match self {
            Backend::Cpu(m) => m.forward(tokens, pos, which),
            Backend::Gpu(g) => g.forward(tokens, pos, which),
        }
    }
    fn n_ctx(&self) -> usize {
        match self {
            Backend::Cpu(m) => m.n_ctx(),
            Backend::Gpu(g) => g.n_ctx,
        }
    }
    fn n_vocab(&self) -> usize {
        self.hparams().n_vocab
    }
    fn gguf(&self) -> &Arc<Gguf> {
        match self {
            Backend::Cpu(m) => m.gguf(),
            Backend::Gpu(g) => &g.gguf,
        }
    }
    fn n_slots(&self) -> usize {
        Backend::n_slots(self)
    }
    fn forward_batch(&mut self, seqs: &[SeqStep]) -> Result<&[f32]> {
        Backend::forward_batch(self, seqs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse() {
        assert_eq!("cpu".parse::<Device>().unwrap(), Device::Cpu);
        assert_eq!("GPU".parse::<Device>().unwrap(), Device::Gpu);
        assert_eq!("auto".parse::<Device>().unwrap(), Device::Auto);
        let e = "bogus".parse::<Device>().unwrap_err().to_string();
        assert!(e.contains("bogus") && e.contains("cpu, gpu or auto"), "{e}");
    }

    #[test]
    fn software_adapters_are_not_hardware() {
        let mut a = AdapterSummary {
            name: "llvmpipe (LLVM 15.0.6, 256 bits)".into(),
            backend: "Vulkan".into(),
            device_type: "Cpu".into(),
            driver: "llvmpipe".into(),
            driver_info: String::new(),
        };
        assert!(!is_hardware(&a));
        a.device_type = "DiscreteGpu".into();
        assert!(is_hardware(&a));
    }
}
