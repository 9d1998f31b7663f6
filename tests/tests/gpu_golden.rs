//! Issue 7's end-to-end check on whatever adapter wgpu offers (lavapipe in CI): on every
//! reference prompt of both test models, the GPU's greedy token equals the CPU's at every step up
//! to the prompt's `must_match_tokens`. Both devices follow the CPU's greedy path (the GPU is fed
//! the CPU's tokens, one decode step at a time, as generation feeds its own), so a step where they
//! choose differently does not end the comparison. Such a step must be a near tie on one of them
//! (top-2 margin under [`NEAR_TIE`]: the GPU rounds activations as the CPU does, but adds in
//! another order), and there may be only a few of them.
//!
//! `FERRO_SKIP_GPU_TESTS=1` skips it (as the other GPU tests).

mod golden_common;

use std::sync::Arc;

use ferro_engine::{Backend, Device, Forward, Logits, ModelOptions};
use ferro_gguf::Gguf;
use ferro_tests::require_model;
use golden_common::{greedy, ids, reference, top2, NEAR_TIE};

/// The top token and its top-2 margin at each of `path.len()` steps after `prompt`, with the
/// model fed `path` itself (prefill of the prompt, then one decode step per token).
fn along(model: &mut dyn Forward, prompt: &[u32], path: &[u32]) -> Vec<(u32, f32)> {
    let mut steps = vec![top2(model.forward(prompt, 0, Logits::Last).expect("prefill"))];
    for (i, &t) in path.iter().enumerate().take(path.len().saturating_sub(1)) {
        let logits = model
            .forward(&[t], prompt.len() + i, Logits::Last)
            .expect("decode step");
        steps.push(top2(logits));
    }
    steps
}

fn check(store_name: &str, reference_name: &str) {
    if std::env::var("FERRO_SKIP_GPU_TESTS").as_deref() == Ok("1") {
        eprintln!("skipping GPU test: FERRO_SKIP_GPU_TESTS=1");
        return;
    }
    let Some(path) = require_model(store_name) else { return };
    let gguf = Arc::new(Gguf::open(&path).expect("open model"));
    let opts = ModelOptions {
        n_ctx: 128,
        ..ModelOptions::default()
    };
    let mut cpu = Backend::load(gguf.clone(), &opts, Device::Cpu).expect("CPU model");
    let mut gpu = Backend::load(gguf, &opts, Device::Gpu).expect("GPU model");
    eprintln!("{store_name}: {} against {}", gpu.describe(), cpu.describe());
    let r = reference();
    let completions = r[reference_name]["completions"].as_array().expect("completions");
    let (mut steps, mut ties) = (0, Vec::new());
    for c in completions {
        let prompt = ids(&c["prompt_tokens"]);
        let must = c["must_match_tokens"].as_u64().unwrap() as usize;
        let text = c["prompt"].as_str().unwrap();
        let (want, cpu_margins) = greedy(&mut cpu, &prompt, must);
        let got = along(&mut gpu, &prompt, &want);
        for (i, (&w, &(g, mg))) in want.iter().zip(&got).enumerate() {
            steps += 1;
            if g == w {
                continue;
            }
            let mc = cpu_margins[i];
            assert!(
                mc.min(mg) < NEAR_TIE,
                "{store_name} {text:?}: at step {i} of {must} the GPU's token is {g}, the CPU's \
                 {w}, not a near tie (top-2 margins: CPU {mc:.3}, GPU {mg:.3})\n  cpu path {want:?}"
            );
            eprintln!(
                "{store_name} {text:?}: at step {i} of {must} the GPU's token is {g}, the CPU's {w}: \
                 a near tie (top-2 margins: CPU {mc:.3}, GPU {mg:.3})"
            );
            ties.push(i);
        }
    }
    // Near ties are rare: a GPU whose logits drifted from the CPU's would part at many of them.
    assert!(
        ties.len() * 8 <= steps,
        "{store_name}: the devices chose differently at {} of {steps} steps (near ties, but too \
         many)",
        ties.len()
    );
}

/// A sentence embedding on the GPU (slot 1 of two) points where the CPU's does.
#[test]
fn gpu_embedding_is_the_cpus() {
    if std::env::var("FERRO_SKIP_GPU_TESTS").as_deref() == Ok("1") {
        return;
    }
    let Some(path) = require_model("smollm2-135m-instruct") else {
        return;
    };
    let gguf = Arc::new(Gguf::open(&path).expect("open model"));
    let opts = ModelOptions {
        n_ctx: 64,
        n_slots: 2,
        ..ModelOptions::default()
    };
    let mut cpu = Backend::load(gguf.clone(), &opts, Device::Cpu).expect("CPU model");
    let mut gpu = Backend::load(gguf, &opts, Device::Gpu).expect("GPU model");
    gpu.set_slots(2).unwrap();
    let a: Vec<u32> = vec![1, 504, 3458, 282, 4649, 314, 7042, 30];
    let b: Vec<u32> = vec![1, 14023, 2930, 253, 1253, 28, 281, 253, 1165, 5014];
    let cos = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>();
    let (ca, cb) = (cpu.embed(0, &a).unwrap(), cpu.embed(0, &b).unwrap());
    let (ga, gb) = (gpu.embed(1, &a).unwrap(), gpu.embed(0, &b).unwrap());
    assert_eq!(ga.len(), ca.len());
    assert!(
        cos(&ga, &ca) > 0.999,
        "GPU vs CPU, first text: cosine {}",
        cos(&ga, &ca)
    );
    assert!(
        cos(&gb, &cb) > 0.999,
        "GPU vs CPU, second text: cosine {}",
        cos(&gb, &cb)
    );
    // The two texts differ by more than the devices do.
    assert!(cos(&ca, &cb) < 0.99, "different texts: cosine {}", cos(&ca, &cb));
    assert!(gpu.embed(2, &a).is_err(), "a slot past the cache");
}

#[test]
fn smollm2_gpu_greedy_equals_cpu() {
    check("smollm2-135m-instruct", "SmolLM2-135M-Instruct.Q4_1.gguf");
}

/// gemma3 turns the devices' differences in the last bits into different greedy tokens sooner
/// than SmolLM2: on lavapipe its free-running paths part at near ties on all three prompts
/// (steps 15, 5 and 8 at stop 25), which is why both devices follow the CPU's path here.
#[test]
fn gemma3_gpu_greedy_equals_cpu() {
    check("gemma3-270m", "gemma-3-270m-q4_k_m.gguf");
}
