//! Transformer models read from GGUF files.
//!
//! [`Hparams::from_gguf`] reads the shape of the model with one `match` on
//! `general.architecture`; each architecture's file loads its tensors (as views into the memory
//! map, never copied) and runs its block from the shared [`ops`](crate::ops). [`Model`] owns the
//! file, the KV cache and the scratch buffers ([`RunState`], llama2.c style), all allocated once
//! for the context size, and runs [`Model::forward`] over a batch of tokens.

mod gemma3;
mod llama;
mod phi3;
mod qwen2;

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use ferro_gguf::{Gguf, GgufError};
use ferro_kernels::{
    dequantize_row, is_supported, matmul, matmul_packed, matvec, softmax_f32, GgmlType, KernelError, KernelTable,
    PackedMatrix, WeightMatrix,
};
use rayon::prelude::*;

use crate::kv_cache::{CacheElem, KvCache, KvLayer, KvType};
use crate::ops::{self, Rope, RopeStyle};

/// Errors from loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("unknown model architecture '{0}' (ferro runs llama, mistral, qwen2, phi3 and gemma3)")]
    UnknownArchitecture(String),
    #[error("model metadata {key}: {reason}")]
    Metadata { key: String, reason: String },
    #[error("tensor {name}: {reason}")]
    Tensor { name: String, reason: String },
    #[error("tensor {name}: {source}")]
    Kernel { name: String, source: KernelError },
    #[error("{n_tokens} tokens at position {pos} do not fit in the context of {n_ctx} tokens")]
    ContextFull { n_tokens: usize, pos: usize, n_ctx: usize },
    #[error("token id {id} is outside the vocabulary of {n_vocab} tokens")]
    BadToken { id: u32, n_vocab: usize },
    #[error("KV slot {slot} is out of range or used twice in one step ({n_slots} slots)")]
    BadSlot { slot: usize, n_slots: usize },
    #[error("context of {n_ctx} positions x {n_slots} sequences: {reason} (lower -c/--ctx-size)")]
    CacheTooLarge {
        n_ctx: usize,
        n_slots: usize,
        reason: crate::kv_cache::CacheTooLarge,
    },
    #[error("could not build a thread pool of {threads} threads: {reason}")]
    ThreadPool { threads: usize, reason: String },
    /// The GPU backend failed (no adapter, unsupported tensor type, device error ...).
    #[error(transparent)]
    Gpu(#[from] ferro_shaders::GpuError),
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;

/// The architectures ferro runs (`general.architecture`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Llama 1/2/3.x, Mistral, SmolLM2.
    Llama,
    /// Qwen 2 / 2.5: llama with QKV biases and NeoX rope.
    Qwen2,
    /// Phi-3: fused QKV and gate/up projections, NeoX rope.
    Phi3,
    /// Gemma 3: QK norms, GeGLU, embedding scale, sliding-window layers, post-norms.
    Gemma3,
}

impl Arch {
    pub fn from_name(name: &str) -> Option<Arch> {
        Some(match name {
            "llama" | "mistral" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            "phi3" => Arch::Phi3,
            "gemma3" => Arch::Gemma3,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Phi3 => "phi3",
            Arch::Gemma3 => "gemma3",
        }
    }
}

/// The shape and constants of a model.
#[derive(Debug, Clone)]
pub struct Hparams {
    pub arch: Arch,
    /// `general.architecture` as written (metadata keys are prefixed with it).
    pub arch_name: String,
    pub n_vocab: usize,
    pub n_ctx_train: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    /// Key/query length per head.
    pub head_dim: usize,
    /// Value length per head.
    pub head_dim_v: usize,
    pub n_ff: usize,
    /// Rotated dimensions per head.
    pub n_rot: usize,
    pub norm_eps: f32,
    pub rope_style: RopeStyle,
    pub rope_base: f32,
    pub rope_freq_scale: f32,
    /// Rope base and scale of sliding-window layers.
    pub rope_base_swa: f32,
    pub rope_freq_scale_swa: f32,
    /// Keys a sliding-window layer sees (query position - key position < window); 0 = none.
    pub sliding_window: usize,
    /// With a window, every `swa_pattern`-th layer (the last of each group) attends globally;
    /// 0 = every layer uses the window.
    pub swa_pattern: usize,
    /// Factor on q·k before the softmax.
    pub attn_scale: f32,
    /// Factor on the token embeddings (gemma: sqrt(n_embd)).
    pub embd_scale: f32,
    pub final_logit_softcap: Option<f32>,
}

/// Metadata access with the architecture prefix and typed errors.
struct Meta<'a> {
    g: &'a Gguf,
    arch: &'a str,
}

impl Meta<'_> {
    fn key(&self, k: &str) -> String {
        format!("{}.{k}", self.arch)
    }

    fn bad(&self, k: &str, reason: &str) -> ModelError {
        ModelError::Metadata {
            key: self.key(k),
            reason: reason.into(),
        }
    }

    fn usize(&self, k: &str) -> Result<usize> {
        let v = self.g.require_u64(&self.key(k))?;
        usize::try_from(v).map_err(|_| self.bad(k, "too large"))
    }

    fn opt_usize(&self, k: &str) -> Option<usize> {
        self.g.get_u64(&self.key(k)).and_then(|v| usize::try_from(v).ok())
    }

    fn opt_f32(&self, k: &str) -> Option<f32> {
        self.g.get_f64(&self.key(k)).map(|v| v as f32)
    }

    fn opt_str(&self, k: &str) -> Option<&str> {
        self.g.get_str(&self.key(k))
    }
}

impl Hparams {
    /// Read the model's shape from its metadata.
    pub fn from_gguf(g: &Gguf) -> Result<Hparams> {
        let arch_name = g.architecture()?;
        let arch = Arch::from_name(arch_name).ok_or_else(|| ModelError::UnknownArchitecture(arch_name.into()))?;
        let m = Meta { g, arch: arch_name };
        let n_embd = m.usize("embedding_length")?;
        let n_head = m.usize("attention.head_count")?;
        if n_head == 0 || n_embd == 0 {
            return Err(m.bad("attention.head_count", "must be positive"));
        }
        let n_head_kv = m.opt_usize("attention.head_count_kv").unwrap_or(n_head);
        if n_head_kv == 0 || !n_head.is_multiple_of(n_head_kv) {
            return Err(m.bad("attention.head_count_kv", "must divide attention.head_count"));
        }
        let head_dim = m.opt_usize("attention.key_length").unwrap_or(n_embd / n_head);
        let head_dim_v = m.opt_usize("attention.value_length").unwrap_or(head_dim);
        let n_rot = m.opt_usize("rope.dimension_count").unwrap_or(head_dim);
        if n_rot > head_dim || !n_rot.is_multiple_of(2) {
            return Err(m.bad("rope.dimension_count", "must be even and at most the head size"));
        }
        let n_vocab = match g.tensor_info("token_embd.weight") {
            Some(t) if t.dims.len() == 2 => t.dims[1] as usize,
            _ => {
                return Err(ModelError::Tensor {
                    name: "token_embd.weight".into(),
                    reason: "missing or not a matrix".into(),
                })
            }
        };
        let rope_base = m.opt_f32("rope.freq_base").unwrap_or(10000.0);
        // Linear rope scaling divides positions by the factor (llama.cpp `rope_freq_scale`).
        let rope_freq_scale = match (m.opt_str("rope.scaling.type"), m.opt_f32("rope.scaling.factor")) {
            (Some("linear"), Some(f)) if f > 0.0 => 1.0 / f,
            _ => m
                .opt_f32("rope.scale_linear")
                .filter(|f| *f > 0.0)
                .map_or(1.0, |f| 1.0 / f),
        };
        let mut hp = Hparams {
            arch,
            arch_name: arch_name.to_string(),
            n_vocab,
            n_ctx_train: m.opt_usize("context_length").unwrap_or(2048),
            n_embd,
            n_layer: m.usize("block_count")?,
            n_head,
            n_head_kv,
            head_dim,
            head_dim_v,
            n_ff: m.usize("feed_forward_length")?,
            n_rot,
            norm_eps: m.opt_f32("attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
            rope_style: RopeStyle::Normal,
            rope_base,
            rope_freq_scale,
            rope_base_swa: rope_base,
            rope_freq_scale_swa: rope_freq_scale,
            sliding_window: 0,
            swa_pattern: 0,
            attn_scale: 1.0 / (head_dim as f32).sqrt(),
            embd_scale: 1.0,
            final_logit_softcap: m.opt_f32("final_logit_softcapping").filter(|c| *c > 0.0),
        };
        match arch {
            Arch::Llama => {}
            Arch::Qwen2 => qwen2::adjust_hparams(&mut hp),
            Arch::Phi3 => phi3::adjust_hparams(&mut hp),
            Arch::Gemma3 => gemma3::adjust_hparams(&mut hp, m.opt_usize("attention.sliding_window").unwrap_or(0)),
        }
        Ok(hp)
    }

    /// Whether layer `il` attends through the sliding window.
    pub fn is_swa(&self, il: usize) -> bool {
        self.sliding_window > 0 && (self.swa_pattern == 0 || il % self.swa_pattern < self.swa_pattern - 1)
    }

    /// Width of a query row (all heads).
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    /// Width of a key row (all KV heads).
    pub fn k_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }

