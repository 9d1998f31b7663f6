//! The small numeric building blocks every architecture's forward pass is made of.
//!
//! Each op follows the ggml CPU op of the same name closely enough that ferro's logits agree
//! with llama.cpp's to float rounding: sums of squares and softmax denominators accumulate in
//! f64 as ggml's do, and GELU goes through an f16 round trip like ggml's `GGML_GELU_FP16` table.

use ferro_kernels::{dequantize_row, GgmlType, KernelError};
use rayon::prelude::*;

/// `out = x / sqrt(mean(x²) + eps) * w` (ggml `rms_norm` followed by `mul`).
pub fn rms_norm(out: &mut [f32], x: &[f32], w: &[f32], eps: f32) {
    debug_assert_eq!(out.len(), x.len());
    debug_assert_eq!(w.len(), x.len());
    let sum: f64 = x.iter().map(|&v| (v * v) as f64).sum();
    let scale = 1.0 / ((sum / x.len() as f64) as f32 + eps).sqrt();
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
        *o = v * scale * g;
    }
}

/// In-place [`rms_norm`] of each `w.len()`-long row of `x` (per-head Q/K norms).
pub fn rms_norm_rows(x: &mut [f32], w: &[f32], eps: f32) {
    let n = w.len();
    for row in x.chunks_exact_mut(n) {
        let sum: f64 = row.iter().map(|&v| (v * v) as f64).sum();
        let scale = 1.0 / ((sum / n as f64) as f32 + eps).sqrt();
        for (v, &g) in row.iter_mut().zip(w) {
            *v = *v * scale * g;
        }
    }
}

/// How rotary embedding pairs the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs `(x[2i], x[2i+1])`: llama, mistral (ggml `GGML_ROPE_TYPE_NORMAL`).
    Normal,
    /// Split halves `(x[i], x[i + n_rot/2])`: gemma, qwen2, phi3 (ggml `GGML_ROPE_TYPE_NEOX`).
    Neox,
}

/// Rotary position embedding parameters of one layer type: the per-pair inverse frequencies
/// with frequency scaling and llama3-style frequency factors already folded in.
#[derive(Debug, Clone)]
pub struct Rope {
    pub style: RopeStyle,
    /// Rotated dimensions per head (`rope.dimension_count`); the rest pass through.
    pub n_rot: usize,
    /// `[n_rot / 2]`: theta_i = pos * inv_freq[i].
    pub inv_freq: Vec<f32>,
}

impl Rope {
    /// ggml `rope_ext` without YaRN: theta_i = pos * freq_scale * base^(-2i/n_rot) / factor_i.
    pub fn new(style: RopeStyle, n_rot: usize, base: f32, freq_scale: f32, factors: Option<&[f32]>) -> Self {
        // ggml builds theta_scale^i by repeated multiplication in f32; do the same.
        let theta_scale = base.powf(-2.0 / n_rot as f32);
        let mut t = 1.0f32;
        let inv_freq = (0..n_rot / 2)
            .map(|i| {
                let ff = factors.and_then(|f| f.get(i).copied()).unwrap_or(1.0);
                let v = freq_scale * (t / ff);
                t *= theta_scale;
                v
            })
            .collect();
        Rope { style, n_rot, inv_freq }
    }

    /// Rotate every `head_dim`-long head in `x` for position `pos`.
    pub fn apply(&self, x: &mut [f32], head_dim: usize, pos: usize) {
        let mut sc = Vec::new();
        self.angles(pos, &mut sc);
        self.rotate(&mut [x], head_dim, &sc)
    }

    /// Each pair's `(sin, cos)` at `pos`, for [`Rope::rotate`].
    pub fn angles(&self, pos: usize, out: &mut Vec<(f32, f32)>) {
        out.clear();
        out.extend(self.inv_freq.iter().map(|&f| (pos as f32 * f).sin_cos()));
    }

    /// Rotate every `head_dim`-long head of each of `xs` (a token's queries and keys) by the
    /// pairs' `(sin, cos)` `sc` ([`Rope::angles`] of the position), computed once for all.
    pub fn rotate(&self, xs: &mut [&mut [f32]], head_dim: usize, sc: &[(f32, f32)]) {
        let half = self.n_rot / 2;
        for head in xs.iter_mut().flat_map(|x| x.chunks_exact_mut(head_dim)) {
            for (i, &(sin, cos)) in sc.iter().enumerate() {
                let (a, b) = match self.style {
                    RopeStyle::Normal => (2 * i, 2 * i + 1),
                    RopeStyle::Neox => (i, i + half),
                };
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0 * cos - x1 * sin;
                head[b] = x0 * sin + x1 * cos;
            }
        }
    }
}

