//! Q3_K: 3-bit weights in 256-value super-blocks of 16 sub-blocks of 16, each sub-block with a
//! signed 6-bit scale: value = d * (sc[j] - 32) * q, q in -4..=3.
//!
//! ```text
//! offset  size  field
//!      0    32  hmask   high bit, *set* for q >= 0: bit b of hmask[l] belongs to element 32b + l
//!     32    64  qs      low 2 bits: bits 2k..2k+2 of qs[32h + l] belong to element
//!                       128h + 32k + l (h in 0..2, k in 0..4, l in 0..32)
//!     96    12  scales  16 six-bit scales (+32 offset): low 4 bits of scale j in byte j % 8
//!                       (nibble j / 8), high 2 bits in byte 8 + j % 4 at bit 2 * (j / 4)
//!    108     2  d       fp16 super-scale
//! ```
//! 110 bytes per 256 weights = 3.4375 bits/weight. q = (2 low bits) - 4 * (1 - high bit).

// The loops mirror ggml's index arithmetic (sub-block j, element 16j + ii), which keeps the
// ports checkable line by line against the reference.
#![allow(clippy::needless_range_loop)]

use bytemuck::{Pod, Zeroable};

use super::q6_k::GROUP_MAX_EPS;
use super::q8_k::{f16_to_f32, f32_to_f16, nearest_int, BlockQ8K, QK_K};

/// One Q3_K super-block (see the module docs for the layout).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct BlockQ3K {
    /// High bits (set = no -4 offset).
    pub hmask: [u8; QK_K / 8],
    /// Low 2 bits.
    pub qs: [u8; QK_K / 4],
    /// Packed 6-bit scales.
    pub scales: [u8; 12],
    /// fp16 super-scale (little-endian bytes).
    pub d: [u8; 2],
}

const _: () = assert!(core::mem::size_of::<BlockQ3K>() == 110);

impl BlockQ3K {
    /// The super-scale `d` as f32.
    #[inline]
    pub fn d(&self) -> f32 {
        f16_to_f32(self.d)
    }
}

/// The 16 signed sub-block scales (sc - 32) from the packed 12 bytes.
#[inline(always)]
pub fn unpack_scales(s: &[u8; 12]) -> [i8; 16] {
    const KMASK1: u32 = 0x0303_0303;
    const KMASK2: u32 = 0x0f0f_0f0f;
    let a0 = u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
    let a1 = u32::from_le_bytes([s[4], s[5], s[6], s[7]]);
    let tmp = u32::from_le_bytes([s[8], s[9], s[10], s[11]]);
    let w = [
        (a0 & KMASK2) | ((tmp & KMASK1) << 4),
        (a1 & KMASK2) | (((tmp >> 2) & KMASK1) << 4),
        ((a0 >> 4) & KMASK2) | (((tmp >> 4) & KMASK1) << 4),
        ((a1 >> 4) & KMASK2) | (((tmp >> 6) & KMASK1) << 4),
    ];
    let mut out = [0i8; 16];
    for (k, wk) in w.iter().enumerate() {
        for (b, &byte) in wk.to_le_bytes().iter().enumerate() {
            out[4 * k + b] = byte as i8 - 32;
        }
    }
    out
}

