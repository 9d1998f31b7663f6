//! Matrix products and embedding lookups on every block format against the scalar reference
//! (dequantize on the CPU, then f32 math), on shapes spanning several workgroups.

mod common;

use common::{assert_close, check_rounding, dequantize, random_weight, round_like_llama_cpp, Rng};
use ferro_gguf::GgmlType;
use ferro_shaders::{
    gemm_big_min_tokens, gemmq_big_min_tokens, ActQuant, GpuContext, GEMM_BIG_MIN_K, GEMM_BIG_MIN_ROWS,
};
use proptest::prelude::*;

const TYPES: [GgmlType; 9] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

fn is_k(ty: GgmlType) -> bool {
    ty.block_size() == 256
}

/// Which product a check runs.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Path {
    /// `GpuContext::matmul` on the f32 activations (matmul.wgsl, gemm.wgsl's f32 tiles).
    F32,
    /// The model's decode path: activations rounded as llama.cpp's CPU rounds them, then the
    /// int8 product once per token.
    Decode,
    /// The model's path for a batch of that size: from 2 tokens the batched int8 product, from
    /// the gemm tiles' smallest batch gemmq.wgsl's int8 tiles.
    Batch,
}

/// Runs `y = W x` for n_tok tokens on the GPU and checks every output against the reference.
fn check_matmul(ctx: &GpuContext, ty: GgmlType, k: usize, rows: usize, n_tok: usize, seed: u64) {
    check_product(ctx, ty, k, rows, n_tok, seed, Path::F32)
}

/// The quantized paths are checked against the f32 product of the rounded activations.
fn check_product(ctx: &GpuContext, ty: GgmlType, k: usize, rows: usize, n_tok: usize, seed: u64, path: Path) {
    let quantized = path != Path::F32;
    let mut rng = Rng::new(seed);
    let bytes = random_weight(ty, k, rows, &mut rng);
    let mut x = rng.vec(n_tok * k);
    let w = ctx.upload_weight(ty, &[k as u64, rows as u64], &bytes).unwrap();
    let xg = ctx.upload_f32(&x).unwrap();
    let yg = ctx.zeros(n_tok * rows).unwrap();
    if quantized {
        let rounded = ctx.zeros(n_tok * k).unwrap();
        ctx.matvec_quantized(&w, &xg, &rounded, &yg, n_tok, path == Path::Batch)
            .unwrap();
        let q = ActQuant::for_weight(ty);
        x = if matches!(q, ActQuant::Q8_0 | ActQuant::Q8K) {
            // The int8 products: checked against the GPU's own rounding (written to
            // `rounded`), which must be llama.cpp's up to ties.
            let gpu_rounded = ctx.read_f32(&rounded).unwrap();
            check_rounding(ty.name(), q, &x, &gpu_rounded);
            gpu_rounded
        } else {
            round_like_llama_cpp(q, &x)
        };
    } else {
        ctx.matmul(&w, &xg, &yg, n_tok).unwrap();
    }
    let got = ctx.read_f32(&yg).unwrap();
    let wf = dequantize(ty, &bytes, k, rows);
    let mut want = vec![0f32; n_tok * rows];
    let mut scale = vec![0f32; n_tok * rows];
    for t in 0..n_tok {
        for (r, row) in wf.iter().enumerate() {
            let xs = &x[t * k..(t + 1) * k];
            want[t * rows + r] = row.iter().zip(xs).map(|(a, b)| a * b).sum();
            scale[t * rows + r] = row.iter().zip(xs).map(|(a, b)| (a * b).abs()).sum();
        }
    }
    for i in 0..want.len() {
        let tol = 1e-5 + 1e-4 * scale[i];
        assert!(
            (got[i] - want[i]).abs() <= tol,
            "{} k={k} rows={rows} n_tok={n_tok} {path:?}: output {i} (token {}, row {}): gpu {} vs cpu {} (tol {tol})",
            ty.name(),
            i / rows,
            i % rows,
            got[i],
            want[i]
        );
    }
}

#[test]
fn matvec_every_type() {
    let Some(ctx) = common::ctx() else { return };
    for ty in TYPES {
        // 67 and 130 rows: several workgroups and an odd count; k spans several loop trips.
        let k = if is_k(ty) { 768 } else { 544 };
        check_matmul(&ctx, ty, k, 67, 1, 1);
        check_matmul(&ctx, ty, 256, 130, 1, 2);
    }
}

#[test]
fn matvec_quantized_every_type() {
    let Some(ctx) = common::ctx() else { return };
    for ty in TYPES {
        let k = if is_k(ty) { 768 } else { 544 };
        check_product(&ctx, ty, k, 67, 1, 1, Path::Decode);
        // Several tokens (one per z), rows spanning several workgroups.
        check_product(&ctx, ty, 256, 130, 3, 2, Path::Decode);
        check_product(&ctx, ty, 4096, 9, 1, 3, Path::Decode);
    }
}