/// llama3 rope scaling (Meta's `apply_scaling`): the per-pair factors llama.cpp's converter
/// stores as `rope_freqs.weight`, for files that only carry `rope.scaling.*` metadata.
pub fn llama3_rope_factors(n_rot: usize, base: f32, factor: f32, low: f32, high: f32, orig_ctx: f32) -> Vec<f32> {
    let low_wavelen = orig_ctx / low;
    let high_wavelen = orig_ctx / high;
    (0..n_rot / 2)
        .map(|i| {
            let freq = 1.0 / base.powf(2.0 * i as f32 / n_rot as f32);
            let wavelen = 2.0 * std::f32::consts::PI / freq;
            if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (orig_ctx / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            }
        })
        .collect()
}

/// SiLU-gated linear unit in place: `gate = silu(gate) * up` (ggml `swiglu`), with the kernels'
/// `exp` (x86: eight lanes at a time, within 2 ulp of libm's). One token's stays on the caller:
/// SmolLM2's 1536 elements take well under a microsecond, less than a loop on the team costs.
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    // (Unequal lengths panic in the kernel, and in par_zip.)
    if gate.len() <= ELEMENTWISE_CHUNK {
        return ferro_kernels::swiglu_f32(gate, up);
    }
    par_zip(gate, up, ferro_kernels::swiglu_f32);
}

/// Elements per task of the element-wise ops (a prefill's activations run on every thread; one
/// token's stay on the caller's).
const ELEMENTWISE_CHUNK: usize = 1 << 14;

/// `f` over matching chunks of [`ELEMENTWISE_CHUNK`] elements of `a` and `b` (of one length),
/// in parallel.
fn par_zip(a: &mut [f32], b: &[f32], f: impl Fn(&mut [f32], &[f32]) + Sync) {
    assert_eq!(a.len(), b.len(), "gated linear unit: gate and up differ in length");
    a.par_chunks_mut(ELEMENTWISE_CHUNK)
        .zip(b.par_chunks(ELEMENTWISE_CHUNK))
        .for_each(|(a, b)| f(a, b));
}

/// GELU, tanh approximation, as ggml's CPU backend computes it: the input rounded to f16 and
/// the result looked up in an f16 table (`GGML_GELU_FP16`), saturating beyond ±10.
pub fn gelu(x: f32) -> f32 {
    ferro_kernels::quants::float::gelu(x)
}

/// GELU-gated linear unit in place: `gate = gelu(gate) * up` (ggml `geglu`, its fp16 table),
/// on the kernels' vector path (x86: fp16 rounding and table gathers eight lanes at a time, the
/// same bits). One token's stays on the caller, as [`swiglu`]'s: gemma3's 2048 elements had
/// taken ~9 us a layer split over two threads with the scalar lookup.
pub fn geglu(gate: &mut [f32], up: &[f32]) {
    if gate.len() <= ELEMENTWISE_CHUNK {
        return ferro_kernels::geglu_f32(gate, up);
    }
    par_zip(gate, up, ferro_kernels::geglu_f32);
}

