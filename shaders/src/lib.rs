//! ferro's GPU backend: WGSL compute shaders run through wgpu (Vulkan, Metal, DX12).
//!
//! - [`GpuContext`] opens a device ([`list_adapters`] shows what wgpu sees), uploads
//!   [`GpuWeight`]s in their GGUF block formats (never as dequantized copies) and
//!   [`GpuTensor`]s of f32 activations, and caches one compute pipeline per shader variant.
//! - One `.wgsl` per op in `src/`: `matmul.wgsl` (small batches), `gemm.wgsl` (prefill, 64x64
//!   shared-memory tiles) and `get_rows.wgsl` are specialised per block format by prepending
//!   `common.wgsl` + `quant_<type>.wgsl` (which define `load8`, eight dequantized weights of a
//!   row); the decode product `matvec.wgsl` takes `mv_<type>.wgsl` (integer dot products of the
//!   blocks with int8 activations packed by `quantize_act.wgsl` / `norm_quant.wgsl`) and a row
//!   sum by subgroup shuffles or shared memory; `rms_norm`, `rope_kv` (rope + KV-cache store),
//!   `softmax`, `attention`, `glu`, `add`. Workgroup sizes are Rust consts passed as the
//!   override `WG` ([`WG`] for most).
//! - Measurement: `FERRO_GPU_TIMING=1` (host time per pass), `FERRO_GPU_PROFILE=1` (GPU time per
//!   op kind from timestamp queries), `FERRO_GPU_SKIP=kind,...` (leave op kinds out).
//! - [`GpuModel`] runs a whole forward pass (llama- and gemma3-style decoders) with the KV cache in
//!   GPU memory; each batch of tokens is one command encoder and only logits come back.
//!
//! Engine use (`--device gpu|auto`):
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! let g = ferro_gguf::Gguf::open("model.gguf")?;
//! // `gpu`: fail with this error; `auto`: fall back to the CPU on Err.
//! let ctx = Arc::new(ferro_shaders::GpuContext::new()?);
//! let mut model = ferro_shaders::GpuModel::from_gguf(ctx, &g, 4096)?; // n_ctx
//! let logits = model.forward(&[1, 2, 3], 0)?; // prefill at positions 0..3 -> last token's logits
//! let next = model.forward(&[42], 3)?; // decode at position 3
//! let all = model.forward_all(&[1, 2, 3], 0)?; // [3][n_vocab] for perplexity
//! # let _ = (logits, next, all); Ok(()) }
//! ```
//! `GpuModel::new(ctx, GpuHparams, weights)` takes the hyper-parameters and `WeightRef`s
//! (name, type, dims, bytes) directly when the engine has already parsed them.

mod context;
mod error;
mod model;
mod ops;
mod profile;

pub use context::{
    gemm_big_min_tokens, gemmq_big_min_tokens, list_adapters, supports_type, AdapterSummary, Glu, GpuContext,
    GpuTensor, GpuWeight, NormMode, GEMM_BIG_MIN_K, GEMM_BIG_MIN_ROWS, MATMUL_LANES, MATMUL_TILE, WG,
};
pub use error::{GpuError, Result};
pub use model::{FuseAct, GpuHparams, GpuLayerParams, GpuModel, SeqTokens, WeightRef};
pub use ops::{ActQuant, AttnParams, RopeParams, MAX_HEAD_DIM};
