//! Run-time kernel selection.
//!
//! The CPU is probed once ([`KernelTable::get`], a `OnceLock`) and the best path's function
//! pointers are stored in a [`KernelTable`]. `FERRO_KERNELS=scalar|avx2|avx512|neon` pins a
//! path; if the pinned path is unknown or this CPU cannot run it, a warning goes to stderr and
//! the best available path is used instead ([`kernel_path`] then shows what really runs).

use crate::quants::q8_k::KQuantKernels;
use crate::quants::{float, q4_0, q4_1, q5_0, q5_1, q8_0, q8_1};
use crate::quants::{BlockQ4K, BlockQ6K, BlockQ8K};
use crate::quants::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1};
use half::{bf16, f16};
use std::sync::OnceLock;

/// A family of kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelPath {
    /// Portable Rust, the reference.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// x86-64 AVX-512 F/BW/VL (VNNI `vpdpbusd` when present).
    Avx512,
    /// aarch64 NEON (`sdot` when dotprod is present).
    Neon,
}

impl KernelPath {
    /// Every path, best last.
    pub const ALL: [KernelPath; 4] = [Self::Scalar, Self::Avx2, Self::Avx512, Self::Neon];

    /// The name `FERRO_KERNELS` accepts.
    pub fn name(self) -> &'static str {
        match self {
            Self::Scalar => "scalar",
            Self::Avx2 => "avx2",
            Self::Avx512 => "avx512",
            Self::Neon => "neon",
        }
    }

    /// Parse a `FERRO_KERNELS` value.
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name().eq_ignore_ascii_case(s.trim()))
    }

    /// Whether this CPU can run the path.
    pub fn is_available(self) -> bool {
        KernelTable::for_path(self).is_some()
    }

    /// The paths this CPU can run, scalar first.
    pub fn available() -> Vec<KernelPath> {
        Self::ALL.into_iter().filter(|p| p.is_available()).collect()
    }
}

/// Dot of a weight row (blocks) with an activation row (blocks).
pub type DotFn<W, A> = fn(&[W], &[A]) -> f32;
/// Register-tiled product `out[t * ldo + r] = dot(w row r, a row t)` of every weight row of `w`
/// and activation row of `a` (rows of `nb` blocks each), bit-identical to the same table's dot.
/// The output is token-major, as the engine's activations are.
pub type GemmFn<W, A> = fn(w: &[W], a: &[A], nb: usize, out: &mut [f32], ldo: usize);
/// The same product for `rows` rows repacked into groups (`crate::packed`, whole groups in `w`),
/// with the bits of the table's product of the unpacked rows.
pub type PackedGemmFn<A> = fn(w: &[u8], rows: usize, nb: usize, a: &[A], out: &mut [f32], ldo: usize);

/// The tiled products a path has (None: the matrix products call the dot per pair).
#[derive(Clone, Copy)]
pub struct GemmKernels {
    pub q4_0: Option<GemmFn<BlockQ4_0, BlockQ8_0>>,
    pub q4_1: Option<GemmFn<BlockQ4_1, BlockQ8_1>>,
    pub q5_0: Option<GemmFn<BlockQ5_0, BlockQ8_0>>,
    pub q5_1: Option<GemmFn<BlockQ5_1, BlockQ8_1>>,
    pub q8_0: Option<GemmFn<BlockQ8_0, BlockQ8_0>>,
    pub q4_k: Option<GemmFn<BlockQ4K, BlockQ8K>>,
    pub q6_k: Option<GemmFn<BlockQ6K, BlockQ8K>>,
    /// Products of repacked Q4_0 / Q4_1 / Q5_0 / Q8_0 / Q4_K rows (`PackedMatrix`), where the
    /// path has them.
    pub packed_q4_0: Option<PackedGemmFn<BlockQ8_0>>,
    pub packed_q4_1: Option<PackedGemmFn<BlockQ8_1>>,
    pub packed_q5_0: Option<PackedGemmFn<BlockQ8_0>>,
    pub packed_q8_0: Option<PackedGemmFn<BlockQ8_0>>,
    pub packed_q4_k: Option<PackedGemmFn<BlockQ8K>>,
    /// Whether the matrix-vector product (decode) uses the tiles too, or the dots. Measured per
    /// path: on AVX2-only Zen the dots stream weights from memory faster than 4-row tiles; with
    /// AVX-512 the tiles beat the AVX-512 dots. Either way a result has the same bits in a
    /// batch and alone, as long as tiles and the table's dots agree bit for bit or both
    /// products use the tiles (which is what this flag chooses between).
    pub decode: bool,
}

