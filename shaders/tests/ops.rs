//! Element-wise, normalisation, rotary and attention shaders against the CPU references.

mod common;

use common::{assert_close, cos_data, Rng};
use ferro_shaders::{ActQuant, AttnParams, Glu, NormMode, RopeParams};
use proptest::prelude::*;

#[test]
fn rms_norm_modes() {
    let Some(ctx) = common::ctx() else { return };
    let (n, rows) = (333, 7);
    let x = cos_data(n * rows, 0.5);
    let w = Rng::new(1).vec(n);
    let want: Vec<f32> = x.chunks(n).flat_map(|r| common::rms_norm(r, &w, 1e-6)).collect();
    let xg = ctx.upload_f32(&x).unwrap();
    let wg = ctx.upload_f32(&w).unwrap();

    let yg = ctx.zeros(n * rows).unwrap();
    ctx.rms_norm(NormMode::Out, &xg, &wg, Some(&yg), n, rows, 1e-6).unwrap();
    assert_close("rms_norm", &ctx.read_f32(&yg).unwrap(), &want, 1e-5, 1e-4);

    let base = Rng::new(2).vec(n * rows);
    let acc = ctx.upload_f32(&base).unwrap();
    ctx.rms_norm(NormMode::Add, &xg, &wg, Some(&acc), n, rows, 1e-6)
        .unwrap();
    let want_add: Vec<f32> = base.iter().zip(&want).map(|(a, b)| a + b).collect();
    assert_close("rms_norm add", &ctx.read_f32(&acc).unwrap(), &want_add, 1e-5, 1e-4);

    ctx.rms_norm(NormMode::InPlace, &xg, &wg, None, n, rows, 1e-6).unwrap();
    assert_close("rms_norm in place", &ctx.read_f32(&xg).unwrap(), &want, 1e-5, 1e-4);
}

fn check_rope(neox: bool, n_tok: usize, n_heads: usize, hd: usize, n_rot: usize, pos0: usize) {
    let Some(ctx) = common::ctx() else { return };
    let mut x = Rng::new(3).vec(n_tok * n_heads * hd);
    let xg = ctx.upload_f32(&x).unwrap();
    let r = RopeParams {
        n_heads: n_heads as u32,
        head_dim: hd as u32,
        n_rot: n_rot as u32,
        neox,
        base: 10000.0,
        freq_scale: 1.0,
    };
    ctx.rope(&xg, &r, None, n_tok, pos0).unwrap();
    common::rope(&mut x, n_tok, n_heads, hd, n_rot, neox, 10000.0, 1.0, pos0);
    // Angles grow with the position; f32 sin/cos of large arguments bound the accuracy.
    let atol = 1e-5 + 2e-7 * (pos0 + n_tok) as f32;
    assert_close(
        &format!("rope neox={neox}"),
        &ctx.read_f32(&xg).unwrap(),
        &x,
        atol,
        1e-4,
    );
}

#[test]
fn rope_normal_and_neox() {
    check_rope(false, 5, 3, 64, 64, 0);
    check_rope(true, 5, 3, 64, 64, 17);
    check_rope(true, 3, 2, 128, 96, 300);
    check_rope(false, 1, 9, 32, 32, 1000);
}

/// rope_kv against rope on q and the reference rope + f16 rounding on the cached keys, with
/// dimensions past n_rot (passed through) and values copied.
fn check_rope_kv(neox: bool, n_tok: usize, hd: usize, n_rot: usize, pos0: usize) {
    let Some(ctx) = common::ctx() else { return };
    let (nh, nkv, n_ctx) = (4, 2, pos0 + n_tok + 2);
    let mut rng = Rng::new(11);
    let mut q = rng.vec(n_tok * nh * hd);
    let mut k = rng.vec(n_tok * nkv * hd);
    let v = rng.vec(n_tok * nkv * hd);
    let (qg, kg, vg) = (
        ctx.upload_f32(&q).unwrap(),
        ctx.upload_f32(&k).unwrap(),
        ctx.upload_f32(&v).unwrap(),
    );
    let kc = ctx.upload_f32(&vec![7.0; n_ctx * nkv * hd]).unwrap();
    let vc = ctx.upload_f32(&vec![7.0; n_ctx * nkv * hd]).unwrap();
    let r = RopeParams {
        n_heads: nh as u32,
        head_dim: hd as u32,
        n_rot: n_rot as u32,
        neox,
        base: 10000.0,
        freq_scale: 1.0,
    };
    ctx.rope_kv(&qg, &kg, &vg, &kc, &vc, &r, nkv as u32, true, n_tok, pos0)
        .unwrap();
    common::rope(&mut q, n_tok, nh, hd, n_rot, neox, 10000.0, 1.0, pos0);
    common::rope(&mut k, n_tok, nkv, hd, n_rot, neox, 10000.0, 1.0, pos0);
    let f16 = |x: &[f32]| -> Vec<f32> { x.iter().map(|v| half::f16::from_f32(*v).to_f32()).collect() };
    let atol = 1e-5 + 2e-7 * (pos0 + n_tok) as f32;
    let what = format!("rope_kv neox={neox} n_rot={n_rot}");
    assert_close(&format!("{what} q"), &ctx.read_f32(&qg).unwrap(), &q, atol, 1e-4);
    let per_pos = nkv * hd;
    let cached = |t: &ferro_shaders::GpuTensor| ctx.read_range(t, pos0 * per_pos, n_tok * per_pos).unwrap();
    // f16 rounding can move a value by one f16 step (2^-11 relative) where the roped key sits
    // on a rounding boundary.
    assert_close(&format!("{what} k cache"), &cached(&kc), &f16(&k), atol, 1e-3);
    assert_close(&format!("{what} v cache"), &cached(&vc), &f16(&v), 0.0, 0.0);
    // Positions outside the batch are untouched.
    assert_eq!(
        ctx.read_range(&kc, (pos0 + n_tok) * per_pos, per_pos).unwrap(),
        vec![7.0; per_pos]
    );
}

