//! Benchmark helpers shared by the criterion suites.

use ferro_kernels::{quantize_row, GgmlType};
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

/// The environment variable `name` parsed as a `T`; `None` when unset or unparsable.
pub fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

/// Worker threads of the model benches: `FERRO_BENCH_THREADS`, else one per core.
pub fn bench_threads() -> usize {
    env("FERRO_BENCH_THREADS")
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Deterministic values in [-1, 1).
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// Weight bytes of a `rows x cols` matrix: 64 distinct quantized rows, repeated (the values do
/// not change the speed; the size does). Returned as u64 words so the bytes are aligned.
pub fn matrix(ty: GgmlType, rows: usize, cols: usize) -> (Vec<u64>, usize) {
    let distinct: Vec<Vec<u8>> = (0..64)
        .map(|r| quantize_row(ty, &values(cols, r as u64 + 1)).unwrap())
        .collect();
    let rb = distinct[0].len();
    let mut words = vec![0u64; (rows * rb).div_ceil(8)];
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
    for r in 0..rows {
        bytes[r * rb..(r + 1) * rb].copy_from_slice(&distinct[r % 64]);
    }
    (words, rows * rb)
}