impl GemmKernels {
    /// No tiled products.
    pub const NONE: GemmKernels = GemmKernels {
        q4_0: None,
        q4_1: None,
        q5_0: None,
        q5_1: None,
        q8_0: None,
        q4_k: None,
        q6_k: None,
        packed_q4_0: None,
        packed_q4_1: None,
        packed_q5_0: None,
        packed_q8_0: None,
        packed_q4_k: None,
        decode: false,
    };
}

/// `out[h·n + j] = q_h · k[j·stride..][..d]`: attention scores of `heads` queries (the rows of
/// `q`, `d` floats each) against `n = out.len() / heads` keys laid out `stride` floats apart.
pub type DotsFn = fn(q: &[f32], heads: usize, k: &[f32], stride: usize, out: &mut [f32]);
/// [`DotsFn`] of f16 keys (the KV cache's).
pub type DotsF16Fn = fn(q: &[f32], heads: usize, k: &[f16], stride: usize, out: &mut [f32]);
/// [`WeightedSumFn`] of f16 values (the KV cache's).
pub type WeightedSumF16Fn = fn(a: &[f32], heads: usize, v: &[f16], stride: usize, out: &mut [f32]);
/// `out[h·d + c] += Σ_j a[h·n + j] · v[j·stride + c]`: attention's weighted sums of value rows
/// for `heads` heads (the rows of `a`, `n` weights each; of `out`, `d` floats each).
pub type WeightedSumFn = fn(a: &[f32], heads: usize, v: &[f32], stride: usize, out: &mut [f32]);
/// Softmax of a row in place (attention weights): `x[i] = exp(x[i] − max) / Σ exp(x[j] − max)`.
pub type SoftmaxFn = fn(x: &mut [f32]);
/// A gated linear unit in place: `gate[i] = act(gate[i]) * up[i]` (SwiGLU, GeGLU).
pub type SwigluFn = fn(gate: &mut [f32], up: &[f32]);

/// Quantize an f32 activation row into blocks.
pub type QuantizeFn<A> = fn(&[f32], &mut [A]);

/// Function pointers of one path. Tables only exist for paths the CPU supports, so calling any
/// pointer is always safe.
#[derive(Clone, Copy)]
pub struct KernelTable {
    /// Which family the pointers belong to.
    pub path: KernelPath,
    /// Display name (`avx512-vnni`, `neon-dotprod`, ...).
    pub name: &'static str,
    /// f32 -> Q8_0 activations (bit-exact across paths).
    pub quantize_q8_0: QuantizeFn<BlockQ8_0>,
    /// f32 -> Q8_1 activations (bit-exact across paths).
    pub quantize_q8_1: QuantizeFn<BlockQ8_1>,
    /// Q4_0 · Q8_0.
    pub dot_q4_0: DotFn<BlockQ4_0, BlockQ8_0>,
    /// Q4_1 · Q8_1.
    pub dot_q4_1: DotFn<BlockQ4_1, BlockQ8_1>,
    /// Q5_0 · Q8_0.
    pub dot_q5_0: DotFn<BlockQ5_0, BlockQ8_0>,
    /// Q5_1 · Q8_1.
    pub dot_q5_1: DotFn<BlockQ5_1, BlockQ8_1>,
    /// Q8_0 · Q8_0.
    pub dot_q8_0: DotFn<BlockQ8_0, BlockQ8_0>,
    /// F32 · f32.
    pub dot_f32: DotFn<f32, f32>,
    /// F16 · f32.
    pub dot_f16: DotFn<f16, f32>,
    /// BF16 · f32.
    pub dot_bf16: DotFn<bf16, f32>,
    /// Many f32 dots of one vector (attention scores).
    pub dots_f32: DotsFn,
    /// Weighted sum of f32 rows (attention output).
    pub weighted_sum_f32: WeightedSumFn,
    /// The same two of f16 rows (keys and values of the KV cache).
    pub dots_f16: DotsF16Fn,
    pub weighted_sum_f16: WeightedSumF16Fn,
    /// Softmax of a row (attention weights).
    pub softmax_f32: SoftmaxFn,
    /// SiLU-gated linear unit in place (the feed-forward's activation).
    pub swiglu_f32: SwigluFn,
    /// GELU-gated linear unit in place (gemma's feed-forward), by ggml's fp16 table.
    pub geglu_f32: SwigluFn,
    /// The K-quant kernels (Q8_K quantizer, Q2_K..Q6_K · Q8_K) of the same path.
    pub kquants: KQuantKernels,
    /// Tiled matrix products of the 32-element formats, where the path has them.
    pub gemm: GemmKernels,
}

