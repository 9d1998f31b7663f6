//! K-quant dequantization against gguf-py (the reference Python implementation of the GGUF
//! formats) on random blocks: fixtures from scripts/gen-kquant-fixtures.py in
//! tests/fixtures/kquants/. Also checks every path's dot product against the f64 dot product
//! of gguf-py's values, so the dot kernels are tied to an independent reading of the layouts.

use std::path::PathBuf;

use ferro_kernels::quants::q8_k::{self, BlockQ8K, KQuantKernels, QK_K};
use ferro_kernels::quants::{q2_k, q3_k, q4_k, q5_k, q6_k};

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/kquants")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// Per value: |ours - gguf-py| <= 4 ulp-ish of the largest value in its super-block (the two
/// implementations may group d * sc * q - dmin * m differently).
const REL_TOL: f32 = 5e-7;

/// Picks a format's dot product out of a kernel table.
type DotOf<B> = fn(&KQuantKernels) -> fn(&[B], &[BlockQ8K]) -> f32;

fn check<B: bytemuck::Pod>(name: &str, dequantize: fn(&[B], &mut [f32]), dot: DotOf<B>) {
    let raw = fixture(&format!("{name}.blocks"));
    let want: Vec<f32> = fixture(&format!("{name}.f32"))
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let blocks: &[B] = bytemuck::cast_slice(&raw);
    assert_eq!(blocks.len() * QK_K, want.len(), "{name}: fixture sizes disagree");
    let mut got = vec![0.0f32; want.len()];
    dequantize(blocks, &mut got);
    for (b, (g, w)) in got.chunks_exact(QK_K).zip(want.chunks_exact(QK_K)).enumerate() {
        let scale = w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (i, (&gv, &wv)) in g.iter().zip(w).enumerate() {
            assert!(
                (gv - wv).abs() <= REL_TOL * scale,
                "{name} block {b} value {i}: ferro {gv} vs gguf-py {wv}"
            );
        }
    }

    // Dot products against activations, per path, vs the f64 dot of gguf-py's values.
    let x: Vec<f32> = (0..want.len()).map(|i| 0.1 + 2.0 * (i as f32 + 0.5).cos()).collect();
    let mut a = vec![BlockQ8K::ZERO; blocks.len()];
    q8_k::quantize(&x, &mut a);
    let mut af = vec![0.0f32; want.len()];
    q8_k::dequantize(&a, &mut af);
    for k in KQuantKernels::available() {
        for (b, (wb, ab)) in blocks.iter().zip(&a).enumerate() {
            let wv = &want[b * QK_K..(b + 1) * QK_K];
            let av = &af[b * QK_K..(b + 1) * QK_K];
            let exact: f64 = wv.iter().zip(av).map(|(&p, &q)| p as f64 * q as f64).sum();
            let mag: f64 = wv.iter().zip(av).map(|(&p, &q)| (p as f64 * q as f64).abs()).sum();
            // Offsets (dmin * m) can cancel inside a weight; 1e-4 of the summed magnitudes
            // still catches any layout error, which moves the result by whole quant steps.
            let got = dot(&k)(std::slice::from_ref(wb), std::slice::from_ref(ab)) as f64;
            assert!(
                (got - exact).abs() <= 1e-4 * mag + 1e-30,
                "{name} block {b} path {}: dot {got} vs gguf-py {exact} (magnitude {mag})",
                k.name
            );
        }
    }
}

#[test]
fn q2_k_matches_gguf_py() {
    check("q2_k", q2_k::dequantize, |k| k.dot_q2_k);
}

#[test]
fn q3_k_matches_gguf_py() {
    check("q3_k", q3_k::dequantize, |k| k.dot_q3_k);
}

#[test]
fn q4_k_matches_gguf_py() {
    check("q4_k", q4_k::dequantize, |k| k.dot_q4_k);
}

#[test]
fn q5_k_matches_gguf_py() {
    check("q5_k", q5_k::dequantize, |k| k.dot_q5_k);
}

#[test]
fn q6_k_matches_gguf_py() {
    check("q6_k", q6_k::dequantize, |k| k.dot_q6_k);
}
