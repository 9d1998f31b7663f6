//! Phi-3 (llama.cpp `llm_build_phi3`): the llama block with one fused QKV projection, one
//! fused gate/up projection (gate rows first) and NeoX-layout rope. Sliding-window metadata
//! is ignored, as llama.cpp does. Long-context files carry `rope_factors_short/long`; ferro
//! uses the short factors (contexts within the original training length).

use super::{Hparams, Layer, Loader, Result, Weights};
use crate::ops::RopeStyle;

pub(super) fn adjust_hparams(hp: &mut Hparams) {
    hp.rope_style = RopeStyle::Neox;
}

pub(super) fn load(ld: &Loader, hp: &Hparams) -> Result<Weights> {
    let (tok_embd, output) = ld.embeddings(hp)?;
    let (rope, rope_swa) = ld.ropes(hp, "rope_factors_short.weight")?;
    let layers = (0..hp.n_layer)
        .map(|il| {
            let p = format!("blk.{il}");
            let (attn_norm, wo, ffn_norm, down) = ld.layer_common(hp, il)?;
            Ok(Layer {
                attn_norm,
                wq: None,
                wk: None,
                wv: None,
                wqkv: Some(ld.matrix(
                    &format!("{p}.attn_qkv.weight"),
                    hp.n_embd,
                    hp.q_dim() + hp.k_dim() + hp.v_dim(),
                )?),
                bq: None,
                bk: None,
                bv: None,
                q_norm: None,
                k_norm: None,
                wo,
                post_attn_norm: None,
                ffn_norm,
                gate: None,
                up: ld.matrix(&format!("{p}.ffn_up.weight"), hp.n_embd, 2 * hp.n_ff)?,
                down,
                post_ffn_norm: None,
                qkv_packed: None,
                gate_up_packed: None,
            })
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
