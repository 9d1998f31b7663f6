//! Throughput probe of the K-quant dot products (ignored by default; no timing assertions):
//! `cargo test -p ferro-kernels --release --test kquants_speed -- --ignored --nocapture`.
//! Prints single-thread GB/s of weights for a 4096 x 4096 matrix per format and path, the
//! figure to hold against memory bandwidth. The criterion suites in benches/ are the real
//! measurements; this is a quick look that needs no extra crate.

use std::time::Instant;

use ferro_kernels::quants::q8_k::{self, BlockQ8K, KQuantKernels, QK_K};
use ferro_kernels::quants::{q2_k, q3_k, q4_k, q5_k, q6_k};

const ROWS: usize = 4096;
const COLS: usize = 4096;

/// Picks a format's dot product out of a kernel table.
type DotOf<B> = fn(&KQuantKernels) -> fn(&[B], &[BlockQ8K]) -> f32;

fn probe<B: bytemuck::Pod + Sync>(name: &str, quantize: fn(&[f32], &mut [B]), dot: DotOf<B>) {
    let per_row = COLS / QK_K;
    let row: Vec<f32> = (0..COLS).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut one = vec![B::zeroed(); per_row];
    quantize(&row, &mut one);
    // Same quantized row repeated (quantizing 16M values with the reference code is slow);
    // the bytes are distinct memory, so the reads are real.
    let w: Vec<B> = (0..ROWS).flat_map(|_| one.iter().copied()).collect();
    let x: Vec<f32> = (0..COLS).map(|i| (i as f32 * 0.11).cos()).collect();
    let mut a = vec![BlockQ8K::ZERO; per_row];
    q8_k::quantize(&x, &mut a);
    let bytes = std::mem::size_of_val(w.as_slice()) as f64;
    for k in KQuantKernels::available() {
        let f = dot(&k);
        let mut sink = 0.0f32;
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            for r in w.chunks_exact(per_row) {
                sink += f(r, &a);
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "{name:5} {:14} {:7.2} GB/s  ({:.2} ms per 4096x4096 matvec, 1 thread)  [{sink:e}]",
            k.name,
            bytes / best / 1e9,
            best * 1e3
        );
    }
}

#[test]
#[ignore]
fn kquant_dot_throughput() {
    probe("q4_k", q4_k::quantize, |k| k.dot_q4_k);
    probe("q6_k", q6_k::quantize, |k| k.dot_q6_k);
    probe("q5_k", q5_k::quantize, |k| k.dot_q5_k);
    probe("q3_k", q3_k::quantize, |k| k.dot_q3_k);
    probe("q2_k", q2_k::quantize, |k| k.dot_q2_k);

    let x: Vec<f32> = (0..COLS * 64).map(|i| (i as f32 * 0.11).cos()).collect();
    for k in KQuantKernels::available() {
        let mut a = vec![BlockQ8K::ZERO; x.len() / QK_K];
        let t = Instant::now();
        for _ in 0..10 {
            (k.quantize_q8_k)(&x, &mut a);
        }
        let s = t.elapsed().as_secs_f64() / 10.0;
        println!(
            "q8_k quantize {:14} {:7.2} GB/s of f32",
            k.name,
            (x.len() * 4) as f64 / s / 1e9
        );
    }
}