/// `x += y`.
pub fn add(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Look one row (token) up in an embedding table stored as `ty` rows of `out.len()` elements.
pub fn embedding_row(ty: GgmlType, table: &[u8], row: usize, out: &mut [f32]) -> Result<(), KernelError> {
    let rb = ty
        .row_bytes(out.len() as u64)
        .ok_or_else(|| KernelError::Shape(format!("embedding width {} does not fit {ty}", out.len())))?
        as usize;
    let src = table
        .get(row * rb..(row + 1) * rb)
        .ok_or_else(|| KernelError::Shape(format!("embedding row {row} is out of range")))?;
    dequantize_row(ty, src, out)
}

/// Cap logits smoothly to (-cap, cap): `cap * tanh(x / cap)` (gemma's soft-capping).
pub fn softcap(x: &mut [f32], cap: f32) {
    for v in x.iter_mut() {
        *v = (*v / cap).tanh() * cap;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferro_kernels::quants::float::gelu_exact;
    use half::f16;

    #[test]
    fn gelu_table_is_the_rounded_formula() {
        for i in -37_000..37_000 {
            let x = i as f32 * 2.7e-4;
            let want = f16::from_f32(gelu_exact(f16::from_f32(x).to_f32())).to_f32();
            assert_eq!(gelu(x).to_bits(), want.to_bits(), "x = {x}");
        }
        assert_eq!(gelu(-12.0), 0.0);
        assert_eq!(gelu(12.5), 12.5);
        assert!((gelu(1.0) - 0.8413).abs() < 1e-3);
    }

    #[test]
    fn rms_norm_unit_rms() {
        let x = [1.0, -2.0, 3.0, -4.0];
        let mut out = [0.0; 4];
        rms_norm(&mut out, &x, &[1.0; 4], 0.0);
        let ms: f32 = out.iter().map(|v| v * v).sum::<f32>() / 4.0;
        assert!((ms - 1.0).abs() < 1e-5);
    }

    /// Queries and keys rotated together (one set of angles for both) get the bits each gets
    /// alone; partial rotation (`n_rot` < head_dim) leaves the rest of each head.
    #[test]
    fn rope_of_several_rows_is_rope_of_each() {
        for style in [RopeStyle::Normal, RopeStyle::Neox] {
            let r = Rope::new(style, 6, 10000.0, 1.0, None);
            let q: Vec<f32> = (0..24).map(|i| (i as f32 * 0.37).sin()).collect();
            let k: Vec<f32> = (0..8).map(|i| (i as f32 * 0.71).cos()).collect();
            let (mut q1, mut k1, mut q2, mut k2) = (q.clone(), k.clone(), q.clone(), k.clone());
            r.apply(&mut q1, 8, 37);
            r.apply(&mut k1, 8, 37);
            let mut sc = Vec::new();
            r.angles(37, &mut sc);
            r.rotate(&mut [&mut q2, &mut k2], 8, &sc);
            assert_eq!((q1.clone(), k1), (q2, k2), "{style:?}");
            assert_eq!(q1[6..8], q[6..8]);
            assert_ne!(q1[..6], q[..6]);
        }
    }

    #[test]
    fn rope_layouts_rotate_different_pairs() {
        let r = Rope::new(RopeStyle::Normal, 4, 10000.0, 1.0, None);
        let mut x = [1.0, 0.0, 1.0, 0.0];
        r.apply(&mut x, 4, 1);
        assert!((x[0] - 1f32.cos()).abs() < 1e-6 && (x[1] - 1f32.sin()).abs() < 1e-6);
        let r = Rope::new(RopeStyle::Neox, 4, 10000.0, 1.0, None);
        let mut x = [1.0, 0.0, 0.0, 0.0];
        r.apply(&mut x, 4, 1);
        assert!((x[0] - 1f32.cos()).abs() < 1e-6 && (x[2] - 1f32.sin()).abs() < 1e-6);
        // Rotation keeps the norm and position 0 is the identity.
        let mut y = [0.3, -0.7, 1.1, 0.2];
        r.apply(&mut y, 4, 0);
        assert_eq!(y, [0.3, -0.7, 1.1, 0.2]);
    }

    /// Gated units on the caller (one token) or in chunks of ELEMENTWISE_CHUNK over the
    /// threads (prefill): every element as the one-element formula gives it, on both sides of
    /// the chunk size.
    #[test]
    fn gated_units_split_over_threads_give_every_element() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        for n in [
            7,
            1536,
            3001,
            ELEMENTWISE_CHUNK,
            ELEMENTWISE_CHUNK + 9,
            3 * ELEMENTWISE_CHUNK + 1,
        ] {
            let gate: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) / 9.0).collect();
            let up: Vec<f32> = (0..n).map(|i| ((i * 11 % 23) as f32 - 11.0) / 5.0).collect();
            let (mut s, mut g) = (gate.clone(), gate.clone());
            pool.install(|| {
                swiglu(&mut s, &up);
                geglu(&mut g, &up);
            });
            for i in 0..n {
                let x = gate[i];
                let mut one = [x];
                ferro_kernels::swiglu_f32(&mut one, &up[i..i + 1]);
                assert_eq!(s[i].to_bits(), one[0].to_bits(), "swiglu n={n} [{i}]");
                let want = x / (1.0 + (-x).exp()) * up[i];
                assert!(
                    (s[i] - want).abs() <= 4.0 * f32::EPSILON * want.abs(),
                    "swiglu n={n} [{i}]"
                );
                assert_eq!(g[i].to_bits(), (gelu(x) * up[i]).to_bits(), "geglu n={n} [{i}]");
            }
        }
    }

    #[test]
    fn gelu_matches_tanh_formula() {
        for &x in &[-3.0f32, -0.5, 0.0, 0.25, 1.0, 2.5] {
            assert!((gelu(x) - gelu_exact(x)).abs() < 2e-3 * (1.0 + x.abs()), "{x}");
        }
        assert_eq!(gelu(-20.0), 0.0);
        assert_eq!(gelu(20.0), 20.0);
    }

    #[test]
    fn llama3_factors_span_one_to_factor() {
        let f = llama3_rope_factors(128, 500000.0, 8.0, 1.0, 4.0, 8192.0);
        assert_eq!(f.len(), 64);
        assert_eq!(f[0], 1.0);
        assert_eq!(f[63], 8.0);
        assert!(f.windows(2).all(|w| w[1] >= w[0]));
    }
}
