//! A whole decoder forward pass on the GPU (llama-style models: llama, mistral, qwen2, phi3; and
//! gemma3).
//!
//! The engine hands over the GGUF tensors as they are ([`WeightRef`]) and the hyper-parameters
//! ([`GpuHparams`]); the model uploads the weights once, keeps the KV cache in GPU memory, and for
//! each batch of tokens records every dispatch into one command encoder; only the logits come back.
//!
//! Per layer (llama.cpp `llm_build_llama` / `llm_build_gemma3`; optional parts run when their
//! tensors exist):
//! ```text
//! xb  = rms_norm(x) * attn_norm
//! q, k, v = Wq xb, Wk xb, Wv xb  (+ bq, bk, bv: qwen2; one fused Wqkv: phi3)
//! q, k = rms_norm per head * attn_{q,k}_norm          (gemma3, qwen3)
//! q, k = rope(q, k)                                   (normal or neox layout)
//! kv cache[pos0..pos0+n] = k, v
//! att = softmax(scale * q k^T + causal/window mask) v
//! o   = Wo att
//! x  += post_attention_norm ? rms_norm(o) * w : o     (gemma3 post-norms)
//! xb  = rms_norm(x) * ffn_norm
//! h   = act(W_gate xb) * (W_up xb)                    (SwiGLU or GeGLU; phi3: one fused W_up)
//! o   = W_down h
//! x  += post_ffw_norm ? rms_norm(o) * w : o
//! ```
//! then `logits = W_out (rms_norm(x) * output_norm)` (W_out = token_embd when tied).

use std::collections::HashMap;
use std::sync::Arc;

use ferro_gguf::{GgmlType, Gguf};

use crate::context::{
    run_positions, Glu, GpuContext, GpuTensor, GpuWeight, NormMode, Prepared, Prologue, Recorder, StepState,
    MAX_STEP_TOKENS,
};
use crate::error::{GpuError, Result};
use crate::ops::{ActQuant, AttnParams, AttnRope, Gated, PackedAct, PostAdd, RopeParams};

/// One GGUF tensor as stored in the file.
#[derive(Clone, Copy, Debug)]
pub struct WeightRef<'a> {
    /// GGUF name, e.g. `blk.3.attn_q.weight`.
    pub name: &'a str,
    pub ty: GgmlType,
    /// ggml order: dims[0] is the row length.
    pub dims: &'a [u64],
    pub bytes: &'a [u8],
}

/// Per-layer attention settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GpuLayerParams {
    pub rope_base: f32,
    /// Linear position scaling (1 / rope scaling factor; 1 = none).
    pub rope_freq_scale: f32,
    /// Sliding attention window in positions (0 = full causal attention).
    pub sliding_window: u32,
}

/// Hyper-parameters of a decoder, filled by the engine from the GGUF metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct GpuHparams {
    pub n_vocab: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    /// Rotated dimensions per head (usually head_dim).
    pub n_rot: usize,
    pub n_ff: usize,
    pub rms_eps: f32,
    /// true: neox rope layout (gemma, qwen); false: normal (llama).
    pub rope_neox: bool,
    pub glu: Glu,
    /// Multiplies the token embeddings (gemma: sqrt(n_embd); otherwise 1).
    pub embd_scale: f32,
    /// Multiplies q.k (usually 1/sqrt(head_dim); gemma3: 1/sqrt(query_pre_attn_scalar)).
    pub attn_scale: f32,
    /// Attention logit soft-capping (0 = none).
    pub attn_softcap: f32,
    /// Final logit soft-capping (0 = none).
    pub final_softcap: f32,
    pub layers: Vec<GpuLayerParams>,
    /// KV cache length (positions) of each slot.
    pub n_ctx: usize,
    /// Independent sequences the KV cache holds ([`GpuModel::forward_multi`]); 1 by default.
    pub n_slots: usize,
    /// Most tokens one forward chunk processes; longer inputs are split.
    pub n_batch: usize,
    /// Round activations before each product as llama.cpp's CPU backend does (Q8_0/Q8_K/f16,
    /// and ggml's f16 GELU table), so greedy tokens follow the CPU engine's. On by default.
    pub emulate_cpu_rounding: bool,
    /// With `emulate_cpu_rounding`, keys and values go into the cache rounded to f16 (as
    /// llama.cpp's default cache); false keeps them as computed (as the CPU engine's f32
    /// cache). On by default.
    pub kv_f16: bool,
    /// Which products of a decode step of one token round (and norm) their own input
    /// (act_fused.wgsl) instead of reading what a dispatch before them wrote: the same bits in
    /// fewer dispatches.
    pub fuse_act: FuseAct,
}

impl GpuHparams {
    /// A llama-style model: SwiGLU, normal rope, 1/sqrt(head_dim), no window.
    #[allow(clippy::too_many_arguments)]
    pub fn llama(
        n_vocab: usize,
        n_embd: usize,
        n_layer: usize,
        n_head: usize,
        n_head_kv: usize,
        n_ff: usize,
        rms_eps: f32,
        rope_base: f32,
        n_ctx: usize,
    ) -> Self {
        let head_dim = n_embd / n_head.max(1);
        Self {
            n_vocab,
            n_embd,
            n_layer,
            n_head,
            n_head_kv,
            head_dim,
            n_rot: head_dim,
            n_ff,
            rms_eps,
            rope_neox: false,
            glu: Glu::SwiGlu,
            embd_scale: 1.0,
            attn_scale: 1.0 / (head_dim as f32).sqrt(),
            attn_softcap: 0.0,
            final_softcap: 0.0,
            layers: vec![
                GpuLayerParams {
                    rope_base,
                    rope_freq_scale: 1.0,
                    sliding_window: 0,
                };
                n_layer
            ],
            n_ctx,
            n_slots: 1,
            n_batch: 512,
            emulate_cpu_rounding: true,
            kv_f16: true,
            fuse_act: FuseAct::from_env(),
        }
    }

    /// A gemma3 model: GeGLU, neox rope, embeddings scaled by sqrt(n_embd), every
    /// `swa_period`-th layer global (rope `rope_base`), the others sliding (rope `rope_base_local`).
    #[allow(clippy::too_many_arguments)]
    pub fn gemma3(
        n_vocab: usize,
        n_embd: usize,
        n_layer: usize,
        n_head: usize,
        n_head_kv: usize,
        head_dim: usize,
        n_ff: usize,
        rms_eps: f32,
        rope_base: f32,
        rope_base_local: f32,
        rope_freq_scale: f32,
        sliding_window: u32,
        swa_period: usize,
        n_ctx: usize,
    ) -> Self {
        let layers = (0..n_layer)
            .map(|il| {
                let global = swa_period == 0 || il % swa_period == swa_period - 1;
                if global {
                    GpuLayerParams {
                        rope_base,
                        rope_freq_scale,
                        sliding_window: 0,
                    }
                } else {
                    GpuLayerParams {
                        rope_base: rope_base_local,
                        rope_freq_scale: 1.0,
                        sliding_window,
                    }
                }
            })
            .collect();
        Self {
            n_vocab,
            n_embd,
            n_layer,
            n_head,
            n_head_kv,
            head_dim,
            n_rot: head_dim,
            n_ff,
            rms_eps,
            rope_neox: true,
            glu: Glu::GeGlu,
            embd_scale: (n_embd as f32).sqrt(),
            attn_scale: 1.0 / (head_dim as f32).sqrt(),
            attn_softcap: 0.0,
            final_softcap: 0.0,
            layers,
            n_ctx,
            n_slots: 1,
            n_batch: 512,
            emulate_cpu_rounding: true,
            kv_f16: true,
            fuse_act: FuseAct::from_env(),
        }
    }

