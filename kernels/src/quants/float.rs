//! Unquantized rows: F32 (32 bits/weight), F16 (IEEE half, 16 bits/weight) and BF16 (the top
//! 16 bits of an f32, 16 bits/weight). Little-endian, one element per "block". Their dot product
//! runs against f32 activations directly.

use half::{bf16, f16};

/// Convert an F16 row to f32.
pub fn dequantize_f16(src: &[f16], out: &mut [f32]) {
    assert_eq!(src.len(), out.len());
    for (y, x) in out.iter_mut().zip(src) {
        *y = x.to_f32();
    }
}

/// Convert a BF16 row to f32 (exact).
pub fn dequantize_bf16(src: &[bf16], out: &mut [f32]) {
    assert_eq!(src.len(), out.len());
    for (y, x) in out.iter_mut().zip(src) {
        *y = x.to_f32();
    }
}

/// Round f32 to F16, nearest-even (as ggml's `GGML_FP32_TO_FP16`).
pub fn quantize_f16(x: &[f32], out: &mut [f16]) {
    assert_eq!(x.len(), out.len());
    for (y, &v) in out.iter_mut().zip(x) {
        *y = f16::from_f32(v);
    }
}

/// Round f32 to BF16, nearest-even with NaN kept quiet (as ggml's `GGML_FP32_TO_BF16`).
pub fn quantize_bf16(x: &[f32], out: &mut [bf16]) {
    assert_eq!(x.len(), out.len());
    for (y, &v) in out.iter_mut().zip(x) {
        *y = bf16::from_f32(v);
    }
}

/// Scalar dot of two f32 rows, eight partial sums (the order the SIMD paths also use, so
/// results differ from them only by the final reduction).
pub fn vec_dot_f32(w: &[f32], a: &[f32]) -> f32 {
    assert_eq!(w.len(), a.len());
    dot_widened(w, a)
}

/// Scalar dot of an F16 row with f32 activations.
pub fn vec_dot_f16(w: &[f16], a: &[f32]) -> f32 {
    assert_eq!(w.len(), a.len());
    w.iter().zip(a).map(|(x, y)| x.to_f32() * y).sum()
}

/// Scalar dot of a BF16 row with f32 activations.
pub fn vec_dot_bf16(w: &[bf16], a: &[f32]) -> f32 {
    assert_eq!(w.len(), a.len());
    w.iter().zip(a).map(|(x, y)| x.to_f32() * y).sum()
}

/// The shape checks of [`dots_f32`] and [`weighted_sum_f32`] (every path runs them): `heads`
/// rows of `d` floats (`dl = heads·d`) and `heads` rows of `n` (`nl = heads·n`), the `n` key or
/// value rows of `d` floats, `stride` apart, inside `data`.
pub(crate) fn check_heads(heads: usize, dl: usize, nl: usize, stride: usize, data: usize) {
    assert!(
        heads > 0 && dl.is_multiple_of(heads) && nl.is_multiple_of(heads),
        "{heads} heads do not divide {dl} and {nl} floats"
    );
    let (d, n) = (dl / heads, nl / heads);
    if let Some(last) = n.checked_sub(1) {
        assert!(
            last.checked_mul(stride)
                .and_then(|o| o.checked_add(d))
                .is_some_and(|e| e <= data),
            "{n} rows of {d} floats {stride} apart do not fit in {data} floats"
        );
    }
}

/// The element types of attention's key and value rows: f32, and f16 (the KV cache's, as
/// llama.cpp's default `f16` cache type).
pub trait KvElem: Copy + Send + Sync + 'static {
    fn f32(self) -> f32;
}

impl KvElem for f32 {
    #[inline(always)]
    fn f32(self) -> f32 {
        self
    }
}

impl KvElem for f16 {
    #[inline(always)]
    fn f32(self) -> f32 {
        self.to_f32()
    }
}

