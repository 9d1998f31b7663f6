//! Shared by the greedy golden tests: llama.cpp's reference file, and greedy generation that
//! records each step's top-2 logit margin.

use std::ops::ControlFlow;

use ferro_engine::generate::generate;
use ferro_engine::Forward;
use serde_json::Value;

/// Top-2 logit margin under which two correct engines (or devices) may choose differently:
/// a tie within what summation order moves.
pub const NEAR_TIE: f32 = 0.1;

/// llama.cpp's outputs on both test models (tests/fixtures, copied from the shared reference).
pub fn reference() -> Value {
    let text = include_str!("../../fixtures/llama-cpp-reference.json");
    serde_json::from_str(text).expect("reference JSON")
}

pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Index of the largest logit (the lowest on ties) and its margin over the second largest.
pub fn top2(logits: &[f32]) -> (u32, f32) {
    let (mut best, mut second) = (0usize, f32::NEG_INFINITY);
    for (i, &v) in logits.iter().enumerate().skip(1) {
        if v > logits[best] {
            second = logits[best];
            best = i;
        } else if v > second {
            second = v;
        }
    }
    (best as u32, logits[best] - second)
}

/// `n` greedy tokens after `prompt` (no end-of-generation stop), and each step's top-2 margin.
pub fn greedy(model: &mut dyn Forward, prompt: &[u32], n: usize) -> (Vec<u32>, Vec<f32>) {
    let mut margins = Vec::new();
    let g = generate(
        model,
        &[],
        prompt,
        n,
        |l, _| {
            let (id, margin) = top2(l);
            margins.push(margin);
            id
        },
        |_| false,
        |_| ControlFlow::Continue(()),
    )
    .expect("generate");
    (g.tokens, margins)
}
