//! Shared by the greedy golden tests: llama.cpp's reference file, greedy generation that
//! records each step's top-2 logit margin, and a model's choices along a given path.

use std::ops::ControlFlow;

use ferro_engine::generate::generate;
use ferro_engine::{Forward, Logits};
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
#[allow(dead_code)] // golden_generate includes this module too; only gpu_golden generates freely
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

/// One step of a model fed a given path of tokens.
pub struct Step {
    /// The model's top token.
    pub top: u32,
    /// How far the path's token lies below it (0 where they agree).
    pub behind: f32,
}

/// The model's choice at each of `path.len()` steps after `prompt` while it is fed `path`
/// itself: prefill of the prompt, then one decode step per token, as generation runs. So a step
/// where it would choose another token does not end the comparison.
pub fn along(model: &mut dyn Forward, prompt: &[u32], path: &[u32]) -> Vec<Step> {
    let step = |logits: &[f32], want: u32| {
        let (top, _) = top2(logits);
        Step {
            top,
            behind: logits[top as usize] - logits[want as usize],
        }
    };
    let mut steps = Vec::with_capacity(path.len());
    for (i, &want) in path.iter().enumerate() {
        let logits = if i == 0 {
            model.forward(prompt, 0, Logits::Last).expect("prefill")
        } else {
            model
                .forward(&[path[i - 1]], prompt.len() + i - 1, Logits::Last)
                .expect("decode step")
        };
        steps.push(step(logits, want));
    }
    steps
}

/// The steps of `steps` (a model fed `path`, [`along`]) where the model's top token is not the
/// path's. Each must be a near tie: the path's token at most [`NEAR_TIE`] below the model's
/// best, or the top-2 margin of whoever made the path (`path_margins[i]`; llama.cpp's reference
/// rounds them to 0.001) at most that; else this panics. `what` names the case in the messages.
pub fn partings(what: &str, path: &[u32], path_margins: &[f32], steps: &[Step]) -> Vec<usize> {
    let mut ties = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        if s.top == path[i] {
            continue;
        }
        let m = path_margins[i];
        assert!(
            s.behind.min(m) <= NEAR_TIE,
            "{what}: at step {i} the top token is {}, the path's {} lies {:.3} below it, not a near \
             tie (the path's own top-2 margin {m:.3})\n  path {path:?}",
            s.top,
            path[i],
            s.behind
        );
        eprintln!(
            "{what}: at step {i} the top token is {}, the path's {} {:.3} below it: a near tie (the \
             path's own top-2 margin {m:.3})",
            s.top, path[i], s.behind
        );
        ties.push(i);
    }
    ties
}
