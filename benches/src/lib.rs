//! Benchmark helpers shared by the criterion suites.

use std::path::PathBuf;

/// The store's test models, by store name.
pub const TEST_MODELS: [&str; 2] = ["smollm2-135m-instruct", "gemma3-270m"];

/// `$FERRO_HOME/models/<name>.gguf` (FERRO_HOME defaults to ~/.cache/ferro).
pub fn model_path(name: &str) -> PathBuf {
    let home = std::env::var_os("FERRO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/ferro"));
    home.join("models").join(format!("{name}.gguf"))
}

/// Worker threads of the model benches: `FERRO_BENCH_THREADS`, else one per core.
pub fn bench_threads() -> usize {
    std::env::var("FERRO_BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}
