//! Real data: every tensor of both test models dequantizes to finite values, and the dot products
//! of real weight rows agree between every SIMD path and the scalar reference.
//!
//! Bound: |path - scalar| <= 1e-4 · Σ|w_i·x_i| + 1e-6 per row (integer block sums are exact on
//! every path; only the f32 accumulation order differs).
//!
//! The models live at `$FERRO_HOME/models/<name>.gguf` (default `~/.cache/ferro`). A missing
//! model fails the test unless `FERRO_SKIP_MODEL_TESTS=1`.

use ferro_gguf::Gguf;
use ferro_kernels::{dequantize_row, is_supported, KernelPath, KernelTable, WeightMatrix};
use std::path::PathBuf;

fn model(name: &str) -> Option<Gguf> {
    let home = std::env::var_os("FERRO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME is not set")).join(".cache/ferro"));
    let path = home.join("models").join(format!("{name}.gguf"));
    if !path.exists() {
        if std::env::var("FERRO_SKIP_MODEL_TESTS").as_deref() == Ok("1") {
            eprintln!("skipping: {} is missing and FERRO_SKIP_MODEL_TESTS=1", path.display());
            return None;
        }
        panic!(
            "model {} not found (run `ferro pull {name}`, or set FERRO_SKIP_MODEL_TESTS=1)",
            path.display()
        );
    }
    Some(Gguf::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

fn every_tensor_is_finite(name: &str) {
    let Some(g) = model(name) else { return };
    let mut row = Vec::new();
    for info in g.tensors() {
        let (_, data) = g.tensor(&info.name).unwrap();
        let (ne0, rows) = (info.ne0() as usize, info.n_rows() as usize);
        row.resize(ne0, 0.0);
        let rb = data.len() / rows;
        for r in 0..rows {
            dequantize_row(info.ty, &data[r * rb..(r + 1) * rb], &mut row)
                .unwrap_or_else(|e| panic!("{}: {e}", info.name));
            if let Some(i) = row.iter().position(|v| !v.is_finite()) {
                panic!("{} row {r} element {i} is {}", info.name, row[i]);
            }
        }
    }
}

fn simd_agrees_with_scalar(name: &str) {
    let Some(g) = model(name) else { return };
    let scalar = KernelTable::for_path(KernelPath::Scalar).unwrap();
    let tables: Vec<_> = KernelTable::variants()
        .into_iter()
        .filter(|t| t.name != "scalar")
        .collect();
    let mut n_checked = 0;
    for info in g.tensors() {
        if info.dims.len() != 2 {
            continue;
        }
        assert!(
            is_supported(info.ty),
            "{name} {}: no kernels for {}",
            info.name,
            info.ty
        );
        let (_, data) = g.tensor(&info.name).unwrap();
        let (cols, rows) = (info.ne0() as usize, info.n_rows() as usize);
        let w = WeightMatrix::new(info.ty, rows, cols, data).unwrap();
        // Up to 9 rows spread over the matrix, as a contiguous sub-matrix each.
        let picks: Vec<usize> = (0..9).map(|k| k * (rows - 1) / 8).collect();
        let x: Vec<f32> = (0..cols)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 3.0)
            .collect();
        for &r in &picks {
            let sub = WeightMatrix::new(info.ty, 1, cols, w.row(r)).unwrap();
            let mut wf = vec![0f32; cols];
            dequantize_row(info.ty, w.row(r), &mut wf).unwrap();
            let mag: f32 = wf.iter().zip(&x).map(|(a, b)| (a * b).abs()).sum();
            let mut want = [0f32];
            scalar.matvec(&sub, &x, &mut want);
            for t in &tables {
                let mut got = [0f32];
                t.matvec(&sub, &x, &mut got);
                assert!(
                    (got[0] - want[0]).abs() <= 1e-4 * mag + 1e-6,
                    "{name} {} row {r} on {}: {} vs scalar {}",
                    info.name,
                    t.name,
                    got[0],
                    want[0]
                );
            }
            n_checked += 1;
        }
    }
    assert!(n_checked > 0, "{name}: no weight rows checked");
}

#[test]
fn smollm2_tensors_are_finite() {
    every_tensor_is_finite("smollm2-135m-instruct");
}

#[test]
fn gemma3_tensors_are_finite() {
    every_tensor_is_finite("gemma3-270m");
}

#[test]
fn smollm2_simd_matches_scalar() {
    simd_agrees_with_scalar("smollm2-135m-instruct");
}

#[test]
fn gemma3_simd_matches_scalar() {
    simd_agrees_with_scalar("gemma3-270m");
}
