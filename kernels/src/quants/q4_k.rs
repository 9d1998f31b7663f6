//! Q4_K: 4-bit weights in 256-value super-blocks of 8 sub-blocks of 32, each sub-block with a
//! 6-bit scale and a 6-bit minimum: value = d * sc[j] * q - dmin * m[j], q in 0..=15.
//!
//! ```text
//! offset  size  field
//!      0     2  d       fp16 super-scale of the sub-block scales
//!      2     2  dmin    fp16 super-scale of the sub-block minimums
//!      4    12  scales  8 scales + 8 mins, 6 bits each (packing below)
//!     16   128  qs      4-bit quants: byte 32*i + l holds element 64*i + l in its low nibble
//!                       and element 64*i + 32 + l in its high nibble (i in 0..4, l in 0..32)
//! ```
//! 144 bytes per 256 weights = 4.5 bits/weight.
//!
//! Scale packing (`get_scale_min_k4` in ggml): for j < 4, sc[j] = scales[j] & 63 and
//! m[j] = scales[j + 4] & 63; for j >= 4, sc[j] = (scales[j + 4] & 15) | (scales[j - 4] >> 6) << 4
//! and m[j] = (scales[j + 4] >> 4) | (scales[j] >> 6) << 4.

// The loops mirror ggml's index arithmetic (sub-block j, element 16j + ii), which keeps the
// ports checkable line by line against the reference.
#![allow(clippy::needless_range_loop)]

use bytemuck::{Pod, Zeroable};

use super::q8_k::{f16_to_f32, f32_to_f16, nearest_int, BlockQ8K, QK_K};

/// One Q4_K super-block (see the module docs for the layout).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct BlockQ4K {
    /// fp16 super-scale for the sub-block scales (little-endian bytes).
    pub d: [u8; 2],
    /// fp16 super-scale for the sub-block minimums (little-endian bytes).
    pub dmin: [u8; 2],
    /// Packed 6-bit scales and minimums.
    pub scales: [u8; 12],
    /// Packed 4-bit quants.
    pub qs: [u8; QK_K / 2],
}

const _: () = assert!(core::mem::size_of::<BlockQ4K>() == 144);

impl BlockQ4K {
    /// The super-scale `d` as f32.
    #[inline]
    pub fn d(&self) -> f32 {
        f16_to_f32(self.d)
    }
    /// The super-scale `dmin` as f32.
    #[inline]
    pub fn dmin(&self) -> f32 {
        f16_to_f32(self.dmin)
    }
}

/// Scale and minimum of sub-block `j` (0..8) from the packed 12 bytes (ggml's `get_scale_min_k4`).
#[inline(always)]
pub fn scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Unpacks the 12 scale bytes into 16 bytes: the 8 scales, then the 8 minimums. The layout is
/// what the SIMD kernels load as one 128-bit vector.
#[inline(always)]
pub fn unpack_scales_mins(q: &[u8; 12]) -> [u8; 16] {
    const KMASK1: u32 = 0x3f3f_3f3f;
    const KMASK2: u32 = 0x0f0f_0f0f;
    const KMASK3: u32 = 0x0303_0303;
    let w0 = u32::from_le_bytes([q[0], q[1], q[2], q[3]]);
    let w1 = u32::from_le_bytes([q[4], q[5], q[6], q[7]]);
    let w2 = u32::from_le_bytes([q[8], q[9], q[10], q[11]]);
    let s0 = w0 & KMASK1;
    let s1 = (w2 & KMASK2) | (((w0 >> 6) & KMASK3) << 4);
    let m0 = w1 & KMASK1;
    let m1 = ((w2 >> 4) & KMASK2) | (((w1 >> 6) & KMASK3) << 4);
    let mut out = [0u8; 16];
    out[0..4].copy_from_slice(&s0.to_le_bytes());
    out[4..8].copy_from_slice(&s1.to_le_bytes());
    out[8..12].copy_from_slice(&m0.to_le_bytes());
    out[12..16].copy_from_slice(&m1.to_le_bytes());
    out
}

/// Packs 8 six-bit scales and minimums into the 12-byte Q4_K/Q5_K layout.
pub(crate) fn pack_scales_mins(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..8 {
        let (l, m) = (ls[j], lm[j]);
        if j < 4 {
            s[j] = l;
            s[j + 4] = m;
        } else {
            s[j + 4] = (l & 0xF) | ((m & 0xF) << 4);
            s[j - 4] |= (l >> 4) << 6;
            s[j] |= (m >> 4) << 6;
        }
    }
    s
}

