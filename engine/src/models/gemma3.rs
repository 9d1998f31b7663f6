//! Gemma 3 (llama.cpp `llm_build_gemma3_iswa`). Differences from llama:
//! - embeddings scaled by sqrt(n_embd); output tied to the embeddings;
//! - per-head RMS norms on Q and K before rope; NeoX-layout rope;
//! - queries scaled by 1/sqrt(head_dim) (`query_pre_attn_scalar`; the 27B model, 62 layers,
//!   uses 1/sqrt(n_embd / n_head));
//! - sliding-window attention on five layers of every six (the sixth attends globally); the
//!   window layers use rope base 10000 without scaling, the global ones `rope.freq_base` and
//!   `rope.scaling.*`;
//! - RMS norms after attention and after the FFN, before each residual add;
//! - GeGLU feed-forward (GELU, tanh approximation).
//!
//! Norm weights are used as stored: llama.cpp's converter already added gemma's `1 +`.

use super::{BlockCtx, Hparams, Loader, Result, RunState, Weights};
use crate::kv_cache::KvCache;
use crate::ops::RopeStyle;

/// Every sixth layer attends globally.
const SWA_PATTERN: usize = 6;
/// Rope base of the sliding-window layers.
const ROPE_BASE_SWA: f32 = 10000.0;

pub(super) fn adjust_hparams(hp: &mut Hparams, sliding_window: usize) {
    hp.rope_style = RopeStyle::Neox;
    hp.sliding_window = sliding_window;
    hp.swa_pattern = SWA_PATTERN;
    hp.rope_base_swa = ROPE_BASE_SWA;
    hp.rope_freq_scale_swa = 1.0;
    hp.embd_scale = (hp.n_embd as f32).sqrt();
    hp.attn_scale = if hp.n_layer == 62 {
        1.0 / ((hp.n_embd / hp.n_head) as f32).sqrt()
    } else {
        1.0 / (hp.head_dim as f32).sqrt()
    };
}

pub(super) fn load(ld: &Loader, hp: &Hparams) -> Result<Weights> {
    let (tok_embd, output) = ld.embeddings(hp)?;
    let (rope, rope_swa) = ld.ropes(hp, "rope_freqs.weight")?;
    let layers = (0..hp.n_layer)
        .map(|il| {
            let p = format!("blk.{il}");
            let mut l = ld.layer_separate(hp, il)?;
            l.q_norm = Some(ld.vector(&format!("{p}.attn_q_norm.weight"), hp.head_dim)?);
            l.k_norm = Some(ld.vector(&format!("{p}.attn_k_norm.weight"), hp.head_dim)?);
            l.post_attn_norm = Some(ld.vector(&format!("{p}.post_attention_norm.weight"), hp.n_embd)?);
            l.post_ffn_norm = Some(ld.vector(&format!("{p}.post_ffw_norm.weight"), hp.n_embd)?);
            Ok(l)
        })
        .collect::<Result<_>>()?;
    Ok(Weights {
        tok_embd,
        layers,
        output_norm: ld.vector("output_norm.weight", hp.n_embd)?,
        output,
        rope,
        rope_swa,
    })
}

/// One block: `x += post_norm(attn(norm(x))); x += post_norm(ffn(norm(x)))`.
pub(super) fn block(c: &BlockCtx, s: &mut RunState, kv: &mut KvCache) {
    let l = c.layer;
    c.norm_input(s, &l.attn_norm);
    c.qkv(s);
    c.qk_norm(s);
    c.attention(s, kv);
    if let Some(w) = &l.post_attn_norm {
        c.post_norm(s, w);
    }
    c.residual(s);
    c.norm_input(s, &l.ffn_norm);
    c.ffn(s, true);
    if let Some(w) = &l.post_ffn_norm {
        c.post_norm(s, w);
    }
    c.residual(s);
}
