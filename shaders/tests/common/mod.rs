//! Shared by the GPU tests: the device (or a clear failure), test data, and CPU references.
#![allow(dead_code)]

use ferro_gguf::GgmlType;
use ferro_shaders::GpuContext;
use half::f16;
use std::sync::{Arc, OnceLock};

/// The GPU (one per test binary), or `None` when `FERRO_SKIP_GPU_TESTS=1` and there is none.
/// Without that variable a missing adapter fails the test: GPU tests never pass vacuously.
pub fn ctx() -> Option<Arc<GpuContext>> {
    static CTX: OnceLock<Result<Arc<GpuContext>, String>> = OnceLock::new();
    match CTX.get_or_init(|| GpuContext::new().map(Arc::new).map_err(|e| e.to_string())) {
        Ok(c) => Some(c.clone()),
        Err(e) => {
            if std::env::var("FERRO_SKIP_GPU_TESTS").as_deref() == Ok("1") {
                eprintln!("skipping GPU test: {e}");
                None
            } else {
                panic!("{e} (set FERRO_SKIP_GPU_TESTS=1 to skip GPU tests)");
            }
        }
    }
}

/// Deterministic pseudo-random numbers (xorshift), so failures reproduce.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// Uniform in [-1, 1).
    pub fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f32()).collect()
    }
}

/// Values in the style of llama.cpp's test-quantize-fns: 0.1 + 2 cos(i + offset).
pub fn cos_data(n: usize, offset: f32) -> Vec<f32> {
    (0..n).map(|i| 0.1 + 2.0 * (i as f32 + offset).cos()).collect()
}

