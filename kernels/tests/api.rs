//! The engine-facing API on every available path: shape checks, row round trips, and
//! matvec/matmul against a dequantize-then-f32 reference.

use ferro_kernels::{
    dequantize_row, is_supported, quantize_row, GgmlType, KernelError, KernelPath, KernelTable, PackedMatrix,
    WeightMatrix,
};

const TYPES: [GgmlType; 13] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// Deterministic pseudo-random values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn quantize_matrix(ty: GgmlType, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
    let x = values(rows * cols, seed);
    x.chunks(cols).flat_map(|r| quantize_row(ty, r).unwrap()).collect()
}

/// Owned bytes with 4-byte alignment (like a GGUF map).
fn aligned(bytes: Vec<u8>) -> Vec<u32> {
    let mut v = vec![0u32; bytes.len().div_ceil(4)];
    bytemuck::cast_slice_mut::<u32, u8>(&mut v)[..bytes.len()].copy_from_slice(&bytes);
    v
}

#[test]
fn rejects_bad_shapes_and_types() {
    assert!(matches!(
        WeightMatrix::new(GgmlType::IQ2_XXS, 1, 256, &[0; 66]),
        Err(KernelError::UnsupportedType(_))
    ));
    assert!(matches!(
        WeightMatrix::new(GgmlType::Q4_0, 2, 33, &[0; 36]),
        Err(KernelError::Shape(_))
    ));
    assert!(matches!(
        WeightMatrix::new(GgmlType::Q4_0, 2, 32, &[0; 35]),
        Err(KernelError::Shape(_))
    ));
    assert!(matches!(
        dequantize_row(GgmlType::Q8_0, &[0; 33], &mut [0.0; 32]),
        Err(KernelError::Shape(_))
    ));
    assert!(matches!(
        quantize_row(GgmlType::Q5_1, &[0.0; 31]),
        Err(KernelError::Shape(_))
    ));
    for ty in TYPES {
        assert!(is_supported(ty), "{ty}");
    }
}

#[test]
fn rows_round_trip() {
    let x = values(256, 7);
    for ty in TYPES {
        let q = quantize_row(ty, &x).unwrap();
        assert_eq!(q.len() as u64, ty.row_bytes(256).unwrap());
        let mut back = vec![0f32; 256];
        dequantize_row(ty, &q, &mut back).unwrap();
        // Max error on [-1, 1): about one quant step of the coarsest format (Q2_K: 2/3 of a
        // sub-block range of at most 2, halved by rounding).
        let err = x.iter().zip(&back).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        let bound = if ty == GgmlType::Q2_K || ty == GgmlType::Q3_K {
            0.4
        } else {
            0.15
        };
        assert!(err < bound, "{ty}: max error {err}");
        // Unaligned source bytes work too (copied internally).
        let mut un = vec![0u8];
        un.extend_from_slice(&q);
        let mut back2 = vec![0f32; 256];
        dequantize_row(ty, &un[1..], &mut back2).unwrap();
        assert_eq!(back, back2);
    }
}

#[test]
fn matvec_and_matmul_match_dequantized_reference() {
    // 37 rows and 13 tokens leave remainders in every tile shape the kernels use (13 = 8 + 4 +
    // 1 on the VNNI tiles, 4 + 4 + 4 + 1 on the others).
    let (rows, cols, n) = (37, 512, 13);
    for t in KernelTable::variants() {
        let path = t.name;
        for ty in TYPES {
            let data = aligned(quantize_matrix(ty, rows, cols, 3));
            let bytes = &bytemuck::cast_slice::<u32, u8>(&data)[..rows * ty.row_bytes(cols as u64).unwrap() as usize];
            let w = WeightMatrix::new(ty, rows, cols, bytes).unwrap();
            let mut wf = vec![0f32; rows * cols];
            for r in 0..rows {
                dequantize_row(ty, w.row(r), &mut wf[r * cols..(r + 1) * cols]).unwrap();
            }
            let x = values(n * cols, 11);
            let mut y = vec![0f32; n * rows];
            t.matmul(&w, &x, n, &mut y);
            for tok in 0..n {
                let mut y1 = vec![0f32; rows];
                t.matvec(&w, &x[tok * cols..(tok + 1) * cols], &mut y1);
                for r in 0..rows {
                    let want: f32 = wf[r * cols..(r + 1) * cols]
                        .iter()
                        .zip(&x[tok * cols..(tok + 1) * cols])
                        .map(|(a, b)| a * b)
                        .sum();
                    let got = y[tok * rows + r];
                    // Activations quantized to 8 bits: relative error ~ 1/127 of Σ|w·x|.
                    let scale: f32 = wf[r * cols..(r + 1) * cols]
                        .iter()
                        .zip(&x[tok * cols..(tok + 1) * cols])
                        .map(|(a, b)| (a * b).abs())
                        .sum();
                    assert!(
                        (got - want).abs() <= 0.02 * scale + 1e-4,
                        "{path:?} {ty} tok {tok} row {r}: {got} vs {want}"
                    );
                    // Bit-identical: a token's result must not depend on what it is batched with.
                    assert_eq!(got, y1[r], "{path:?} {ty} tok {tok} row {r}: matmul and matvec differ");
                }
            }
        }
    }
}