    /// Width of a value row (all KV heads).
    pub fn v_dim(&self) -> usize {
        self.n_head_kv * self.head_dim_v
    }
}

/// A weight matrix in the file: where its bytes are and how to read them.
#[derive(Debug, Clone)]
pub(crate) struct Tensor {
    pub ty: GgmlType,
    /// Output features.
    pub rows: usize,
    /// Input features (row length).
    pub cols: usize,
    /// Byte range in the file.
    pub start: usize,
    pub len: usize,
    /// The rows repacked for the CPU kernels in use, when they have a layout for the type that
    /// runs faster than the file's, or copied into the packed weights' huge pages where they
    /// have not (`ModelOptions::repack`); the products then read these.
    pub packed: Option<Arc<PackedMatrix>>,
}

impl Tensor {
    /// The matrix as a kernel view over the file's bytes (checked when loaded).
    fn view<'a>(&self, file: &'a [u8]) -> WeightMatrix<'a> {
        WeightMatrix {
            ty: self.ty,
            rows: self.rows,
            cols: self.cols,
            data: &file[self.start..self.start + self.len],
        }
    }

    fn bytes<'a>(&self, file: &'a [u8]) -> &'a [u8] {
        &file[self.start..self.start + self.len]
    }
}

/// One transformer block's weights. Architectures use the parts they have.
#[derive(Debug)]
pub(crate) struct Layer {
    /// `[n_embd]`
    pub attn_norm: Vec<f32>,
    /// Separate projections `[q_dim x n_embd]`, `[k_dim x n_embd]`, `[v_dim x n_embd]` ...
    pub wq: Option<Tensor>,
    pub wk: Option<Tensor>,
    pub wv: Option<Tensor>,
    /// ... or one fused `[(q_dim + k_dim + v_dim) x n_embd]` (phi3).
    pub wqkv: Option<Tensor>,
    /// Biases `[q_dim]`, `[k_dim]`, `[v_dim]` (qwen2).
    pub bq: Option<Vec<f32>>,
    pub bk: Option<Vec<f32>>,
    pub bv: Option<Vec<f32>>,
    /// Per-head norms `[head_dim]` applied before rope (gemma3).
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
    /// `[n_embd x n_head * head_dim_v]`
    pub wo: Tensor,
    /// `[n_embd]`, on the attention output before the residual add (gemma3).
    pub post_attn_norm: Option<Vec<f32>>,
    /// `[n_embd]`
    pub ffn_norm: Vec<f32>,
    /// `[n_ff x n_embd]`; None when `up` is fused `[2 n_ff x n_embd]` with the gate first (phi3).
    pub gate: Option<Tensor>,
    pub up: Tensor,
    /// `[n_embd x n_ff]`
    pub down: Tensor,
    /// `[n_embd]`, on the FFN output before the residual add (gemma3).
    pub post_ffn_norm: Option<Vec<f32>>,
    /// Q, K and V (or gate and up) repacked as one matrix when they share a packed type, so a
    /// step runs one product where it ran three (two); set by `Weights::repack`, which then
    /// drops the separate packed copies.
    pub qkv_packed: Option<Arc<PackedMatrix>>,
    pub gate_up_packed: Option<Arc<PackedMatrix>>,
}

impl Layer {
    /// The weight matrices the layer has.
    pub fn matrices(&self) -> impl Iterator<Item = &Tensor> {
        [&self.wq, &self.wk, &self.wv, &self.wqkv, &self.gate]
            .into_iter()
            .flatten()
            .chain([&self.wo, &self.up, &self.down])
    }
}

/// All of a model's weights.
#[derive(Debug)]
pub(crate) struct Weights {
    /// `[n_vocab x n_embd]`, looked up row by row.
    pub tok_embd: Tensor,
    pub layers: Vec<Layer>,
    /// `[n_embd]`
    pub output_norm: Vec<f32>,
    /// `[n_vocab x n_embd]`; the embedding table itself when the model ties them.
    pub output: Tensor,
    /// Rope of the global layers and of the sliding-window layers.
    pub rope: Rope,
    pub rope_swa: Rope,
}

