//! Fixed-data checks in the style of llama.cpp's tests/test-quantize-fns.cpp, on every path:
//! x = 0.1 + 2·cos(i + offset), 4096 elements.
//!
//! Bounds (llama.cpp's; its "RMSE" is sqrt(Σ(a-b)²)/n): quantize→dequantize error < 0.002 (2-bit K-quants 0.0075, 3-bit 0.004);
//! |dot(W, x) - Σ w·x| / 4096 < 0.02 (2-bit and 3-bit K-quants 0.04), with weights at offset 0
//! and activations at offset 1 quantized on the fly; on-the-fly activation quantization vs the
//! reference quantizer, RMSE of the dequantized values < 0.0001.

use bytemuck::Zeroable;
use ferro_kernels::quants::{q8_0, q8_1, BlockQ8_0, BlockQ8_1};
use ferro_kernels::{dequantize_row, is_supported, quantize_row, GgmlType, KernelPath, KernelTable, WeightMatrix};

const N: usize = 4096;

fn synthetic(offset: f32) -> Vec<f32> {
    (0..N).map(|i| 0.1 + 2.0 * (i as f32 + offset).cos()).collect()
}

fn rmse(a: &[f32], b: &[f32]) -> f32 {
    (a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f32>() / a.len() as f32).sqrt()
}

/// test-quantize-fns' `array_rmse`: sqrt(Σ(a-b)²) / n.
fn llama_rmse(a: &[f32], b: &[f32]) -> f32 {
    (a.iter()
        .zip(b)
        .map(|(x, y)| ((x - y) as f64).powi(2))
        .sum::<f64>()
        .sqrt()
        / a.len() as f64) as f32
}

fn weight_types() -> Vec<GgmlType> {
    let v: Vec<GgmlType> = GgmlType::ALL.into_iter().filter(|t| is_supported(*t)).collect();
    for t in [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::F16,
        GgmlType::BF16,
    ] {
        assert!(v.contains(&t), "{t} must be supported");
    }
    v
}

fn bounds(ty: GgmlType) -> (f32, f32) {
    match ty {
        GgmlType::Q2_K => (0.0075, 0.04),
        GgmlType::Q3_K => (0.0040, 0.04),
        _ => (0.002, 0.02),
    }
}

#[test]
fn quantization_error() {
    let x = synthetic(0.0);
    for ty in weight_types() {
        let q = quantize_row(ty, &x).unwrap();
        let mut back = vec![0f32; N];
        dequantize_row(ty, &q, &mut back).unwrap();
        let e = llama_rmse(&x, &back);
        assert!(e < bounds(ty).0, "{ty}: quantization RMSE {e}");
    }
}

#[test]
fn dot_product_error_every_path() {
    let w = synthetic(0.0);
    let x = synthetic(1.0);
    let exact: f64 = w.iter().zip(&x).map(|(a, b)| *a as f64 * *b as f64).sum();
    for path in KernelPath::available() {
        let t = KernelTable::for_path(path).unwrap();
        for ty in weight_types() {
            let q = quantize_row(ty, &w).unwrap();
            let m = WeightMatrix::new(ty, 1, N, &q).unwrap();
            let mut y = [0f32];
            t.matvec(&m, &x, &mut y);
            let e = ((y[0] as f64 - exact).abs() / N as f64) as f32;
            assert!(e < bounds(ty).1, "{ty} on {}: dot error {e}", t.name);
        }
    }
}

#[test]
fn activation_quantizers_match_reference() {
    let x = synthetic(1.0);
    let (mut a, mut b) = (vec![BlockQ8_0::zeroed(); N / 32], vec![BlockQ8_0::zeroed(); N / 32]);
    q8_0::quantize(&x, &mut a);
    let (mut fa, mut fb) = (vec![0f32; N], vec![0f32; N]);
    q8_0::dequantize(&a, &mut fa);
    let (mut c, mut d) = (vec![BlockQ8_1::zeroed(); N / 32], vec![BlockQ8_1::zeroed(); N / 32]);
    q8_1::quantize(&x, &mut c);
    let (mut fc, mut fd) = (vec![0f32; N], vec![0f32; N]);
    q8_1::dequantize(&c, &mut fc);
    let scalar = KernelTable::for_path(KernelPath::Scalar).unwrap();
    let (mut sb, mut sd) = (b.clone(), d.clone());
    (scalar.quantize_q8_0)(&x, &mut sb);
    (scalar.quantize_q8_1)(&x, &mut sd);
    for t in KernelTable::variants() {
        (t.quantize_q8_0)(&x, &mut b);
        q8_0::dequantize(&b, &mut fb);
        assert!(rmse(&fa, &fb) < 1e-4, "q8_0 on {}", t.name);
        (t.quantize_q8_1)(&x, &mut d);
        q8_1::dequantize(&d, &mut fd);
        assert!(rmse(&fc, &fd) < 1e-4, "q8_1 on {}", t.name);
        // The SIMD quantizers reproduce the scalar table's blocks bit for bit (scales rounded
        // to f16 the same way), so every path's products start from the same activations.
        let bytes = |v: &[BlockQ8_0]| bytemuck::cast_slice::<BlockQ8_0, u8>(v).to_vec();
        assert_eq!(bytes(&b), bytes(&sb), "q8_0 bits on {}", t.name);
        let bytes1 = |v: &[BlockQ8_1]| bytemuck::cast_slice::<BlockQ8_1, u8>(v).to_vec();
        assert_eq!(bytes1(&d), bytes1(&sd), "q8_1 bits on {}", t.name);
    }
}
