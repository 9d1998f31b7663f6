//! The attention helpers (`dots_f32`, `weighted_sum_f32`) of every path against the scalar
//! reference, on head sizes with and without a multiple-of-8 / multiple-of-64 part, row
//! counts around the kernels' eight-row tiles, and strides wider than a row.

use ferro_kernels::{KernelPath, KernelTable};

fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7 + seed * 13) as f32 * 0.731).sin() * 2.5)
        .collect()
}

/// |a - b| within float rounding of sums of `terms` products of magnitude `mag`.
fn close(a: f32, b: f32, terms: usize, mag: f32) -> bool {
    (a - b).abs() <= 1e-6 * terms as f32 * mag + 1e-6
}

#[test]
fn every_path_matches_the_scalar_reference() {
    let scalar = KernelTable::for_path(KernelPath::Scalar).unwrap();
    for path in KernelPath::available() {
        let t = KernelTable::for_path(path).unwrap();
        for d in [1usize, 7, 8, 64, 100, 256] {
            for n in [0usize, 1, 5, 8, 9, 17] {
                let stride = d + 3;
                let q = values(d, 1);
                let k = values(n.saturating_sub(1) * stride + d, 2);
                let (mut want, mut got) = (vec![0f32; n], vec![f32::NAN; n]);
                (scalar.dots_f32)(&q, &k, stride, &mut want);
                (t.dots_f32)(&q, &k, stride, &mut got);
                for j in 0..n {
                    assert!(
                        close(got[j], want[j], d, 6.25),
                        "{} dots d {d} n {n} row {j}: {} vs {}",
                        t.name,
                        got[j],
                        want[j]
                    );
                }
                let a = values(n, 3);
                let init = values(d, 4);
                let (mut want, mut got) = (init.clone(), init.clone());
                (scalar.weighted_sum_f32)(&a, &k, stride, &mut want);
                (t.weighted_sum_f32)(&a, &k, stride, &mut got);
                for c in 0..d {
                    assert!(
                        close(got[c], want[c], n + 1, 6.25),
                        "{} weighted_sum d {d} n {n} col {c}: {} vs {}",
                        t.name,
                        got[c],
                        want[c]
                    );
                }
            }
        }
    }
}

#[test]
fn exact_on_small_integers() {
    // Integer data: every path must give the exact result (no rounding at all).
    for path in KernelPath::available() {
        let t = KernelTable::for_path(path).unwrap();
        let q: Vec<f32> = (0..70).map(|i| (i % 5) as f32 - 2.0).collect();
        let k: Vec<f32> = (0..70 * 3).map(|i| (i % 7) as f32 - 3.0).collect();
        let mut out = [0f32; 3];
        (t.dots_f32)(&q, &k, 70, &mut out);
        for (j, o) in out.iter().enumerate() {
            let want: f32 = q.iter().zip(&k[j * 70..]).map(|(a, b)| a * b).sum();
            assert_eq!(*o, want, "{} row {j}", t.name);
        }
        let mut acc = vec![1f32; 70];
        (t.weighted_sum_f32)(&[1.0, -2.0, 0.5], &k, 70, &mut acc);
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
#[should_panic(expected = "do not fit")]
fn rows_outside_the_data_panic() {
    let mut out = [0f32; 3];
    ferro_kernels::dots_f32(&[1.0; 8], &[0.0; 20], 8, &mut out);
}