impl Weights {
    /// Repacks every matrix `table` has a packed layout for (in parallel; the embedding table
    /// stays in the file, only its rows are read), all into one map in the order a decode step
    /// reads them ([`PackedMatrix::pack_all`]); the map holds a copy of the other matrices'
    /// rows too, where the table packs any (huge pages).
    fn repack(&mut self, table: &KernelTable, file: &[u8]) {
        /// Where a packed matrix goes.
        enum Dest {
            Qkv(usize),
            GateUp(usize),
            /// Layer, and which of its matrices (`matrix`).
            One(usize, usize),
            Output,
        }
        /// Matrix `i` of a layer's q, k, v, fused qkv, o, gate, up and down, where it has one.
        fn matrix(l: &Layer, i: usize) -> Option<&Tensor> {
            match i {
                0 => l.wq.as_ref(),
                1 => l.wk.as_ref(),
                2 => l.wv.as_ref(),
                3 => l.wqkv.as_ref(),
                4 => Some(&l.wo),
                5 => l.gate.as_ref(),
                6 => Some(&l.up),
                _ => Some(&l.down),
            }
        }
        fn matrix_mut(l: &mut Layer, i: usize) -> Option<&mut Tensor> {
            match i {
                0 => l.wq.as_mut(),
                1 => l.wk.as_mut(),
                2 => l.wv.as_mut(),
                3 => l.wqkv.as_mut(),
                4 => Some(&mut l.wo),
                5 => l.gate.as_mut(),
                6 => Some(&mut l.up),
                _ => Some(&mut l.down),
            }
        }
        // Q/K/V and gate/up stacked where they share a packed type; every other matrix alone.
        let mut jobs: Vec<(Dest, Vec<WeightMatrix>)> = Vec::new();
        for (il, l) in self.layers.iter().enumerate() {
            let mut add = |stacked: Option<(Dest, &[usize])>, alone: &[usize]| {
                if let Some((dest, ix)) = stacked {
                    let ws: Option<Vec<_>> = ix.iter().map(|&i| matrix(l, i).map(|t| t.view(file))).collect();
                    if let Some(ws) = ws.filter(|ws| PackedMatrix::packs(table, &ws.iter().collect::<Vec<_>>())) {
                        jobs.push((dest, ws));
                        return;
                    }
                }
                for &i in alone {
                    if let Some(t) = matrix(l, i) {
                        jobs.push((Dest::One(il, i), vec![t.view(file)]));
                    }
                }
            };
            add(Some((Dest::Qkv(il), &[0, 1, 2])), &[0, 1, 2]);
            add(None, &[3, 4]);
            add(Some((Dest::GateUp(il), &[5, 6])), &[5, 6]);
            add(None, &[7]);
        }
        jobs.push((Dest::Output, vec![self.output.view(file)]));
        let sets: Vec<Vec<&WeightMatrix>> = jobs.iter().map(|(_, ws)| ws.iter().collect()).collect();
        let packed = PackedMatrix::pack_all(table, &sets);
        for ((dest, _), p) in jobs.into_iter().zip(packed) {
            let p = p.map(Arc::new);
            match dest {
                Dest::Qkv(il) => self.layers[il].qkv_packed = p,
                Dest::GateUp(il) => self.layers[il].gate_up_packed = p,
                Dest::One(il, i) => {
                    if let Some(t) = matrix_mut(&mut self.layers[il], i) {
                        t.packed = p;
                    }
                }
                Dest::Output => self.output.packed = p,
            }
        }
    }
}

/// Runs `f` on the model's threads (`pool`; none: the caller's rayon context). A step of one
/// token runs on the calling thread, its loops on the kernels' team for the pool's thread count
/// ([`ferro_kernels::with_threads`]): handed to a pool thread, each token cost ~3% more on
/// SmolLM2 (DEVELOPERS.md). Longer steps run in the pool, whose threads their rayon loops use.
fn on_threads<R: Send>(pool: &Option<rayon::ThreadPool>, tokens: usize, f: impl FnOnce() -> R + Send) -> R {
    match pool {
        Some(p) if tokens <= 1 => ferro_kernels::with_threads(p.current_num_threads(), f),
        Some(p) => p.install(f),
        None => f(),
    }
}

/// Reads tensors by name, checking shapes and kernel support.
pub(crate) struct Loader<'a> {
    pub g: &'a Gguf,
}

impl Loader<'_> {
    fn err(name: &str, reason: String) -> ModelError {
        ModelError::Tensor {
            name: name.into(),
            reason,
        }
    }

    /// A matrix of `rows` rows of `cols` elements.
    pub fn matrix(&self, name: &str, cols: usize, rows: usize) -> Result<Tensor> {
        self.opt_matrix(name, cols, rows)?
            .ok_or_else(|| Self::err(name, "missing".into()))
    }

    pub fn opt_matrix(&self, name: &str, cols: usize, rows: usize) -> Result<Option<Tensor>> {
        let Some(info) = self.g.tensor_info(name) else {
            return Ok(None);
        };
        let d = &info.dims;
        let shape_ok = d.len() >= 2 && d[0] as usize == cols && d[1] as usize == rows && d[2..].iter().all(|&x| x == 1);
        if !shape_ok {
            return Err(Self::err(name, format!("expected shape [{cols}, {rows}], found {d:?}")));
        }
        if !is_supported(info.ty) {
            return Err(Self::err(
                name,
                format!("type {} is not supported by ferro's kernels", info.ty),
            ));
        }
        let t = Tensor {
            ty: info.ty,
            rows,
            cols,
            start: info.offset as usize,
            len: info.n_bytes as usize,
            packed: None,
        };
        // Validate once here so the forward pass can build views without checks.
        WeightMatrix::new(t.ty, rows, cols, t.bytes(self.g.bytes())).map_err(|source| ModelError::Kernel {
            name: name.into(),
            source,
        })?;
        Ok(Some(t))
    }

    /// A vector of `n` elements, converted to f32 (norm weights, biases: tiny).
    pub fn vector(&self, name: &str, n: usize) -> Result<Vec<f32>> {
        self.opt_vector(name, n)?
            .ok_or_else(|| Self::err(name, "missing".into()))
    }

    pub fn opt_vector(&self, name: &str, n: usize) -> Result<Option<Vec<f32>>> {
        let Some(info) = self.g.tensor_info(name) else {
            return Ok(None);
        };
        if info.n_elements() != n as u64 {
            return Err(Self::err(name, format!("expected {n} elements, found {:?}", info.dims)));
        }
        let mut out = vec![0.0; n];
        dequantize_row(info.ty, self.g.tensor_data(info), &mut out).map_err(|source| ModelError::Kernel {
            name: name.into(),
            source,
        })?;
        Ok(Some(out))
    }

    /// The embedding table, and the output matrix (tied to it when `output.weight` is absent).
    pub fn embeddings(&self, hp: &Hparams) -> Result<(Tensor, Tensor)> {
        let embd = self.matrix("token_embd.weight", hp.n_embd, hp.n_vocab)?;
        let output = self
            .opt_matrix("output.weight", hp.n_embd, hp.n_vocab)?
            .unwrap_or_else(|| embd.clone());
        Ok((embd, output))
    }

    /// The rope of the global and of the sliding-window layers, with frequency factors from
    /// `rope_freqs.weight` (llama3) or `factors_tensor`, or computed from `rope.scaling.*`.
    pub fn ropes(&self, hp: &Hparams, factors_tensor: &str) -> Result<(Rope, Rope)> {
        let m = Meta {
            g: self.g,
            arch: &hp.arch_name,
        };
        let half = hp.n_rot / 2;
        let mut factors = self.opt_vector(factors_tensor, half)?;
        if factors.is_none() && m.opt_str("rope.scaling.type") == Some("llama3") {
            factors = Some(ops::llama3_rope_factors(
                hp.n_rot,
                hp.rope_base,
                m.opt_f32("rope.scaling.factor").unwrap_or(8.0),
                m.opt_f32("rope.scaling.low_freq_factor").unwrap_or(1.0),
                m.opt_f32("rope.scaling.high_freq_factor").unwrap_or(4.0),
                m.opt_usize("rope.scaling.original_context_length").unwrap_or(8192) as f32,
            ));
        }
        let rope = Rope::new(
            hp.rope_style,
            hp.n_rot,
            hp.rope_base,
            hp.rope_freq_scale,
            factors.as_deref(),
        );
        let rope_swa = Rope::new(
            hp.rope_style,
            hp.n_rot,
            hp.rope_base_swa,
            hp.rope_freq_scale_swa,
            factors.as_deref(),
        );
        Ok((rope, rope_swa))
    }

    /// The tensors every llama-like block has: norms, attention output, FFN down.
    pub fn layer_common(&self, hp: &Hparams, il: usize) -> Result<(Vec<f32>, Tensor, Vec<f32>, Tensor)> {
        let p = format!("blk.{il}");
        Ok((
            self.vector(&format!("{p}.attn_norm.weight"), hp.n_embd)?,
            self.matrix(&format!("{p}.attn_output.weight"), hp.n_head * hp.head_dim_v, hp.n_embd)?,
            self.vector(&format!("{p}.ffn_norm.weight"), hp.n_embd)?,
            self.matrix(&format!("{p}.ffn_down.weight"), hp.n_ff, hp.n_embd)?,
        ))
    }

    /// A block with separate Q/K/V and gate/up projections (llama, qwen2, gemma3).
    pub fn layer_separate(&self, hp: &Hparams, il: usize) -> Result<Layer> {
        let p = format!("blk.{il}");
        let (attn_norm, wo, ffn_norm, down) = self.layer_common(hp, il)?;
        Ok(Layer {
            attn_norm,
            wq: Some(self.matrix(&format!("{p}.attn_q.weight"), hp.n_embd, hp.q_dim())?),
            wk: Some(self.matrix(&format!("{p}.attn_k.weight"), hp.n_embd, hp.k_dim())?),
            wv: Some(self.matrix(&format!("{p}.attn_v.weight"), hp.n_embd, hp.v_dim())?),
            wqkv: None,
            bq: self.opt_vector(&format!("{p}.attn_q.bias"), hp.q_dim())?,
            bk: self.opt_vector(&format!("{p}.attn_k.bias"), hp.k_dim())?,
            bv: self.opt_vector(&format!("{p}.attn_v.bias"), hp.v_dim())?,
            q_norm: None,
            k_norm: None,
            wo,
            post_attn_norm: None,
            ffn_norm,
            gate: Some(self.matrix(&format!("{p}.ffn_gate.weight"), hp.n_embd, hp.n_ff)?),
            up: self.matrix(&format!("{p}.ffn_up.weight"), hp.n_embd, hp.n_ff)?,
            down,
            post_ffn_norm: None,
            qkv_packed: None,
            gate_up_packed: None,
        })
    }
}