/// The batched int8 product (several sequences decoding together; one weight load for up to
/// 8 tokens) gives each token the bits of the one-token product, on batches with partial and
/// several token groups.
#[test]
fn matvec_batched_gives_the_one_token_bits() {
    let Some(ctx) = common::ctx() else { return };
    let mut rng = Rng::new(41);
    // The formats with an int8 product (mv_*.wgsl).
    use GgmlType::*;
    for ty in [Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K] {
        let k = if is_k(ty) { 512 } else { 160 };
        let rows = 133;
        let bytes = random_weight(ty, k, rows, &mut rng);
        let w = ctx.upload_weight(ty, &[k as u64, rows as u64], &bytes).unwrap();
        for n_tok in [2, 3, 8, 9, 17] {
            let x = rng.vec(n_tok * k);
            let xg = ctx.upload_f32(&x).unwrap();
            let rounded = ctx.zeros(n_tok * k).unwrap();
            let (one, many) = (ctx.zeros(n_tok * rows).unwrap(), ctx.zeros(n_tok * rows).unwrap());
            ctx.matvec_quantized(&w, &xg, &rounded, &one, n_tok, false).unwrap();
            ctx.matvec_quantized(&w, &xg, &rounded, &many, n_tok, true).unwrap();
            let (one, many) = (ctx.read_f32(&one).unwrap(), ctx.read_f32(&many).unwrap());
            for (i, (a, b)) in one.iter().zip(&many).enumerate() {
                assert_eq!(
                    a.to_bits(),
                    b.to_bits(),
                    "{} n_tok={n_tok}: token {} row {}: one-token {a} vs batched {b}",
                    ty.name(),
                    i / rows,
                    i % rows
                );
            }
        }
    }
}

/// gemmq.wgsl's int8 tiles (the model's prefill) on partial and several row and token tiles, on
/// every format with an int8 product, in both tile sizes.
#[test]
fn gemmq_prefill_every_type() {
    let Some(ctx) = common::ctx() else { return };
    use GgmlType::*;
    for ty in [Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K] {
        let k = if is_k(ty) { 512 } else { 96 };
        // 70 tokens: a full tile of 64 and a partial one; 67 rows: a full and a partial row tile.
        check_product(&ctx, ty, k, 67, 70, 4, Path::Batch);
        // Two full token tiles and one token; two full row tiles and two rows.
        check_product(&ctx, ty, k, 130, 129, 5, Path::Batch);
    }
    // The big tiles (128 x 64): full and partial tiles of rows and of tokens. (The 64 x 64
    // tiles above are double-buffered for the K-quants, the big ones for none.)
    let (rows, k) = (GEMM_BIG_MIN_ROWS as usize + 72, GEMM_BIG_MIN_K as usize);
    let n_big = gemmq_big_min_tokens() as usize + 44;
    for ty in [Q4_0, Q4_K, Q6_K] {
        check_product(&ctx, ty, k, rows, n_big, 6, Path::Batch);
    }
}

#[test]
fn matmul_prefill_every_type() {
    let Some(ctx) = common::ctx() else { return };
    for ty in TYPES {
        let k = if is_k(ty) { 512 } else { 96 };
        // 11 tokens: one full tile of 8 and a partial one.
        check_matmul(&ctx, ty, k, 37, 11, 3);
    }
}

#[test]
fn gemm_prefill_every_type() {
    let Some(ctx) = common::ctx() else { return };
    for ty in TYPES {
        let k = if is_k(ty) { 512 } else { 96 };
        // 70 tokens: a full tile of 64 and a partial one; 67 rows: a full and a partial row tile.
        check_matmul(&ctx, ty, k, 67, 70, 4);
        // The smallest batch that takes the gemm tiles.
        check_matmul(&ctx, ty, k, 130, 16, 5);
    }
}