#[test]
fn rope_kv_ropes_and_stores() {
    check_rope_kv(false, 3, 64, 64, 5);
    check_rope_kv(true, 2, 64, 64, 0);
    // Partial rotation: dimensions 32.. pass through into the cache.
    check_rope_kv(false, 3, 64, 32, 7);
    check_rope_kv(true, 1, 96, 64, 40);
}

#[test]
fn softmax_rows() {
    let Some(ctx) = common::ctx() else { return };
    let (n, rows) = (1000, 3);
    let mut x: Vec<f32> = Rng::new(4).vec(n * rows).iter().map(|v| v * 20.0).collect();
    let xg = ctx.upload_f32(&x).unwrap();
    ctx.softmax(&xg, n, rows).unwrap();
    for r in x.chunks_mut(n) {
        common::softmax(r);
    }
    assert_close("softmax", &ctx.read_f32(&xg).unwrap(), &x, 1e-7, 1e-4);
}

#[test]
fn glu_and_add() {
    let Some(ctx) = common::ctx() else { return };
    let (n, n_tok) = (777, 3);
    let mut rng = Rng::new(5);
    let g: Vec<f32> = rng.vec(n * n_tok).iter().map(|v| v * 6.0).collect();
    let u = rng.vec(n * n_tok);
    for (kind, act) in [
        (Glu::SwiGlu, common::silu as fn(f32) -> f32),
        (Glu::GeGlu, common::gelu),
    ] {
        let gg = ctx.upload_f32(&g).unwrap();
        let ug = ctx.upload_f32(&u).unwrap();
        ctx.glu(kind, &gg, &ug, n, n_tok).unwrap();
        let want: Vec<f32> = g.iter().zip(&u).map(|(a, b)| act(*a) * b).collect();
        assert_close(&format!("{kind:?}"), &ctx.read_f32(&gg).unwrap(), &want, 1e-5, 1e-4);
    }
    let a = ctx.upload_f32(&g).unwrap();
    let b = ctx.upload_f32(&u).unwrap();
    ctx.add(&a, &b, n, n_tok).unwrap();
    let want: Vec<f32> = g.iter().zip(&u).map(|(a, b)| a + b).collect();
    assert_close("add", &ctx.read_f32(&a).unwrap(), &want, 0.0, 1e-6);
}

#[allow(clippy::too_many_arguments)]
fn check_attention(
    n_tok: usize,
    pos0: usize,
    n_head: usize,
    n_kv: usize,
    hd: usize,
    window: usize,
    n_ctx: usize,
    seed: u64,
) {
    let Some(ctx) = common::ctx() else { return };
    let mut rng = Rng::new(seed);
    let q = rng.vec(n_tok * n_head * hd);
    let kc = rng.vec(n_ctx * n_kv * hd);
    let vc = rng.vec(n_ctx * n_kv * hd);
    let scale = 1.0 / (hd as f32).sqrt() * 3.0;
    let a = AttnParams {
        n_head: n_head as u32,
        n_kv_head: n_kv as u32,
        head_dim: hd as u32,
        window: window as u32,
        scale,
        softcap: 0.0,
    };
    let (qg, kg, vg) = (
        ctx.upload_f32(&q).unwrap(),
        ctx.upload_f32(&kc).unwrap(),
        ctx.upload_f32(&vc).unwrap(),
    );
    let og = ctx.zeros(q.len()).unwrap();
    ctx.attention(&qg, &kg, &vg, &og, &a, n_tok, pos0).unwrap();
    let want = common::attention(&q, &kc, &vc, n_tok, pos0, n_head, n_kv, hd, window, scale);
    assert_close(
        &format!("attention n_tok={n_tok} pos0={pos0} heads={n_head}/{n_kv} hd={hd} window={window}"),
        &ctx.read_f32(&og).unwrap(),
        &want,
        2e-5,
        1e-3,
    );
}

