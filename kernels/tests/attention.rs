//! The attention helpers (`dots_f32`, `weighted_sum_f32`) of every path against the scalar
//! reference, on head sizes with and without a multiple-of-8 / multiple-of-64 part, row
//! counts around the kernels' eight-row tiles, and strides wider than a row; their f16 forms
//! (the KV cache's) against the f32 ones.

use ferro_kernels::{KernelPath, KernelTable};
use half::f16;

fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7 + seed * 13) as f32 * 0.731).sin() * 2.5)
        .collect()
}

/// |a - b| within float rounding of sums of `terms` products of magnitude `mag`.
fn close(a: f32, b: f32, terms: usize, mag: f32) -> bool {
    (a - b).abs() <= 1e-6 * terms as f32 * mag + 1e-6
}

/// Head sizes `d`, key counts `n` and head counts of the shape sweeps.
fn shapes() -> impl Iterator<Item = (usize, usize, usize)> {
    let ds = [1usize, 7, 8, 64, 100, 256];
    ds.into_iter().flat_map(|d| {
        [0usize, 1, 5, 8, 9, 17]
            .into_iter()
            .flat_map(move |n| [1usize, 3, 4, 7].into_iter().map(move |heads| (d, n, heads)))
    })
}

#[test]
fn every_path_matches_the_scalar_reference() {
    let scalar = KernelTable::for_path(KernelPath::Scalar).unwrap();
    for t in KernelTable::variants() {
        for (d, n, heads) in shapes() {
            let stride = d + 3;
            let q = values(heads * d, 1);
            let k = values(n.saturating_sub(1) * stride + d, 2);
            let (mut want, mut got) = (vec![0f32; heads * n], vec![f32::NAN; heads * n]);
            (scalar.dots_f32)(&q, heads, &k, stride, &mut want);
            (t.dots_f32)(&q, heads, &k, stride, &mut got);
            for i in 0..heads * n {
                assert!(
                    close(got[i], want[i], d, 6.25),
                    "{} dots d {d} n {n} heads {heads} score {i}: {} vs {}",
                    t.name,
                    got[i],
                    want[i]
                );
            }
            let a = values(heads * n, 3);
            let init = values(heads * d, 4);
            let (mut want, mut got) = (init.clone(), init.clone());
            (scalar.weighted_sum_f32)(&a, heads, &k, stride, &mut want);
            (t.weighted_sum_f32)(&a, heads, &k, stride, &mut got);
            for c in 0..heads * d {
                assert!(
                    close(got[c], want[c], n + 1, 6.25),
                    "{} weighted_sum d {d} n {n} heads {heads} out {c}: {} vs {}",
                    t.name,
                    got[c],
                    want[c]
                );
            }
        }
    }
}

#[test]
fn f16_rows_give_the_bits_of_their_f32_widening() {
    // f16 widens to f32 exactly, and each path's f16 kernels sum in its f32 kernels' order.
    for t in KernelTable::variants() {
        for (d, n, heads) in shapes() {
            let stride = d + 3;
            let q = values(heads * d, 11);
            let k16: Vec<f16> = values(n.saturating_sub(1) * stride + d, 12)
                .iter()
                .map(|&x| f16::from_f32(x))
                .collect();
            let k32: Vec<f32> = k16.iter().map(|x| x.to_f32()).collect();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            let (mut want, mut got) = (vec![0f32; heads * n], vec![f32::NAN; heads * n]);
            (t.dots_f32)(&q, heads, &k32, stride, &mut want);
            (t.dots_f16)(&q, heads, &k16, stride, &mut got);
            assert_eq!(bits(&got), bits(&want), "{} dots d {d} n {n} heads {heads}", t.name);
            let a = values(heads * n, 13);
            let (mut want, mut got) = (values(heads * d, 14), values(heads * d, 14));
            (t.weighted_sum_f32)(&a, heads, &k32, stride, &mut want);
            (t.weighted_sum_f16)(&a, heads, &k16, stride, &mut got);
            assert_eq!(bits(&got), bits(&want), "{} sums d {d} n {n} heads {heads}", t.name);
        }
    }
}

