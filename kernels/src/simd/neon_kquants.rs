//! NEON kernels for the K-quant formats: dot products of each weight format against Q8_K
//! activations (plain NEON, and `_dotprod` variants using `sdot` where the CPU has it), and the
//! Q8_K activation quantizer.
//!
//! The integer work mirrors ggml's ARM kernels (`ggml-cpu/arch/arm/quants.c`): per sub-block an
//! exact i32 sum of quant products, scaled by the sub-block scale in i32, one f32 multiply per
//! super-block. Results equal the scalar oracle up to f32 summation order.
//!
//! `sdot` is emitted with inline assembly (its intrinsic is not stable on the toolchains ferro
//! supports). Every function requires the CPU features in its `target_feature` list (checked by
//! the caller, normally the dispatch table); the slices must have equal length (asserted).

use core::arch::aarch64::*;
use core::arch::asm;

use crate::quants::q2_k::BlockQ2K;
use crate::quants::q3_k::{unpack_scales as q3_unpack_scales, BlockQ3K};
use crate::quants::q4_k::{unpack_scales_mins, BlockQ4K};
use crate::quants::q5_k::BlockQ5K;
use crate::quants::q6_k::BlockQ6K;
use crate::quants::q8_k::{BlockQ8K, KQuantKernels, QK_K};

/// The plain NEON table (NEON is part of the aarch64 baseline).
pub(crate) const KERNELS: KQuantKernels = KQuantKernels {
    name: "neon",
    quantize_q8_k: checked::quantize_q8_k,
    dot_q2_k: checked::dot_q2_k,
    dot_q3_k: checked::dot_q3_k,
    dot_q4_k: checked::dot_q4_k,
    dot_q5_k: checked::dot_q5_k,
    dot_q6_k: checked::dot_q6_k,
};

/// The `sdot` table; only for tables handed out after checking `dotprod`.
pub(crate) const KERNELS_DOTPROD: KQuantKernels = KQuantKernels {
    name: "neon+dotprod",
    dot_q2_k: checked::dot_q2_k_dotprod,
    dot_q3_k: checked::dot_q3_k_dotprod,
    dot_q4_k: checked::dot_q4_k_dotprod,
    dot_q5_k: checked::dot_q5_k_dotprod,
    dot_q6_k: checked::dot_q6_k_dotprod,
    ..KERNELS
};

/// Every NEON table this CPU can run: "neon", then "neon+dotprod" where the CPU has `sdot`.
pub fn all_kernels() -> Vec<KQuantKernels> {
    let mut v = vec![KERNELS];
    if std::arch::is_aarch64_feature_detected!("dotprod") {
        v.push(KERNELS_DOTPROD);
    }
    v
}

/// Safe wrappers. NEON is baseline on aarch64; the `_dotprod` ones are reachable only through
/// the table built after the dotprod check.
mod checked {
    use super::*;

    pub(super) fn quantize_q8_k(x: &[f32], out: &mut [BlockQ8K]) {
        // SAFETY: NEON is always present on aarch64.
        unsafe { super::quantize_q8_k(x, out) }
    }
    macro_rules! wrap {
        ($name:ident, $dot_name:ident, $plain:ident, $dot:ident, $blk:ty) => {
            pub(super) fn $name(w: &[$blk], a: &[BlockQ8K]) -> f32 {
                // SAFETY: NEON is always present on aarch64.
                unsafe { $plain(w, a) }
            }
            pub(super) fn $dot_name(w: &[$blk], a: &[BlockQ8K]) -> f32 {
                // SAFETY: only in the "neon+dotprod" table, built after checking dotprod.
                unsafe { $dot(w, a) }
            }
        };
    }
    wrap!(dot_q2_k, dot_q2_k_dotprod, vec_dot_q2_k, vec_dot_q2_k_dotprod, BlockQ2K);
    wrap!(dot_q3_k, dot_q3_k_dotprod, vec_dot_q3_k, vec_dot_q3_k_dotprod, BlockQ3K);
    wrap!(dot_q4_k, dot_q4_k_dotprod, vec_dot_q4_k, vec_dot_q4_k_dotprod, BlockQ4K);
    wrap!(dot_q5_k, dot_q5_k_dotprod, vec_dot_q5_k, vec_dot_q5_k_dotprod, BlockQ5K);
    wrap!(dot_q6_k, dot_q6_k_dotprod, vec_dot_q6_k, vec_dot_q6_k_dotprod, BlockQ6K);
}

#[inline(always)]
fn h2f(b: [u8; 2]) -> f32 {
    half::f16::from_le_bytes(b).to_f32()
}