    /// Reads the hyper-parameters of a `llama`, `qwen2`, `phi3` or `gemma3` GGUF (as llama.cpp's
    /// `llm_load_hparams`), with a KV cache of `n_ctx` positions.
    pub fn from_gguf(g: &Gguf, n_ctx: usize) -> Result<Self> {
        let arch = g.architecture()?.to_string();
        let key = |k: &str| format!("{arch}.{k}");
        let u = |k: &str| -> Result<usize> { Ok(g.require_u64(&key(k))? as usize) };
        let f = |k: &str, default: f32| g.get_f64(&key(k)).map(|v| v as f32).unwrap_or(default);
        let n_embd = u("embedding_length")?;
        let n_layer = u("block_count")?;
        let n_head = u("attention.head_count")?;
        let n_head_kv = g
            .get_u64(&key("attention.head_count_kv"))
            .map(|v| v as usize)
            .unwrap_or(n_head);
        let n_ff = u("feed_forward_length")?;
        let (embd_info, _) = g.tensor("token_embd.weight")?;
        let n_vocab = embd_info.n_rows() as usize;
        let head_dim = g
            .get_u64(&key("attention.key_length"))
            .map(|v| v as usize)
            .unwrap_or(n_embd / n_head.max(1));
        let eps = f("attention.layer_norm_rms_epsilon", 1e-5);
        let rope_base = f("rope.freq_base", 10000.0);
        let freq_scale = match g.get_str(&key("rope.scaling.type")) {
            Some("linear") | None => 1.0 / f("rope.scaling.factor", 1.0).max(1e-6),
            Some("none") => 1.0,
            // Llama 3.1: the factors are the file's rope_freqs tensor.
            Some("llama3") if g.tensor("rope_freqs.weight").is_ok() => 1.0,
            Some(other) => {
                return Err(GpuError::Hparams(format!("rope scaling {other}")));
            }
        };
        let n_ctx = n_ctx.max(1);
        let mut hp = match arch.as_str() {
            // qwen2 adds biases to q, k and v; phi3 fuses q/k/v and gate/up into one tensor
            // each (GpuModel::new reads what the file has); both rotate in the NeoX layout.
            "llama" | "qwen2" | "phi3" => {
                let mut hp = Self::llama(n_vocab, n_embd, n_layer, n_head, n_head_kv, n_ff, eps, rope_base, n_ctx);
                hp.head_dim = head_dim;
                hp.attn_scale = 1.0 / (head_dim as f32).sqrt();
                hp.rope_neox = arch != "llama";
                for l in &mut hp.layers {
                    l.rope_freq_scale = freq_scale;
                }
                hp
            }
            "gemma3" => {
                let mut hp = Self::gemma3(
                    n_vocab,
                    n_embd,
                    n_layer,
                    n_head,
                    n_head_kv,
                    head_dim,
                    n_ff,
                    eps,
                    rope_base,
                    10000.0,
                    freq_scale,
                    g.get_u64(&key("attention.sliding_window")).unwrap_or(0) as u32,
                    6,
                    n_ctx,
                );
                // llama.cpp: the 27B model (62 layers) scales queries by 1/sqrt(n_embd / n_head).
                if n_layer == 62 {
                    hp.attn_scale = 1.0 / ((n_embd / n_head) as f32).sqrt();
                }
                hp
            }
            other => return Err(GpuError::UnsupportedArch(other.to_string())),
        };
        hp.n_rot = g
            .get_u64(&key("rope.dimension_count"))
            .map(|v| v as usize)
            .unwrap_or(head_dim);
        hp.n_batch = hp.n_batch.min(n_ctx);
        Ok(hp)
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(GpuError::Hparams(m));
        if self.n_vocab == 0 || self.n_embd == 0 || self.n_layer == 0 || self.n_ff == 0 {
            return bad(format!("zero size in {self:?}"));
        }
        if self.n_head == 0 || self.n_head_kv == 0 || !self.n_head.is_multiple_of(self.n_head_kv) {
            return bad(format!(
                "{} heads cannot share {} kv heads",
                self.n_head, self.n_head_kv
            ));
        }
        if self.n_rot > self.head_dim || !self.n_rot.is_multiple_of(2) {
            return bad(format!("n_rot {} with head_dim {}", self.n_rot, self.head_dim));
        }
        if self.layers.len() != self.n_layer {
            return bad(format!(
                "{} layer params for {} layers",
                self.layers.len(),
                self.n_layer
            ));
        }
        if self.n_ctx == 0 || self.n_batch == 0 || self.n_slots == 0 {
            return bad("n_ctx, n_batch and n_slots must be positive".into());
        }
        if self.n_batch > MAX_STEP_TOKENS {
            return bad(format!("n_batch {} over {MAX_STEP_TOKENS}", self.n_batch));
        }
        if self.n_ctx.saturating_mul(self.n_slots) > u32::MAX as usize / 2 {
            return bad(format!("n_ctx {} x {} slots", self.n_ctx, self.n_slots));
        }
        Ok(())
    }
}

/// Scratch buffers of one batch (B = n_batch tokens).
struct Scratch {
    ids: GpuTensor,    // [B] token ids
    x: GpuTensor,      // [B][n_embd] residual stream
    x2: GpuTensor,     // [B][n_embd] the residual stream mid-layer in folded decode steps
    xb: GpuTensor,     // [B][n_embd] normed input of a block
    xb2: GpuTensor,    // [B][n_embd] block output before the residual add
    q: GpuTensor,      // [B][n_head * head_dim]
    k: GpuTensor,      // [B][n_head_kv * head_dim]
    v: GpuTensor,      // [B][n_head_kv * head_dim]
    att: GpuTensor,    // [B][n_head * head_dim]
    hg: GpuTensor,     // [B][n_ff] gate, then act(gate) * up
    hu: GpuTensor,     // [B][n_ff]
    last: GpuTensor,   // [n_slots][n_embd] hidden states of the rows whose logits are asked, then normed
    logits: GpuTensor, // [n_slots][n_vocab]
}

/// Dispatches of one layer, bound once (the KV cache, [n_ctx][n_head_kv * head_dim] each, is
/// bound by its store and attention dispatches).
struct LayerOps {
    ops: Vec<Prepared>,
    /// The same for a decode step (each token the next one of its own sequence): no rope_kv,
    /// the attention doing its work (attention_rope.wgsl).
    decode: Vec<Prepared>,
    /// A decode step of one token: `decode` with the products rounding their own inputs where
    /// they can ([`GpuHparams::fuse_act`]); None where none does (then `decode` serves).
    single: Option<Vec<Prepared>>,
}

impl LayerOps {
    /// The ops of a step of `n` tokens (`decode`: each the next one of its own sequence).
    fn for_step(&self, decode: bool, n: usize) -> &[Prepared] {
        match (decode, n, &self.single) {
            (true, 1, Some(single)) => single,
            (true, _, _) => &self.decode,
            _ => &self.ops,
        }
    }
}

/// All-token logits for perplexity: [n_tok][n_vocab] in chunks of `batch` tokens.
struct AllLogits {
    batch: usize,
    logits: GpuTensor,
    ops: Vec<Prepared>,
}

/// A decoder living on the GPU: weights, KV cache, scratch and recorded dispatches.
pub struct GpuModel {
    ctx: Arc<GpuContext>,
    hp: GpuHparams,
    step: StepState,
    s: Scratch,
    embed: Vec<Prepared>,
    layers: Vec<LayerOps>,
    head: Vec<Prepared>,
    /// The head of one row as one product that norms and rounds its input (None where it
    /// cannot or [`GpuHparams::fuse_act`] leaves it out).
    head_single: Option<Vec<Prepared>>,
    output: GpuWeight,
    output_norm: GpuTensor,
    all: Option<AllLogits>,
    /// `xb = rms_norm(x) * output_norm` for every token of a batch (embeddings).
    final_norm: Prepared,
    staging: wgpu::Buffer,
    /// Each layer's (keys, values): [n_slots * n_ctx][n_head_kv * head_dim].
    caches: Vec<(GpuTensor, GpuTensor)>,
}