#[test]
fn heads_together_give_the_bits_of_heads_alone() {
    // The engine groups the query heads of a key head on some steps and not on others (batch
    // size, threads): the scores and sums must not depend on it.
    for t in KernelTable::variants() {
        for (d, n, heads) in [(64usize, 37usize, 3usize), (256, 21, 4), (100, 9, 7), (24, 5, 2)] {
            let stride = 2 * d + 5;
            let q = values(heads * d, 5);
            let k = values((n - 1) * stride + d, 6);
            let mut together = vec![0f32; heads * n];
            (t.dots_f32)(&q, heads, &k, stride, &mut together);
            let a = values(heads * n, 7);
            let mut sums = values(heads * d, 8);
            (t.weighted_sum_f32)(&a, heads, &k, stride, &mut sums);
            for h in 0..heads {
                let mut alone = vec![0f32; n];
                (t.dots_f32)(&q[h * d..(h + 1) * d], 1, &k, stride, &mut alone);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&together[h * n..(h + 1) * n]),
                    bits(&alone),
                    "{} dots head {h}",
                    t.name
                );
                let mut sum = values(heads * d, 8)[h * d..(h + 1) * d].to_vec();
                (t.weighted_sum_f32)(&a[h * n..(h + 1) * n], 1, &k, stride, &mut sum);
                assert_eq!(bits(&sums[h * d..(h + 1) * d]), bits(&sum), "{} sums head {h}", t.name);
            }
        }
    }
}

#[test]
fn exact_on_small_integers() {
    // Integer data: every path must give the exact result (no rounding at all).
    for t in KernelTable::variants() {
        let q: Vec<f32> = (0..70).map(|i| (i % 5) as f32 - 2.0).collect();
        let k: Vec<f32> = (0..70 * 3).map(|i| (i % 7) as f32 - 3.0).collect();
        let mut out = [0f32; 3];
        (t.dots_f32)(&q, 1, &k, 70, &mut out);
        for (j, o) in out.iter().enumerate() {
            let want: f32 = q.iter().zip(&k[j * 70..]).map(|(a, b)| a * b).sum();
            assert_eq!(*o, want, "{} row {j}", t.name);
        }
        let mut acc = vec![1f32; 70];
        (t.weighted_sum_f32)(&[1.0, -2.0, 0.5], 1, &k, 70, &mut acc);
        for (c, o) in acc.iter().enumerate() {
            assert_eq!(
                *o,
                1.0 + k[c] - 2.0 * k[70 + c] + 0.5 * k[140 + c],
                "{} col {c}",
                t.name
            );
        }
    }
}

#[test]
fn softmax_matches_the_scalar_reference() {
    let scalar = KernelTable::for_path(KernelPath::Scalar).unwrap();
    for t in KernelTable::variants() {
        for n in [1usize, 2, 7, 8, 9, 31, 64, 517] {
            // Spreads from a near-tie to differences far past f32's range (exp underflows to 0).
            for spread in [1e-3f32, 1.0, 30.0, 200.0, 3000.0] {
                let x: Vec<f32> = values(n, n + spread as usize).iter().map(|v| v * spread).collect();
                let (mut want, mut got) = (x.clone(), x.clone());
                (scalar.softmax_f32)(&mut want);
                (t.softmax_f32)(&mut got);
                let total: f32 = got.iter().sum();
                assert!(
                    (total - 1.0).abs() < 1e-5,
                    "{} n {n} spread {spread}: sum {total}",
                    t.name
                );
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() <= 1e-6 * w + 1e-37,
                        "{} n {n} spread {spread} [{i}] = {}: {g} vs {w}",
                        t.name,
                        x[i]
                    );
                }
            }
        }
        // The largest weight is exp(0) / sum, and a lone value gets all of it.
        let mut one = [-3.5f32];
        (t.softmax_f32)(&mut one);
        assert_eq!(one, [1.0], "{}", t.name);
        let mut two = [80.0f32, -80.0, 80.0];
        (t.softmax_f32)(&mut two);
        assert_eq!(two, [0.5, 0.0, 0.5], "{}", t.name);
    }
}