/// [`vec_dot_f32`]'s order with the second row widened from `E`.
fn dot_widened<E: KvElem>(w: &[f32], a: &[E]) -> f32 {
    let mut acc = [0f32; 8];
    let mut wc = w.chunks_exact(8);
    let mut ac = a.chunks_exact(8);
    for (w8, a8) in (&mut wc).zip(&mut ac) {
        for k in 0..8 {
            acc[k] += w8[k] * a8[k].f32();
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (x, y) in wc.remainder().iter().zip(ac.remainder()) {
        sum += x * y.f32();
    }
    sum
}

/// `out[h·n + j] = q_h · k[j·stride..][..d]` for every head h (the `heads` rows of `q`, `d`
/// floats each) and key j (`n = out.len() / heads`) (scalar reference; `k` f32 or f16).
///
/// # Panics
/// When the shapes disagree or the rows do not fit in `k`.
pub fn dots<E: KvElem>(q: &[f32], heads: usize, k: &[E], stride: usize, out: &mut [f32]) {
    check_heads(heads, q.len(), out.len(), stride, k.len());
    let (d, n) = (q.len() / heads, out.len() / heads);
    if d == 0 || n == 0 {
        out.fill(0.0);
        return;
    }
    for (qh, out) in q.chunks_exact(d).zip(out.chunks_exact_mut(n)) {
        for (j, o) in out.iter_mut().enumerate() {
            *o = dot_widened(qh, &k[j * stride..j * stride + d]);
        }
    }
}

/// [`dots`] of f32 keys.
pub fn dots_f32(q: &[f32], heads: usize, k: &[f32], stride: usize, out: &mut [f32]) {
    dots(q, heads, k, stride, out)
}

/// [`dots`] of f16 keys.
pub fn dots_f16(q: &[f32], heads: usize, k: &[f16], stride: usize, out: &mut [f32]) {
    dots(q, heads, k, stride, out)
}

/// `out[h·d + c] += Σ_j a[h·n + j] · v[j·stride + c]` for every head h (the `heads` rows of `a`,
/// `n` weights each; of `out`, `d` floats each) (scalar reference; `v` f32 or f16).
///
/// # Panics
/// When the shapes disagree or the rows do not fit in `v`.
pub fn weighted_sum<E: KvElem>(a: &[f32], heads: usize, v: &[E], stride: usize, out: &mut [f32]) {
    check_heads(heads, out.len(), a.len(), stride, v.len());
    let (n, d) = (a.len() / heads, out.len() / heads);
    if n == 0 || d == 0 {
        return;
    }
    for (ah, out) in a.chunks_exact(n).zip(out.chunks_exact_mut(d)) {
        for (j, &aj) in ah.iter().enumerate() {
            for (o, &x) in out.iter_mut().zip(&v[j * stride..j * stride + d]) {
                *o += aj * x.f32();
            }
        }
    }
}

/// [`weighted_sum`] of f32 values.
pub fn weighted_sum_f32(a: &[f32], heads: usize, v: &[f32], stride: usize, out: &mut [f32]) {
    weighted_sum(a, heads, v, stride, out)
}

/// [`weighted_sum`] of f16 values.
pub fn weighted_sum_f16(a: &[f32], heads: usize, v: &[f16], stride: usize, out: &mut [f32]) {
    weighted_sum(a, heads, v, stride, out)
}

/// `gate[i] = gate[i] / (1 + exp(−gate[i])) · up[i]` with the C library's `expf` (scalar
/// reference of SwiGLU; ggml's `swiglu`).
///
/// # Panics
/// When the lengths differ.
pub fn swiglu_f32(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "swiglu: gate and up differ in length");
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

/// GELU (tanh approximation) of every fp16 value, rounded to fp16, kept as f32: llama.cpp's
/// CPU table (`GGML_GELU_FP16`), built the same way, indexed by the input's fp16 bits.
pub fn gelu_table() -> &'static [f32; 65536] {
    static TABLE: std::sync::OnceLock<Box<[f32; 65536]>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = Box::new([0f32; 65536]);
        for (b, v) in t.iter_mut().enumerate() {
            *v = f16::from_f32(gelu_exact(f16::from_bits(b as u16).to_f32())).to_f32();
        }
        t
    })
}

/// GELU, tanh approximation, in f32 (what the table rounds).
pub fn gelu_exact(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    const COEF_A: f32 = 0.044_715;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + COEF_A * x * x)).tanh())
}

/// GELU as ggml's CPU backend computes it: the input rounded to fp16 and the result looked up
/// in [`gelu_table`]; 0 at or below −10 and the input itself at or above 10.
#[inline]
pub fn gelu(x: f32) -> f32 {
    if x <= -10.0 {
        0.0
    } else if x >= 10.0 {
        x
    } else {
        gelu_table()[f16::from_f32(x).to_bits() as usize]
    }
}

/// `gate[i] = gelu(gate[i]) · up[i]` (scalar reference of GeGLU; ggml's `geglu`).
///
/// # Panics
/// When the lengths differ.
pub fn geglu_f32(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "geglu: gate and up differ in length");
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = gelu(*g) * u;
    }
}

/// Softmax of `x` in place (scalar reference): `exp(x[i] − max)` with the C library's `expf`,
/// summed in f64 in order, then scaled by the f32 inverse of the sum.
pub fn softmax_f32(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f64;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}
