//! Shared by the GPU tests: the device (or a clear failure), test data, and CPU references.
#![allow(dead_code)]

use ferro_gguf::GgmlType;
use ferro_shaders::{ActQuant, GpuContext};
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

/// One row dequantized by the kernels' scalar reference (`ferro_kernels::dequantize_row`, the
/// oracle of every CPU path too), so the shaders are held to the same definition of each format.
pub fn dequantize_row(ty: GgmlType, src: &[u8], k: usize) -> Vec<f32> {
    let mut y = vec![0f32; k];
    ferro_kernels::dequantize_row(ty, src, &mut y).unwrap_or_else(|e| panic!("{}: {e}", ty.name()));
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

/// llama.cpp's rounding of activations: Q8_0 / Q8_K blocks quantized and dequantized again by
/// the kernels' scalar reference, or f16.
pub fn round_like_llama_cpp(q: ActQuant, x: &[f32]) -> Vec<f32> {
    let through = |ty: GgmlType| {
        let bytes = ferro_kernels::quantize_row(ty, x).unwrap();
        dequantize_row(ty, &bytes, x.len())
    };
    match q {
        ActQuant::None => x.to_vec(),
        ActQuant::F16 => x.iter().map(|v| half::f16::from_f32(*v).to_f32()).collect(),
        ActQuant::Q8_0 => through(GgmlType::Q8_0),
        ActQuant::Q8K => through(GgmlType::Q8_K),
    }
}

/// Checks the GPU's rounding of activations `x` (`got`) against [`round_like_llama_cpp`]. They
/// must be equal except where `x` sits on a tie between two quants (its distance from the
/// midpoint under 1e-4 of a step): WGSL's `round` breaks ties to even, the reference away from
/// zero, and a GPU's division may differ from the CPU's by an ulp. There, either neighbour passes.
/// `q` is one of the int8 roundings (Q8_0, Q8_K).
pub fn check_rounding(what: &str, q: ActQuant, x: &[f32], got: &[f32]) {
    let want = round_like_llama_cpp(q, x);
    let block = match q {
        ActQuant::Q8_0 => 32,
        ActQuant::Q8K => 256,
        ActQuant::None | ActQuant::F16 => panic!("{what}: {q:?} is not an int8 rounding"),
    };
    assert_eq!(got.len(), want.len(), "{what}: rounded length");
    for (b, xs) in x.chunks(block).enumerate() {
        let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (j, &v) in xs.iter().enumerate() {
            let i = b * block + j;
            if got[i] == want[i] {
                continue;
            }
            let steps = v.abs() * 127.0 / amax;
            let one_step = amax / 127.0;
            assert!(
                (steps.fract() - 0.5).abs() < 1e-4 && (got[i] - want[i]).abs() < 1.01 * one_step,
                "{what}: activation {i} = {v:e} rounds to {} on the GPU, {} in the reference ({steps} steps)",
                got[i],
                want[i]
            );
        }
    }
}
