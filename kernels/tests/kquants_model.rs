//! Real data: every K-quant tensor of the gemma3 test model (Q4_K and Q6_K) dequantizes to
//! finite values, and on real rows every SIMD dot product agrees with the scalar oracle, and
//! the oracle with the f64 dot product of the dequantized values, within
//! `DOT_REL_BOUND * sum |w_i a_i|` (offsets counted separately, see `magnitude`).
//!
//! The model is `$FERRO_HOME/models/gemma3-270m.gguf` (FERRO_HOME defaults to ~/.cache/ferro).
//! A missing model fails the test unless FERRO_SKIP_MODEL_TESTS=1.

use std::path::PathBuf;

use ferro_gguf::{GgmlType, Gguf};
use ferro_kernels::quants::q4_k::{self, BlockQ4K};
use ferro_kernels::quants::q6_k::{self, BlockQ6K};
use ferro_kernels::quants::q8_k::{self, BlockQ8K, KQuantKernels, QK_K};

const DOT_REL_BOUND: f64 = 2e-5;

fn model_path(name: &str) -> Option<PathBuf> {
    let home = std::env::var_os("FERRO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/ferro")))?;
    let p = home.join("models").join(format!("{name}.gguf"));
    if p.exists() {
        return Some(p);
    }
    if std::env::var("FERRO_SKIP_MODEL_TESTS").as_deref() == Ok("1") {
        eprintln!("skipping: {} not found and FERRO_SKIP_MODEL_TESTS=1", p.display());
        return None;
    }
    panic!(
        "test model {} not found (run `ferro pull {name}` or set FERRO_SKIP_MODEL_TESTS=1)",
        p.display()
    );
}

trait Fmt: bytemuck::Pod {
    fn dequantize(b: &[Self], out: &mut [f32]);
    fn dot(k: &KQuantKernels) -> fn(&[Self], &[BlockQ8K]) -> f32;
    fn zero_quants(&self) -> Self;
}

impl Fmt for BlockQ4K {
    fn dequantize(b: &[Self], out: &mut [f32]) {
        q4_k::dequantize(b, out)
    }
    fn dot(k: &KQuantKernels) -> fn(&[Self], &[BlockQ8K]) -> f32 {
        k.dot_q4_k
    }
    fn zero_quants(&self) -> Self {
        Self { qs: [0; 128], ..*self }
    }
}

impl Fmt for BlockQ6K {
    fn dequantize(b: &[Self], out: &mut [f32]) {
        q6_k::dequantize(b, out)
    }
    fn dot(k: &KQuantKernels) -> fn(&[Self], &[BlockQ8K]) -> f32 {
        k.dot_q6_k
    }
    fn zero_quants(&self) -> Self {
        Self {
            ql: [0; 128],
            qh: [0; 64],
            ..*self
        }
    }
}

/// Checks one tensor: all rows finite; a spread of rows against every kernel path.
fn check_tensor<B: Fmt>(name: &str, dims: &[u64], data: &[u8]) -> usize {
    let row_len = dims[0] as usize;
    assert_eq!(row_len % QK_K, 0, "{name}: row length {row_len}");
    let blocks_per_row = row_len / QK_K;
    let blocks: &[B] = bytemuck::cast_slice(data);
    let n_rows = blocks.len() / blocks_per_row;
    assert_eq!(n_rows * blocks_per_row, blocks.len(), "{name}: partial row");

    let mut row = vec![0.0f32; row_len];
    for (r, rb) in blocks.chunks_exact(blocks_per_row).enumerate() {
        B::dequantize(rb, &mut row);
        assert!(row.iter().all(|v| v.is_finite()), "{name}: row {r} has NaN/inf");
    }

    // Activations: a deterministic smooth signal with some large entries, quantized per path.
    let x: Vec<f32> = (0..row_len)
        .map(|i| 0.1 + 2.0 * (i as f32 * 0.37).cos() + if i % 97 == 0 { 8.0 } else { 0.0 })
        .collect();
    let mut a = vec![BlockQ8K::ZERO; blocks_per_row];
    q8_k::quantize(&x, &mut a);
    let mut af = vec![0.0f32; row_len];
    q8_k::dequantize(&a, &mut af);

    let picks = [0, 1, n_rows / 3, n_rows / 2, n_rows - 2, n_rows - 1];
    let mut w0 = vec![0.0f32; row_len];
    for &r in &picks {
        let rb = &blocks[r * blocks_per_row..(r + 1) * blocks_per_row];
        B::dequantize(rb, &mut row);
        let zeroed: Vec<B> = rb.iter().map(B::zero_quants).collect();
        B::dequantize(&zeroed, &mut w0);
        let mag: f64 = (0..row_len)
            .map(|i| ((row[i] - w0[i]).abs() as f64 + w0[i].abs() as f64) * af[i].abs() as f64)
            .sum();
        let exact: f64 = row.iter().zip(&af).map(|(&w, &v)| w as f64 * v as f64).sum();
        let scalar = B::dot(&KQuantKernels::SCALAR)(rb, &a) as f64;
        assert!(
            (scalar - exact).abs() <= DOT_REL_BOUND * mag,
            "{name} row {r}: scalar {scalar} vs dequantized {exact} (magnitude {mag})"
        );
        for k in KQuantKernels::available() {
            let got = B::dot(&k)(rb, &a) as f64;
            assert!(
                (got - scalar).abs() <= DOT_REL_BOUND * mag,
                "{name} row {r} path {}: {got} vs scalar {scalar} (magnitude {mag})",
                k.name
            );
        }
    }
    n_rows
}

#[test]
fn gemma3_k_quant_tensors() {
    let Some(path) = model_path("gemma3-270m") else { return };
    let g = Gguf::open(&path).expect("open gemma3 model");
    let (mut n_q4, mut n_q6) = (0, 0);
    for t in g.tensors() {
        let data = g.tensor_data(t);
        match t.ty {
            GgmlType::Q4_K => {
                check_tensor::<BlockQ4K>(&t.name, &t.dims, data);
                n_q4 += 1;
            }
            GgmlType::Q6_K => {
                check_tensor::<BlockQ6K>(&t.name, &t.dims, data);
                n_q6 += 1;
            }
            _ => {}
        }
    }
    eprintln!("checked {n_q4} Q4_K and {n_q6} Q6_K tensors");
    assert!(
        n_q4 > 0 && n_q6 > 0,
        "expected Q4_K and Q6_K tensors in {}",
        path.display()
    );
}