/// Scratch buffers for a batch of up to `n_batch` tokens, allocated once.
#[derive(Debug)]
pub struct RunState {
    pub n_batch: usize,
    /// `[n_batch][n_embd]` residual stream
    pub x: Vec<f32>,
    /// `[n_batch][n_embd]` normalized input of a sub-block
    pub xb: Vec<f32>,
    /// `[n_batch][n_embd]` output of a sub-block
    pub xb2: Vec<f32>,
    /// `[n_batch][n_head * head_dim]`
    pub q: Vec<f32>,
    /// `[n_batch][n_head_kv * head_dim]`
    pub k: Vec<f32>,
    /// `[n_batch][n_head_kv * head_dim_v]`
    pub v: Vec<f32>,
    /// `[n_batch][q_dim + k_dim + v_dim]` fused QKV output (empty unless the model fuses it)
    pub qkv: Vec<f32>,
    /// `[n_batch][n_head * head_dim_v]` attention output, heads concatenated
    pub att: Vec<f32>,
    /// `[n_batch][n_ff]` gate activations, then the gated product
    pub hb: Vec<f32>,
    /// `[n_batch][n_ff]` up projection (`[n_batch][2 n_ff]` when gate/up are fused)
    pub hb2: Vec<f32>,
    /// `[n][n_vocab]` logits of the tokens asked for; grows on first use of `Logits::All`
    pub logits: Vec<f32>,
    /// Rope angles of the last position roped, per rope: every layer of a decode step ropes
    /// at the same position (gemma3 alternates two ropes).
    pub(crate) rope_angles: Vec<RopeAngles>,
}

/// A rope's (by address) `(sin, cos)` pairs at one position.
#[derive(Debug)]
pub(crate) struct RopeAngles {
    rope: usize,
    pos: usize,
    sc: Vec<(f32, f32)>,
}

impl RunState {
    fn new(hp: &Hparams, n_batch: usize, fused_qkv: bool, fused_up: bool) -> Self {
        let b = n_batch;
        RunState {
            n_batch,
            x: vec![0.0; b * hp.n_embd],
            xb: vec![0.0; b * hp.n_embd],
            xb2: vec![0.0; b * hp.n_embd],
            q: vec![0.0; b * hp.q_dim()],
            k: vec![0.0; b * hp.k_dim()],
            v: vec![0.0; b * hp.v_dim()],
            qkv: if fused_qkv {
                vec![0.0; b * (hp.q_dim() + hp.k_dim() + hp.v_dim())]
            } else {
                Vec::new()
            },
            att: vec![0.0; b * hp.n_head * hp.head_dim_v],
            hb: vec![0.0; b * hp.n_ff],
            hb2: vec![0.0; b * hp.n_ff * if fused_up { 2 } else { 1 }],
            logits: vec![0.0; hp.n_vocab],
            rope_angles: Vec::new(),
        }
    }
}

/// Which logits [`Model::forward`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// `[n_vocab]` for the last token.
    Last,
    /// `[n_tokens][n_vocab]` for every token.
    All,
    /// None (filling the cache only).
    None,
}

/// The most worker threads a model runs on (llama.cpp's limit too). Decode's workers spin
/// between products, so thousands of them on a few cores take minutes a token.
pub const MAX_THREADS: usize = 512;

/// Options for [`Model::load`].
#[derive(Debug, Clone)]
pub struct ModelOptions {
    /// Context size; 0 = the smaller of 4096 and the training context.
    pub n_ctx: usize,
    /// Most tokens one internal forward step processes (bounds the scratch buffers).
    pub n_batch: usize,
    /// Worker threads; 0 = rayon's default (one per core). At most [`MAX_THREADS`].
    pub threads: usize,
    /// Repack the matrices whose type the CPU kernels in use read faster in a layout of their
    /// own (x86: Q4_0, Q4_1, Q8_0 and Q4_K, eight rows interleaved; Q/K/V and gate/up stacked
    /// into one matrix each where they share a type), as llama.cpp's CPU backend does for Q4_0,
    /// and copy the other matrices as they are beside them, into transparent huge pages.
    /// Costs a copy of the weights in memory and a pass over them at load; false keeps every
    /// weight in the memory map. Default: true, unless the environment sets `FERRO_REPACK=0`.
    pub repack: bool,
    /// Independent sequences the GPU backend's KV cache holds, allocated at load (the server's
    /// `--parallel`); the CPU's cache is resized by `set_slots` instead. Default 1.
    pub n_slots: usize,
    /// Element type of the KV cache's values. None (the default, unless the environment sets
    /// `FERRO_CACHE_TYPE`): each device's own, f32 on the CPU, f16-rounded values on the GPU
    /// (llama.cpp's default there). The GPU holds f32 buffers either way; f32 there leaves the
    /// keys and values unrounded.
    pub cache_type: Option<KvType>,
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions {
            n_ctx: 0,
            n_batch: 256,
            threads: 0,
            n_slots: 1,
            repack: std::env::var("FERRO_REPACK").map_or(true, |v| v.trim() != "0"),
            cache_type: std::env::var("FERRO_CACHE_TYPE").ok().and_then(|v| v.parse().ok()),
        }
    }
}

/// A loaded model: weights in the memory map, KV cache, scratch buffers and thread pool.
pub struct Model {
    gguf: Arc<Gguf>,
    hp: Hparams,
    w: Weights,
    kv: KvCache,
    s: RunState,
    pool: Option<rayon::ThreadPool>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("hparams", &self.hp)
            .field("n_ctx", &self.kv.n_ctx)
            .finish()
    }
}

impl Model {
    /// Open a GGUF file and load the model in it.
    pub fn load(path: impl AsRef<Path>, opts: &ModelOptions) -> Result<Model> {
        Self::from_gguf(Arc::new(Gguf::open(path)?), opts)
    }

