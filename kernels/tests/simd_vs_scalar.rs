//! Property tests: every SIMD path available on this machine against the scalar reference, on
//! random blocks with ordinary, tiny, huge and zero scales, all-zero and max-magnitude quants, and
//! odd block counts.
//!
//! Bounds: the activation quantizers must be bit-exact (same rounding everywhere). Integer block
//! sums are exact on every path, so dot products differ only by f32 summation order:
//! |simd - scalar| <= 1e-5 · Σ_b |d_w d_a| Σ|q_w q_a| (+ the same for the Q4_1/Q5_1 offset term).

use bytemuck::Zeroable;
use ferro_kernels::quants::{float, q4_0, q4_1, q5_0, q5_1, q8_0, q8_1};
use ferro_kernels::quants::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1};
use ferro_kernels::{KernelPath, KernelTable};
use half::{bf16, f16};
use proptest::prelude::*;

fn simd_tables() -> Vec<&'static KernelTable> {
    KernelPath::available()
        .into_iter()
        .filter(|p| *p != KernelPath::Scalar)
        .map(|p| KernelTable::for_path(p).unwrap())
        .collect()
}

/// An f16 scale: ordinary, tiny (subnormal), huge, or zero.
fn scale() -> impl Strategy<Value = f16> {
    prop_oneof![
        4 => (-2.0f32..2.0).prop_map(f16::from_f32),
        1 => Just(f16::from_f32(6.0e-8)),
        1 => Just(f16::from_f32(-1000.0)),
        1 => Just(f16::from_f32(0.0)),
        1 => (1u16..0x7bff).prop_map(f16::from_bits),
    ]
}

/// 32 activation floats: random at one of several magnitudes, all zero, or all at max magnitude.
fn act_block() -> impl Strategy<Value = Vec<f32>> {
    let mag = prop_oneof![Just(1e-6f32), Just(1.0f32), Just(1e3f32), Just(1e6f32)];
    prop_oneof![
        6 => (mag, prop::collection::vec(-1.0f32..1.0, 32)).prop_map(|(m, v)| v.iter().map(|x| x * m).collect()),
        1 => Just(vec![0.0; 32]),
        1 => prop::collection::vec(prop_oneof![Just(-1e6f32), Just(1e6f32)], 32),
    ]
}

fn acts(n: usize) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(act_block(), n).prop_map(|v| v.concat())
}

fn nibbles() -> impl Strategy<Value = [u8; 16]> {
    prop_oneof![
        4 => any::<[u8; 16]>(),
        1 => Just([0u8; 16]),
        1 => Just([0xFFu8; 16]),
    ]
}

fn q8s() -> impl Strategy<Value = [i8; 32]> {
    prop_oneof![
        4 => any::<[i8; 32]>(),
        1 => Just([0i8; 32]),
        1 => Just([127i8; 32]),
        1 => Just([-128i8; 32]),
    ]
}

fn blocks_q4_0(n: usize) -> impl Strategy<Value = Vec<BlockQ4_0>> {
    prop::collection::vec((scale(), nibbles()).prop_map(|(d, qs)| BlockQ4_0 { d, qs }), n)
}
fn blocks_q4_1(n: usize) -> impl Strategy<Value = Vec<BlockQ4_1>> {
    prop::collection::vec(
        (scale(), scale(), nibbles()).prop_map(|(d, m, qs)| BlockQ4_1 { d, m, qs }),
        n,
    )
}
fn blocks_q5_0(n: usize) -> impl Strategy<Value = Vec<BlockQ5_0>> {
    prop::collection::vec(
        (scale(), any::<[u8; 4]>(), nibbles()).prop_map(|(d, qh, qs)| BlockQ5_0 { d, qh, qs }),
        n,
    )
}
fn blocks_q5_1(n: usize) -> impl Strategy<Value = Vec<BlockQ5_1>> {
    prop::collection::vec(
        (scale(), scale(), any::<[u8; 4]>(), nibbles()).prop_map(|(d, m, qh, qs)| BlockQ5_1 { d, m, qh, qs }),
        n,
    )
}
fn blocks_q8_0(n: usize) -> impl Strategy<Value = Vec<BlockQ8_0>> {
    prop::collection::vec((scale(), q8s()).prop_map(|(d, qs)| BlockQ8_0 { d, qs }), n)
}

fn quant_q8_0(x: &[f32]) -> Vec<BlockQ8_0> {
    let mut a = vec![BlockQ8_0::zeroed(); x.len() / 32];
    q8_0::quantize_activations(x, &mut a);
    a
}
/// Q8_1 stores `d·Σq` as f16, which overflows for |x| beyond ~8e3 (in llama.cpp as well), so
/// its activations are scaled down by 1e3.
fn quant_q8_1(x: &[f32]) -> Vec<BlockQ8_1> {
    let x: Vec<f32> = x.iter().map(|v| v * 1e-3).collect();
    let x = &x[..];
    let mut a = vec![BlockQ8_1::zeroed(); x.len() / 32];
    q8_1::quantize_activations(x, &mut a);
    a
}

/// Σ_b |d_w d_a| Σ|q_w q_a| computed from dequantized values: an upper bound of the magnitude
/// of the terms of the dot product.
fn magnitude(w: &[f32], a: &[f32]) -> f32 {
    w.iter().zip(a).map(|(x, y)| (x * y).abs()).sum()
}

fn deq_q8_0(a: &[BlockQ8_0]) -> Vec<f32> {
    let mut v = vec![0f32; a.len() * 32];
    q8_0::dequantize(a, &mut v);
    v
}

