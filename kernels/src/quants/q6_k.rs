//! Q6_K: 6-bit weights in 256-value super-blocks of 16 sub-blocks of 16, each sub-block with a
//! signed 8-bit scale: value = d * sc[j] * (q - 32), q in 0..=63.
//!
//! ```text
//! offset  size  field
//!      0   128  ql      low 4 bits: for half h (0..2) and l in 0..32, ql[64h + l] holds
//!                       elements 128h + l (low nibble) and 128h + 64 + l (high nibble);
//!                       ql[64h + 32 + l] holds 128h + 32 + l and 128h + 96 + l
//!    128    64  qh      high 2 bits: qh[32h + l] bits 0-1, 2-3, 4-5, 6-7 belong to elements
//!                       128h + l, +32, +64, +96
//!    192    16  scales  i8 sub-block scales (sub-block j = elements 16j..16j+16)
//!    208     2  d       fp16 super-scale
//! ```
//! 210 bytes per 256 weights = 6.5625 bits/weight.

// The loops mirror ggml's index arithmetic (sub-block j, element 16j + ii), which keeps the
// ports checkable line by line against the reference.
#![allow(clippy::needless_range_loop)]

use bytemuck::{Pod, Zeroable};

use super::q8_k::{f16_to_f32, f32_to_f16, nearest_int, BlockQ8K, QK_K};

/// One Q6_K super-block (see the module docs for the layout).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct BlockQ6K {
    /// Low 4 bits of the quants.
    pub ql: [u8; QK_K / 2],
    /// High 2 bits of the quants.
    pub qh: [u8; QK_K / 4],
    /// Signed 8-bit sub-block scales.
    pub scales: [i8; QK_K / 16],
    /// fp16 super-scale (little-endian bytes).
    pub d: [u8; 2],
}

const _: () = assert!(core::mem::size_of::<BlockQ6K>() == 210);

impl BlockQ6K {
    /// The super-scale `d` as f32.
    #[inline]
    pub fn d(&self) -> f32 {
        f16_to_f32(self.d)
    }
}

/// Groups below this magnitude quantize to zero (ggml's `GROUP_MAX_EPS`).
pub(crate) const GROUP_MAX_EPS: f32 = 1e-15;

/// Symmetric fit x ~ scale * (l - nmax), l in 0..2*nmax, weights x^2 (`rmse_type` 1), with the
/// 18-step scale search of ggml's `make_qx_quants`. Writes l (offset by nmax) and returns scale.
pub(crate) fn make_qx_quants(nmax: i32, x: &[f32], l_out: &mut [i8]) -> f32 {
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
    let nmaxf = nmax as f32;
    let mut iscale = -nmaxf / max;
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for i in 0..n {
        let l = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
        l_out[i] = (l + nmax) as i8;
        let w = x[i] * x[i];
        let lf = l as f32;
        sumlx += w * x[i] * lf;
        suml2 += w * lf * lf;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9i32..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmaxf + 0.1 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for &v in x {
            let l = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
            let w = v * v;
            let lf = l as f32;
            sumlx += w * v * lf;
            suml2 += w * lf * lf;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for i in 0..n {
                let l = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
                l_out[i] = (nmax + l) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Reference quantizer (llama.cpp `quantize_row_q6_K_ref`): `x.len()` must be `out.len() * 256`.
///
/// # Panics
/// If the lengths do not match.
pub fn quantize(x: &[f32], out: &mut [BlockQ6K]) {
    assert_eq!(x.len(), out.len() * QK_K, "q6_k::quantize: length mismatch");
    let mut l = [0i8; QK_K];
    let mut scales = [0.0f32; 16];
    for (xb, y) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
        let mut max_scale = 0.0f32;
        let mut max_abs_scale = 0.0f32;
        for ib in 0..16 {
            let s = make_qx_quants(32, &xb[16 * ib..16 * ib + 16], &mut l[16 * ib..16 * ib + 16]);
            scales[ib] = s;
            if s.abs() > max_abs_scale {
                max_abs_scale = s.abs();
                max_scale = s;
            }
        }
        if max_abs_scale < GROUP_MAX_EPS {
            *y = BlockQ6K::zeroed();
            continue;
        }
        let iscale = -128.0f32 / max_scale;
        y.d = f32_to_f16(1.0 / iscale);
        for ib in 0..16 {
            y.scales[ib] = nearest_int(iscale * scales[ib]).min(127) as i8;
        }
        let df = y.d();
        for j in 0..16 {
            let d = df * y.scales[j] as f32;
            if d == 0.0 {
                continue;
            }
            for ii in 0..16 {
                let q = nearest_int(xb[16 * j + ii] / d).clamp(-32, 31);
                l[16 * j + ii] = (q + 32) as i8;
            }
        }
        for h in 0..2 {
            let lb = &l[128 * h..128 * h + 128];
            for k in 0..32 {
                let q1 = lb[k] as u8;
                let q2 = lb[k + 32] as u8;
                let q3 = lb[k + 64] as u8;
                let q4 = lb[k + 96] as u8;
                y.ql[64 * h + k] = (q1 & 0xF) | ((q3 & 0xF) << 4);
                y.ql[64 * h + 32 + k] = (q2 & 0xF) | ((q4 & 0xF) << 4);
                y.qh[32 * h + k] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
            }
        }
    }
}

/// The 256 quants of a block as signed values q - 32, in element order.
#[inline(always)]
fn unpack(b: &BlockQ6K) -> [i8; QK_K] {
    let mut a = [0i8; QK_K];
    for h in 0..2 {
        let ql = &b.ql[64 * h..64 * h + 64];
        let qh = &b.qh[32 * h..32 * h + 32];
        let o = &mut a[128 * h..128 * h + 128];
        for l in 0..32 {
            o[l] = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
            o[l + 32] = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
            o[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
            o[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
        }
    }
    a
}

/// Dequantizes Q6_K blocks into `out` (`blocks.len() * 256` values).
///
/// # Panics
/// If `out.len() != blocks.len() * 256`.
pub fn dequantize(blocks: &[BlockQ6K], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK_K, "q6_k::dequantize: length mismatch");
    for (b, o) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d = b.d();
        let q = unpack(b);
        for (j, (oc, qc)) in o.chunks_exact_mut(16).zip(q.chunks_exact(16)).enumerate() {
            let dl = d * b.scales[j] as f32;
            for (v, &qq) in oc.iter_mut().zip(qc) {
                *v = dl * qq as f32;
            }
        }
    }
}

/// Scalar dot product of a Q6_K row with a Q8_K row (the oracle for the SIMD paths): per
/// super-block the exact integer sum of ggml_vec_dot_q6_K_q8_K, scaled in f32.
///
/// # Panics
/// If `w.len() != a.len()`.
pub fn vec_dot_scalar(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
    assert_eq!(w.len(), a.len(), "q6_k::vec_dot: length mismatch");
    let mut sumf = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let q = unpack(x);
        let mut sumi = 0i32;
        for j in 0..16 {
            let mut s = 0i32;
            for l in 16 * j..16 * j + 16 {
                s += q[l] as i32 * y.qs[l] as i32;
            }
            sumi += x.scales[j] as i32 * s;
        }
        sumf += x.d() * y.d * sumi as f32;
    }
    sumf
}