#[test]
fn packed_products_equal_the_unpacked_ones() {
    // Row counts below, at and across the 8-row groups; token counts on both sides of the
    // decode / prefill switch; odd and even blocks per row (group padding), whole and partial
    // runs of blocks (`crate::packed::RUN`).
    // Every table, the AVX-512 one without VNNI included on CPUs that have VNNI.
    for t in KernelTable::variants() {
        let path = t.name;
        let mut packed = Vec::new();
        for ty in TYPES {
            // 70001 x 32: decode chunks of over 256 small groups (read as two streams) on up
            // to four threads, a partial last group.
            for (rows, cols) in [(1, 32), (7, 96), (8, 64), (9, 224), (37, 512), (64, 4096), (70001, 32)] {
                if !(cols as u64).is_multiple_of(ty.block_size()) {
                    continue;
                }
                let data = aligned(quantize_matrix(ty, rows, cols, 5));
                let bytes =
                    &bytemuck::cast_slice::<u32, u8>(&data)[..rows * ty.row_bytes(cols as u64).unwrap() as usize];
                let w = WeightMatrix::new(ty, rows, cols, bytes).unwrap();
                let Some(p) = PackedMatrix::pack(t, &w) else {
                    continue;
                };
                if !packed.contains(&ty) {
                    packed.push(ty);
                }
                assert_eq!((p.ty, p.rows, p.cols), (ty, rows, cols));
                for n in [1, 2, 5, 6, 11, 13] {
                    let x = values(n * cols, 13 + n as u64);
                    let (mut want, mut got) = (vec![0f32; n * rows], vec![0f32; n * rows]);
                    t.matmul(&w, &x, n, &mut want);
                    t.matmul_packed(&p, &x, n, &mut got);
                    for (i, (a, b)) in want.iter().zip(&got).enumerate() {
                        assert_eq!(
                            a.to_bits(),
                            b.to_bits(),
                            "{path:?} {ty} {rows}x{cols} n={n} [{i}]: {a} vs {b}"
                        );
                    }
                }
            }
        }
        // The x86 tables pack Q4_0, Q4_1, Q5_0, Q8_0 and Q4_K: this test must not pass by
        // packing nothing there.
        if path.starts_with("avx") {
            let want = [
                GgmlType::Q4_0,
                GgmlType::Q4_1,
                GgmlType::Q5_0,
                GgmlType::Q8_0,
                GgmlType::Q4_K,
            ];
            assert!(
                want.iter().all(|ty| packed.contains(ty)),
                "{path:?} packed only {packed:?}"
            );
        }
    }
}

