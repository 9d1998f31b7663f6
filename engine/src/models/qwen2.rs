//! Qwen 2 / 2.5 (llama.cpp `llm_build_qwen2`): the llama block with biases on the Q, K and V
//! projections and NeoX-layout rope; small models tie the output to the embeddings.

use super::{Hparams, Loader, Result, Weights};
use crate::ops::RopeStyle;

pub(super) fn adjust_hparams(hp: &mut Hparams) {
    hp.rope_style = RopeStyle::Neox;
}

pub(super) fn load(ld: &Loader, hp: &Hparams) -> Result<Weights> {
    let w = super::llama::load(ld, hp)?;
    for (il, l) in w.layers.iter().enumerate() {
        if l.bq.is_none() || l.bk.is_none() || l.bv.is_none() {
            return Err(super::ModelError::Tensor {
                name: format!("blk.{il}.attn_q.bias"),
                reason: "qwen2 needs biases on the Q, K and V projections".into(),
            });
        }
    }
    Ok(w)
}