/// acc + the 4-way dot products of `a` and `b` (i8 x 16), lane-wise like `sdot`. Without
/// dotprod the lane assignment differs, but the sum over all lanes is the same.
#[inline(always)]
unsafe fn dot16<const DOTPROD: bool>(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    if DOTPROD {
        let mut r = acc;
        // SAFETY: the DOTPROD instantiation is only reachable from functions compiled with the
        // `dotprod` target feature, whose callers checked the CPU has it. Pure register op.
        asm!(
            "sdot {r:v}.4s, {a:v}.16b, {b:v}.16b",
            r = inout(vreg) r,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
        r
    } else {
        let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
        let hi = vmull_high_s8(a, b);
        vpadalq_s16(vpadalq_s16(acc, lo), hi)
    }
}

/// Sum over 32 quants: a0/a1 (16 each) against b0/b1.
#[inline(always)]
unsafe fn dot32<const DOTPROD: bool>(a0: int8x16_t, a1: int8x16_t, b0: int8x16_t, b1: int8x16_t) -> i32 {
    let z = vdupq_n_s32(0);
    vaddvq_s32(dot16::<DOTPROD>(dot16::<DOTPROD>(z, a0, b0), a1, b1))
}

/// Q4_K (and, with `qh`, Q5_K) super-block integer sums: returns (sum sc*dot, sum m*bsum).
#[inline(always)]
unsafe fn q45_block<const DOTPROD: bool>(
    scales12: &[u8; 12],
    qs: &[u8; 128],
    qh: Option<&[u8; 32]>,
    y: &BlockQ8K,
) -> (i32, i32) {
    let sm = unpack_scales_mins(scales12);
    // SAFETY: 16 bytes of bsums at offsets 0 and 8 (i16), 8 bytes of sm at offset 8.
    let q8sums = vpaddq_s16(vld1q_s16(y.bsums.as_ptr()), vld1q_s16(y.bsums.as_ptr().add(8)));
    let mins = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(sm.as_ptr().add(8))));
    let prod = vaddq_s32(
        vmull_s16(vget_low_s16(q8sums), vget_low_s16(mins)),
        vmull_s16(vget_high_s16(q8sums), vget_high_s16(mins)),
    );
    let summ = vaddvq_s32(prod);
    let m4 = vdupq_n_u8(0xF);
    let m1 = vdupq_n_u8(1);
    let (mut h0, mut h1) = match qh {
        // SAFETY: 32 bytes of qh.
        Some(h) => (vld1q_u8(h.as_ptr()), vld1q_u8(h.as_ptr().add(16))),
        None => (vdupq_n_u8(0), vdupq_n_u8(0)),
    };
    let mut sumi = 0i32;
    for j in 0..4 {
        // SAFETY: j < 4: 32 bytes at qs + 32j (of 128), 64 at q8 + 64j (of 256).
        let qb0 = vld1q_u8(qs.as_ptr().add(32 * j));
        let qb1 = vld1q_u8(qs.as_ptr().add(32 * j + 16));
        let q8 = y.qs.as_ptr().add(64 * j);
        let (a0, a1, a2, a3) = (
            vld1q_s8(q8),
            vld1q_s8(q8.add(16)),
            vld1q_s8(q8.add(32)),
            vld1q_s8(q8.add(48)),
        );
        let mut l0 = vandq_u8(qb0, m4);
        let mut l1 = vandq_u8(qb1, m4);
        let mut u0 = vshrq_n_u8::<4>(qb0);
        let mut u1 = vshrq_n_u8::<4>(qb1);
        if qh.is_some() {
            l0 = vorrq_u8(l0, vshlq_n_u8::<4>(vandq_u8(h0, m1)));
            l1 = vorrq_u8(l1, vshlq_n_u8::<4>(vandq_u8(h1, m1)));
            u0 = vorrq_u8(u0, vshlq_n_u8::<3>(vandq_u8(h0, vdupq_n_u8(2))));
            u1 = vorrq_u8(u1, vshlq_n_u8::<3>(vandq_u8(h1, vdupq_n_u8(2))));
            h0 = vshrq_n_u8::<2>(h0);
            h1 = vshrq_n_u8::<2>(h1);
        }
        let lo = dot32::<DOTPROD>(vreinterpretq_s8_u8(l0), vreinterpretq_s8_u8(l1), a0, a1);
        let hi = dot32::<DOTPROD>(vreinterpretq_s8_u8(u0), vreinterpretq_s8_u8(u1), a2, a3);
        sumi += lo * sm[2 * j] as i32 + hi * sm[2 * j + 1] as i32;
    }
    (sumi, summ)
}