impl std::fmt::Debug for KernelTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelTable")
            .field("path", &self.path)
            .field("name", &self.name)
            .finish()
    }
}

static SCALAR: KernelTable = KernelTable {
    path: KernelPath::Scalar,
    name: "scalar",
    quantize_q8_0: q8_0::quantize_activations,
    quantize_q8_1: q8_1::quantize_activations,
    dot_q4_0: q4_0::vec_dot,
    dot_q4_1: q4_1::vec_dot,
    dot_q5_0: q5_0::vec_dot,
    dot_q5_1: q5_1::vec_dot,
    dot_q8_0: q8_0::vec_dot,
    dot_f32: float::vec_dot_f32,
    dot_f16: float::vec_dot_f16,
    dot_bf16: float::vec_dot_bf16,
    dots_f32: float::dots_f32,
    weighted_sum_f32: float::weighted_sum_f32,
    dots_f16: float::dots_f16,
    weighted_sum_f16: float::weighted_sum_f16,
    softmax_f32: float::softmax_f32,
    swiglu_f32: float::swiglu_f32,
    geglu_f32: float::geglu_f32,
    kquants: KQuantKernels::SCALAR,
    gemm: GemmKernels::NONE,
};

impl KernelTable {
    /// The table of `path`, or `None` when this CPU (or build target) cannot run it.
    pub fn for_path(path: KernelPath) -> Option<&'static KernelTable> {
        match path {
            KernelPath::Scalar => Some(&SCALAR),
            KernelPath::Avx2 => crate::simd::avx2_table(),
            KernelPath::Avx512 => crate::simd::avx512_table(),
            KernelPath::Neon => crate::simd::neon_table(),
        }
    }

    /// Every table this CPU can run, best last: each path's, and where a path picks among
    /// variants (AVX-512 with or without VNNI) the lesser ones too, so that tests hold every
    /// table to the others even where the engine would never pick it.
    pub fn variants() -> Vec<&'static KernelTable> {
        let mut v = vec![&SCALAR];
        v.extend(crate::simd::avx2_table());
        v.extend(crate::simd::avx512_tables());
        v.extend(crate::simd::neon_table());
        v
    }

    /// The best table this CPU can run.
    pub fn best() -> &'static KernelTable {
        [KernelPath::Avx512, KernelPath::Avx2, KernelPath::Neon]
            .into_iter()
            .find_map(Self::for_path)
            .unwrap_or(&SCALAR)
    }

    /// The table in use: chosen once, honouring `FERRO_KERNELS`.
    pub fn get() -> &'static KernelTable {
        static CHOSEN: OnceLock<&'static KernelTable> = OnceLock::new();
        CHOSEN.get_or_init(|| {
            let Ok(want) = std::env::var("FERRO_KERNELS") else {
                return Self::best();
            };
            if want.trim().is_empty() {
                return Self::best();
            }
            let best = Self::best();
            match KernelPath::from_name(&want) {
                None => {
                    eprintln!(
                        "warning: FERRO_KERNELS={want:?} is not one of scalar|avx2|avx512|neon; using {}",
                        best.name
                    );
                    best
                }
                Some(p) => Self::for_path(p).unwrap_or_else(|| {
                    eprintln!(
                        "warning: FERRO_KERNELS={} is not available on this CPU (it offers: {}); using {}",
                        p.name(),
                        cpu_features().join(" "),
                        best.name
                    );
                    best
                }),
            }
        })
    }
}

/// The CPU features relevant to the kernels that this machine offers.
pub fn cpu_features() -> Vec<&'static str> {
    crate::simd::cpu_features()
}

/// The name of the kernel path in use (`scalar`, `avx2`, `avx512`, `avx512-vnni`, `neon`,
/// `neon-dotprod`).
pub fn kernel_path() -> &'static str {
    KernelTable::get().name
}