    /// Load the model of an opened file.
    pub fn from_gguf(gguf: Arc<Gguf>, opts: &ModelOptions) -> Result<Model> {
        let hp = Hparams::from_gguf(&gguf)?;
        let loader = Loader { g: &gguf };
        let mut w = match hp.arch {
            Arch::Llama => llama::load(&loader, &hp)?,
            Arch::Qwen2 => qwen2::load(&loader, &hp)?,
            Arch::Phi3 => phi3::load(&loader, &hp)?,
            Arch::Gemma3 => gemma3::load(&loader, &hp)?,
        };
        let n_ctx = if opts.n_ctx == 0 {
            hp.n_ctx_train.min(4096)
        } else {
            opts.n_ctx
        };
        let n_batch = opts.n_batch.clamp(1, n_ctx.max(1));
        let cache_type = opts.cache_type.unwrap_or(KvType::F32);
        let kv =
            KvCache::new(hp.n_layer, n_ctx, hp.n_head_kv, hp.k_dim(), hp.v_dim(), cache_type).map_err(|reason| {
                ModelError::CacheTooLarge {
                    n_ctx,
                    n_slots: 1,
                    reason,
                }
            })?;
        if opts.threads > MAX_THREADS {
            return Err(ModelError::ThreadPool {
                threads: opts.threads,
                reason: format!("at most {MAX_THREADS} are supported"),
            });
        }
        let pool = if opts.threads > 0 {
            Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(opts.threads)
                    .build()
                    .map_err(|e| ModelError::ThreadPool {
                        threads: opts.threads,
                        reason: e.to_string(),
                    })?,
            )
        } else {
            None
        };
        if opts.repack {
            let table = KernelTable::get();
            let file = gguf.bytes();
            match &pool {
                Some(pool) => pool.install(|| w.repack(table, file)),
                None => w.repack(table, file),
            }
        }
        // Fused outputs where any layer has them (the file's, or stacked by the repack).
        let fused_qkv = w.layers.iter().any(|l| l.wqkv.is_some() || l.qkv_packed.is_some());
        let fused_up = w.layers.iter().any(|l| l.gate.is_none() || l.gate_up_packed.is_some());
        let s = RunState::new(&hp, n_batch, fused_qkv, fused_up);
        Ok(Model {
            gguf,
            hp,
            w,
            kv,
            s,
            pool,
        })
    }

    pub fn hparams(&self) -> &Hparams {
        &self.hp
    }

    /// The file the model was loaded from (tokenizer and chat template live in its metadata).
    pub fn gguf(&self) -> &Arc<Gguf> {
        &self.gguf
    }

    /// Context size: positions the KV cache holds.
    pub fn n_ctx(&self) -> usize {
        self.kv.n_ctx
    }

    pub fn n_vocab(&self) -> usize {
        self.hp.n_vocab
    }

    /// Bytes of weights a decode step reads (every matrix once, one embedding row aside).
    pub fn weight_bytes(&self) -> usize {
        let mut n = if self.w.output.start == self.w.tok_embd.start {
            self.w.output.len
        } else {
            self.w.output.len + self.w.tok_embd.len / self.hp.n_vocab
        };
        for l in &self.w.layers {
            for t in l.matrices() {
                n += t.len;
            }
        }
        n
    }

    /// Bytes held by the KV cache.
    pub fn kv_cache_bytes(&self) -> usize {
        self.kv.size_bytes()
    }

    /// Run `tokens` at positions `pos..pos + tokens.len()`, filling the KV cache, and return
    /// the logits asked for: `[n_vocab]` for `Logits::Last`, `[tokens.len()][n_vocab]` for
    /// `Logits::All`, empty for `Logits::None`. Positions after `pos` are overwritten.
    pub fn forward(&mut self, tokens: &[u32], pos: usize, which: Logits) -> Result<&[f32]> {
        let n_ctx = self.kv.n_ctx;
        if tokens.is_empty() {
            return Ok(&[]);
        }
        if pos + tokens.len() > n_ctx {
            return Err(ModelError::ContextFull {
                n_tokens: tokens.len(),
                pos,
                n_ctx,
            });
        }
        let n_vocab = self.hp.n_vocab;
        if let Some(&id) = tokens.iter().find(|&&t| t as usize >= n_vocab) {
            return Err(ModelError::BadToken { id, n_vocab });
        }
        let want = match which {
            Logits::Last => n_vocab,
            Logits::All => tokens.len() * n_vocab,
            Logits::None => 0,
        };
        if self.s.logits.len() < want {
            self.s.logits.resize(want, 0.0);
        }
        let Model {
            gguf,
            hp,
            w,
            kv,
            s,
            pool,
            ..
        } = self;
        let file = gguf.bytes();
        let run = || -> Result<()> {
            let b = s.n_batch;
            let n_chunks = tokens.len().div_ceil(b);
            for (ci, chunk) in tokens.chunks(b).enumerate() {
                let p = pos + ci * b;
                let out = match which {
                    Logits::All => Some((0..chunk.len(), ci * b)),
                    Logits::Last if ci + 1 == n_chunks => Some((chunk.len() - 1..chunk.len(), 0)),
                    _ => None,
                };
                forward_batch(hp, w, kv, s, file, chunk, p, out)?;
            }
            Ok(())
        };
        on_threads(pool, tokens.len(), run)?;
        Ok(&self.s.logits[..want])
    }
}

/// One sequence's part of a multi-sequence step ([`Model::forward_batch`]).
#[derive(Debug, Clone, Copy)]
pub struct SeqStep<'a> {
    /// KV cache slot of the sequence (`0..n_slots`).
    pub slot: usize,
    /// Position of `tokens[0]` in the sequence; the slot's positions before it are reused.
    pub pos: usize,
    pub tokens: &'a [u32],
    /// Whether to return the logits of the last token.
    pub logits: bool,
}

impl Model {
    /// Reallocate the KV cache for `n_slots` independent sequences of `n_ctx()` positions each
    /// (everything cached is dropped). [`Model::forward`] uses slot 0.
    pub fn set_slots(&mut self, n_slots: usize) -> Result<()> {
        let hp = &self.hp;
        let n_ctx = self.kv.n_ctx;
        self.kv = KvCache::with_slots(
            hp.n_layer,
            n_ctx,
            n_slots,
            hp.n_head_kv,
            hp.k_dim(),
            hp.v_dim(),
            self.kv.ty(),
        )
        .map_err(|reason| ModelError::CacheTooLarge { n_ctx, n_slots, reason })?;
        Ok(())
    }

    /// Sequences the KV cache holds.
    pub fn n_slots(&self) -> usize {
        self.kv.n_slots
    }

    /// Copy the first `n` cached positions of slot `from` into slot `to` (a shared prefix).
    pub fn copy_prefix(&mut self, from: usize, to: usize, n: usize) {
        if from < self.kv.n_slots && to < self.kv.n_slots {
            self.kv.copy_prefix(from, to, n);
        }
    }

    fn check_step(&self, st: &SeqStep) -> Result<()> {
        let n_ctx = self.kv.n_ctx;
        if st.slot >= self.kv.n_slots {
            return Err(ModelError::BadSlot {
                slot: st.slot,
                n_slots: self.kv.n_slots,
            });
        }
        if st.pos + st.tokens.len() > n_ctx {
            return Err(ModelError::ContextFull {
                n_tokens: st.tokens.len(),
                pos: st.pos,
                n_ctx,
            });
        }
        let n_vocab = self.hp.n_vocab;
        if let Some(&id) = st.tokens.iter().find(|&&t| t as usize >= n_vocab) {
            return Err(ModelError::BadToken { id, n_vocab });
        }
        Ok(())
    }

