//! `ferro tokenize` through the binary, against llama.cpp's tokenization of the reference strings.

use std::process::Command;

use ferro_tests::{ferro_bin, require_model};
use serde_json::Value;

fn reference() -> Value {
    serde_json::from_str(include_str!("../fixtures/llama-cpp-reference.json")).unwrap()
}

fn tokenize(path: &std::path::Path, text: &str, no_special: bool) -> Vec<u64> {
    let mut cmd = Command::new(ferro_bin());
    cmd.arg("tokenize").arg(path).arg(text);
    if no_special {
        cmd.arg("--no-special");
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<Vec<u64>>(&out.stdout).expect("a JSON array of ids")
}

/// Default mode (BOS per metadata, specials parsed) and `--no-special` both equal llama.cpp's ids.
#[test]
fn tokenize_matches_llama_cpp() {
    let r = reference();
    for (store, refname) in [
        ("smollm2-135m-instruct", "SmolLM2-135M-Instruct.Q4_1.gguf"),
        ("gemma3-270m", "gemma-3-270m-q4_k_m.gguf"),
    ] {
        let Some(path) = require_model(store) else { return };
        for c in r[refname]["completions"].as_array().unwrap() {
            let want: Vec<u64> = serde_json::from_value(c["prompt_tokens"].clone()).unwrap();
            assert_eq!(tokenize(&path, c["prompt"].as_str().unwrap(), false), want, "{store}");
        }
        let ns = &r[refname]["tokenize_no_special"];
        let items: Vec<(String, Value)> = match ns {
            Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Value::Array(a) => a
                .iter()
                .map(|e| (e["text"].as_str().unwrap_or_default().to_string(), e["tokens"].clone()))
                .collect(),
            _ => panic!("unexpected tokenize_no_special shape"),
        };
        assert!(!items.is_empty());
        for (text, ids) in items.iter().take(4) {
            let want: Vec<u64> = serde_json::from_value(ids.clone()).unwrap();
            assert_eq!(tokenize(&path, text, true), want, "{store}: {text:?}");
        }
    }
}

/// A model that does not exist is one error line and exit code 1.
#[test]
fn tokenize_missing_model_fails_cleanly() {
    let out = Command::new(ferro_bin())
        .args(["tokenize", "/nonexistent/model.gguf", "hi"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error:") && err.trim().lines().count() == 1, "{err}");
}