#[inline(always)]
unsafe fn q4k_impl<const DOTPROD: bool>(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
    assert_eq!(w.len(), a.len(), "vec_dot_q4_k: length mismatch");
    let mut sumf = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let (sumi, summ) = q45_block::<DOTPROD>(&x.scales, &x.qs, None, y);
        sumf += y.d * h2f(x.d) * sumi as f32 - y.d * h2f(x.dmin) * summ as f32;
    }
    sumf
}

#[inline(always)]
unsafe fn q5k_impl<const DOTPROD: bool>(w: &[BlockQ5K], a: &[BlockQ8K]) -> f32 {
    assert_eq!(w.len(), a.len(), "vec_dot_q5_k: length mismatch");
    let mut sumf = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let (sumi, summ) = q45_block::<DOTPROD>(&x.scales, &x.qs, Some(&x.qh), y);
        sumf += y.d * h2f(x.d) * sumi as f32 - y.d * h2f(x.dmin) * summ as f32;
    }
    sumf
}

#[inline(always)]
unsafe fn q6k_impl<const DOTPROD: bool>(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
    assert_eq!(w.len(), a.len(), "vec_dot_q6_k: length mismatch");
    let m4 = vdupq_n_u8(0xF);
    let m3 = vdupq_n_u8(3);
    let mut sumf = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        // SAFETY: 16 bytes of scales, 2 x 8 i16 of bsums.
        let sc = vld1q_s8(x.scales.as_ptr());
        let b0 = vld1q_s16(y.bsums.as_ptr());
        let b1 = vld1q_s16(y.bsums.as_ptr().add(8));
        let s0 = vmovl_s8(vget_low_s8(sc));
        let s1 = vmovl_high_s8(sc);
        // The (q - 32) offset for the whole block: 32 * sum_j sc[j] * bsums[j].
        let off = vaddq_s32(
            vaddq_s32(vmull_s16(vget_low_s16(s0), vget_low_s16(b0)), vmull_high_s16(s0, b0)),
            vaddq_s32(vmull_s16(vget_low_s16(s1), vget_low_s16(b1)), vmull_high_s16(s1, b1)),
        );
        let offset = 32 * vaddvq_s32(off);
        let mut sumi = 0i32;
        for h in 0..2 {
            let ql = x.ql.as_ptr().add(64 * h);
            let qh = x.qh.as_ptr().add(32 * h);
            let q8 = y.qs.as_ptr().add(128 * h);
            // SAFETY: h < 2: 64 bytes at ql (of 128), 32 at qh (of 64), 128 at q8 (of 256).
            let (ql0, ql1, ql2, ql3) = (
                vld1q_u8(ql),
                vld1q_u8(ql.add(16)),
                vld1q_u8(ql.add(32)),
                vld1q_u8(ql.add(48)),
            );
            let (qh0, qh1) = (vld1q_u8(qh), vld1q_u8(qh.add(16)));
            // Groups of 32 quants: k = 0..4 -> elements 32k.., low/high nibble of ql[0..32] or
            // ql[32..64], high bits at 2k of qh.
            let grp = |k: usize| -> (int8x16_t, int8x16_t) {
                let (la, lb) = match k {
                    0 => (vandq_u8(ql0, m4), vandq_u8(ql1, m4)),
                    1 => (vandq_u8(ql2, m4), vandq_u8(ql3, m4)),
                    2 => (vshrq_n_u8::<4>(ql0), vshrq_n_u8::<4>(ql1)),
                    _ => (vshrq_n_u8::<4>(ql2), vshrq_n_u8::<4>(ql3)),
                };
                let sh = vdupq_n_s8(-(2 * k as i8));
                let ha = vshlq_n_u8::<4>(vandq_u8(vshlq_u8(qh0, sh), m3));
                let hb = vshlq_n_u8::<4>(vandq_u8(vshlq_u8(qh1, sh), m3));
                (
                    vreinterpretq_s8_u8(vorrq_u8(la, ha)),
                    vreinterpretq_s8_u8(vorrq_u8(lb, hb)),
                )
            };
            for k in 0..4 {
                let (qa, qb) = grp(k);
                let a0 = vld1q_s8(q8.add(32 * k));
                let a1 = vld1q_s8(q8.add(32 * k + 16));
                let z = vdupq_n_s32(0);
                let da = vaddvq_s32(dot16::<DOTPROD>(z, qa, a0));
                let db = vaddvq_s32(dot16::<DOTPROD>(z, qb, a1));
                let is = 8 * h + 2 * k;
                sumi += da * x.scales[is] as i32 + db * x.scales[is + 1] as i32;
            }
        }
        sumf += y.d * h2f(x.d) * (sumi - offset) as f32;
    }
    sumf
}