fn check(name: &str, path: &str, simd: f32, scalar: f32, mag: f32) -> Result<(), TestCaseError> {
    prop_assert!(
        (simd - scalar).abs() <= 1e-5 * mag + 1e-30,
        "{name} on {path}: simd {simd} vs scalar {scalar} (magnitude {mag})"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn quantizers_are_bit_exact(x in (1usize..9).prop_flat_map(acts)) {
        let (a0, a1) = (quant_q8_0(&x), quant_q8_1(&x));
        let x1: Vec<f32> = x.iter().map(|v| v * 1e-3).collect();
        for t in simd_tables() {
            let mut b0 = vec![BlockQ8_0::zeroed(); a0.len()];
            (t.quantize_q8_0)(&x, &mut b0);
            prop_assert_eq!(&a0, &b0, "q8_0 quantizer on {}", t.name);
            let mut b1 = vec![BlockQ8_1::zeroed(); a1.len()];
            (t.quantize_q8_1)(&x1, &mut b1);
            prop_assert_eq!(&a1, &b1, "q8_1 quantizer on {}", t.name);
        }
    }

    #[test]
    fn dot_q4_0((w, x) in (1usize..18).prop_flat_map(|n| (blocks_q4_0(n), acts(n)))) {
        let a = quant_q8_0(&x);
        let mut wf = vec![0f32; w.len() * 32];
        q4_0::dequantize(&w, &mut wf);
        let want = q4_0::vec_dot(&w, &a);
        let mag = magnitude(&wf, &deq_q8_0(&a));
        for t in simd_tables() {
            check("q4_0", t.name, (t.dot_q4_0)(&w, &a), want, mag)?;
        }
    }

    #[test]
    fn dot_q4_1((w, x) in (1usize..18).prop_flat_map(|n| (blocks_q4_1(n), acts(n)))) {
        let a = quant_q8_1(&x);
        let want = q4_1::vec_dot(&w, &a);
        let mag: f32 = w.iter().zip(&a).map(|(x, y)| {
            x.d.to_f32().abs() * y.d.to_f32().abs() * 15.0 * 127.0 * 32.0 + (x.m.to_f32() * y.s.to_f32()).abs()
        }).sum();
        for t in simd_tables() {
            check("q4_1", t.name, (t.dot_q4_1)(&w, &a), want, mag)?;
        }
    }

    #[test]
    fn dot_q5_0((w, x) in (1usize..18).prop_flat_map(|n| (blocks_q5_0(n), acts(n)))) {
        let a = quant_q8_0(&x);
        let mut wf = vec![0f32; w.len() * 32];
        q5_0::dequantize(&w, &mut wf);
        let want = q5_0::vec_dot(&w, &a);
        let mag = magnitude(&wf, &deq_q8_0(&a));
        for t in simd_tables() {
            check("q5_0", t.name, (t.dot_q5_0)(&w, &a), want, mag)?;
        }
    }

    #[test]
    fn dot_q5_1((w, x) in (1usize..18).prop_flat_map(|n| (blocks_q5_1(n), acts(n)))) {
        let a = quant_q8_1(&x);
        let want = q5_1::vec_dot(&w, &a);
        let mag: f32 = w.iter().zip(&a).map(|(x, y)| {
            x.d.to_f32().abs() * y.d.to_f32().abs() * 31.0 * 127.0 * 32.0 + (x.m.to_f32() * y.s.to_f32()).abs()
        }).sum();
        for t in simd_tables() {
            check("q5_1", t.name, (t.dot_q5_1)(&w, &a), want, mag)?;
        }
    }

    #[test]
    fn dot_q8_0((w, x) in (1usize..18).prop_flat_map(|n| (blocks_q8_0(n), acts(n)))) {
        let a = quant_q8_0(&x);
        let want = q8_0::vec_dot(&w, &a);
        let mag = magnitude(&deq_q8_0(&w), &deq_q8_0(&a));
        for t in simd_tables() {
            check("q8_0", t.name, (t.dot_q8_0)(&w, &a), want, mag)?;
        }
    }

    #[test]
    fn dot_floats((w, x) in (1usize..300).prop_flat_map(|n| (
        prop::collection::vec(-1e3f32..1e3, n), prop::collection::vec(-1e3f32..1e3, n)))) {
        let w16: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
        let wb: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
        let mag = magnitude(&w, &x) * 1.01;
        for t in simd_tables() {
            check("f32", t.name, (t.dot_f32)(&w, &x), float::vec_dot_f32(&w, &x), mag)?;
            check("f16", t.name, (t.dot_f16)(&w16, &x), float::vec_dot_f16(&w16, &x), mag)?;
            check("bf16", t.name, (t.dot_bf16)(&wb, &x), float::vec_dot_bf16(&wb, &x), mag)?;
        }
    }
}

/// Ties (x·id exactly k + 0.5) round to even on every path, as llama.cpp's SIMD quantizers do.
#[test]
fn quantizer_ties_round_to_even() {
    let mut x = [0f32; 32];
    x[0] = 127.0; // id = 1
    for (i, v) in x.iter_mut().enumerate().skip(1) {
        *v = (i as f32 - 16.0) + 0.5;
    }
    let a = quant_q8_0(&x);
    assert_eq!(a[0].qs[1], -14); // -14.5 -> -14
    assert_eq!(a[0].qs[2], -14); // -13.5 -> -14
    for t in simd_tables() {
        let mut b = [BlockQ8_0::zeroed()];
        (t.quantize_q8_0)(&x, &mut b);
        assert_eq!(a[0], b[0], "{}", t.name);
    }
}

/// Guards against a silently skipped suite: on x86-64 with AVX2 the AVX2 path must be tested.
#[test]
fn expected_paths_are_tested() {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        assert!(KernelPath::Avx2.is_available());
    }
    #[cfg(target_arch = "aarch64")]
    assert!(KernelPath::Neon.is_available());
}
