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

/// Known failure (issue 5 stays open): ferro's gemma3 logits differ from llama.cpp's by about
/// 0.1 in log-probability, so greedy decoding parts ways after 10-13 tokens on two prompts at
/// steps whose reference margin is ~0.1. Run with `--ignored` while working on it.
#[test]
#[ignore = "gemma3 greedy diverges from llama.cpp after 10-13 tokens (issue 5, open)"]
fn gemma3_greedy_matches_llama_cpp() {
    check_model("gemma3-270m", "gemma-3-270m-q4_k_m.gguf");
}