#[test]
#[should_panic(expected = "do not divide")]
fn heads_that_do_not_divide_the_rows_panic() {
    let mut out = [0f32; 4];
    ferro_kernels::dots_f32(&[1.0; 9], 2, &[0.0; 64], 8, &mut out);
}

#[test]
#[should_panic(expected = "do not fit")]
fn rows_outside_the_data_panic() {
    let mut out = [0f32; 3];
    ferro_kernels::dots_f32(&[1.0; 8], 1, &[0.0; 20], 8, &mut out);
}

/// A gated unit (`op` of a table) on every table against the scalar one: gates of lengths 1 to
/// `long` (vector tails included) times each spread; `check(case, gate, got, want)`.
fn gated_cases(
    op: impl Fn(&KernelTable, &mut [f32], &[f32]),
    spreads: &[f32],
    long: usize,
    check: impl Fn(&str, &[f32], &[f32], &[f32]),
) {
    let scalar = KernelTable::for_path(KernelPath::Scalar).unwrap();
    for t in KernelTable::variants() {
        for n in [1usize, 7, 8, 9, 31, long] {
            for &spread in spreads {
                let gate: Vec<f32> = values(n, n + spread as usize).iter().map(|v| v * spread).collect();
                let up = values(n, 7 * n + 1);
                let (mut want, mut got) = (gate.clone(), gate.clone());
                op(scalar, &mut want, &up);
                op(t, &mut got, &up);
                check(&format!("{} n {n} spread {spread}", t.name), &gate, &got, &want);
            }
        }
    }
}

/// GeGLU by ggml's fp16 table: every path gives the scalar reference's bits, including the
/// saturated ends, values that round across fp16 ties, and odd lengths (the vector tail).
#[test]
fn geglu_matches_the_scalar_reference_bit_for_bit() {
    let scalar = KernelTable::for_path(KernelPath::Scalar).unwrap();
    gated_cases(
        |t, g, u| (t.geglu_f32)(g, u),
        &[1e-3, 1.0, 4.0, 12.0],
        2048,
        |name, _, got, want| {
            let same = got.iter().zip(want).all(|(g, w)| g.to_bits() == w.to_bits());
            assert!(same, "{name}: {got:?} vs {want:?}");
        },
    );
    for t in KernelTable::variants() {
        // The ends, halfway cases of fp16 rounding (1 + 2^-11 ties to 1, 1 + 3·2^-11 to
        // 1 + 2^-9), and -0.
        let mut edge = [
            -10.0f32,
            -10.5,
            10.0,
            11.0,
            9.99,
            1.0 + 1.0 / 2048.0,
            1.0 + 3.0 / 2048.0,
            -0.0,
        ];
        let mut want = edge;
        (scalar.geglu_f32)(&mut want, &[2.0; 8]);
        (t.geglu_f32)(&mut edge, &[2.0; 8]);
        assert_eq!(edge.map(f32::to_bits), want.map(f32::to_bits), "{}", t.name);
        assert_eq!(&want[..4], &[0.0, 0.0, 20.0, 22.0]);
    }
}

#[test]
fn swiglu_matches_the_scalar_reference() {
    // Gates from tiny to past exp's range (silu(-100) is -0, silu(100) is 100).
    gated_cases(
        |t, g, u| (t.swiglu_f32)(g, u),
        &[1e-3, 1.0, 10.0, 100.0],
        1536,
        |name, gate, got, want| {
            for (i, (g, w)) in got.iter().zip(want).enumerate() {
                assert!(
                    // (Gates near -88.7, where exp leaves f32's range, give ~1e-37.)
                    (g - w).abs() <= 4.0 * f32::EPSILON * w.abs() + 1e-35,
                    "{name} [{i}] gate {}: {g} vs {w}",
                    gate[i]
                );
            }
        },
    );
    for t in KernelTable::variants() {
        let mut edge = [-100.0f32, 100.0, 0.0];
        (t.swiglu_f32)(&mut edge, &[1.0, 1.0, 1.0]);
        assert_eq!(edge, [0.0, 100.0, 0.0], "{}", t.name);
    }
}