/// Rows of fewer than this many weights are short for [`FuseAct::allows`].
const FUSE_LONG_K: usize = 1024;
/// Products of short rows fuse up to this many rows.
const FUSE_MAX_SHORT_ROWS: usize = 8192;
/// Products whose input is rounded in the K-quants' blocks fuse up to this many rows.
const FUSE_MAX_KQUANT_ROWS: usize = 1024;

/// Which decode products of one token round their own input ([`GpuHparams::fuse_act`]).
///
/// Each workgroup of such a product rounds the whole input before its rows, so the saved
/// dispatch is paid back once per wave of workgroups. On an H100 (stop 24): a Llama-1B shape
/// in Q4_0 decodes 8-10% faster with [`FuseAct::Blocks32`], the 8B shape in Q4_0 within
/// noise; with K-quants the 1B shape was within noise and the 8B shape 4-8% slower, so those
/// keep their rounding dispatches by default except in products of few rows (stop 25).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FuseAct {
    /// None (`FERRO_GPU_FUSE=0`).
    Off,
    /// Products whose input is rounded in blocks of 32 (Q4_0, Q4_1, Q5_0 and Q8_0 weights),
    /// and K-quant products of few rows, as [`FuseAct::allows`] says: the default.
    Blocks32,
    /// Also those rounded in the K-quants' blocks of 256 (`FERRO_GPU_FUSE=all`).
    All,
}

impl FuseAct {
    /// [`FuseAct::Blocks32`] unless `FERRO_GPU_FUSE` is `0` (off) or `all`.
    pub fn from_env() -> Self {
        match std::env::var("FERRO_GPU_FUSE").as_deref().map(str::trim) {
            Ok("0") => FuseAct::Off,
            Ok("all") => FuseAct::All,
            _ => FuseAct::Blocks32,
        }
    }

    /// Whether a product of `w` whose input is rounded as `q` rounds it itself. Under
    /// [`FuseAct::Blocks32`] not where many workgroups would each stream little after their
    /// rounding: more than [`FUSE_MAX_SHORT_ROWS`] rows of fewer than [`FUSE_LONG_K`] (the
    /// small models' output heads); and in the K-quants' blocks of 256 only up to
    /// [`FUSE_MAX_KQUANT_ROWS`] rows (a few workgroups, such as gemma3-270m's 640-row down
    /// projection: 10.0 us fused against 6.9 + 6.9 on an H100).
    fn allows(self, q: ActQuant, w: &GpuWeight) -> bool {
        match self {
            FuseAct::Off => false,
            FuseAct::Blocks32 => match q {
                ActQuant::Q8_0 => w.k() >= FUSE_LONG_K || w.n_rows() <= FUSE_MAX_SHORT_ROWS,
                ActQuant::Q8K => w.n_rows() <= FUSE_MAX_KQUANT_ROWS,
                ActQuant::None | ActQuant::F16 => false,
            },
            FuseAct::All => true,
        }
    }
}

/// Whether `FERRO_GPU_ROPE_KV=1` asks decode steps to keep the separate rope_kv dispatch.
fn separate_rope_kv() -> bool {
    static SEP: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SEP.get_or_init(|| std::env::var("FERRO_GPU_ROPE_KV").is_ok_and(|v| v.trim() == "1"))
}

/// One sequence's part of a [`GpuModel::forward_multi`] step.
#[derive(Clone, Copy, Debug)]
pub struct SeqTokens<'a> {
    /// KV cache slot (`0..n_slots`).
    pub slot: usize,
    /// Position of `tokens[0]`; the slot's positions before it are reused.
    pub pos: usize,
    pub tokens: &'a [u32],
    /// Whether to return the logits of the last token.
    pub logits: bool,
}

impl std::fmt::Debug for GpuModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuModel").field("hp", &self.hp).finish()
    }
}

struct Tensors<'a> {
    map: HashMap<&'a str, WeightRef<'a>>,
}