/// Symmetric 3-bit fit with weights x^2 and the iterative per-value refinement of ggml's
/// `make_q3_quants(.., do_rmse = true)`. Writes l + nmax (0..2*nmax) and returns the scale.
fn make_q3_quants(nmax: i32, x: &[f32], l_out: &mut [i8]) -> f32 {
    let n = x.len();
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out[..n].fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let mut l = [0i32; 16];
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for i in 0..n {
        let li = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
        l[i] = li;
        let w = x[i] * x[i];
        sumlx += w * x[i] * li as f32;
        suml2 += w * li as f32 * li as f32;
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for i in 0..n {
            let w = x[i] * x[i];
            let mut slx = sumlx - w * x[i] * l[i] as f32;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * l[i] as f32 * l[i] as f32;
                let new_l = nearest_int(x[i] * sl2 / slx).clamp(-nmax, nmax - 1);
                if new_l != l[i] {
                    slx += w * x[i] * new_l as f32;
                    sl2 += w * new_l as f32 * new_l as f32;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l[i] = new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    for i in 0..n {
        l_out[i] = (l[i] + nmax) as i8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// Reference quantizer (llama.cpp `quantize_row_q3_K_ref`): `x.len()` must be `out.len() * 256`.
///
/// # Panics
/// If the lengths do not match.
pub fn quantize(x: &[f32], out: &mut [BlockQ3K]) {
    assert_eq!(x.len(), out.len() * QK_K, "q3_k::quantize: length mismatch");
    let mut l = [0i8; QK_K];
    let mut scales = [0.0f32; 16];
    for (xb, y) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
        let mut max_scale = 0.0f32;
        let mut amax = 0.0f32;
        for j in 0..16 {
            scales[j] = make_q3_quants(4, &xb[16 * j..16 * j + 16], &mut l[16 * j..16 * j + 16]);
            let s = scales[j].abs();
            if s > amax {
                amax = s;
                max_scale = scales[j];
            }
        }
        y.scales = [0; 12];
        if max_scale != 0.0 {
            let iscale = -32.0f32 / max_scale;
            for j in 0..16 {
                // C: `int8_t l = nearest_int(..)` truncates to 8 bits before clamping.
                let lv = (nearest_int(iscale * scales[j]) as i8).clamp(-32, 31) + 32;
                let lv = lv as u8;
                if j < 8 {
                    y.scales[j] = lv & 0xF;
                } else {
                    y.scales[j - 8] |= (lv & 0xF) << 4;
                }
                y.scales[j % 4 + 8] |= (lv >> 4) << (2 * (j / 4));
            }
            y.d = f32_to_f16(1.0 / iscale);
        } else {
            y.d = f32_to_f16(0.0);
        }
        let sc = unpack_scales(&y.scales);
        let df = y.d();
        for j in 0..16 {
            let d = df * sc[j] as f32;
            if d == 0.0 {
                continue;
            }
            for ii in 0..16 {
                let q = nearest_int(xb[16 * j + ii] / d).clamp(-4, 3);
                l[16 * j + ii] = (q + 4) as i8;
            }
        }
        y.hmask = [0; QK_K / 8];
        for (j, lj) in l.iter_mut().enumerate() {
            if *lj > 3 {
                y.hmask[j % 32] |= 1 << (j / 32);
                *lj -= 4;
            }
        }
        for h in 0..2 {
            for k in 0..32 {
                let b = 128 * h + k;
                y.qs[32 * h + k] =
                    (l[b] as u8) | ((l[b + 32] as u8) << 2) | ((l[b + 64] as u8) << 4) | ((l[b + 96] as u8) << 6);
            }
        }
    }
}

/// The 256 quants of a block as signed values in -4..=3, in element order.
#[inline(always)]
fn unpack(b: &BlockQ3K) -> [i8; QK_K] {
    let mut a = [0i8; QK_K];
    for (e, v) in a.iter_mut().enumerate() {
        let (h, k, l) = (e / 128, (e / 32) % 4, e % 32);
        let low = (b.qs[32 * h + l] >> (2 * k)) & 3;
        let high = (b.hmask[l] >> (e / 32)) & 1;
        *v = low as i8 - if high != 0 { 0 } else { 4 };
    }
    a
}

/// Dequantizes Q3_K blocks into `out` (`blocks.len() * 256` values).
///
/// # Panics
/// If `out.len() != blocks.len() * 256`.
pub fn dequantize(blocks: &[BlockQ3K], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK_K, "q3_k::dequantize: length mismatch");
    for (b, o) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d = b.d();
        let sc = unpack_scales(&b.scales);
        let q = unpack(b);
        for (j, (oc, qc)) in o.chunks_exact_mut(16).zip(q.chunks_exact(16)).enumerate() {
            let dl = d * sc[j] as f32;
            for (v, &qq) in oc.iter_mut().zip(qc) {
                *v = dl * qq as f32;
            }
        }
    }
}

/// Scalar dot product of a Q3_K row with a Q8_K row (the oracle for the SIMD paths): per
/// super-block the exact integer sum of ggml_vec_dot_q3_K_q8_K, scaled in f32.
///
/// # Panics
/// If `w.len() != a.len()`.
pub fn vec_dot_scalar(w: &[BlockQ3K], a: &[BlockQ8K]) -> f32 {
    assert_eq!(w.len(), a.len(), "q3_k::vec_dot: length mismatch");
    let mut sumf = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let sc = unpack_scales(&x.scales);
        let q = unpack(x);
        let mut sumi = 0i32;
        for j in 0..16 {
            let mut s = 0i32;
            for l in 16 * j..16 * j + 16 {
                s += q[l] as i32 * y.qs[l] as i32;
            }
            sumi += sc[j] as i32 * s;
        }
        sumf += x.d() * y.d * sumi as f32;
    }
    sumf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpack_scales_matches_bitwise_definition() {
        let s: [u8; 12] = [0x1F, 0xE2, 0x3C, 0x45, 0xA9, 0x07, 0xFF, 0x80, 0x6D, 0x92, 0x3B, 0xC4];
        let u = unpack_scales(&s);
        for j in 0..16 {
            let low = if j < 8 { s[j] & 0xF } else { s[j - 8] >> 4 };
            let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
            assert_eq!(u[j], (low | (high << 4)) as i8 - 32, "j = {j}");
        }
    }
}
