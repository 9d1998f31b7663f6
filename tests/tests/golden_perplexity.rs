//! Perplexity on GPL-3 (-c 512, 14 chunks) within 0.5% of llama-perplexity's value.

use std::sync::Arc;

use ferro_engine::perplexity::perplexity;
use ferro_engine::tokenizer::Tokenizer;
use ferro_engine::{Model, ModelOptions};
use ferro_gguf::Gguf;
use ferro_tests::require_model;

const GPL3: &str = include_str!("../fixtures/GPL-3");

fn check(name: &str, llama_cpp_ppl: f64) {
    let Some(path) = require_model(name) else { return };
    let g = Arc::new(Gguf::open(&path).unwrap());
    let tok = Tokenizer::from_gguf(&g).unwrap();
    let mut model = Model::from_gguf(
        g,
        &ModelOptions {
            n_ctx: 512,
            n_batch: 256,
            threads: 0,
            ..ModelOptions::default()
        },
    )
    .unwrap();
    let tokens = tok.encode(GPL3, true, false);
    let bos = if tok.add_bos() { tok.bos_id() } else { None };
    let stats = perplexity(&mut model, &tokens, 512, bos, |c, n, s| {
        eprintln!("{name} [{}/{n}] {:.4}", c + 1, s.ppl());
    })
    .unwrap();
    assert_eq!(stats.chunks, 14, "{name}: {} tokens", tokens.len());
    let rel = (stats.ppl() - llama_cpp_ppl).abs() / llama_cpp_ppl;
    eprintln!(
        "{name}: PPL {:.4} +/- {:.5}, llama.cpp {llama_cpp_ppl}, off by {:.3}%",
        stats.ppl(),
        stats.stderr(),
        rel * 100.0
    );
    assert!(
        rel < 0.005,
        "{name}: PPL {:.4} vs llama.cpp {llama_cpp_ppl}",
        stats.ppl()
    );
}

#[test]
fn smollm2_perplexity_matches_llama_cpp() {
    check("smollm2-135m-instruct", 18.3914);
}

#[test]
fn gemma3_perplexity_matches_llama_cpp() {
    check("gemma3-270m", 13.9062);
}