#[test]
fn packing_into_one_map_gives_each_matrix_s_bytes() {
    // `pack_all` puts every packable set into one shared map: each result holds the bytes that
    // `pack_stacked` gives the set alone, starts on a cache line, and the sets a table cannot
    // pack come back as None in their place (mixed widths), or, where the set is one matrix of
    // a type without packed kernels (Q6_K) and the table packs others, as a copy of its rows
    // whose products are the row kernels'.
    for t in KernelTable::variants() {
        let path = t.name;
        let shapes = [
            (GgmlType::Q4_0, 13, 512),
            (GgmlType::Q6_K, 9, 256),
            (GgmlType::Q4_1, 27, 64),
            (GgmlType::Q8_0, 9, 96),
            (GgmlType::Q4_K, 16, 512),
            (GgmlType::Q4_0, 8, 64),
        ];
        let data: Vec<Vec<u32>> = shapes
            .iter()
            .enumerate()
            .map(|(i, &(ty, rows, cols))| aligned(quantize_matrix(ty, rows, cols, 3 + i as u64)))
            .collect();
        let ws: Vec<WeightMatrix> = shapes
            .iter()
            .zip(&data)
            .map(|(&(ty, rows, cols), d)| {
                let len = rows * ty.row_bytes(cols as u64).unwrap() as usize;
                WeightMatrix::new(ty, rows, cols, &bytemuck::cast_slice::<u32, u8>(d)[..len]).unwrap()
            })
            .collect();
        // Each matrix alone, then Q4_0 stacked with the Q4_0 of another width (not packable),
        // then Q6_K stacked with itself (no packed kernel, not one matrix).
        let mut jobs: Vec<Vec<&WeightMatrix>> = ws.iter().map(|w| vec![w]).collect();
        jobs.push(vec![&ws[0], &ws[5]]);
        jobs.push(vec![&ws[1], &ws[1]]);
        let all = PackedMatrix::pack_all(t, &jobs);
        assert_eq!(all.len(), jobs.len());
        // Whether the table packs anything: then single matrices of other types are copied.
        let copies = PackedMatrix::packs(t, &[&ws[0]]);
        for (i, (job, got)) in jobs.iter().zip(&all).enumerate() {
            let want = PackedMatrix::pack_stacked(t, job);
            assert_eq!(PackedMatrix::packs(t, job), want.is_some(), "{path:?} set {i}");
            if let Some(g) = got {
                assert!((g.bytes().as_ptr() as usize).is_multiple_of(64), "{path:?} set {i}");
            }
            match (want, got) {
                (None, None) => assert!(!copies || job.len() > 1, "{path:?} set {i} not copied"),
                (Some(w), Some(g)) => {
                    assert_eq!((g.ty, g.rows, g.cols), (w.ty, w.rows, w.cols), "{path:?} set {i}");
                    assert!(g.bytes() == w.bytes(), "{path:?} set {i}: bytes differ");
                    assert!(g.as_rows().is_none(), "{path:?} set {i}");
                }
                (None, Some(g)) => {
                    assert!(copies && job.len() == 1, "{path:?} set {i}: copied");
                    let rows = g.as_rows().expect("a copy of the rows");
                    assert_eq!((rows.ty, rows.rows, rows.cols), (job[0].ty, job[0].rows, job[0].cols));
                    assert!(rows.data == job[0].data, "{path:?} set {i}: copied bytes differ");
                    for n in [1, 3] {
                        let x = values(n * rows.cols, 11 + i as u64);
                        let (mut want, mut got) = (vec![0.0; n * rows.rows], vec![0.0; n * rows.rows]);
                        t.matmul(job[0], &x, n, &mut want);
                        t.matmul_packed(g, &x, n, &mut got);
                        let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                        assert_eq!(bits(&got), bits(&want), "{path:?} set {i}, {n} tokens");
                    }
                }
                (Some(_), None) => panic!("{path:?} set {i}: packed alone, not in the map"),
            }
        }
        assert!(
            all[6].is_none() && all[7].is_none(),
            "{path:?}: mixed widths and stacked Q6_K"
        );
        assert_eq!(
            all[1].is_some(),
            copies,
            "{path:?}: Q6_K is copied where the table packs"
        );
    }
}