/// Batches from `gemm_big_min_tokens()` tokens on take the 128 x 128 tiles for products from
/// GEMM_BIG_MIN_ROWS x GEMM_BIG_MIN_K on: they give the bits of the 64 x 64 tiles (each output
/// adds its products in k order either way), which `gemm_prefill_every_type` holds to the
/// reference, on partial row and token tiles. Smaller products keep the 64 x 64 tiles.
#[test]
fn gemm_big_tiles_give_the_small_tiles_bits() {
    let Some(ctx) = common::ctx() else { return };
    let (rows, k) = (GEMM_BIG_MIN_ROWS as usize + 72, GEMM_BIG_MIN_K as usize);
    assert!(
        ctx.has_big_gemm_tiles(rows as u32, k as u32),
        "the adapter lacks the 32 KiB of workgroup memory"
    );
    assert!(!ctx.has_big_gemm_tiles(GEMM_BIG_MIN_ROWS - 1, k as u32));
    assert!(!ctx.has_big_gemm_tiles(rows as u32, GEMM_BIG_MIN_K - 32));
    let n_big = gemm_big_min_tokens() as usize + 44;
    let n_small = gemm_big_min_tokens() as usize - 1;
    for ty in TYPES {
        let mut rng = Rng::new(7);
        let bytes = random_weight(ty, k, rows, &mut rng);
        let x = rng.vec(n_big * k);
        let w = ctx.upload_weight(ty, &[k as u64, rows as u64], &bytes).unwrap();
        let xg = ctx.upload_f32(&x).unwrap();
        let big = ctx.zeros(n_big * rows).unwrap();
        let small = ctx.zeros(n_small * rows).unwrap();
        ctx.matmul(&w, &xg, &big, n_big).unwrap();
        ctx.matmul(&w, &xg, &small, n_small).unwrap();
        let big = ctx.read_f32(&big).unwrap();
        let small = ctx.read_f32(&small).unwrap();
        assert!(
            big[..small.len()] == small[..],
            "{}: the 128 x 128 tiles differ from the 64 x 64 ones",
            ty.name()
        );
        assert!(big.iter().all(|v| v.is_finite()) && big.iter().any(|&v| v != 0.0));
    }
}

#[test]
fn get_rows_every_type() {
    let Some(ctx) = common::ctx() else { return };
    for ty in TYPES {
        let k = if is_k(ty) { 512 } else { 96 };
        let rows = 29;
        let mut rng = Rng::new(7);
        let bytes = random_weight(ty, k, rows, &mut rng);
        let w = ctx.upload_weight(ty, &[k as u64, rows as u64], &bytes).unwrap();
        let ids = [3u32, 0, 28, 3, 17];
        let idg = ctx.upload_u32(&ids).unwrap();
        let out = ctx.zeros(ids.len() * k).unwrap();
        ctx.get_rows(&w, &idg, &out, ids.len(), 1.5).unwrap();
        let got = ctx.read_f32(&out).unwrap();
        let wf = dequantize(ty, &bytes, k, rows);
        let want: Vec<f32> = ids
            .iter()
            .flat_map(|&i| wf[i as usize].iter().map(|v| v * 1.5))
            .collect();
        assert_close(&format!("get_rows {}", ty.name()), &got, &want, 1e-6, 1e-5);
    }
}

#[test]
fn bad_shapes_are_errors() {
    let Some(ctx) = common::ctx() else { return };
    // 18 bytes short of the declared shape.
    let bytes = vec![0u8; 18 * 3];
    assert!(ctx.upload_weight(GgmlType::Q4_0, &[32, 4], &bytes).is_err());
    // row length not a multiple of the block size
    assert!(ctx.upload_weight(GgmlType::Q4_K, &[128, 1], &[0u8; 72]).is_err());
    assert!(ctx.upload_weight(GgmlType::Q2_K, &[256, 1], &[0u8; 84]).is_err());
    let w = ctx.upload_weight(GgmlType::Q8_0, &[32, 2], &[0u8; 68]).unwrap();
    let x = ctx.zeros(16).unwrap();
    let y = ctx.zeros(2).unwrap();
    assert!(ctx.matmul(&w, &x, &y, 1).is_err(), "input too short");
}

fn any_type() -> impl Strategy<Value = GgmlType> {
    proptest::sample::select(TYPES.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn matmul_random_shapes(ty in any_type(), blocks in 1usize..5, rows in 1usize..150, n_tok in 1usize..80, seed in 0u64..1000) {
        let Some(ctx) = common::ctx() else { return Ok(()) };
        let k = blocks * if is_k(ty) { 256 } else { 32 };
        check_matmul(&ctx, ty, k, rows, n_tok, seed);
    }

    #[test]
    fn matvec_quantized_random_shapes(ty in any_type(), blocks in 1usize..9, rows in 1usize..150, n_tok in 1usize..4, seed in 0u64..1000) {
        let Some(ctx) = common::ctx() else { return Ok(()) };
        let k = blocks * if is_k(ty) { 256 } else { 32 };
        check_product(&ctx, ty, k, rows, n_tok, seed, Path::Decode);
    }
}

/// A case proptest found (CI, stop 21): activation 183 sits on a tie (10.5 steps), which the GPU
/// rounds to even and the reference away from zero.
#[test]
fn matvec_quantized_rounding_tie() {
    let Some(ctx) = common::ctx() else { return };
    check_product(&ctx, GgmlType::Q4_1, 64, 28, 3, 537, Path::Decode);
}