fn put_f16(b: &mut [u8], off: usize, v: f32) {
    b[off..off + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
}

/// A weight of `rows` rows of `k` values of type `ty`: random quant bits with sane f16 scales.
pub fn random_weight(ty: GgmlType, k: usize, rows: usize, rng: &mut Rng) -> Vec<u8> {
    if ty == GgmlType::F32 {
        return bytemuck::cast_slice(&rng.vec(k * rows)).to_vec();
    }
    if ty == GgmlType::F16 {
        return rng
            .vec(k * rows)
            .iter()
            .flat_map(|v| f16::from_f32(*v).to_le_bytes())
            .collect();
    }
    let bs = ty.block_size() as usize;
    let ts = ty.type_size() as usize;
    let n_blocks = k / bs * rows;
    let mut out = vec![0u8; n_blocks * ts];
    for b in out.chunks_mut(ts) {
        for byte in b.iter_mut() {
            *byte = rng.next_u64() as u8;
        }
        let d = 0.01 + 0.02 * rng.f32().abs();
        let m = 0.02 * rng.f32();
        match ty {
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => put_f16(b, 0, d),
            GgmlType::Q4_1 => {
                put_f16(b, 0, d);
                put_f16(b, 2, m);
            }
            GgmlType::Q4_K | GgmlType::Q5_K => {
                put_f16(b, 0, d * 0.1);
                put_f16(b, 2, m.abs() * 0.1);
            }
            GgmlType::Q6_K => put_f16(b, 208, d * 0.1),
            _ => panic!("no test data for {}", ty.name()),
        }
    }
    out
}

fn f16_at(b: &[u8], off: usize) -> f32 {
    f16::from_le_bytes([b[off], b[off + 1]]).to_f32()
}

/// get_scale_min_k4 of ggml-quants.c: the 6-bit scale and min of sub-block j.
fn scale_min_k4(j: usize, q: &[u8]) -> (f32, f32) {
    if j < 4 {
        ((q[j] & 63) as f32, (q[j + 4] & 63) as f32)
    } else {
        let sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        let m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
        (sc as f32, m as f32)
    }
}

/// Scalar dequantization of one row, following ggml-quants.c's dequantize_row_* block by block.
pub fn dequantize_row(ty: GgmlType, src: &[u8], k: usize) -> Vec<f32> {
    let mut y = Vec::with_capacity(k);
    match ty {
        GgmlType::F32 => y.extend(bytemuck::cast_slice::<u8, f32>(&src[..k * 4]).iter()),
        GgmlType::F16 => y.extend((0..k).map(|i| f16_at(src, 2 * i))),
        GgmlType::Q4_0 => {
            for b in src.chunks(18).take(k / 32) {
                let d = f16_at(b, 0);
                let qs = &b[2..18];
                let mut blk = [0f32; 32];
                for j in 0..16 {
                    blk[j] = ((qs[j] & 0xF) as i32 - 8) as f32 * d;
                    blk[j + 16] = ((qs[j] >> 4) as i32 - 8) as f32 * d;
                }
                y.extend(blk);
            }
        }
        GgmlType::Q4_1 => {
            for b in src.chunks(20).take(k / 32) {
                let (d, m) = (f16_at(b, 0), f16_at(b, 2));
                let qs = &b[4..20];
                let mut blk = [0f32; 32];
                for j in 0..16 {
                    blk[j] = (qs[j] & 0xF) as f32 * d + m;
                    blk[j + 16] = (qs[j] >> 4) as f32 * d + m;
                }
                y.extend(blk);
            }
        }
        GgmlType::Q5_0 => {
            for b in src.chunks(22).take(k / 32) {
                let d = f16_at(b, 0);
                let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
                let qs = &b[6..22];
                let mut blk = [0f32; 32];
                for j in 0..16 {
                    let h0 = ((qh >> j) & 1) << 4;
                    let h1 = ((qh >> (j + 16)) & 1) << 4;
                    blk[j] = (((qs[j] & 0xF) as u32 | h0) as i32 - 16) as f32 * d;
                    blk[j + 16] = (((qs[j] >> 4) as u32 | h1) as i32 - 16) as f32 * d;
                }
                y.extend(blk);
            }
        }
        GgmlType::Q8_0 => {
            for b in src.chunks(34).take(k / 32) {
                let d = f16_at(b, 0);
                y.extend(b[2..34].iter().map(|q| *q as i8 as f32 * d));
            }
        }
        GgmlType::Q4_K => {
            for b in src.chunks(144).take(k / 256) {
                let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
                let scales = &b[4..16];
                let qs = &b[16..144];
                for c in 0..4 {
                    let (s1, m1) = scale_min_k4(2 * c, scales);
                    let (s2, m2) = scale_min_k4(2 * c + 1, scales);
                    let q = &qs[32 * c..32 * c + 32];
                    y.extend(q.iter().map(|v| d * s1 * (v & 0xF) as f32 - dmin * m1));
                    y.extend(q.iter().map(|v| d * s2 * (v >> 4) as f32 - dmin * m2));
                }
            }
        }
        GgmlType::Q5_K => {
            for b in src.chunks(176).take(k / 256) {
                let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
                let scales = &b[4..16];
                let qh = &b[16..48];
                let qs = &b[48..176];
                for c in 0..4 {
                    let (s1, m1) = scale_min_k4(2 * c, scales);
                    let (s2, m2) = scale_min_k4(2 * c + 1, scales);
                    let (u1, u2) = (1u8 << (2 * c), 2u8 << (2 * c));
                    let q = &qs[32 * c..32 * c + 32];
                    for l in 0..32 {
                        let hi = if qh[l] & u1 != 0 { 16.0 } else { 0.0 };
                        y.push(d * s1 * ((q[l] & 0xF) as f32 + hi) - dmin * m1);
                    }
                    for l in 0..32 {
                        let hi = if qh[l] & u2 != 0 { 16.0 } else { 0.0 };
                        y.push(d * s2 * ((q[l] >> 4) as f32 + hi) - dmin * m2);
                    }
                }
            }
        }
        GgmlType::Q6_K => {
            for b in src.chunks(210).take(k / 256) {
                let d = f16_at(b, 208);
                let mut blk = [0f32; 256];
                for n in 0..2 {
                    let ql = &b[64 * n..64 * n + 64];
                    let qh = &b[128 + 32 * n..128 + 32 * n + 32];
                    let sc = &b[192 + 8 * n..192 + 8 * n + 8];
                    for l in 0..32 {
                        let is = l / 16;
                        let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                        let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                        let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                        let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                        let o = 128 * n;
                        blk[o + l] = d * (sc[is] as i8) as f32 * q1 as f32;
                        blk[o + l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
                        blk[o + l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
                        blk[o + l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
                    }
                }
                y.extend(blk);
            }
        }
        _ => panic!("no reference for {}", ty.name()),
    }
    assert_eq!(y.len(), k);
    y
}

/// Dequantizes all rows of a weight.
pub fn dequantize(ty: GgmlType, bytes: &[u8], k: usize, rows: usize) -> Vec<Vec<f32>> {
    let rb = ty.row_bytes(k as u64).unwrap() as usize;
    (0..rows)
        .map(|r| dequantize_row(ty, &bytes[r * rb..(r + 1) * rb], k))
        .collect()
}

/// Asserts |a - b| <= atol + rtol * |b| element-wise, naming the first bad index.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let tol = atol + rtol * w.abs();
        assert!(
            (g - w).abs() <= tol && g.is_finite(),
            "{what}: index {i}: gpu {g} vs cpu {w} (tolerance {tol})"
        );
    }
}

pub fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let s = 1.0 / (ms + eps).sqrt();
    x.iter().zip(w).map(|(v, w)| v * s * w).collect()
}

pub fn softmax(x: &mut [f32]) {
    let m = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let mut s = 0.0;
    for v in x.iter_mut() {
        *v = (*v - m).exp();
        s += *v;
    }
    for v in x.iter_mut() {
        *v /= s;
    }
}

/// Rotary embedding of x [n_tok][n_heads][head_dim] in place, token t at pos0 + t.
#[allow(clippy::too_many_arguments)]
pub fn rope(
    x: &mut [f32],
    n_tok: usize,
    n_heads: usize,
    hd: usize,
    n_rot: usize,
    neox: bool,
    base: f32,
    freq_scale: f32,
    pos0: usize,
) {
    for t in 0..n_tok {
        let pos = (pos0 + t) as f64;
        for h in 0..n_heads {
            let o = (t * n_heads + h) * hd;
            for i in 0..n_rot / 2 {
                let theta = pos * freq_scale as f64 * (base as f64).powf(-2.0 * i as f64 / n_rot as f64);
                let (s, c) = (theta.sin() as f32, theta.cos() as f32);
                let (i0, i1) = if neox {
                    (o + i, o + i + n_rot / 2)
                } else {
                    (o + 2 * i, o + 2 * i + 1)
                };
                let (a, b) = (x[i0], x[i1]);
                x[i0] = a * c - b * s;
                x[i1] = a * s + b * c;
            }
        }
    }
}

/// Causal GQA attention with an optional sliding window (0 = none), as llama.cpp masks it.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &[f32],
    kc: &[f32],
    vc: &[f32],
    n_tok: usize,
    pos0: usize,
    n_head: usize,
    n_kv: usize,
    hd: usize,
    window: usize,
    scale: f32,
) -> Vec<f32> {
    let mut out = vec![0f32; n_tok * n_head * hd];
    let stride = n_kv * hd;
    for t in 0..n_tok {
        let pos = pos0 + t;
        for h in 0..n_head {
            let kvh = h / (n_head / n_kv);
            let qo = (t * n_head + h) * hd;
            let start = if window > 0 && pos + 1 > window {
                pos + 1 - window
            } else {
                0
            };
            let mut scores: Vec<f32> = (start..=pos)
                .map(|j| {
                    let ko = j * stride + kvh * hd;
                    (0..hd).map(|d| q[qo + d] * kc[ko + d]).sum::<f32>() * scale
                })
                .collect();
            softmax(&mut scores);
            for (jj, p) in scores.iter().enumerate() {
                let vo = (start + jj) * stride + kvh * hd;
                for d in 0..hd {
                    out[qo + d] += p * vc[vo + d];
                }
            }
        }
    }
    out
}

pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + (0.797_884_6 * (x + 0.044715 * x * x * x)).tanh())
}