#[inline(always)]
unsafe fn q3k_impl<const DOTPROD: bool>(w: &[BlockQ3K], a: &[BlockQ8K]) -> f32 {
    assert_eq!(w.len(), a.len(), "vec_dot_q3_k: length mismatch");
    let m3 = vdupq_n_u8(3);
    let four = vdupq_n_u8(4);
    let mut sumf = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let sc = q3_unpack_scales(&x.scales);
        // SAFETY: 32 bytes of hmask.
        let (hm0, hm1) = (vld1q_u8(x.hmask.as_ptr()), vld1q_u8(x.hmask.as_ptr().add(16)));
        let mut sumi = 0i32;
        for h in 0..2 {
            // SAFETY: h < 2: 32 bytes at qs + 32h (of 64); 128 at q8 + 128h (of 256).
            let qa = vld1q_u8(x.qs.as_ptr().add(32 * h));
            let qb = vld1q_u8(x.qs.as_ptr().add(32 * h + 16));
            let q8 = y.qs.as_ptr().add(128 * h);
            for k in 0..4 {
                let sh = vdupq_n_s8(-(2 * k as i8));
                let bit = vdupq_n_u8(1 << (4 * h + k));
                // q = low - 4 where the high bit is clear.
                let la = vandq_u8(vshlq_u8(qa, sh), m3);
                let lb = vandq_u8(vshlq_u8(qb, sh), m3);
                let sa = vandq_u8(vceqq_u8(vandq_u8(hm0, bit), vdupq_n_u8(0)), four);
                let sb = vandq_u8(vceqq_u8(vandq_u8(hm1, bit), vdupq_n_u8(0)), four);
                let va = vsubq_s8(vreinterpretq_s8_u8(la), vreinterpretq_s8_u8(sa));
                let vb = vsubq_s8(vreinterpretq_s8_u8(lb), vreinterpretq_s8_u8(sb));
                let a0 = vld1q_s8(q8.add(32 * k));
                let a1 = vld1q_s8(q8.add(32 * k + 16));
                let z = vdupq_n_s32(0);
                let da = vaddvq_s32(dot16::<DOTPROD>(z, va, a0));
                let db = vaddvq_s32(dot16::<DOTPROD>(z, vb, a1));
                let is = 8 * h + 2 * k;
                sumi += da * sc[is] as i32 + db * sc[is + 1] as i32;
            }
        }
        sumf += y.d * h2f(x.d) * sumi as f32;
    }
    sumf
}

#[inline(always)]
unsafe fn q2k_impl<const DOTPROD: bool>(w: &[BlockQ2K], a: &[BlockQ8K]) -> f32 {
    assert_eq!(w.len(), a.len(), "vec_dot_q2_k: length mismatch");
    let m3 = vdupq_n_u8(3);
    let mut sumf = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        // SAFETY: 16 scale bytes, 2 x 8 i16 of bsums.
        let sc = vld1q_u8(x.scales.as_ptr());
        let mins = vshrq_n_u8::<4>(sc);
        let b0 = vld1q_s16(y.bsums.as_ptr());
        let b1 = vld1q_s16(y.bsums.as_ptr().add(8));
        let m0 = vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(mins)));
        let m1 = vreinterpretq_s16_u16(vmovl_high_u8(mins));
        let p = vaddq_s32(
            vaddq_s32(vmull_s16(vget_low_s16(m0), vget_low_s16(b0)), vmull_high_s16(m0, b0)),
            vaddq_s32(vmull_s16(vget_low_s16(m1), vget_low_s16(b1)), vmull_high_s16(m1, b1)),
        );
        let summs = vaddvq_s32(p);
        let mut isum = 0i32;
        for h in 0..2 {
            // SAFETY: h < 2: 32 bytes at qs + 32h (of 64); 128 at q8 + 128h (of 256).
            let qa = vld1q_u8(x.qs.as_ptr().add(32 * h));
            let qb = vld1q_u8(x.qs.as_ptr().add(32 * h + 16));
            let q8 = y.qs.as_ptr().add(128 * h);
            for k in 0..4 {
                let sh = vdupq_n_s8(-(2 * k as i8));
                let va = vreinterpretq_s8_u8(vandq_u8(vshlq_u8(qa, sh), m3));
                let vb = vreinterpretq_s8_u8(vandq_u8(vshlq_u8(qb, sh), m3));
                let a0 = vld1q_s8(q8.add(32 * k));
                let a1 = vld1q_s8(q8.add(32 * k + 16));
                let z = vdupq_n_s32(0);
                let da = vaddvq_s32(dot16::<DOTPROD>(z, va, a0));
                let db = vaddvq_s32(dot16::<DOTPROD>(z, vb, a1));
                let is = 8 * h + 2 * k;
                isum += da * (x.scales[is] & 0xF) as i32 + db * (x.scales[is + 1] & 0xF) as i32;
            }
        }
        sumf += y.d * h2f(x.d) * isum as f32 - y.d * h2f(x.dmin) * summs as f32;
    }
    sumf
}