    /// Run one step of several sequences together: each `seqs[i].tokens` at its positions in
    /// its own slot. Every weight matrix is read once for all tokens of the step; attention runs
    /// per sequence. Returns `[k][n_vocab]`: the last token's logits of each sequence that asked
    /// for them, in order. A sequence's results do not depend on the others in the step.
    pub fn forward_batch(&mut self, seqs: &[SeqStep]) -> Result<&[f32]> {
        for (i, st) in seqs.iter().enumerate() {
            self.check_step(st)?;
            if seqs[..i].iter().any(|o| o.slot == st.slot) {
                return Err(ModelError::BadSlot {
                    slot: st.slot,
                    n_slots: self.kv.n_slots,
                });
            }
        }
        let n_vocab = self.hp.n_vocab;
        let n_out = seqs.iter().filter(|st| st.logits && !st.tokens.is_empty()).count();
        if self.s.logits.len() < n_out * n_vocab {
            self.s.logits.resize(n_out * n_vocab, 0.0);
        }
        let Model {
            gguf,
            hp,
            w,
            kv,
            s,
            pool,
            ..
        } = self;
        let file = gguf.bytes();
        let run = || -> Result<()> {
            let b = s.n_batch;
            let mut tokens: Vec<u32> = Vec::with_capacity(b);
            let mut spans: Vec<Span> = Vec::new();
            let mut rows: Vec<(usize, usize)> = Vec::new();
            let mut next_out = 0;
            for st in seqs {
                let mut done = 0;
                while done < st.tokens.len() {
                    let take = (b - tokens.len()).min(st.tokens.len() - done);
                    spans.push(Span {
                        start: tokens.len(),
                        len: take,
                        slot: st.slot,
                        pos: st.pos + done,
                    });
                    tokens.extend_from_slice(&st.tokens[done..done + take]);
                    done += take;
                    if done == st.tokens.len() && st.logits {
                        rows.push((tokens.len() - 1, next_out));
                        next_out += 1;
                    }
                    if tokens.len() == b {
                        forward_spans(hp, w, kv, s, file, &tokens, &spans, Output::Logits(&rows))?;
                        tokens.clear();
                        spans.clear();
                        rows.clear();
                    }
                }
            }
            if !tokens.is_empty() {
                forward_spans(hp, w, kv, s, file, &tokens, &spans, Output::Logits(&rows))?;
            }
            Ok(())
        };
        on_threads(pool, seqs.iter().map(|st| st.tokens.len()).sum(), run)?;
        Ok(&self.s.logits[..n_out * n_vocab])
    }

    /// Sentence embedding of `tokens`: the mean over tokens of the final normed hidden state,
    /// scaled to unit length. Runs in `slot` from position 0 (overwriting what it held).
    pub fn embed(&mut self, slot: usize, tokens: &[u32]) -> Result<Vec<f32>> {
        let st = SeqStep {
            slot,
            pos: 0,
            tokens,
            logits: false,
        };
        self.check_step(&st)?;
        let mut sum = vec![0f32; self.hp.n_embd];
        let Model {
            gguf,
            hp,
            w,
            kv,
            s,
            pool,
            ..
        } = self;
        let file = gguf.bytes();
        let run = || -> Result<()> {
            let b = s.n_batch;
            for (ci, chunk) in tokens.chunks(b).enumerate() {
                let spans = [Span {
                    start: 0,
                    len: chunk.len(),
                    slot,
                    pos: ci * b,
                }];
                forward_spans(hp, w, kv, s, file, chunk, &spans, Output::HiddenSum(&mut sum))?;
            }
            Ok(())
        };
        on_threads(pool, tokens.len(), run)?;
        unit_length(&mut sum);
        Ok(sum)
    }
}

/// Scales `v` to length 1 (a zero vector stays zero): the mean of [`Model::embed`]'s rows
/// points the same way as their sum.
pub(crate) fn unit_length(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// [`mm`] of a packed matrix (`x` and `y` may be longer than `n` rows).
fn mm_packed(p: &PackedMatrix, x: &[f32], n: usize, y: &mut [f32]) {
    matmul_packed(p, &x[..n * p.cols], n, &mut y[..n * p.rows])
}

/// `y[n][rows] = x[n][cols] · Wᵀ`: matvec for one token, matmul for a batch.
fn mm(t: &Tensor, file: &[u8], x: &[f32], n: usize, y: &mut [f32]) {
    if let Some(p) = &t.packed {
        return mm_packed(p, x, n, y);
    }
    let x = &x[..n * t.cols];
    let y = &mut y[..n * t.rows];
    let w = t.view(file);
    if n == 1 {
        matvec(&w, x, y);
    } else {
        matmul(&w, x, n, y);
    }
}

/// `rope`'s angles at `pos` from `cache` (see [`RunState::rope_angles`]), computed when the
/// position is new.
fn rope_angles<'a>(cache: &'a mut Vec<RopeAngles>, rope: &Rope, pos: usize) -> &'a [(f32, f32)] {
    let key = rope as *const Rope as usize;
    let i = match cache.iter().position(|c| c.rope == key) {
        Some(i) => i,
        None => {
            cache.push(RopeAngles {
                rope: key,
                pos: usize::MAX,
                sc: Vec::new(),
            });
            cache.len() - 1
        }
    };
    let c = &mut cache[i];
    if c.pos != pos {
        rope.angles(pos, &mut c.sc);
        c.pos = pos;
    }
    &c.sc
}

/// Output lengths (`hdv` per head) of a decode step's attention tasks on `threads` threads: each
/// thread's even share of the `n_head` query heads, cut where the key head (`group` query heads
/// each) changes, so that a task reads its key head's rows once for all its heads.
fn decode_head_runs(n_head: usize, group: usize, threads: usize, hdv: usize) -> Vec<usize> {
    let mut lens = Vec::new();
    for k in 0..threads {
        let (mut h, end) = (k * n_head / threads, (k + 1) * n_head / threads);
        while h < end {
            let next = ((h / group + 1) * group).min(end);
            lens.push((next - h) * hdv);
            h = next;
        }
    }
    lens
}

/// `x[n][len] += b` for each row.
fn add_bias(x: &mut [f32], b: &[f32], n: usize) {
    for row in x.chunks_exact_mut(b.len()).take(n) {
        ops::add(row, b);
    }
}

/// One batch of tokens through the whole model; logits of `out.0` (rows of the batch) are
/// written to `s.logits` starting at row `out.1`.
#[allow(clippy::too_many_arguments)]
fn forward_batch(
    hp: &Hparams,
    w: &Weights,
    kv: &mut KvCache,
    s: &mut RunState,
    file: &[u8],
    tokens: &[u32],
    pos: usize,
    out: Option<(Range<usize>, usize)>,
) -> Result<()> {
    let spans = [Span {
        start: 0,
        len: tokens.len(),
        slot: 0,
        pos,
    }];
    let rows: Vec<(usize, usize)> = match out {
        Some((rows, first)) => rows.enumerate().map(|(i, r)| (r, first + i)).collect(),
        None => Vec::new(),
    };
    forward_spans(hp, w, kv, s, file, tokens, &spans, Output::Logits(&rows))
}

