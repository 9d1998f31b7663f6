//! Helpers shared by the gguf integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// `$FERRO_HOME/models/<name>.gguf` (FERRO_HOME defaults to ~/.cache/ferro).
pub fn model_path(name: &str) -> PathBuf {
    let home = match std::env::var_os("FERRO_HOME") {
        Some(h) if !h.is_empty() => PathBuf::from(h),
        _ => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/ferro"),
    };
    home.join("models").join(format!("{name}.gguf"))
}

/// The model's path, or None when it is missing and FERRO_SKIP_MODEL_TESTS=1. A missing model
/// without that variable fails the test: model tests never skip silently.
pub fn require_model(name: &str) -> Option<PathBuf> {
    let p = model_path(name);
    if p.is_file() {
        return Some(p);
    }
    if std::env::var("FERRO_SKIP_MODEL_TESTS").as_deref() == Ok("1") {
        eprintln!("skipping: {} is missing and FERRO_SKIP_MODEL_TESTS=1", p.display());
        return None;
    }
    panic!(
        "model {} not found; run `ferro pull {name}` (or set FERRO_SKIP_MODEL_TESTS=1 to skip model tests)",
        p.display()
    );
}

pub const MODELS: [&str; 2] = ["smollm2-135m-instruct", "gemma3-270m"];

pub fn fixture(name: &str) -> serde_json::Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).expect("fixture is JSON")
}