impl<'a> Tensors<'a> {
    fn get(&self, name: &str) -> Result<&WeightRef<'a>> {
        self.map
            .get(name)
            .ok_or_else(|| GpuError::MissingTensor(name.to_string()))
    }

    /// The matrix `name`, checked to be `rows` rows of `k`.
    fn get_matrix(&self, name: &str, k: usize, rows: usize) -> Result<&WeightRef<'a>> {
        let w = self.get(name)?;
        let n_rows: u64 = w.dims.iter().skip(1).product();
        if w.dims.first() != Some(&(k as u64)) || n_rows != rows as u64 {
            return Err(GpuError::Shape(format!(
                "{name} has dims {:?}, expected [{k}, {rows}]",
                w.dims
            )));
        }
        Ok(w)
    }

    fn matrix(&self, ctx: &GpuContext, name: &str, k: usize, rows: usize) -> Result<GpuWeight> {
        let w = self.get_matrix(name, k, rows)?;
        ctx.upload_weight(w.ty, w.dims, w.bytes)
    }

    /// The products of `k`-long inputs into `outs` (tensor name, output, rows): neighbours of
    /// one type whose outputs are consecutive views of one buffer are stacked into one weight
    /// and one dispatch (q, k and v; gate and up), unless `FERRO_GPU_STACK=0`.
    fn projections(&self, ctx: &GpuContext, k: usize, outs: &[(String, &GpuTensor, usize)]) -> Result<Vec<Proj>> {
        let stack = std::env::var("FERRO_GPU_STACK").map_or(true, |v| v.trim() != "0");
        let mut groups: Vec<Vec<(&WeightRef<'a>, &GpuTensor, usize)>> = Vec::new();
        for (name, y, rows) in outs {
            let w = self.get_matrix(name, k, *rows)?;
            // Stacked onto the previous group when of its type and writing right after it.
            let joins = |g: &Vec<(&WeightRef<'a>, &GpuTensor, usize)>| {
                let (first, prev) = (g[0].0, g[g.len() - 1].1);
                g.len() < 3 && first.ty == w.ty && prev.elems_to(y) == Some(prev.len() as u32)
            };
            match groups.last_mut() {
                Some(g) if stack && joins(g) => g.push((w, y, *rows)),
                _ => groups.push(vec![(w, y, *rows)]),
            }
        }
        groups
            .into_iter()
            .map(|g| {
                let w = match &g[..] {
                    [(w, _, _)] => ctx.upload_weight(w.ty, w.dims, w.bytes)?,
                    _ => {
                        let parts: Vec<&[u8]> = g.iter().map(|(w, _, _)| w.bytes).collect();
                        ctx.upload_stacked(g[0].0.ty, k as u64, &parts)?
                    }
                };
                Ok(Proj {
                    w,
                    outs: g.iter().map(|(_, y, rows)| ((*y).clone(), *rows)).collect(),
                })
            })
            .collect()
    }

    /// One product of a fused GGUF tensor (phi3's attn_qkv, ffn_up) whose consecutive row
    /// ranges go to `outs` (output, rows), as [`Tensors::projections`] stacks separate ones.
    fn fused_projection(&self, ctx: &GpuContext, name: &str, k: usize, outs: &[(&GpuTensor, usize)]) -> Result<Proj> {
        let rows = outs.iter().map(|(_, r)| r).sum();
        let w = self.get_matrix(name, k, rows)?;
        Ok(Proj {
            w: ctx.upload_weight(w.ty, w.dims, w.bytes)?,
            outs: outs.iter().map(|(y, r)| ((*y).clone(), *r)).collect(),
        })
    }

    /// A norm weight as f32 (GGUF stores them as F32; F16 is converted).
    fn vector(&self, ctx: &GpuContext, name: &str, n: usize) -> Result<GpuTensor> {
        ctx.upload_f32(&self.values(name, n)?)
    }

    /// The `n` values of the vector `name` as f32.
    fn values(&self, name: &str, n: usize) -> Result<Vec<f32>> {
        let w = self.get(name)?;
        let elems: u64 = w.dims.iter().product();
        if elems != n as u64 {
            return Err(GpuError::Shape(format!("{name} has dims {:?}, expected [{n}]", w.dims)));
        }
        let values: Vec<f32> = match w.ty {
            GgmlType::F32 if w.bytes.len() == n * 4 => w
                .bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            GgmlType::F16 if w.bytes.len() == n * 2 => w
                .bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            GgmlType::F32 | GgmlType::F16 => {
                return Err(GpuError::Shape(format!(
                    "{name}: {} bytes for {n} values",
                    w.bytes.len()
                )))
            }
            other => return Err(GpuError::UnsupportedType(other.name())),
        };
        Ok(values)
    }

    fn optional_vector(&self, ctx: &GpuContext, name: &str, n: usize) -> Result<Option<GpuTensor>> {
        if self.map.contains_key(name) {
            self.vector(ctx, name, n).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// One product of a layer: a weight (or several stacked) and the output of each matrix with its
/// rows.
struct Proj {
    w: GpuWeight,
    outs: Vec<(GpuTensor, usize)>,
}

impl Proj {
    fn prep(
        &self,
        c: &GpuContext,
        x: &GpuTensor,
        packed: Option<&PackedAct>,
        accumulate: bool,
        batch: usize,
    ) -> Result<Vec<Prepared>> {
        c.prep_matmul(&self.w, x, packed, &self.ys(), accumulate, batch)
    }

    fn ys(&self) -> Vec<(&GpuTensor, usize)> {
        self.outs.iter().map(|(y, rows)| (y, *rows)).collect()
    }
}

/// Rounded copies of matmul inputs (and their int8 quants for the decode product), keyed by
/// (values per token, rounding).
struct ActScratch {
    emulate: bool,
    /// Which products may round their own input ([`ActScratch::fused`]).
    fuse: FuseAct,
    batch: usize,
    bufs: HashMap<(usize, ActQuant), (GpuTensor, Option<PackedAct>)>,
}

impl ActScratch {
    /// The rounding the products with `w` see.
    fn quant(&self, w: &GpuWeight) -> ActQuant {
        if self.emulate {
            ActQuant::for_weight(w.ty())
        } else {
            ActQuant::None
        }
    }

    /// Each of `ws` as one decode product that rounds its own input, `pro` on `x` with `aux`
    /// ([`GpuContext::prep_matvec_fused`]); None if any of them cannot or `self.fuse` leaves
    /// its rounding out.
    #[allow(clippy::too_many_arguments)]
    fn fused(
        &self,
        c: &GpuContext,
        ws: &[Proj],
        pro: Prologue,
        x: &GpuTensor,
        aux: Option<&GpuTensor>,
        post: Option<PostAdd<'_>>,
        eps: f32,
        glu_f16: bool,
        accumulate: bool,
    ) -> Result<Option<Vec<Prepared>>> {
        let mut all = Vec::new();
        for p in ws {
            let q = self.quant(&p.w);
            if !self.fuse.allows(q, &p.w) {
                return Ok(None);
            }
            match c.prep_matvec_fused(&p.w, pro, x, aux, post, q, eps, glu_f16, &p.ys(), accumulate)? {
                Some(v) => all.extend(v),
                None => return Ok(None),
            }
        }
        Ok(Some(all))
    }

    /// The buffers holding inputs of `k` values rounded as `q` (and their quants).
    fn scratch(&mut self, c: &GpuContext, k: usize, q: ActQuant) -> Result<(GpuTensor, Option<PackedAct>)> {
        if let Some(b) = self.bufs.get(&(k, q)) {
            return Ok(b.clone());
        }
        let b = c.zeros(self.batch * k)?;
        let packed = PackedAct::for_rounding(c, q, k, self.batch)?;
        self.bufs.insert((k, q), (b.clone(), packed.clone()));
        Ok((b, packed))
    }

    /// `y = W input` (`accumulate`: `y += W input`) for each (W, y), rounding `input` once per
    /// kind of rounding the weights need.
    fn project(
        &mut self,
        c: &GpuContext,
        input: &GpuTensor,
        k: usize,
        ws: &[Proj],
        accumulate: bool,
        out: &mut Vec<Prepared>,
    ) -> Result<()> {
        let mut done = Vec::new();
        for p in ws {
            let q = self.quant(&p.w);
            let (src, packed) = if q == ActQuant::None {
                (input.clone(), None)
            } else {
                let (buf, packed) = self.scratch(c, k, q)?;
                if !done.contains(&q) {
                    out.extend(c.prep_quantize_act(q, input, &buf, packed.as_ref(), k, self.batch, None, None)?);
                    done.push(q);
                }
                (buf, packed)
            };
            out.extend(p.prep(c, &src, packed.as_ref(), accumulate, self.batch)?);
        }
        Ok(())
    }

    /// `y = W (act(gate) * up)` (`accumulate`: `+=`): where W's input is rounded, the gated
    /// activation and the rounding are one dispatch (with `fuse`, the product's own where it
    /// can); otherwise glu.wgsl in place on `gate`.
    #[allow(clippy::too_many_arguments)]
    fn project_gated(
        &mut self,
        c: &GpuContext,
        glu: Glu,
        f16_table: bool,
        gate: &GpuTensor,
        up: &GpuTensor,
        k: usize,
        w: &Proj,
        accumulate: bool,
        fuse: bool,
        out: &mut Vec<Prepared>,
    ) -> Result<()> {
        if fuse {
            let ws = std::slice::from_ref(w);
            if let Some(v) = self.fused(
                c,
                ws,
                Prologue::Gated(glu),
                gate,
                Some(up),
                None,
                0.0,
                f16_table,
                accumulate,
            )? {
                out.extend(v);
                return Ok(());
            }
        }
        let q = self.quant(&w.w);
        if q.mode_block().is_some() {
            let (buf, packed) = self.scratch(c, k, q)?;
            let gated = Gated {
                kind: glu,
                up,
                f16_table,
            };
            out.extend(c.prep_quantize_act(q, gate, &buf, packed.as_ref(), k, self.batch, None, Some(gated))?);
            out.extend(w.prep(c, &buf, packed.as_ref(), accumulate, self.batch)?);
            return Ok(());
        }
        out.push(c.prep_glu(glu, gate, up, k, self.batch, f16_table)?);
        self.project(c, gate, k, std::slice::from_ref(w), accumulate, out)
    }

    /// Attention into `att`, then `y = wo att` (`accumulate`: `+=`): where wo's input is
    /// rounded in 32-blocks, attention writes it rounded (and its quants) itself; otherwise,
    /// with `fuse`, wo rounds it where it can.
    #[allow(clippy::too_many_arguments)]
    fn attend_project(
        &mut self,
        c: &GpuContext,
        q: &GpuTensor,
        k_cache: &GpuTensor,
        v_cache: &GpuTensor,
        att: &GpuTensor,
        a: &AttnParams,
        n_ctx: usize,
        wo: &Proj,
        accumulate: bool,
        rope: Option<AttnRope<'_>>,
        fuse: bool,
        out: &mut Vec<Prepared>,
    ) -> Result<()> {
        let k = (a.n_head * a.head_dim) as usize;
        let rounding = self.quant(&wo.w);
        if c.attention_rounds(rounding, a.head_dim) {
            let (buf, packed) = self.scratch(c, k, rounding)?;
            out.push(c.prep_attention(
                q,
                k_cache,
                v_cache,
                &buf,
                a,
                self.batch,
                n_ctx,
                Some((rounding, packed.as_ref())),
                rope,
            )?);
            out.extend(wo.prep(c, &buf, packed.as_ref(), accumulate, self.batch)?);
            return Ok(());
        }
        out.push(c.prep_attention(q, k_cache, v_cache, att, a, self.batch, n_ctx, None, rope)?);
        let ws = std::slice::from_ref(wo);
        if fuse {
            if let Some(v) = self.fused(c, ws, Prologue::Round, att, None, None, 0.0, false, accumulate)? {
                out.extend(v);
                return Ok(());
            }
        }
        self.project(c, att, k, ws, accumulate, out)
    }

    /// `y = W rms_norm(x) * norm` for each (W, y) through `xb`: with `fuse`, by products that
    /// norm and round their input themselves where all can; otherwise when every W sees the
    /// same 8-bit rounding, the norm and the rounding are one dispatch (norm_quant.wgsl).
    /// With `post`, the input is h = x + rms_norm(post.delta) * post.weight, written to
    /// `post.out` by the products ([`Prologue::AddNorm`]) or by a dispatch before them.
    #[allow(clippy::too_many_arguments)]
    fn project_normed(
        &mut self,
        c: &GpuContext,
        x: &GpuTensor,
        post: Option<PostAdd<'_>>,
        norm: &GpuTensor,
        eps: f32,
        xb: &GpuTensor,
        k: usize,
        ws: &[Proj],
        fuse: bool,
        out: &mut Vec<Prepared>,
    ) -> Result<()> {
        if fuse {
            let pro = if post.is_some() {
                Prologue::AddNorm
            } else {
                Prologue::Norm
            };
            if let Some(v) = self.fused(c, ws, pro, x, Some(norm), post, eps, false, false)? {
                out.extend(v);
                return Ok(());
            }
        }
        let x = match post {
            Some(pa) => {
                out.push(c.prep_rms_norm_add_to(pa.delta, pa.weight, x, pa.out, k, eps, self.batch)?);
                pa.out
            }
            None => x,
        };
        let q = ws.first().map(|p| self.quant(&p.w));
        let one = ws.iter().all(|p| Some(self.quant(&p.w)) == q);
        if let (Some(q @ (ActQuant::Q8_0 | ActQuant::Q8K)), true) = (q, one) {
            let (buf, packed) = self.scratch(c, k, q)?;
            out.push(c.prep_norm_quant(x, norm, &buf, packed.as_ref(), k, q, eps, self.batch)?);
            for p in ws {
                out.extend(p.prep(c, &buf, packed.as_ref(), false, self.batch)?);
            }
            return Ok(());
        }
        out.push(c.prep_rms_norm(NormMode::Out, x, norm, Some(xb), k, 1, eps, self.batch)?);
        self.project(c, xb, k, ws, false, out)
    }
}

impl GpuModel {
    /// Uploads the weights and prepares every dispatch. Tensor names follow GGUF
    /// (`token_embd.weight`, `blk.N.attn_q.weight`, ..., `output_norm.weight`, `output.weight`);
    /// a missing `output.weight` means tied embeddings. Tensors with biases are rejected.
    pub fn new<'a>(
        ctx: Arc<GpuContext>,
        hp: GpuHparams,
        weights: impl IntoIterator<Item = WeightRef<'a>>,
    ) -> Result<Self> {
        hp.validate()?;
        let t = Tensors {
            map: weights.into_iter().map(|w| (w.name, w)).collect(),
        };
        // Biases: only qwen2's, on q, k and v (added after their products).
        let qkv_bias = [".attn_q.bias", ".attn_k.bias", ".attn_v.bias"];
        if let Some(b) = t
            .map
            .keys()
            .find(|n| n.ends_with(".bias") && !qkv_bias.iter().any(|s| n.ends_with(s)))
        {
            return Err(GpuError::UnsupportedType(if b.contains("attn") {
                "attention bias"
            } else {
                "bias"
            }));
        }
        let c = &*ctx;
        let (e, hd, nh, nkv, ff, b) = (hp.n_embd, hp.head_dim, hp.n_head, hp.n_head_kv, hp.n_ff, hp.n_batch);
        // q, k, v (and gate, up) as views of one buffer: one product can fill them.
        let [q, k, v] = <[GpuTensor; 3]>::try_from(c.zeros_stacked(&[b * nh * hd, b * nkv * hd, b * nkv * hd])?)
            .map_err(|_| GpuError::Shape("q/k/v scratch".into()))?;
        let [hg, hu] = <[GpuTensor; 2]>::try_from(c.zeros_stacked(&[b * ff, b * ff])?)
            .map_err(|_| GpuError::Shape("gate/up scratch".into()))?;
        let s = Scratch {
            ids: c.zeros(b)?,
            x: c.zeros(b * e)?,
            x2: c.zeros(b * e)?,
            xb: c.zeros(b * e)?,
            xb2: c.zeros(b * e)?,
            q,
            k,
            v,
            att: c.zeros(b * nh * hd)?,
            hg,
            hu,
            last: c.zeros(hp.n_slots * e)?,
            logits: c.zeros(hp.n_slots * hp.n_vocab)?,
        };

        let tok_embd = t.matrix(c, "token_embd.weight", e, hp.n_vocab)?;
        let embed = c.prep_get_rows(&tok_embd, &s.ids, &s.x, b, hp.embd_scale)?;

        // Llama 3.1's rope_freqs, or phi3's short factors (the CPU engine's choice: contexts
        // within the original training length).
        let rope_freqs = match t.optional_vector(c, "rope_freqs.weight", hp.n_rot / 2)? {
            Some(f) => Some(f),
            None => t.optional_vector(c, "rope_factors_short.weight", hp.n_rot / 2)?,
        };
        let mut acts = ActScratch {
            emulate: hp.emulate_cpu_rounding,
            fuse: hp.fuse_act,
            batch: b,
            bufs: HashMap::new(),
        };
        // One-token decode steps fold every post-norm into the products after it
        // (`Prologue::AddNorm`) where every layer has both: the attention block's into the
        // gate/up products, which write the residual to x2, the feed-forward block's into the
        // next layer's q/k/v products, which write it back to x; the last layer's is a dispatch
        // from x2 to x.
        let fold = hp.fuse_act != FuseAct::Off
            && (0..hp.n_layer).all(|il| {
                ["post_attention_norm", "post_ffw_norm"]
                    .iter()
                    .all(|n| t.map.contains_key(format!("blk.{il}.{n}.weight").as_str()))
            });
        let mut prev_post_ffw: Option<GpuTensor> = None;
        let mut layers = Vec::with_capacity(hp.n_layer);
        let mut caches = Vec::with_capacity(hp.n_layer);
        for (il, lp) in hp.layers.iter().enumerate() {
            let n = |suffix: &str| format!("blk.{il}.{suffix}.weight");
            let attn_norm = t.vector(c, &n("attn_norm"), e)?;
            let qkv_outs = [(&s.q, nh * hd), (&s.k, nkv * hd), (&s.v, nkv * hd)];
            let qkv = if t.map.contains_key(n("attn_qkv").as_str()) {
                vec![t.fused_projection(c, &n("attn_qkv"), e, &qkv_outs)?]
            } else {
                t.projections(
                    c,
                    e,
                    &[
                        (n("attn_q"), &s.q, nh * hd),
                        (n("attn_k"), &s.k, nkv * hd),
                        (n("attn_v"), &s.v, nkv * hd),
                    ],
                )?
            };
            // qwen2: all three biases or none.
            let bias = |m: &str| format!("blk.{il}.{m}.bias");
            let qkv_bias = if ["attn_q", "attn_k", "attn_v"]
                .iter()
                .any(|m| t.map.contains_key(bias(m).as_str()))
            {
                let mut all = t.values(&bias("attn_q"), nh * hd)?;
                all.extend(t.values(&bias("attn_k"), nkv * hd)?);
                all.extend(t.values(&bias("attn_v"), nkv * hd)?);
                Some(c.upload_f32(&all)?)
            } else {
                None
            };
            let q_norm = t.optional_vector(c, &n("attn_q_norm"), hd)?;
            let k_norm = t.optional_vector(c, &n("attn_k_norm"), hd)?;
            let post_attn = t.optional_vector(c, &n("post_attention_norm"), e)?;
            let ffn_norm = t.vector(c, &n("ffn_norm"), e)?;
            // phi3: one ffn_up of 2·n_ff rows, the gate's first.
            let gate_up = if t.map.contains_key(n("ffn_gate").as_str()) {
                t.projections(c, e, &[(n("ffn_gate"), &s.hg, ff), (n("ffn_up"), &s.hu, ff)])?
            } else {
                vec![t.fused_projection(c, &n("ffn_up"), e, &[(&s.hg, ff), (&s.hu, ff)])?]
            };
            let post_ffw = t.optional_vector(c, &n("post_ffw_norm"), e)?;

            let rope = |heads: usize| RopeParams {
                n_heads: heads as u32,
                head_dim: hd as u32,
                n_rot: hp.n_rot as u32,
                neox: hp.rope_neox,
                base: lp.rope_base,
                freq_scale: lp.rope_freq_scale,
            };
            let rope_q = rope(nh);
            let cache = || {
                c.zeros(hp.n_slots * hp.n_ctx * nkv * hd).map_err(|e| match e {
                    GpuError::TooLarge { bytes, limit, .. } => GpuError::TooLarge {
                        what: format!(
                            "a layer's KV cache ({} positions x {} sequences; lower -c/--ctx-size or --parallel)",
                            hp.n_ctx, hp.n_slots
                        ),
                        bytes,
                        limit,
                    },
                    e => e,
                })
            };
            let (k_cache, v_cache) = (cache()?, cache()?);
            caches.push((k_cache.clone(), v_cache.clone()));
            let attn = AttnParams {
                n_head: nh as u32,
                n_kv_head: nkv as u32,
                head_dim: hd as u32,
                window: lp.sliding_window,
                scale: hp.attn_scale,
                softcap: hp.attn_softcap,
            };
            // Without a post-norm the product goes straight into the residual stream.
            let attn_out = if post_attn.is_some() { &s.xb2 } else { &s.x };
            let wo = t.projections(c, nh * hd, &[(n("attn_output"), attn_out, e)])?;
            let [wo] = &wo[..] else {
                return Err(GpuError::Shape("attn_output: one product expected".into()));
            };
            let ffn_out = if post_ffw.is_some() { &s.xb2 } else { &s.x };
            let down = t.projections(c, ff, &[(n("ffn_down"), ffn_out, e)])?;
            let [down] = &down[..] else {
                return Err(GpuError::Shape("ffn_down: one product expected".into()));
            };

            // The layer's ops for any batch (`decode` false), for decode steps, and with `fuse`
            // for decode steps of one token.
            let last = il + 1 == hp.n_layer;
            let kv_round = hp.emulate_cpu_rounding && hp.kv_f16;
            let mut layer_ops = |decode: bool, fuse: bool| -> Result<Vec<Prepared>> {
                let mut ops = Vec::new();
                let fold = fold && fuse;
                // Folded: the previous layer's feed-forward output (xb2) is still to be normed
                // and added to the residual (x2).
                let (x_in, post_in) = match (fold, &prev_post_ffw) {
                    (true, Some(w)) => (
                        &s.x2,
                        Some(PostAdd {
                            delta: &s.xb2,
                            weight: w,
                            out: &s.x,
                        }),
                    ),
                    _ => (&s.x, None),
                };
                acts.project_normed(c, x_in, post_in, &attn_norm, hp.rms_eps, &s.xb, e, &qkv, fuse, &mut ops)?;
                // Decode steps' attention adds the biases itself where it can bind them.
                let attn_bias = qkv_bias
                    .as_ref()
                    .filter(|_| decode && q_norm.is_none() && c.attention_norms_heads());
                if let (Some(bias), None) = (&qkv_bias, attn_bias) {
                    ops.extend(c.prep_bias(&qkv_outs, bias, b)?);
                }
                // Decode steps' attention norms the heads of q and k itself where it can.
                let qk_norm = match (&q_norm, &k_norm) {
                    (Some(qn), Some(kn)) if decode && c.attention_norms_heads() => Some((qn, kn, hp.rms_eps)),
                    _ => None,
                };
                if qk_norm.is_none() {
                    if let Some(w) = &q_norm {
                        ops.push(c.prep_rms_norm(NormMode::InPlace, &s.q, w, None, hd, nh, hp.rms_eps, b)?);
                    }
                    if let Some(w) = &k_norm {
                        ops.push(c.prep_rms_norm(NormMode::InPlace, &s.k, w, None, hd, nkv, hp.rms_eps, b)?);
                    }
                }
                // Rope on q and k, k and v into the cache (f16 like llama.cpp's) in one
                // dispatch; in decode steps the attention does it.
                let attn_rope = if !decode {
                    ops.push(c.prep_rope_kv(
                        &s.q,
                        &s.k,
                        &s.v,
                        &k_cache,
                        &v_cache,
                        &rope_q,
                        nkv as u32,
                        rope_freqs.as_ref(),
                        kv_round,
                        b,
                    )?);
                    None
                } else {
                    Some(AttnRope {
                        rope: &rope_q,
                        k: &s.k,
                        v: &s.v,
                        factors: rope_freqs.as_ref(),
                        round: kv_round,
                        qk_norm,
                        bias: attn_bias,
                    })
                };
                acts.attend_project(
                    c,
                    &s.q,
                    &k_cache,
                    &v_cache,
                    &s.att,
                    &attn,
                    hp.n_slots * hp.n_ctx,
                    wo,
                    post_attn.is_none(),
                    attn_rope,
                    fuse,
                    &mut ops,
                )?;
                let post_mid = match (&post_attn, fold) {
                    (Some(w), true) => Some(PostAdd {
                        delta: &s.xb2,
                        weight: w,
                        out: &s.x2,
                    }),
                    (Some(w), false) => {
                        ops.push(c.prep_rms_norm(NormMode::Add, &s.xb2, w, Some(&s.x), e, 1, hp.rms_eps, b)?);
                        None
                    }
                    (None, _) => None,
                };
                acts.project_normed(
                    c, &s.x, post_mid, &ffn_norm, hp.rms_eps, &s.xb, e, &gate_up, fuse, &mut ops,
                )?;
                acts.project_gated(
                    c,
                    hp.glu,
                    hp.emulate_cpu_rounding,
                    &s.hg,
                    &s.hu,
                    ff,
                    down,
                    post_ffw.is_none(),
                    fuse,
                    &mut ops,
                )?;
                match (&post_ffw, fold) {
                    (Some(w), false) => {
                        ops.push(c.prep_rms_norm(NormMode::Add, &s.xb2, w, Some(&s.x), e, 1, hp.rms_eps, b)?)
                    }
                    (Some(w), true) if last => {
                        ops.push(c.prep_rms_norm_add_to(&s.xb2, w, &s.x2, &s.x, e, hp.rms_eps, b)?)
                    }
                    _ => {}
                }
                Ok(ops)
            };
            let ops = layer_ops(false, false)?;
            let decode = layer_ops(true, false)?;
            // Kept where some product rounds its own input (each such one saves a dispatch);
            // folded post-norms pass the residual from layer to layer, so every layer keeps it.
            let single = match hp.fuse_act {
                FuseAct::Off => None,
                _ => Some(layer_ops(true, true)?).filter(|l| fold || l.len() < decode.len()),
            };
            layers.push(LayerOps { ops, decode, single });
            prev_post_ffw = post_ffw;
        }

        let output_norm = t.vector(c, "output_norm.weight", e)?;
        let output = if t.map.contains_key("output.weight") {
            t.matrix(c, "output.weight", e, hp.n_vocab)?
        } else {
            tok_embd.clone()
        };
        // The rows whose logits are asked are copied to `last`, normed in place, projected;
        // under the head's `Step`, whose batch is those rows.
        let r = hp.n_slots;
        let mut head = vec![c.prep_rms_norm(NormMode::InPlace, &s.last, &output_norm, None, e, 1, hp.rms_eps, r)?];
        let q = if hp.emulate_cpu_rounding {
            ActQuant::for_weight(output.ty())
        } else {
            ActQuant::None
        };
        let last_q = c.zeros(r * e)?;
        let last_packed = PackedAct::for_rounding(c, q, e, r)?;
        let head_in = match c.prep_quantize_act(q, &s.last, &last_q, last_packed.as_ref(), e, r, None, None)? {
            Some(p) => {
                head.push(p);
                &last_q
            }
            None => &s.last,
        };
        head.extend(c.prep_matmul(
            &output,
            head_in,
            last_packed.as_ref(),
            &[(&s.logits, hp.n_vocab)],
            false,
            r,
        )?);
        // One row: the norm, the rounding and the product in one dispatch where it can.
        let head_single = if hp.fuse_act.allows(q, &output) {
            let logits = [(&s.logits, hp.n_vocab)];
            c.prep_matvec_fused(
                &output,
                Prologue::Norm,
                &s.last,
                Some(&output_norm),
                None,
                q,
                hp.rms_eps,
                false,
                &logits,
                false,
            )?
        } else {
            None
        };
        let final_norm = c.prep_rms_norm(NormMode::Out, &s.x, &output_norm, Some(&s.xb), e, 1, hp.rms_eps, b)?;
        let staging = c.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("logits readback"),
            size: (hp.n_slots * hp.n_vocab * 4) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        c.wait()?;
        let step = c.step_state();
        Ok(Self {
            ctx,
            hp,
            step,
            s,
            embed,
            layers,
            head,
            head_single,
            output,
            output_norm,
            all: None,
            final_norm,
            staging,
            caches,
        })
    }

    /// Builds the model of a GGUF file: [`GpuHparams::from_gguf`] plus every tensor as stored.
    pub fn from_gguf(ctx: Arc<GpuContext>, g: &Gguf, n_ctx: usize) -> Result<Self> {
        Self::from_gguf_slots(ctx, g, n_ctx, 1)
    }

    /// [`GpuModel::from_gguf`] with a KV cache of `n_slots` independent sequences of `n_ctx`
    /// positions each ([`GpuModel::forward_multi`]).
    pub fn from_gguf_slots(ctx: Arc<GpuContext>, g: &Gguf, n_ctx: usize, n_slots: usize) -> Result<Self> {
        Self::from_gguf_with(ctx, g, n_ctx, n_slots, true)
    }

    /// [`GpuModel::from_gguf_slots`] whose KV cache holds f16-rounded values (`kv_f16`, as
    /// llama.cpp's f16 cache) or the values as computed ([`GpuHparams::kv_f16`]).
    pub fn from_gguf_with(ctx: Arc<GpuContext>, g: &Gguf, n_ctx: usize, n_slots: usize, kv_f16: bool) -> Result<Self> {
        let mut hp = GpuHparams::from_gguf(g, n_ctx)?;
        hp.n_slots = n_slots;
        hp.kv_f16 = kv_f16;
        let mut refs = Vec::with_capacity(g.tensors().len());
        for info in g.tensors() {
            let (info, bytes) = g.tensor(&info.name)?;
            refs.push(WeightRef {
                name: &info.name,
                ty: info.ty,
                dims: &info.dims,
                bytes,
            });
        }
        Self::new(ctx, hp, refs)
    }

    pub fn hparams(&self) -> &GpuHparams {
        &self.hp
    }

    /// The device this model runs on.
    pub fn context(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    fn check(&self, tokens: &[u32], pos: usize) -> Result<()> {
        if tokens.is_empty() {
            return Err(GpuError::Shape("forward with no tokens".into()));
        }
        if pos + tokens.len() > self.hp.n_ctx {
            return Err(GpuError::Shape(format!(
                "positions {pos}..{} exceed the context of {}",
                pos + tokens.len(),
                self.hp.n_ctx
            )));
        }
        if let Some(t) = tokens.iter().find(|&&t| t as usize >= self.hp.n_vocab) {
            return Err(GpuError::Shape(format!(
                "token id {t} outside the vocabulary of {}",
                self.hp.n_vocab
            )));
        }
        Ok(())
    }

    fn check_slot(&self, slot: usize) -> Result<()> {
        if slot >= self.hp.n_slots {
            return Err(GpuError::Shape(format!(
                "slot {slot} of a KV cache of {} slots",
                self.hp.n_slots
            )));
        }
        Ok(())
    }

    /// Records the layers for `tokens` (at most n_batch), token t at position `at[t][0]` of the
    /// sequence whose cache rows start at `at[t][1]`.
    /// `decode`: every token is the next one of its own sequence (no token attends to another
    /// of the batch), so the attention ropes and stores the keys itself.
    fn record_layers(&self, tokens: &[u32], at: Vec<[u32; 2]>, decode: bool) -> Result<Recorder> {
        let c = &*self.ctx;
        c.write_u32(&self.s.ids, 0, tokens)?;
        let mut rec = Recorder::new(at);
        for p in &self.embed {
            rec.record(c, p);
        }
        for l in &self.layers {
            for p in l.for_step(decode, tokens.len()) {
                rec.record(c, p);
            }
        }
        Ok(rec)
    }

    fn read_logits(&self, mut rec: Recorder, src: &GpuTensor, n_values: usize) -> Result<Vec<f32>> {
        let bytes = (n_values * 4) as u64;
        let (buf, off) = src.buffer();
        rec.copy(buf, off, &self.staging, 0, bytes);
        let dispatches = rec.len();
        let t0 = std::time::Instant::now();
        rec.submit(&self.ctx, &self.step)?;
        let t1 = std::time::Instant::now();
        let mut out: Vec<f32> = self.ctx.map_read(&self.staging, bytes)?;
        timing::add(dispatches, t1 - t0, t1.elapsed());
        let cap = self.hp.final_softcap;
        if cap > 0.0 {
            for v in &mut out {
                *v = cap * (*v / cap).tanh();
            }
        }
        Ok(out)
    }

    /// Dispatches of a decode step of one token (embedding, layers, head of one row).
    pub fn single_step_dispatches(&self) -> usize {
        let layers: usize = self.layers.iter().map(|l| l.for_step(true, 1).len()).sum();
        let head = self.head_single.as_ref().map_or(self.head.len(), Vec::len);
        self.embed.len() + layers + head
    }

    /// Runs `tokens` at positions `pos..pos + tokens.len()` of slot 0 (filling its KV cache)
    /// and returns the logits of the last token, [n_vocab].
    pub fn forward(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<f32>> {
        self.check(tokens, pos)?;
        self.forward_multi(&[SeqTokens {
            slot: 0,
            pos,
            tokens,
            logits: true,
        }])
    }

    /// One step of several sequences, each in its own KV cache slot: their tokens go through
    /// the layers together (split into chunks of n_batch tokens), and the logits of the last
    /// token of each sequence that asks for them come back, [rows][n_vocab] in the order of
    /// `seqs`. Sequences with no tokens are skipped.
    pub fn forward_multi(&mut self, seqs: &[SeqTokens<'_>]) -> Result<Vec<f32>> {
        let hp = &self.hp;
        let mut used = vec![false; hp.n_slots];
        for st in seqs.iter().filter(|st| !st.tokens.is_empty()) {
            self.check_slot(st.slot)?;
            if std::mem::replace(&mut used[st.slot], true) {
                return Err(GpuError::Shape(format!("slot {} twice in one step", st.slot)));
            }
            self.check(st.tokens, st.pos)?;
        }
        // Every token with its (position, first cache row); the tokens whose logits are asked.
        let n_all: usize = seqs.iter().map(|st| st.tokens.len()).sum();
        let mut ids = Vec::with_capacity(n_all);
        let mut at = Vec::with_capacity(n_all);
        let mut wanted = Vec::new();
        for st in seqs.iter().filter(|st| !st.tokens.is_empty()) {
            let row0 = (st.slot * hp.n_ctx) as u32;
            ids.extend_from_slice(st.tokens);
            at.extend((0..st.tokens.len()).map(|i| [(st.pos + i) as u32, row0]));
            if st.logits {
                wanted.push(ids.len() - 1);
            }
        }
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // One token per sequence: `FERRO_GPU_ROPE_KV=1` keeps the separate rope_kv dispatch (for
        // measurement).
        let decode = seqs.iter().all(|st| st.tokens.len() <= 1) && !separate_rope_kv();
        let (b, e, v) = (hp.n_batch, (hp.n_embd * 4) as u64, hp.n_vocab);
        let ((x, x_off), (last, last_off)) = (self.s.x.buffer(), self.s.last.buffer());
        let mut row = 0;
        let mut start = 0;
        loop {
            let end = (start + b).min(ids.len());
            let t = std::time::Instant::now();
            let mut rec = self.record_layers(&ids[start..end], at[start..end].to_vec(), decode)?;
            // Rows whose logits are asked leave the residual stream before the next chunk.
            while let Some(&i) = wanted.get(row).filter(|&&i| i < end) {
                rec.copy(x, x_off + (i - start) as u64 * e, last, last_off + row as u64 * e, e);
                row += 1;
            }
            if end < ids.len() {
                rec.submit(&self.ctx, &self.step)?;
                start = end;
                continue;
            }
            if wanted.is_empty() {
                return rec.submit(&self.ctx, &self.step).map(|()| Vec::new());
            }
            rec.start_head(wanted.len());
            let head = match (&self.head_single, wanted.len()) {
                (Some(h), 1) => h,
                _ => &self.head,
            };
            for p in head {
                rec.record(&self.ctx, p);
            }
            timing::record(t.elapsed());
            return self.read_logits(rec, &self.s.logits, wanted.len() * v);
        }
    }

    /// The sum over `tokens` of the final normed hidden states `rms_norm(x) * output_norm`
    /// (a sentence embedding before averaging), [n_embd]. The tokens run from position 0 of
    /// `slot`, overwriting its cache.
    pub fn hidden_sum(&mut self, slot: usize, tokens: &[u32]) -> Result<Vec<f32>> {
        self.check_slot(slot)?;
        self.check(tokens, 0)?;
        let hp = &self.hp;
        let (b, e, row0) = (hp.n_batch, hp.n_embd, slot * hp.n_ctx);
        let mut sum = vec![0f32; e];
        for (ci, chunk) in tokens.chunks(b).enumerate() {
            let mut rec = self.record_layers(chunk, run_positions(chunk.len(), ci * b, row0), false)?;
            rec.record(&self.ctx, &self.final_norm);
            rec.submit(&self.ctx, &self.step)?;
            for row in self.ctx.read_range(&self.s.xb, 0, chunk.len() * e)?.chunks_exact(e) {
                sum.iter_mut().zip(row).for_each(|(s, v)| *s += v);
            }
        }
        Ok(sum)
    }

    /// Copies the first `n` cached positions of slot `from` into slot `to` (a shared prompt
    /// prefix), every layer's keys and values.
    pub fn copy_prefix(&mut self, from: usize, to: usize, n: usize) -> Result<()> {
        let hp = &self.hp;
        if from >= hp.n_slots || to >= hp.n_slots || n > hp.n_ctx {
            return Err(GpuError::Shape(format!(
                "copying {n} positions from slot {from} to slot {to} of {} slots of {}",
                hp.n_slots, hp.n_ctx
            )));
        }
        if from == to || n == 0 {
            return Ok(());
        }
        // Through a scratch buffer: a copy cannot have one buffer as source and destination.
        let row = (hp.n_head_kv * hp.head_dim * 4) as u64;
        let bytes = n as u64 * row;
        let tmp = self.ctx.zeros(n * hp.n_head_kv * hp.head_dim)?;
        let (tb, to_off) = tmp.buffer();
        let slot_bytes = hp.n_ctx as u64 * row;
        for (k, v) in &self.caches {
            let mut enc = self
                .ctx
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
            for cache in [k, v] {
                let (cb, off) = cache.buffer();
                enc.copy_buffer_to_buffer(cb, off + from as u64 * slot_bytes, tb, to_off, bytes);
                enc.copy_buffer_to_buffer(tb, to_off, cb, off + to as u64 * slot_bytes, bytes);
            }
            self.ctx.queue.submit([enc.finish()]);
        }
        self.ctx.take_error()
    }

    /// Like [`forward`](Self::forward) but returns the logits of every token, [n_tok][n_vocab]
    /// (perplexity).
    pub fn forward_all(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<f32>> {
        self.check(tokens, pos)?;
        if self.all.is_none() {
            self.all = Some(self.prepare_all()?);
        }
        let batch = self.all.as_ref().map(|a| a.batch).unwrap_or(1);
        let v = self.hp.n_vocab;
        let mut out = Vec::with_capacity(tokens.len() * v);
        for (i, chunk) in tokens.chunks(batch).enumerate() {
            let mut rec = self.record_layers(chunk, run_positions(chunk.len(), pos + i * batch, 0), false)?;
            let all = self.all.as_ref().ok_or_else(|| GpuError::Shape("no logits".into()))?;
            for p in &all.ops {
                rec.record(&self.ctx, p);
            }
            rec.submit(&self.ctx, &self.step)?;
            let mut r = self.ctx.read_range(&all.logits, 0, chunk.len() * v)?;
            let cap = self.hp.final_softcap;
            if cap > 0.0 {
                for x in &mut r {
                    *x = cap * (*x / cap).tanh();
                }
            }
            out.extend(r);
        }
        Ok(out)
    }

    fn prepare_all(&self) -> Result<AllLogits> {
        let c = &*self.ctx;
        let v = self.hp.n_vocab;
        let batch = ((c.max_binding_bytes() / (v as u64 * 4)) as usize).clamp(1, self.hp.n_batch);
        let logits = c.zeros(batch * v)?;
        let mut ops = vec![c.prep_rms_norm(
            NormMode::Out,
            &self.s.x,
            &self.output_norm,
            Some(&self.s.xb),
            self.hp.n_embd,
            1,
            self.hp.rms_eps,
            self.hp.n_batch,
        )?];
        let mut acts = ActScratch {
            emulate: self.hp.emulate_cpu_rounding,
            fuse: FuseAct::Off,
            batch,
            bufs: HashMap::new(),
        };
        acts.project(
            c,
            &self.s.xb,
            self.hp.n_embd,
            &[Proj {
                w: self.output.clone(),
                outs: vec![(logits.clone(), self.hp.n_vocab)],
            }],
            false,
            &mut ops,
        )?;
        Ok(AllLogits { batch, logits, ops })
    }
}

/// `FERRO_GPU_TIMING=1`: every 64 forward passes, the mean CPU time spent recording and
/// encoding + submitting one, and waiting for the GPU (execution and the logits' readback).
mod timing {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    use std::sync::OnceLock;
    use std::time::Duration;

    static RECORD: AtomicU64 = AtomicU64::new(0);
    static SUBMIT: AtomicU64 = AtomicU64::new(0);
    static WAIT: AtomicU64 = AtomicU64::new(0);
    static COUNT: AtomicU64 = AtomicU64::new(0);

    fn on() -> bool {
        static ON: OnceLock<bool> = OnceLock::new();
        *ON.get_or_init(|| std::env::var("FERRO_GPU_TIMING").is_ok_and(|v| v == "1"))
    }

    pub(super) fn record(d: Duration) {
        if on() {
            RECORD.fetch_add(d.as_nanos() as u64, Relaxed);
        }
    }

    pub(super) fn add(cmds: usize, submit: Duration, wait: Duration) {
        if !on() {
            return;
        }
        SUBMIT.fetch_add(submit.as_nanos() as u64, Relaxed);
        WAIT.fetch_add(wait.as_nanos() as u64, Relaxed);
        let n = COUNT.fetch_add(1, Relaxed) + 1;
        if n.is_multiple_of(64) {
            let us = |a: &AtomicU64| a.swap(0, Relaxed) as f64 / 64e3;
            eprintln!(
                "gpu timing (mean of 64 passes, {cmds} commands): record {:.0} us, encode+submit {:.0} us, wait {:.0} us",
                us(&RECORD),
                us(&SUBMIT),
                us(&WAIT)
            );
        }
    }
}