macro_rules! entry_points {
    ($(#[$doc:meta])* $plain:ident, $dot:ident, $impl_fn:ident, $blk:ty) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// The CPU must support NEON (always true on aarch64).
        #[target_feature(enable = "neon")]
        pub unsafe fn $plain(w: &[$blk], a: &[BlockQ8K]) -> f32 {
            $impl_fn::<false>(w, a)
        }

        $(#[$doc])*
        /// Uses `sdot`.
        ///
        /// # Safety
        /// The CPU must support NEON and the dot-product extension (`dotprod`).
        #[target_feature(enable = "neon,dotprod")]
        pub unsafe fn $dot(w: &[$blk], a: &[BlockQ8K]) -> f32 {
            $impl_fn::<true>(w, a)
        }
    };
}

entry_points!(
    /// Q4_K x Q8_K dot product.
    vec_dot_q4_k, vec_dot_q4_k_dotprod, q4k_impl, BlockQ4K
);
entry_points!(
    /// Q5_K x Q8_K dot product.
    vec_dot_q5_k, vec_dot_q5_k_dotprod, q5k_impl, BlockQ5K
);
entry_points!(
    /// Q6_K x Q8_K dot product.
    vec_dot_q6_k, vec_dot_q6_k_dotprod, q6k_impl, BlockQ6K
);
entry_points!(
    /// Q3_K x Q8_K dot product.
    vec_dot_q3_k, vec_dot_q3_k_dotprod, q3k_impl, BlockQ3K
);
entry_points!(
    /// Q2_K x Q8_K dot product.
    vec_dot_q2_k, vec_dot_q2_k_dotprod, q2k_impl, BlockQ2K
);

/// Q8_K activation quantizer; output is bit-identical to `quants::q8_k::quantize`
/// (`fcvtns` rounds to nearest even like ggml's `nearest_int`).
///
/// # Safety
/// The CPU must support NEON (always true on aarch64).
#[target_feature(enable = "neon")]
pub unsafe fn quantize_q8_k(x: &[f32], out: &mut [BlockQ8K]) {
    assert_eq!(x.len(), out.len() * QK_K, "quantize_q8_k: length mismatch");
    for (xb, y) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
        let p = xb.as_ptr();
        let mut vmax = vdupq_n_f32(0.0);
        for i in 0..64 {
            // SAFETY: i < 64: 4 floats at p + 4i lie within the 256-float chunk.
            vmax = vmaxq_f32(vmax, vabsq_f32(vld1q_f32(p.add(4 * i))));
        }
        let amax = vmaxvq_f32(vmax);
        if amax == 0.0 {
            *y = BlockQ8K::ZERO;
            continue;
        }
        let max = xb.iter().copied().find(|v| v.abs() == amax).unwrap_or(amax);
        let iscale = -127.0f32 / max;
        let vis = vdupq_n_f32(iscale);
        let qp = y.qs.as_mut_ptr();
        for g in 0..16 {
            // 16 values per step -> i32 -> saturating narrow to i16 -> i8.
            // SAFETY: g < 16: 16 floats at p + 16g are in the chunk; 16 bytes at qp + 16g in qs.
            let b = p.add(16 * g);
            let i0 = vcvtnq_s32_f32(vmulq_f32(vis, vld1q_f32(b)));
            let i1 = vcvtnq_s32_f32(vmulq_f32(vis, vld1q_f32(b.add(4))));
            let i2 = vcvtnq_s32_f32(vmulq_f32(vis, vld1q_f32(b.add(8))));
            let i3 = vcvtnq_s32_f32(vmulq_f32(vis, vld1q_f32(b.add(12))));
            let s = vaddvq_s32(vaddq_s32(vaddq_s32(i0, i1), vaddq_s32(i2, i3)));
            let h0 = vcombine_s16(vqmovn_s32(i0), vqmovn_s32(i1));
            let h1 = vcombine_s16(vqmovn_s32(i2), vqmovn_s32(i3));
            vst1q_s8(qp.add(16 * g), vcombine_s8(vqmovn_s16(h0), vqmovn_s16(h1)));
            y.bsums[g] = s as i16;
        }
        y.d = 1.0 / iscale;
    }
}