#[test]
fn stacked_matrices_give_each_matrix_s_products() {
    // Q, K and V stacked into one packed matrix: token t's outputs are each matrix's outputs
    // one after another, with their bits. Row counts that straddle the 8-row groups.
    for t in KernelTable::variants() {
        let path = t.name;
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0, GgmlType::Q4_K] {
            let cols = 512;
            let shapes = [13usize, 8, 27];
            let data: Vec<Vec<u32>> = shapes
                .iter()
                .enumerate()
                .map(|(i, &rows)| aligned(quantize_matrix(ty, rows, cols, 7 + i as u64)))
                .collect();
            let ws: Vec<WeightMatrix> = shapes
                .iter()
                .zip(&data)
                .map(|(&rows, d)| {
                    let len = rows * ty.row_bytes(cols as u64).unwrap() as usize;
                    WeightMatrix::new(ty, rows, cols, &bytemuck::cast_slice::<u32, u8>(d)[..len]).unwrap()
                })
                .collect();
            let refs: Vec<&WeightMatrix> = ws.iter().collect();
            let Some(p) = PackedMatrix::pack_stacked(t, &refs) else {
                assert!(
                    PackedMatrix::pack(t, &ws[0]).is_none(),
                    "{path:?} {ty}: packs alone but not stacked"
                );
                continue;
            };
            let total: usize = shapes.iter().sum();
            assert_eq!((p.rows, p.cols), (total, cols));
            for n in [1, 7] {
                let x = values(n * cols, 21 + n as u64);
                let mut got = vec![0f32; n * total];
                t.matmul_packed(&p, &x, n, &mut got);
                let mut r0 = 0;
                for (w, &rows) in ws.iter().zip(&shapes) {
                    let mut want = vec![0f32; n * rows];
                    t.matmul(w, &x, n, &mut want);
                    for tok in 0..n {
                        for r in 0..rows {
                            let (a, b) = (want[tok * rows + r], got[tok * total + r0 + r]);
                            assert_eq!(
                                a.to_bits(),
                                b.to_bits(),
                                "{path:?} {ty} n={n} token {tok} row {}",
                                r0 + r
                            );
                        }
                    }
                    r0 += rows;
                }
            }
        }
        // Matrices of different types or widths do not stack.
        let a = aligned(quantize_matrix(GgmlType::Q4_0, 8, 64, 1));
        let b = aligned(quantize_matrix(GgmlType::Q8_0, 8, 64, 2));
        let c = aligned(quantize_matrix(GgmlType::Q4_0, 8, 96, 3));
        fn view(ty: GgmlType, cols: usize, d: &[u32]) -> WeightMatrix<'_> {
            let len = 8 * ty.row_bytes(cols as u64).unwrap() as usize;
            WeightMatrix::new(ty, 8, cols, &bytemuck::cast_slice::<u32, u8>(d)[..len]).unwrap()
        }
        let (wa, wb, wc) = (
            view(GgmlType::Q4_0, 64, &a),
            view(GgmlType::Q8_0, 64, &b),
            view(GgmlType::Q4_0, 96, &c),
        );
        assert!(PackedMatrix::pack_stacked(t, &[&wa, &wb]).is_none());
        assert!(PackedMatrix::pack_stacked(t, &[&wa, &wc]).is_none());
        assert!(PackedMatrix::pack_stacked(t, &[]).is_none());
    }
}

#[test]
fn dispatch_reports_a_path() {
    assert!(!ferro_kernels::kernel_path().is_empty());
    assert!(KernelPath::available().contains(&KernelPath::Scalar));
    let _ = ferro_kernels::cpu_features();
}

#[test]
fn the_x86_tables_give_the_same_bits() {
    // Both x86 tables sum each block's integer products exactly (the AVX-512 VNNI one with
    // `vpdpbusd`) and apply the scales in the same order: their matrix products, unpacked and
    // packed, decode and prefill, must agree to the bit.
    let Some(avx2) = KernelTable::for_path(KernelPath::Avx2) else {
        return;
    };
    // Both AVX-512 tables where the CPU has VNNI.
    let avx512: Vec<_> = KernelTable::variants()
        .into_iter()
        .filter(|t| t.name.starts_with("avx512"))
        .collect();
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
    ] {
        let (rows, cols) = (37, 512);
        let data = aligned(quantize_matrix(ty, rows, cols, 9));
        let bytes = &bytemuck::cast_slice::<u32, u8>(&data)[..rows * ty.row_bytes(cols as u64).unwrap() as usize];
        let w = WeightMatrix::new(ty, rows, cols, bytes).unwrap();
        for n in [1, 5, 6, 11, 13, 19] {
            let x = values(n * cols, 21 + n as u64);
            let run = |t: &KernelTable| {
                let mut y = vec![0f32; n * rows];
                t.matmul(&w, &x, n, &mut y);
                let mut outs = vec![y];
                if let Some(p) = PackedMatrix::pack(t, &w) {
                    let mut y = vec![0f32; n * rows];
                    t.matmul_packed(&p, &x, n, &mut y);
                    outs.push(y);
                }
                outs.into_iter()
                    .map(|y| y.iter().map(|v| v.to_bits()).collect::<Vec<_>>())
                    .collect::<Vec<_>>()
            };
            let a = run(avx2);
            for t in &avx512 {
                for (i, y) in run(t).iter().enumerate() {
                    assert_eq!(&a[0], y, "{ty} n={n}: avx2 vs {} product {i}", t.name);
                }
            }
        }
    }
}