/// A run of consecutive tokens of one sequence inside a batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Span {
    /// First token (row) of the run in the batch.
    pub start: usize,
    pub len: usize,
    /// KV cache slot of the sequence.
    pub slot: usize,
    /// Position of the first token in its sequence.
    pub pos: usize,
}

/// What [`forward_spans`] produces after the last block.
enum Output<'a> {
    /// `(row of the batch, row of s.logits)` pairs.
    Logits(&'a [(usize, usize)]),
    /// Add every row's final-normed hidden state to this `[n_embd]` sum.
    HiddenSum(&'a mut [f32]),
}

/// One batch of tokens, made of runs of several sequences (`spans`), through the whole model.
/// Linear layers run over all tokens at once; attention runs per sequence in its own slot.
#[allow(clippy::too_many_arguments)]
fn forward_spans(
    hp: &Hparams,
    w: &Weights,
    kv: &mut KvCache,
    s: &mut RunState,
    file: &[u8],
    tokens: &[u32],
    spans: &[Span],
    out: Output,
) -> Result<()> {
    let n = tokens.len();
    let d = hp.n_embd;
    let embd = &w.tok_embd;
    for (t, &tok) in tokens.iter().enumerate() {
        let row = &mut s.x[t * d..(t + 1) * d];
        ops::embedding_row(embd.ty, embd.bytes(file), tok as usize, row).map_err(|source| ModelError::Kernel {
            name: "token_embd.weight".into(),
            source,
        })?;
        if hp.embd_scale != 1.0 {
            row.iter_mut().for_each(|v| *v *= hp.embd_scale);
        }
    }
    for (il, layer) in w.layers.iter().enumerate() {
        let rope = if hp.is_swa(il) { &w.rope_swa } else { &w.rope };
        let ctx = BlockCtx {
            hp,
            layer,
            rope,
            il,
            spans,
            n,
            file,
        };
        match hp.arch {
            Arch::Llama | Arch::Qwen2 | Arch::Phi3 => llama::block(&ctx, s, kv),
            Arch::Gemma3 => gemma3::block(&ctx, s, kv),
        }
    }
    match out {
        Output::Logits(rows) if !rows.is_empty() => {
            let m = rows.len();
            for (i, &(t, _)) in rows.iter().enumerate() {
                ops::rms_norm(
                    &mut s.xb[i * d..(i + 1) * d],
                    &s.x[t * d..(t + 1) * d],
                    &w.output_norm,
                    hp.norm_eps,
                );
            }
            let v = hp.n_vocab;
            // Rows asked for are consecutive in s.logits when they come from one call's chunk;
            // compute them into place from the first one.
            let first = rows[0].1;
            debug_assert!(rows.iter().enumerate().all(|(i, r)| r.1 == first + i));
            let logits = &mut s.logits[first * v..(first + m) * v];
            mm(&w.output, file, &s.xb, m, logits);
            if let Some(cap) = hp.final_logit_softcap {
                ops::softcap(logits, cap);
            }
        }
        Output::Logits(_) => {}
        Output::HiddenSum(sum) => {
            for t in 0..n {
                let row = &mut s.xb[..d];
                ops::rms_norm(row, &s.x[t * d..(t + 1) * d], &w.output_norm, hp.norm_eps);
                ops::add(sum, row);
            }
        }
    }
    Ok(())
}

/// What a block's forward pass needs besides the buffers.
pub(crate) struct BlockCtx<'a> {
    pub hp: &'a Hparams,
    pub layer: &'a Layer,
    pub rope: &'a Rope,
    pub il: usize,
    /// The sequences' runs of tokens that make up the batch, in row order.
    pub spans: &'a [Span],
    /// Tokens in the batch.
    pub n: usize,
    pub file: &'a [u8],
}

