//! Llama 1/2/3.x, Mistral and SmolLM2 (llama.cpp `llm_build_llama`): pre-norm blocks with
//! grouped-query attention, normal-layout rope (llama3 frequency factors when present) and a
//! SwiGLU feed-forward; the output matrix is tied to the embeddings when absent.

use super::{BlockCtx, Hparams, Loader, Result, RunState, Weights};
use crate::kv_cache::KvCache;

pub(super) fn load(ld: &Loader, hp: &Hparams) -> Result<Weights> {
    let (tok_embd, output) = ld.embeddings(hp)?;
    let (rope, rope_swa) = ld.ropes(hp, "rope_freqs.weight")?;
    let layers = (0..hp.n_layer)
        .map(|il| ld.layer_separate(hp, il))
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

/// One block: `x += attn(norm(x)); x += ffn(norm(x))`. Shared by qwen2 (biases in `qkv`)
/// and phi3 (fused projections in `qkv` and `ffn`).
pub(super) fn block(c: &BlockCtx, s: &mut RunState, kv: &mut KvCache) {
    c.norm_input(s, &c.layer.attn_norm);
    c.qkv(s);
    c.attention(s, kv);
    c.residual(s);
    c.norm_input(s, &c.layer.ffn_norm);
    c.ffn(s, false);
    c.residual(s);
}