#[test]
fn attention_decode_gqa() {
    // 150 keys: three tiles of 64 with a partial one; 8 query heads over 2 kv heads.
    check_attention(1, 149, 8, 2, 64, 0, 160, 1);
    check_attention(1, 0, 4, 4, 32, 0, 4, 2);
}

#[test]
fn attention_prefill_causal_and_window() {
    check_attention(13, 0, 4, 1, 64, 0, 16, 3);
    check_attention(9, 70, 6, 3, 128, 0, 90, 4);
    // sliding window smaller than the context
    check_attention(20, 50, 4, 2, 32, 16, 80, 5);
    check_attention(1, 200, 2, 1, 256, 64, 201, 6);
    // head_dim / 4 above the workgroup (two dimension groups per thread), and one that leaves
    // threads without a key part.
    check_attention(2, 30, 4, 2, 512, 0, 40, 7);
    check_attention(3, 10, 2, 1, 96, 0, 16, 8);
    // head_dim / 4 = 20: two trips of eight vectors and a tail of four in the score.
    check_attention(2, 5, 2, 1, 80, 0, 12, 9);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    #[test]
    fn attention_random(n_tok in 1usize..10, pos0 in 0usize..100, kv in 1usize..4, group in 1usize..4,
                        hd_pick in 0usize..4, window in 0usize..40, seed in 0u64..1000) {
        let hd = [32, 64, 80, 256][hd_pick];
        check_attention(n_tok, pos0, kv * group, kv, hd, window, pos0 + n_tok + 3, seed);
    }

    #[test]
    fn rms_norm_random(n in 1usize..700, rows in 1usize..9) {
        let Some(ctx) = common::ctx() else { return Ok(()) };
        let x = Rng::new(n as u64).vec(n * rows);
        let w = Rng::new(rows as u64).vec(n);
        let want: Vec<f32> = x.chunks(n).flat_map(|r| common::rms_norm(r, &w, 1e-5)).collect();
        let xg = ctx.upload_f32(&x).unwrap();
        let wg = ctx.upload_f32(&w).unwrap();
        let yg = ctx.zeros(n * rows).unwrap();
        ctx.rms_norm(NormMode::Out, &xg, &wg, Some(&yg), n, rows, 1e-5).unwrap();
        assert_close("rms_norm", &ctx.read_f32(&yg).unwrap(), &want, 1e-5, 1e-4);
    }
}

#[test]
fn quantize_act_like_llama_cpp() {
    let Some(ctx) = common::ctx() else { return };
    let (k, n_tok) = (512, 3);
    let mut x = cos_data(k * n_tok, 0.3);
    x[256..512].iter_mut().for_each(|v| *v = 0.0); // an all-zero block
    let xg = ctx.upload_f32(&x).unwrap();
    for q in [ActQuant::Q8_0, ActQuant::Q8K, ActQuant::F16] {
        let out = ctx.zeros(x.len()).unwrap();
        ctx.quantize_act(q, &xg, &out, k, n_tok).unwrap();
        let want = common::round_like_llama_cpp(q, &x);
        assert_close(&format!("{q:?}"), &ctx.read_f32(&out).unwrap(), &want, 1e-6, 1e-5);
    }
}

#[test]
fn glu_quantize_is_glu_then_quantize() {
    let Some(ctx) = common::ctx() else { return };
    let (k, n_tok) = (768, 3);
    let mut rng = Rng::new(9);
    let g: Vec<f32> = rng.vec(k * n_tok).iter().map(|v| v * 6.0).collect();
    let u = rng.vec(k * n_tok);
    for kind in [Glu::SwiGlu, Glu::GeGlu] {
        for q in [ActQuant::Q8_0, ActQuant::Q8K, ActQuant::F16] {
            let (gg, ug) = (ctx.upload_f32(&g).unwrap(), ctx.upload_f32(&u).unwrap());
            let fused = ctx.zeros(k * n_tok).unwrap();
            ctx.glu_quantize(kind, &gg, &ug, q, &fused, k, n_tok).unwrap();
            // The gate is left alone; the result is glu.wgsl's values rounded by quantize_act.
            assert_eq!(ctx.read_f32(&gg).unwrap(), g, "{kind:?} {q:?}: gate changed");
            ctx.glu(kind, &gg, &ug, k, n_tok).unwrap();
            let two = ctx.zeros(k * n_tok).unwrap();
            ctx.quantize_act(q, &gg, &two, k, n_tok).unwrap();
            let want = ctx.read_f32(&two).unwrap();
            assert!(want.iter().any(|v| *v != 0.0));
            assert_close(
                &format!("{kind:?} {q:?}"),
                &ctx.read_f32(&fused).unwrap(),
                &want,
                0.0,
                1e-6,
            );
        }
    }
}