impl BlockCtx<'_> {
    /// `s.xb[t] = rms_norm(s.x[t]) * weight` for every token.
    pub fn norm_input(&self, s: &mut RunState, weight: &[f32]) {
        let d = self.hp.n_embd;
        for t in 0..self.n {
            ops::rms_norm(
                &mut s.xb[t * d..(t + 1) * d],
                &s.x[t * d..(t + 1) * d],
                weight,
                self.hp.norm_eps,
            );
        }
    }

    /// In-place rms_norm of each token's row of `s.xb2` (gemma's post-norms).
    pub fn post_norm(&self, s: &mut RunState, weight: &[f32]) {
        let d = self.hp.n_embd;
        ops::rms_norm_rows(&mut s.xb2[..self.n * d], weight, self.hp.norm_eps);
    }

    /// `s.x += s.xb2` (the residual connection).
    pub fn residual(&self, s: &mut RunState) {
        let m = self.n * self.hp.n_embd;
        ops::add(&mut s.x[..m], &s.xb2[..m]);
    }

    /// Q, K, V projections of `s.xb` into `s.q`, `s.k`, `s.v`, with biases.
    pub fn qkv(&self, s: &mut RunState) {
        let (l, n, f) = (self.layer, self.n, self.file);
        let (qd, kd, vd) = (self.hp.q_dim(), self.hp.k_dim(), self.hp.v_dim());
        // One product into [q | k | v] rows: the stacked copy, or phi3's fused matrix.
        let fused = match (&l.qkv_packed, &l.wqkv) {
            (Some(p), _) => {
                mm_packed(p, &s.xb, n, &mut s.qkv);
                true
            }
            (None, Some(w)) => {
                mm(w, f, &s.xb, n, &mut s.qkv);
                true
            }
            (None, None) => false,
        };
        if fused {
            for t in 0..n {
                let row = &s.qkv[t * (qd + kd + vd)..(t + 1) * (qd + kd + vd)];
                s.q[t * qd..(t + 1) * qd].copy_from_slice(&row[..qd]);
                s.k[t * kd..(t + 1) * kd].copy_from_slice(&row[qd..qd + kd]);
                s.v[t * vd..(t + 1) * vd].copy_from_slice(&row[qd + kd..]);
            }
        } else if let (Some(wq), Some(wk), Some(wv)) = (&l.wq, &l.wk, &l.wv) {
            mm(wq, f, &s.xb, n, &mut s.q);
            mm(wk, f, &s.xb, n, &mut s.k);
            mm(wv, f, &s.xb, n, &mut s.v);
        }
        if let Some(b) = &l.bq {
            add_bias(&mut s.q, b, n);
        }
        if let Some(b) = &l.bk {
            add_bias(&mut s.k, b, n);
        }
        if let Some(b) = &l.bv {
            add_bias(&mut s.v, b, n);
        }
    }

    /// Per-head RMS norms of Q and K (gemma3, qwen3), before rope.
    pub fn qk_norm(&self, s: &mut RunState) {
        let (l, n, eps) = (self.layer, self.n, self.hp.norm_eps);
        if let Some(w) = &l.q_norm {
            ops::rms_norm_rows(&mut s.q[..n * self.hp.q_dim()], w, eps);
        }
        if let Some(w) = &l.k_norm {
            ops::rms_norm_rows(&mut s.k[..n * self.hp.k_dim()], w, eps);
        }
    }

    /// Rope Q and K, append K and V to the cache, attend (causal, grouped-query, windowed on
    /// sliding-window layers) and project the heads through `wo` into `s.xb2`.
    pub fn attention(&self, s: &mut RunState, kv: &mut KvCache) {
        let hp = self.hp;
        let (n, hd) = (self.n, hp.head_dim);
        let (qd, kd, vd) = (hp.q_dim(), hp.k_dim(), hp.v_dim());
        // Each row's slot and its position in its sequence.
        let mut at = Vec::with_capacity(n);
        for sp in self.spans {
            let rows = sp.start..sp.start + sp.len;
            for (i, t) in rows.clone().enumerate() {
                let (q, k) = (&mut s.q[t * qd..(t + 1) * qd], &mut s.k[t * kd..(t + 1) * kd]);
                let sc = rope_angles(&mut s.rope_angles, self.rope, sp.pos + i);
                self.rope.rotate(&mut [q, k], hd, sc);
                at.push((sp.slot, sp.pos + i));
            }
            kv.store_slot(
                self.il,
                sp.slot,
                sp.pos,
                &s.k[rows.start * kd..rows.end * kd],
                &s.v[rows.start * vd..rows.end * vd],
            );
        }
        match kv.layer(self.il) {
            KvLayer::F16(kc, vc) => self.attend(s, &at, kc, vc, kv),
            KvLayer::F32(kc, vc) => self.attend(s, &at, kc, vc, kv),
        }
        mm(&self.layer.wo, self.file, &s.att, n, &mut s.xb2);
    }

    /// Attention of every row (`at`: its slot and its position) over the cached keys `kc` and
    /// values `vc` (this layer's, laid out as `kv` says) into `s.att`.
    fn attend<E: CacheElem>(&self, s: &mut RunState, at: &[(usize, usize)], kc: &[E], vc: &[E], kv: &KvCache) {
        let hp = self.hp;
        let (n, hd, hdv) = (self.n, hp.head_dim, hp.head_dim_v);
        let qd = hp.q_dim();
        let n_ctx = kv.n_ctx;
        let window = if hp.is_swa(self.il) { hp.sliding_window } else { 0 };
        let group = hp.n_head / hp.n_head_kv;
        let scale = hp.attn_scale;
        let q = &s.q;
        // Query heads `h0..h0 + heads` of token `t` (heads of one key head): each key and value
        // row is read once for all of them. The kernels give each head the same bits whatever
        // the grouping.
        let task = |t: usize, h0: usize, out: &mut [f32], scores: &mut Vec<f32>| {
            let heads = out.len() / hdv;
            let (slot, p) = at[t];
            let kvh = h0 / group;
            let lo = if window > 0 { (p + 1).saturating_sub(window) } else { 0 };
            let qh = &q[t * qd + h0 * hd..t * qd + (h0 + heads) * hd];
            // The key head's plane: its positions hd (hdv) elements apart.
            let (k0, v0) = kv.plane(slot, kvh);
            let len = p + 1 - lo;
            scores.clear();
            scores.resize(heads * len, 0.0);
            E::dots(qh, heads, &kc[k0 + lo * hd..], hd, scores);
            for row in scores.chunks_exact_mut(len) {
                row.iter_mut().for_each(|s| *s *= scale);
                softmax_f32(row);
            }
            out.fill(0.0);
            E::weighted_sum(scores, heads, &vc[v0 + lo * hdv..], hdv, out);
        };
        let att = &mut s.att[..n * hp.n_head * hdv];
        let threads = ferro_kernels::threads();
        if n == 1 {
            // A decode step: on the kernels' thread team, as its matrix-vector products (whose
            // spinning workers would take cores from rayon's in a prefill). Each thread's even
            // share of the query heads, cut where the key head changes.
            let lens = decode_head_runs(hp.n_head, group, threads, hdv);
            ferro_kernels::for_each_run(att, &lens, |start, out| task(0, start / hdv, out, &mut Vec::new()));
        } else {
            // One task per (token, key head) when that gives every thread four tasks, else one
            // per query head.
            let heads = if n * hp.n_head_kv >= 4 * threads { group } else { 1 };
            att.par_chunks_mut(heads * hdv).enumerate().for_each_init(
                || Vec::with_capacity(heads * n_ctx),
                |scores, (i, out)| {
                    let (t, h) = (i * heads / hp.n_head, i * heads % hp.n_head);
                    task(t, h, out, scores)
                },
            );
        }
    }

    /// Gated feed-forward of `s.xb` into `s.xb2`: `down(act(gate x) * up x)`.
    pub fn ffn(&self, s: &mut RunState, gelu: bool) {
        let (l, n, f, ff) = (self.layer, self.n, self.file, self.hp.n_ff);
        // Whether the gate is gated where the stacked product left it (one token: its gate
        // and up halves of `hb2` side by side, read by the down product in place); else in `hb`.
        let in_place = match (&l.gate, &l.gate_up_packed) {
            (Some(gate), None) => {
                mm(gate, f, &s.xb, n, &mut s.hb);
                mm(&l.up, f, &s.xb, n, &mut s.hb2);
                false
            }
            (_, stacked) => {
                // Fused [gate; up] rows (phi3's file, or stacked at load): each token's output
                // is gate then up.
                match stacked {
                    Some(p) => mm_packed(p, &s.xb, n, &mut s.hb2),
                    None => mm(&l.up, f, &s.xb, n, &mut s.hb2),
                }
                if n > 1 {
                    for t in 0..n {
                        s.hb[t * ff..(t + 1) * ff].copy_from_slice(&s.hb2[t * 2 * ff..t * 2 * ff + ff]);
                        s.hb2.copy_within(t * 2 * ff + ff..(t + 1) * 2 * ff, t * ff);
                    }
                }
                n == 1
            }
        };
        let (g, u): (&mut [f32], &[f32]) = if in_place {
            let (g, u) = s.hb2[..2 * ff].split_at_mut(ff);
            (g, u)
        } else {
            (&mut s.hb[..n * ff], &s.hb2[..n * ff])
        };
        if gelu {
            ops::geglu(g, u);
        } else {
            ops::swiglu(g, u);
        }
        let gated: &[f32] = if in_place { &s.hb2[..ff] } else { &s.hb };
        mm(&l.down, f, gated, n, &mut s.xb2);
    }
}

#[cfg(test)]
mod tests {
    use super::{decode_head_runs, rope_angles};
    use crate::ops::{Rope, RopeStyle};

    /// The cached angles are each rope's own at each position, whatever the order of calls.
    #[test]
    fn cached_rope_angles_follow_the_rope_and_the_position() {
        let a = Rope::new(RopeStyle::Normal, 64, 10000.0, 1.0, None);
        let b = Rope::new(RopeStyle::Neox, 64, 1e6, 1.0, None);
        let mut cache = Vec::new();
        for (rope, pos) in [(&a, 5), (&b, 5), (&a, 5), (&b, 6), (&a, 6), (&a, 0), (&b, 6)] {
            let mut want = Vec::new();
            rope.angles(pos, &mut want);
            assert_eq!(rope_angles(&mut cache, rope, pos), &want[..], "pos {pos}");
        }
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn decode_attention_splits_the_heads_evenly_within_key_heads() {
        // SmolLM2 (9 query heads, 3 key heads) on two threads: heads 0..4 and 4..9.
        assert_eq!(decode_head_runs(9, 3, 2, 1), [3, 1, 2, 3]);
        assert_eq!(decode_head_runs(9, 3, 2, 64), [192, 64, 128, 192]);
        // gemma3-270m (4 heads, 1 key head); the 8B (32 heads, 8 key heads).
        assert_eq!(decode_head_runs(4, 4, 2, 256), [512, 512]);
        assert_eq!(decode_head_runs(32, 4, 2, 1), [4; 8]);
        // More threads than heads: every head still runs once.
        assert_eq!(decode_head_runs(2, 2, 3, 1), [1, 1]);
        assert_eq!(decode_head_runs(6, 1, 1, 1), [1; 6]);
    }
}