/// Fits x ~ scale * l - the_min with l in 0..=nmax, minimising the weighted error; returns
/// (scale, the_min). A faithful port of ggml's `make_qkx2_quants` (same float evaluation order,
/// so quantized files match llama.cpp's bit for bit).
#[allow(clippy::too_many_arguments)]
pub(crate) fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l_out: &mut [u8],
    l_aux: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l_out[..n].fill(0);
        return (0.0, -min);
    }
    let nmaxf = nmax as f32;
    let mut iscale = nmaxf / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l_out[i] = l as u8;
        let mut diff = scale * l as f32 + min - x[i];
        diff = if use_mad { diff.abs() } else { diff * diff };
        best_error += weights[i] * diff;
    }
    if nstep < 1 {
        return (scale, -min);
    }
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmaxf) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            l_aux[i] = l as u8;
            let w = weights[i];
            let lf = l as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let dd = sum_w * sum_l2 - sum_l * sum_l;
        if dd > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / dd;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / dd;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                let mut diff = this_scale * l_aux[i] as f32 + this_min - x[i];
                diff = if use_mad { diff.abs() } else { diff * diff };
                cur_error += weights[i] * diff;
            }
            if cur_error < best_error {
                l_out[..n].copy_from_slice(&l_aux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// The shared body of the Q4_K and Q5_K reference quantizers: per 32-value sub-block a
/// `make_qkx2_quants` fit, 6-bit scales/mins against the super-block maxima, then a
/// requantization of every value with the stored (fp16, 6-bit) scales.
/// Returns (d, dmin, packed scales) and fills `l` (256 quants in 0..=nmax).
pub(crate) fn quantize_scales_mins_k(
    x: &[f32],
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    l: &mut [u8; QK_K],
) -> ([u8; 2], [u8; 2], [u8; 12]) {
    let mut mins = [0.0f32; 8];
    let mut scales = [0.0f32; 8];
    let mut weights = [0.0f32; 32];
    let mut l_aux = [0u8; 32];
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0.0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let (s, m) = make_qkx2_quants(
            nmax,
            xs,
            &weights,
            &mut l[32 * j..32 * j + 32],
            &mut l_aux,
            rmin,
            rdelta,
            nstep,
            false,
        );
        scales[j] = s;
        mins[j] = m;
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    for j in 0..8 {
        // C: `uint8_t ls = nearest_int(...)` truncates to 8 bits, then MIN(63, ls).
        ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
    }
    let packed = pack_scales_mins(&ls, &lm);
    let d = f32_to_f16(max_scale / 63.0);
    let dmin = f32_to_f16(max_min / 63.0);
    let (df, dminf) = (f16_to_f32(d), f16_to_f32(dmin));
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, &packed);
        let dd = df * sc as f32;
        if dd == 0.0 {
            continue;
        }
        let dm = dminf * m as f32;
        for ii in 0..32 {
            l[32 * j + ii] = nearest_int((x[32 * j + ii] + dm) / dd).clamp(0, nmax) as u8;
        }
    }
    (d, dmin, packed)
}

/// Reference quantizer (llama.cpp `quantize_row_q4_K_ref`): `x.len()` must be `out.len() * 256`.
///
/// # Panics
/// If the lengths do not match.
pub fn quantize(x: &[f32], out: &mut [BlockQ4K]) {
    assert_eq!(x.len(), out.len() * QK_K, "q4_k::quantize: length mismatch");
    let mut l = [0u8; QK_K];
    for (xb, y) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
        let (d, dmin, scales) = quantize_scales_mins_k(xb, 15, -1.0, 0.1, 20, &mut l);
        y.d = d;
        y.dmin = dmin;
        y.scales = scales;
        for i in 0..4 {
            for j in 0..32 {
                y.qs[32 * i + j] = l[64 * i + j] | (l[64 * i + 32 + j] << 4);
            }
        }
    }
}

/// Dequantizes Q4_K blocks into `out` (`blocks.len() * 256` values).
///
/// # Panics
/// If `out.len() != blocks.len() * 256`.
pub fn dequantize(blocks: &[BlockQ4K], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK_K, "q4_k::dequantize: length mismatch");
    for (b, o) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d = b.d();
        let min = b.dmin();
        for i in 0..4 {
            let (sc1, m1) = scale_min_k4(2 * i, &b.scales);
            let (sc2, m2) = scale_min_k4(2 * i + 1, &b.scales);
            let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
            let q = &b.qs[32 * i..32 * i + 32];
            for l in 0..32 {
                o[64 * i + l] = d1 * (q[l] & 0xF) as f32 - m1;
                o[64 * i + 32 + l] = d2 * (q[l] >> 4) as f32 - m2;
            }
        }
    }
}

/// Scalar dot product of a Q4_K row with a Q8_K row (the oracle for the SIMD paths): per
/// super-block the exact integer sums of ggml_vec_dot_q4_K_q8_K, combined in f32.
///
/// # Panics
/// If `w.len() != a.len()`.
pub fn vec_dot_scalar(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
    assert_eq!(w.len(), a.len(), "q4_k::vec_dot: length mismatch");
    let mut sumf = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let sm = unpack_scales_mins(&x.scales);
        let mut summ = 0i32;
        for j in 0..16 {
            summ += y.bsums[j] as i32 * sm[8 + j / 2] as i32;
        }
        let mut sumi = 0i32;
        for i in 0..4 {
            let q = &x.qs[32 * i..32 * i + 32];
            let q8 = &y.qs[64 * i..64 * i + 64];
            let (mut lo, mut hi) = (0i32, 0i32);
            for l in 0..32 {
                lo += (q[l] & 0xF) as i32 * q8[l] as i32;
                hi += (q[l] >> 4) as i32 * q8[32 + l] as i32;
            }
            sumi += sm[2 * i] as i32 * lo + sm[2 * i + 1] as i32 * hi;
        }
        sumf += x.d() * y.d * sumi as f32 - x.dmin() * y.d * summ as f32;
    }
    sumf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpack_matches_get_scale_min() {
        let q: [u8; 12] = [0xC5, 0x7F, 0x01, 0xFE, 0x33, 0x80, 0x4A, 0xFF, 0x12, 0x9C, 0xE7, 0x05];
        let u = unpack_scales_mins(&q);
        for j in 0..8 {
            let (s, m) = scale_min_k4(j, &q);
            assert_eq!((u[j], u[8 + j]), (s, m), "j = {j}");
        }
    }

    #[test]
    fn pack_roundtrips() {
        let ls = [0, 63, 17, 42, 5, 63, 1, 32];
        let lm = [63, 0, 9, 31, 44, 2, 63, 16];
        let p = pack_scales_mins(&ls, &lm);
        for j in 0..8 {
            assert_eq!(scale_min_k4(j, &p), (ls[j], lm[j]));
        }
    }
}
