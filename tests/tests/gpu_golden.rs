//! Issue 7's end-to-end check on whatever adapter wgpu offers (lavapipe in CI): on every
//! reference prompt of both test models, the GPU's greedy token equals the CPU's at every step up
//! to the prompt's `must_match_tokens`. The GPU is fed the CPU's greedy tokens, one decode step
//! at a time as generation feeds its own, so a step where the two choose differently does not
//! end the comparison. Such a step must be a near tie (the CPU's token at most 0.1 (`NEAR_TIE`)
//! below the GPU's best, or the CPU's own top-2 margin at most that: the GPU rounds activations as
//! the CPU does, but adds in another order), and at most one step in eight may be one.
//!
//! `FERRO_SKIP_GPU_TESTS=1` skips it (as the other GPU tests).

mod golden_common;

use std::sync::Arc;

use ferro_engine::{Backend, Device, ModelOptions};
use ferro_gguf::Gguf;
use ferro_tests::require_model;
use golden_common::{along, greedy, ids, partings, reference};

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
    let (mut steps, mut ties) = (0, 0);
    for c in completions {
        let prompt = ids(&c["prompt_tokens"]);
        let must = c["must_match_tokens"].as_u64().unwrap() as usize;
        let (want, cpu_margins) = greedy(&mut cpu, &prompt, must);
        let what = format!(
            "{store_name} {:?}, the GPU against the CPU",
            c["prompt"].as_str().unwrap()
        );
        steps += must;
        ties += partings(&what, &want, &cpu_margins, &along(&mut gpu, &prompt, &want)).len();
    }
    // Near ties are rare: a GPU whose logits drifted from the CPU's would part at many.
    assert!(
        ties * 8 <= steps,
        "{store_name}: the devices chose differently at {ties} of {steps} steps (near ties, but \
         too many)"
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
