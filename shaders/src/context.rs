//! The wgpu device, buffers, the pipeline cache and command recording.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use ferro_gguf::GgmlType;
use wgpu::util::DeviceExt;

use crate::error::{GpuError, Result};
use crate::profile;

/// Workgroup size (threads) of every shader; passed to the pipelines as the override `WG`.
/// A power of two: the shared-memory reductions halve it.
pub const WG: u32 = 64;
/// Tokens per workgroup of the batched (prefill) matrix product; 1 is the decode path.
pub const MATMUL_TILE: u32 = 8;
/// Batches from this many tokens on take gemm.wgsl's 64 x 64 tiles (smaller ones matmul.wgsl's),
/// or gemmq.wgsl's int8 tiles past the batched int8 decode product's range
/// ([`MATVEC_MAX_TOKENS`]) where the activations come packed.
pub const GEMM_MIN_TOKENS: u32 = 16;
/// Rows (and tokens) of gemm128.wgsl's tiles.
pub const GEMM_BIG_TILE: u32 = 128;
/// Workgroup memory gemm128.wgsl needs; adapters with less keep the 64 x 64 tiles.
pub const GEMM_BIG_SHARED_BYTES: u32 = 32 * 1024;
/// Products with at least this many rows and columns take the big tiles (gemm.wgsl's 128 x 128,
/// gemmq.wgsl's `gemmq_big_tile`; the 8B shape's,
/// 4096 and up: faster with them; SmolLM2's, 576-3072 x 576-1536: 36% slower at pp512 on an
/// H100, too few workgroups for the card).
pub const GEMM_BIG_MIN_ROWS: u32 = 4096;
pub const GEMM_BIG_MIN_K: u32 = 2048;
/// Batches from this many tokens on take the 128 x 128 tiles, where the adapter has the
/// workgroup memory; `FERRO_GPU_GEMM_BIG_MIN` replaces it for measurement (0: never).
pub fn gemm_big_min_tokens() -> u32 {
    static MIN: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *MIN.get_or_init(|| env_u32("FERRO_GPU_GEMM_BIG_MIN").unwrap_or(384))
}
/// Whether prefill products whose activations come packed take gemmq.wgsl's int8 tiles (the
/// default); `FERRO_GPU_GEMMQ=0` keeps gemm.wgsl's f32 tiles for measurement.
pub fn gemmq_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| env_u32("FERRO_GPU_GEMMQ") != Some(0))
}
/// Whether gemmq.wgsl stages each part into a second shared buffer (one barrier a part instead
/// of two) for `ty` in tiles of `rows` x `toks`: the K-quants in 64 x 64 tiles (H100, 8B
/// Q4_K_M pp128 2072 vs ~1770 t/s, pp256 2661 vs 2278), nothing else (Q4_0 in 64 x 64 tiles
/// pp128 2617 vs 2909; both in 128 x 64 tiles at pp512 2-6% slower). `FERRO_GPU_GEMMQ_DB` = 1
/// or 0 turns it on or off everywhere, for measurement.
pub fn gemmq_double_buffer(ty: GgmlType, rows: u32, toks: u32) -> bool {
    static FORCE: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    match *FORCE.get_or_init(|| env_u32("FERRO_GPU_GEMMQ_DB")) {
        Some(v) => v == 1,
        None => ty.block_size() == 256 && rows == 64 && toks == 64,
    }
}
/// Rows x tokens of gemmq.wgsl's small tiles (products below [`GEMM_BIG_MIN_ROWS`] x
/// [`GEMM_BIG_MIN_K`], and batches below [`gemmq_big_min_tokens`]): 64 x 64, or for
/// measurement `FERRO_GPU_GEMMQ_SMALL=64x32` (128 threads a workgroup, twice the workgroups).
pub fn gemmq_small_tile() -> (u32, u32) {
    static TILE: std::sync::OnceLock<(u32, u32)> = std::sync::OnceLock::new();
    *TILE.get_or_init(|| match std::env::var("FERRO_GPU_GEMMQ_SMALL").as_deref() {
        Ok("64x32") => (64, 32),
        _ => (64, 64),
    })
}
/// Rows x tokens of gemmq.wgsl's big tiles: 128 x 64 (H100, 8B Q4_0 pp512 3667 t/s against
/// 3563 with 128 x 128, Q4_K_M 3048 against 3145; pp256 3505 and 2838 against 3365 and 2278
/// with the 64 x 64 tiles), or for measurement `FERRO_GPU_GEMMQ_BIG` = `128x128` or `64x128`.
pub fn gemmq_big_tile() -> (u32, u32) {
    static TILE: std::sync::OnceLock<(u32, u32)> = std::sync::OnceLock::new();
    *TILE.get_or_init(|| match std::env::var("FERRO_GPU_GEMMQ_BIG").as_deref() {
        Ok("128x128") => (GEMM_BIG_TILE, GEMM_BIG_TILE),
        Ok("64x128") => (64, 128),
        _ => (GEMM_BIG_TILE, 64),
    })
}
/// Batches from this many tokens on take gemmq.wgsl's big tiles (`gemmq_big_tile`) where
/// gemm.wgsl's f32 tiles take theirs from [`gemm_big_min_tokens`]; `FERRO_GPU_GEMM_BIG_MIN`
/// replaces both for measurement.
pub fn gemmq_big_min_tokens() -> u32 {
    static MIN: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *MIN.get_or_init(|| env_u32("FERRO_GPU_GEMM_BIG_MIN").unwrap_or(256))
}
/// Batches from this many tokens on take gemm.wgsl's 64 x 64 tiles where the weight has no
/// batched int8 product; `FERRO_GPU_GEMM_MIN` replaces [`GEMM_MIN_TOKENS`] for measurement.
pub fn gemm_min_tokens() -> u32 {
    static MIN: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *MIN.get_or_init(|| {
        env_u32("FERRO_GPU_GEMM_MIN")
            .filter(|&m| m >= 2)
            .unwrap_or(GEMM_MIN_TOKENS)
    })
}
/// Tokens per workgroup of the batched int8 decode products (matvec.wgsl for several tokens),
/// ascending: each weight part is loaded once for all of them. A batch takes the first variant
/// holding it, else the last. H100, 8B Q4_0 (weights decoded once per part, the split form),
/// aggregate tg64 t/s: 2 tokens per workgroup x2 471, x16 1024; 4: x2 363, x16 1090, x64 1272;
/// 8: x16 957. The padded tokens of a partial group cost as much as real ones, and more
/// accumulators keep fewer threads resident.
pub const MATVEC_TOKS: [u32; 2] = [2, 4];
/// [`MATVEC_TOKS`], or for measurement `FERRO_GPU_MATVEC_TOKS` (a comma-separated ascending
/// list of 2 to 16; 0 turns the batched int8 products off, leaving matmul.wgsl's tiles).
pub fn matvec_toks() -> &'static [u32] {
    static TOKS: std::sync::OnceLock<Vec<u32>> = std::sync::OnceLock::new();
    TOKS.get_or_init(|| match std::env::var("FERRO_GPU_MATVEC_TOKS") {
        Ok(v) => {
            let mut t: Vec<u32> = v
                .split(',')
                .filter_map(|x| x.trim().parse().ok())
                .filter(|t| (2..=16).contains(t))
                .collect();
            t.sort_unstable();
            t.dedup();
            t
        }
        Err(_) => MATVEC_TOKS.to_vec(),
    })
}
/// Batches of 2 tokens up to this many (several sequences decoding together, short prompts)
/// take the batched int8 decode products; larger ones the gemm tiles (H100, 8B Q4_0 prefill:
/// 24 and 32 tokens 1279 and 1318 t/s with the int8 decode product, 786 and 1031 with
/// gemmq.wgsl's 64 x 64 tiles; 48 and 64 tokens 1355 and 1372 against 1511 and 1954).
pub const MATVEC_MAX_TOKENS: u32 = 32;
/// Largest batch of the batched int8 decode product: [`MATVEC_MAX_TOKENS`], or for measurement
/// `FERRO_GPU_MATVEC_MAX`.
pub fn matvec_max_tokens() -> u32 {
    static MAX: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *MAX.get_or_init(|| env_u32("FERRO_GPU_MATVEC_MAX").unwrap_or(MATVEC_MAX_TOKENS))
}
/// A measurement knob: the environment variable `name` as a number, if it parses.
fn env_u32(name: &str) -> Option<u32> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}
/// Threads sharing one row in matmul.wgsl (a power of two dividing [`WG`]): a workgroup
/// computes `WG / MATMUL_LANES` rows.
pub const MATMUL_LANES: u32 = 16;
/// Threads sharing one row in the decode product (tile 1): the whole workgroup, so a
/// matrix-vector product keeps a large GPU busy (rows x 64 threads) with short loops per thread.
pub const DECODE_LANES: u32 = 64;

/// Threads per row of the matrix product with `tile` tokens per workgroup. For measurement,
/// `FERRO_GPU_DECODE_LANES` (a power of two from 4 to [`WG`]) replaces [`DECODE_LANES`].
pub fn matmul_lanes(tile: u32) -> u32 {
    if tile == 1 {
        static LANES: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
        *LANES.get_or_init(|| {
            env_u32("FERRO_GPU_DECODE_LANES")
                .filter(|l| l.is_power_of_two() && (4..=WG).contains(l))
                .unwrap_or(DECODE_LANES)
        })
    } else {
        MATMUL_LANES
    }
}
/// Commands per submission of a recorded batch ([`Recorder::submit`]).
const SUBMIT_PIECE: usize = 96;
/// Bytes uploaded per `write_buffer` call, so big tensors do not need one huge staging copy.
const UPLOAD_PIECE: usize = 64 << 20;

/// One adapter wgpu can see, for `ferro info`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdapterSummary {
    pub name: String,
    /// "Vulkan", "Metal", "Dx12", "Gl".
    pub backend: String,
    /// "DiscreteGpu", "IntegratedGpu", "Cpu" (e.g. lavapipe), ...
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
}

impl fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}, {}", self.name, self.backend, self.device_type)?;
        if !self.driver.is_empty() {
            write!(f, ", {} {}", self.driver, self.driver_info)?;
        }
        write!(f, ")")
    }
}

impl AdapterSummary {
    fn from_info(info: &wgpu::AdapterInfo) -> Self {
        Self {
            name: info.name.clone(),
            backend: format!("{:?}", info.backend),
            device_type: format!("{:?}", info.device_type),
            driver: info.driver.clone(),
            driver_info: info.driver_info.clone(),
        }
    }
}

fn instance() -> wgpu::Instance {
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env())
}

/// Every adapter wgpu sees on this machine (empty when there is none).
pub fn list_adapters() -> Vec<AdapterSummary> {
    let adapters = pollster::block_on(instance().enumerate_adapters(wgpu::Backends::all()));
    adapters
        .iter()
        .map(|a| AdapterSummary::from_info(&a.get_info()))
        .collect()
}

/// 4-byte values (f32 activations or u32 token ids) in a storage buffer: the whole buffer, or
/// a view of part of it ([`GpuTensor::view`]) that dispatches bind on its own.
#[derive(Clone, Debug)]
pub struct GpuTensor {
    buf: wgpu::Buffer,
    /// Byte offset of element 0 in `buf`.
    offset: u64,
    len: usize,
}

/// What a dispatch binds: a whole buffer, or a tensor (its view of its buffer).
pub(crate) trait AsBinding {
    fn binding(&self) -> wgpu::BindingResource<'_>;
}

impl AsBinding for wgpu::Buffer {
    fn binding(&self) -> wgpu::BindingResource<'_> {
        self.as_entire_binding()
    }
}

impl AsBinding for GpuTensor {
    fn binding(&self) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.buf,
            offset: self.offset,
            size: std::num::NonZeroU64::new(self.len as u64 * 4),
        })
    }
}

impl GpuTensor {
    /// Elements `start..start + len` as a tensor of their own, sharing the buffer; `None`
    /// where the range does not fit or its start is not on a binding-offset boundary of
    /// `align` bytes (the adapter's `min_storage_buffer_offset_alignment`).
    pub(crate) fn view(&self, start: usize, len: usize, align: u64) -> Option<GpuTensor> {
        let offset = self.offset + start as u64 * 4;
        (start + len <= self.len && len > 0 && offset.is_multiple_of(align.max(4))).then(|| GpuTensor {
            buf: self.buf.clone(),
            offset,
            len,
        })
    }

    /// Where `next` starts in this tensor's buffer, in elements after this tensor's start, if
    /// it is a view of the same buffer at or after it.
    pub(crate) fn elems_to(&self, next: &GpuTensor) -> Option<u32> {
        (self.buf == next.buf && next.offset >= self.offset).then(|| ((next.offset - self.offset) / 4) as u32)
    }

    /// This tensor extended to the end of `last` (a later view of the same buffer).
    pub(crate) fn through(&self, last: &GpuTensor) -> Option<GpuTensor> {
        let start = self.elems_to(last)? as usize;
        Some(GpuTensor {
            buf: self.buf.clone(),
            offset: self.offset,
            len: start + last.len,
        })
    }

    /// The buffer and byte offset of element 0 (copies).
    pub(crate) fn buffer(&self) -> (&wgpu::Buffer, u64) {
        (&self.buf, self.offset)
    }

    /// Number of 4-byte elements.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Rows `row0..row0 + n_rows` of a weight, in one buffer that fits one storage binding.
#[derive(Clone, Debug)]
pub(crate) struct WeightChunk {
    pub(crate) buf: wgpu::Buffer,
    pub(crate) row0: u32,
    pub(crate) n_rows: u32,
}

/// A weight matrix uploaded once in its GGUF block format (never dequantized on the host).
#[derive(Clone, Debug)]
pub struct GpuWeight {
    pub(crate) ty: GgmlType,
    /// Row length (GGUF dims[0]).
    pub(crate) k: u32,
    pub(crate) n_rows: u32,
    pub(crate) row_bytes: u32,
    pub(crate) chunks: Vec<WeightChunk>,
}

impl GpuWeight {
    pub fn ty(&self) -> GgmlType {
        self.ty
    }
    /// Row length (elements).
    pub fn k(&self) -> usize {
        self.k as usize
    }
    pub fn n_rows(&self) -> usize {
        self.n_rows as usize
    }
}

/// Block formats that have a `quant_*.wgsl`.
pub fn supports_type(ty: GgmlType) -> bool {
    quant_source(ty).is_some()
}

fn quant_source(ty: GgmlType) -> Option<&'static str> {
    Some(match ty {
        GgmlType::F32 => include_str!("quant_f32.wgsl"),
        GgmlType::F16 => include_str!("quant_f16.wgsl"),
        GgmlType::Q4_0 => include_str!("quant_q4_0.wgsl"),
        GgmlType::Q4_1 => include_str!("quant_q4_1.wgsl"),
        GgmlType::Q5_0 => include_str!("quant_q5_0.wgsl"),
        GgmlType::Q8_0 => include_str!("quant_q8_0.wgsl"),
        GgmlType::Q4_K => include_str!("quant_q4_k.wgsl"),
        GgmlType::Q5_K => include_str!("quant_q5_k.wgsl"),
        GgmlType::Q6_K => include_str!("quant_q6_k.wgsl"),
        _ => return None,
    })
}

/// Block formats with an int8 decode product (`mv_*.wgsl`); the others use matmul.wgsl for
/// one token too.
fn matvec_source(ty: GgmlType) -> Option<&'static str> {
    Some(match ty {
        GgmlType::Q4_0 => include_str!("mv_q4_0.wgsl"),
        GgmlType::Q4_1 => include_str!("mv_q4_1.wgsl"),
        GgmlType::Q5_0 => include_str!("mv_q5_0.wgsl"),
        GgmlType::Q8_0 => include_str!("mv_q8_0.wgsl"),
        GgmlType::Q4_K => include_str!("mv_q4_k.wgsl"),
        GgmlType::Q5_K => include_str!("mv_q5_k.wgsl"),
        GgmlType::Q6_K => include_str!("mv_q6_k.wgsl"),
        _ => return None,
    })
}

pub(crate) fn has_matvec(ty: GgmlType) -> bool {
    matvec_source(ty).is_some()
}

/// How the int8 decode product sums a row: `lanes` threads per row, `wg` threads per workgroup,
/// by subgroup shuffles (`lanes` ≤ the adapter's smallest subgroup) or shared memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct MatVecMode {
    pub(crate) subgroups: bool,
    pub(crate) lanes: u32,
    pub(crate) wg: u32,
    /// Rows per group of `lanes` threads (sharing the activation loads).
    pub(crate) rows: u32,
    /// Threads per workgroup of the norms, and of the products that norm and round their own
    /// input (the same, so they sum in the same order): as many as the adapter allows, up to
    /// 1024.
    pub(crate) norm_wg: u32,
}

/// Threads per row of the int8 decode product (fewer where the adapter's subgroups are smaller).
pub const MATVEC_LANES: u32 = 32;
/// Threads per workgroup of the int8 decode product.
pub const MATVEC_WG: u32 = 256;
/// Rows per group of [`MATVEC_LANES`] threads in the int8 decode product.
pub const MATVEC_ROWS: u32 = 1;

/// The 32 k-steps of a gemm tile's products, written out (the KK_STEPS marker of gemm.wgsl
/// and gemm128.wgsl): per step the row and token vectors from workgroup memory, then one FMA
/// per accumulator and lane (each accumulator adds its products in k order). 64 x 64 tiles
/// have 4 accumulators `accT` (token T) over one row vector; 128 x 128 tiles 16, `aB_T`.
fn gemm_steps(tile: u32) -> String {
    let big = tile == GEMM_BIG_TILE;
    let (ws, xs, stride) = if big { ("ws2", "xs2", 32) } else { ("ws", "xs", 16) };
    let halves = if big { 2 } else { 1 };
    let mut s = String::new();
    for kk in 0..32 {
        s += "        {\n";
        for h in 0..halves {
            let at = kk * stride + 16 * h;
            s += &format!("            let w{h} = {ws}[{at}u + cr];\n            let x{h} = {xs}[{at}u + ct];\n");
        }
        for b in 0..halves {
            for t in 0..4 * halves {
                let c = ["x", "y", "z", "w"][t % 4];
                let acc = if big { format!("a{b}_{t}") } else { format!("acc{t}") };
                s += &format!("            {acc} += w{b} * x{}.{c};\n", t / 4);
            }
        }
        s += "        }\n";
    }
    s
}

/// Tokens per thread of gemmq.wgsl's tiles of `toks` tokens: 4 (at most 64 tokens) or 8.
fn gemmq_thread_toks(toks: u32) -> u32 {
    (toks / 16).max(4)
}

/// Whether gemmq.wgsl folds a part's integer sums per half (a scale per 16 weights: Q6_K) and
/// adds a min term (Q4_1, Q4_K, Q5_K).
fn gemmq_terms(ty: GgmlType) -> (bool, bool) {
    (
        ty == GgmlType::Q6_K,
        matches!(ty, GgmlType::Q4_1 | GgmlType::Q4_K | GgmlType::Q5_K),
    )
}

/// gemmq.wgsl with its `//GQ_*` lines written out for `rt` rows x `ct` tokens per thread
/// (multiples of 4): accumulators `aB_T` (rows 4·cr + 64·B.., token T of the thread), per word
/// of a part one dot4I8Packed per row and token into integer sums `iB_T`, folded into the
/// accumulators once per part (per half with `halves`), then the min term with `mins`.
fn gemmq_main(rt: u32, ct: u32, tt: u32, halves: bool, mins: bool) -> String {
    let (nb, nt) = (rt / 4, ct);
    // Threads along the tokens (`ct` of gemmq.wgsl: 0..nct); token vector c of a thread is
    // vector ct + nct·c of a part's word.
    let nct = tt / ct;
    let pairs = || (0..nb).flat_map(move |b| (0..nt).map(move |t| (b, t)));
    let lane = |t: u32| ["x", "y", "z", "w"][t as usize % 4];
    let decl: String = pairs()
        .map(|(b, t)| format!("    var a{b}_{t} = vec4<f32>(0.0);\n"))
        .collect();
    // Buffer bo's words (gemmq.wgsl's `bo`: 0 without GQ_DB).
    let mut step = format!(
        "        let wo = bo * {}u;\n        let xo = bo * {}u;\n",
        32 * rt,
        2 * tt
    );
    // Loads of the thread's row vectors (`row(b)`) and token vectors (`tok(c)`), then
    // `pair(b, t)` for every row vector and token of the thread.
    let block = |row: &dyn Fn(u32) -> String, tok: &dyn Fn(u32) -> String, pair: &dyn Fn(u32, u32) -> String| {
        let rows = (0..nb).map(row);
        let toks = (0..ct / 4).map(tok);
        let pairs = pairs().map(|(b, t)| pair(b, t));
        rows.chain(toks)
            .chain(pairs)
            .map(|line| format!("            {line};\n"))
            .collect::<String>()
    };
    let groups: &[(u32, u32)] = if halves { &[(0, 4), (4, 8)] } else { &[(0, 8)] };
    for (g, &(w0, w1)) in groups.iter().enumerate() {
        step += "        {\n";
        step += &pairs()
            .map(|(b, t)| format!("            var i{b}_{t} = vec4<i32>(0);\n"))
            .collect::<String>();
        for kw in w0..w1 {
            step += &block(
                &|b| format!("let w{kw}_{b} = wsq[wo + {}u + cr]", kw * 4 * rt + 16 * b),
                &|c| format!("let x{kw}_{c} = xsq[xo + {}u + ct]", kw * tt / 4 + nct * c),
                &|b, t| {
                    let x = format!("x{kw}_{}.{}", t / 4, lane(t));
                    format!(
                        "i{b}_{t} += vec4<i32>(dot4I8Packed(w{kw}_{b}.x, {x}), dot4I8Packed(w{kw}_{b}.y, {x}), \
                         dot4I8Packed(w{kw}_{b}.z, {x}), dot4I8Packed(w{kw}_{b}.w, {x}))"
                    )
                },
            );
        }
        step += &block(
            &|b| {
                format!(
                    "let s{b} = wsc[bo * {}u + {}u + cr]",
                    8 * rt,
                    g as u32 * 4 * rt + 16 * b
                )
            },
            &|c| format!("let d{c} = xdv[bo * {}u + {}u + ct]", tt / 4, nct * c),
            &|b, t| {
                format!(
                    "a{b}_{t} = fma(vec4<f32>(i{b}_{t}) * s{b}, vec4<f32>(d{}.{}), a{b}_{t})",
                    t / 4,
                    lane(t)
                )
            },
        );
        step += "        }\n";
    }
    if mins {
        step += "        {\n";
        step += &block(
            &|b| format!("let m{b} = wmn[bo * {}u + {}u + cr]", 4 * rt, 16 * b),
            &|c| format!("let xs{c} = xsv[bo * {}u + {}u + ct]", tt / 4, nct * c),
            &|b, t| format!("a{b}_{t} = fma(m{b}, vec4<f32>(xs{}.{}), a{b}_{t})", t / 4, lane(t)),
        );
        step += "        }\n";
    }
    let store: String = pairs()
        .map(|(b, t)| {
            format!(
                "    store(t0 + 4u * ct + {}u, r0 + 4u * cr + {}u, a{b}_{t});\n",
                4 * nct * (t / 4) + t % 4,
                64 * b
            )
        })
        .collect();
    include_str!("gemmq.wgsl")
        .replace("//GQ_DECL", &decl)
        .replace("//GQ_STEP", &step)
        .replace("//GQ_STORE", &store)
}

/// matvec.wgsl with its `//ROWS_*` and `//TOKS_DECL` lines written out for `rows` rows per
/// thread group and `toks` tokens per workgroup (named variables per row and token: an array
/// indexed in a loop would be kept in memory on some GPUs). With `straight` = Some((parts per
/// row, lanes)), the parts loop is written out: lane `l` takes parts l, l + lanes, .. into the
/// four sums in turn (as the loop does), the last guarded where the lanes do not divide the
/// parts.
fn matvec_main(rows: u32, straight: Option<(u32, u32)>, toks: u32, split: bool) -> String {
    // Every (row, token) pair, rows outer.
    let each = |f: &dyn Fn(u32, u32) -> String| {
        (0..rows)
            .flat_map(|r| (0..toks).map(move |t| (r, t)))
            .map(|(r, t)| f(r, t))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let acc = |r: u32, t: u32, j: u32| format!("acc{r}_{t}_{j}");
    // Part `i` (an expression) added into sums `j` of every row and token; `w` names the
    // decoded parts of the split form.
    let parts = |indent: &str, i: &str, j: u32, w: &str| -> String {
        let mut out = String::new();
        if split {
            for r in 0..rows {
                out += &format!("{indent}let {w}{r} = part_w(rb{r}, {i});\n");
            }
        }
        out + &each(&|r, t| {
            let call = if split {
                format!("part_x({w}{r}, {i}, a0_{t}, d0_{t}, s0_{t})")
            } else {
                format!("part(rb{r}, {i}, a0_{t}, d0_{t}, s0_{t})")
            };
            format!("{indent}{} += {call};", acc(r, t, j))
        })
    };
    let text = include_str!("matvec.wgsl");
    let text = match straight {
        Some((np, lanes)) => {
            // The markers at line starts (the header comment names them too).
            let begin = text.find("\n//PARTS_BEGIN").map_or(0, |i| i + 1);
            let end = text.find("\n//PARTS_END").map_or(0, |i| i + 1);
            let mut body = String::new();
            for j in 0..np.div_ceil(lanes) {
                let i = format!("lane + {j}u * LANES");
                let w = format!("w{j}_");
                if (j + 1) * lanes > np {
                    body += &format!("    if ({i} < np) {{\n{}\n    }}\n", parts("        ", &i, j % 4, &w));
                } else {
                    body += &format!("{}\n", parts("    ", &i, j % 4, &w));
                }
            }
            format!("{}{}{}", &text[..begin], body, &text[end + "//PARTS_END".len()..])
        }
        None => text.to_string(),
    };
    let toks_decl = (0..toks)
        .map(|t| {
            format!(
                "    let t{t} = min(wid.z * {toks}u + {t}u, batch.n_tok - 1u);\n    \
                 let a0_{t} = t{t} * (p.k / 4u);\n    \
                 let d0_{t} = p.d_off + t{t} * (p.k / 32u);\n    \
                 let s0_{t} = t{t} * (p.k / 16u);"
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    let rows_decl = (0..rows)
        .map(|r| format!("    let rb{r} = select(0u, (row + {r}u) * p.row_bytes, row + {r}u < p.n_rows);"))
        .collect::<Vec<_>>()
        .join("\n");
    let trip = (0..4)
        .map(|j| parts("        ", &format!("i + {j}u * LANES"), j, &format!("w{j}_")))
        .collect::<Vec<_>>()
        .join("\n");
    text.replace("//TOKS_DECL", &toks_decl)
        .replace(
            "//ROWS_DECL",
            &format!(
                "{rows_decl}\n{}",
                each(&|r, t| (0..4)
                    .map(|j| format!("    var {} = 0.0;", acc(r, t, j)))
                    .collect::<Vec<_>>()
                    .join("\n"))
            ),
        )
        .replace("//ROWS_TRIP", &trip)
        .replace("//ROWS_TAIL", &parts("        ", "i", 0, "wt_"))
        .replace(
            "//ROWS_STORE",
            &each(&|r, t| {
                // The sum is taken by every thread (subgroup shuffles), the store guarded.
                format!(
                    "    store(wid.z * {toks}u + {t}u, row + {r}u, row_sum(({} + {}) + ({} + {}), li), lane);",
                    acc(r, t, 0),
                    acc(r, t, 1),
                    acc(r, t, 2),
                    acc(r, t, 3)
                )
            }),
        )
}

impl MatVecMode {
    /// Rows per workgroup of the plain (not fused) product.
    pub(crate) fn rows_per_wg(self) -> u32 {
        self.wg / self.lanes * self.rows
    }

    /// Subgroup shuffles when the adapter has subgroups of at least 4 threads and
    /// `FERRO_GPU_SUBGROUPS` is not `0`; for measurement `FERRO_GPU_MATVEC_WG` (64..=1024, a
    /// power of two) replaces [`MATVEC_WG`], `FERRO_GPU_MATVEC_ROWS` (1, 2 or 4)
    /// [`MATVEC_ROWS`] and `FERRO_GPU_MATVEC_LANES` (a power of two from 4 to the subgroup
    /// size; with subgroups) [`MATVEC_LANES`].
    fn choose(features: wgpu::Features, info: &wgpu::AdapterInfo, limits: &wgpu::Limits) -> Self {
        let max = limits
            .max_compute_invocations_per_workgroup
            .min(limits.max_compute_workgroup_size_x)
            .min(1024);
        // A power of two (the reductions halve it), at least WG.
        let norm_wg = (1u32 << max.max(WG).ilog2()).max(WG);
        let wg = env_u32("FERRO_GPU_MATVEC_WG")
            .filter(|w| w.is_power_of_two() && (64..=1024).contains(w))
            .unwrap_or(MATVEC_WG);
        let rows = env_u32("FERRO_GPU_MATVEC_ROWS")
            .filter(|r| [1, 2, 4].contains(r))
            .unwrap_or(MATVEC_ROWS);
        let allowed = std::env::var("FERRO_GPU_SUBGROUPS").map_or(true, |v| v.trim() != "0");
        let sg = info.subgroup_min_size;
        if allowed && features.contains(wgpu::Features::SUBGROUP) && sg >= 4 && sg.is_power_of_two() {
            let lanes = sg.min(
                env_u32("FERRO_GPU_MATVEC_LANES")
                    .filter(|l| l.is_power_of_two() && (4..=sg).contains(l))
                    .unwrap_or(MATVEC_LANES),
            );
            Self {
                subgroups: true,
                lanes,
                wg,
                rows,
                norm_wg,
            }
        } else {
            Self {
                subgroups: false,
                lanes: MATVEC_LANES,
                wg,
                rows,
                norm_wg,
            }
        }
    }
}

/// Which entry point of rms_norm.wgsl.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NormMode {
    /// `y = norm(x) * w`
    Out,
    /// `x = norm(x) * w`
    InPlace,
    /// `y += norm(x) * w`
    Add,
    /// `y = r + norm(x) * w` (`Add`'s bits, from a residual `r` in another buffer)
    AddTo,
}

/// Gated activation of glu.wgsl.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Glu {
    /// silu(gate) * up (llama, qwen, phi3)
    SwiGlu,
    /// gelu_tanh(gate) * up (gemma)
    GeGlu,
}

/// A shader entry point with its compile-time specialisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Op {
    Matmul {
        ty: GgmlType,
        tile: u32,
    },
    /// The prefill product in shared-memory tiles of `tile` rows x `tile` tokens: 64
    /// (gemm.wgsl) or 128 (its `main128`, gemm128.wgsl).
    Gemm {
        ty: GgmlType,
        tile: u32,
    },
    /// The prefill product with int8 activations in tiles of `rows` rows x `toks` tokens
    /// (gemmq.wgsl): 64 or 128 each.
    GemmQ {
        ty: GgmlType,
        rows: u32,
        toks: u32,
        /// Two shared buffers, one barrier a part ([`gemmq_double_buffer`]).
        db: bool,
    },
    /// The decode product with int8 activations (matvec.wgsl), in the context's [`MatVecMode`].
    MatVec {
        ty: GgmlType,
        mode: MatVecMode,
        /// Row length: its parts loop is written out when short enough.
        k: u32,
        /// Tokens per workgroup (1: decode; more: batched decode, one weight load for all).
        toks: u32,
        /// Rounds its own input (one token) first (act_fused.wgsl), in workgroups of the
        /// context's norm size; None: reads the packed activations.
        pro: Option<Prologue>,
    },
    GetRows {
        ty: GgmlType,
    },
    RmsNorm(NormMode),
    Rope,
    Softmax,
    Glu(Glu),
    Add,
    /// `ks` threads score each key together (attention.wgsl's KS).
    Attention {
        ks: u32,
    },
    /// Attention of a decode step with rope_kv's work done first by each workgroup
    /// (attention_rope.wgsl).
    AttentionRope {
        ks: u32,
    },
    /// Activation rounding (quantize_act.wgsl), with the gated activation applied first when
    /// `glu` is set.
    QuantizeAct {
        glu: Option<Glu>,
    },
    NormQuant,
    RopeKv,
}

/// What a decode product that rounds its own input (act_fused.wgsl) does first to the f32
/// input `x` (binding 2) with `aux` (binding 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Prologue {
    /// rms_norm(x) * aux, as norm_quant.wgsl.
    Norm,
    /// rms_norm(h) * aux of h = x + rms_norm(d) * pw (bindings 6 and 7: a post-norm's output
    /// and weights, added as rms_norm.wgsl's `main_add` adds them), h also written to binding 8
    /// by each dispatch's first workgroup: a block's post-norm folded into the next products.
    AddNorm,
    /// x as it is, as quantize_act.wgsl.
    Round,
    /// act(x) * aux, as quantize_act.wgsl's gated variant.
    Gated(Glu),
}

/// The products' parameters with out_index.wgsl, which reads them.
const PRODUCT_PARAMS: &str = concat!(
    include_str!("product_params.wgsl"),
    "\n",
    include_str!("out_index.wgsl")
);

/// quant_round.wgsl and quant_core.wgsl, which calls it.
const QUANT_CORE: &str = concat!(include_str!("quant_round.wgsl"), "\n", include_str!("quant_core.wgsl"));

/// act_fused.wgsl's `prologue(li)` for rows of `k` values in workgroups of `wg` threads, written
/// out per trip of 4·wg values so that every load is in flight at once (a loop would wait for
/// each trip's): the input (and with a norm the norm weights), with a norm the scale
/// (rms_common.wgsl's `row_scale`, as norm_quant.wgsl), then each trip's rounding.
/// [`Prologue::AddNorm`] first forms its input h = x + rms_norm(dlt) * pw in workgroup memory
/// (`hs`, one value a thread a trip as rms_norm.wgsl's `main_add`, which `row_scale_d` sums as
/// it does) and, in the dispatch's first workgroup (`first`), in `rout`.
fn fused_prologue(k: u32, wg: u32, pro: Prologue) -> String {
    let norm = matches!(pro, Prologue::Norm | Prologue::AddNorm);
    let mut s = String::new();
    if pro == Prologue::AddNorm {
        s += "fn prologue(li: u32, first: bool) {\n    let sd = row_scale_d(0u, p.k, li);\n";
        for t in 0..k.div_ceil(wg) {
            s += &format!(
                "    let i{t} = {}u + li;\n    if (i{t} < p.k) {{\n        \
                 let h = x[i{t}] + dlt[i{t}] * sd * pw[i{t}];\n        hs[i{t}] = h;\n        \
                 if (first) {{\n            rout[i{t}] = h;\n        }}\n    }}\n",
                wg * t
            );
        }
        s += "    workgroupBarrier();\n";
    } else {
        s += "fn prologue(li: u32) {\n";
    }
    let trips = k.div_ceil(4 * wg);
    for t in 0..trips {
        s += &format!(
            "    let g{t} = {}u + 4u * li;\n    let l{t} = g{t} < p.k;\n    \
             var a{t} = vec4<f32>(0.0);\n{}    if (l{t}) {{\n        a{t} = load4(g{t});\n{}    }}\n",
            4 * wg * t,
            if norm {
                format!("    var w{t} = vec4<f32>(0.0);\n")
            } else {
                String::new()
            },
            if norm {
                format!("        w{t} = aux4(g{t});\n")
            } else {
                String::new()
            }
        );
    }
    if norm {
        s += "    let sc = row_scale(0u, p.k, li);\n";
    }
    for t in 0..trips {
        let v = if norm {
            format!("a{t} * sc * w{t}")
        } else {
            format!("a{t}")
        };
        s += &format!(
            "    let r{t} = round4(li, {v}, l{t});\n    if (l{t}) {{\n        put_quants(g{t}, r{t});\n    }}\n"
        );
    }
    s + "    workgroupBarrier();\n}\n"
}

/// [`Prologue::AddNorm`]'s declarations beside act_fused.wgsl's (`hs` holds the row of `k`
/// values) and its two row scales: rms_common.wgsl's `row_scale` over the post-norm's input
/// (`row_scale_d`) and over `hs` (`row_scale`, the next norm's), the same sums in the same
/// order as rms_norm.wgsl's and norm_quant.wgsl's over their global inputs.
fn add_norm_source(k: u32) -> String {
    let rms = include_str!("rms_common.wgsl");
    let over = |array: &str| rms.replace("x[base + ", &format!("{array}[base + "));
    format!(
        "@group(0) @binding(6) var<storage, read> dlt: array<f32>;\n\
         @group(0) @binding(7) var<storage, read> pw: array<f32>;\n\
         @group(0) @binding(8) var<storage, read_write> rout: array<f32>;\n\
         var<workgroup> hs: array<f32, {k}>;\n{}\n{}\n{}",
        input_loads("hs"),
        over("dlt").replace("fn row_scale(", "fn row_scale_d("),
        over("hs")
    )
}

/// act_fused.wgsl's `load4(g)` from `array` (the input: x, or AddNorm's `hs`) and `aux4(g)`
/// (the norm weights).
fn input_loads(array: &str) -> String {
    let four = |a: &str| format!("vec4<f32>({a}[g], {a}[g + 1u], {a}[g + 2u], {a}[g + 3u])");
    format!(
        "fn load4(g: u32) -> vec4<f32> {{\n    return {};\n}}\nfn aux4(g: u32) -> vec4<f32> {{\n    return {};\n}}",
        four(array),
        four("aux")
    )
}

/// glu_common.wgsl with `act` and `load4(g)`: act(x[g..g + 3]) * up[g..g + 3] (the gated input
/// of quantize_act.wgsl and act_fused.wgsl).
fn gated_load(kind: Glu, up: &str) -> String {
    format!(
        "{}\nfn act(v: f32) -> f32 {{\n    return {};\n}}\n\
         fn load4(g: u32) -> vec4<f32> {{\n    \
         return vec4<f32>(act(x[g]), act(x[g + 1u]), act(x[g + 2u]), act(x[g + 3u])) \
         * vec4<f32>({up}[g], {up}[g + 1u], {up}[g + 2u], {up}[g + 3u]);\n}}",
        include_str!("glu_common.wgsl"),
        match kind {
            Glu::SwiGlu => "silu(v)",
            Glu::GeGlu => "gelu(v, p.glu_f16 != 0u)",
        }
    )
}

/// Words of act_fused.wgsl's workgroup array for a row of `k` values (quants, scales per 32,
/// sums per 16), in 16-byte vectors.
pub(crate) fn fused_act_vec4s(k: u32) -> u32 {
    (k / 4 + k / 32 + k / 16).div_ceil(4)
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Slot {
    Uniform,
    Read,
    ReadWrite,
}

impl Op {
    fn slots(self) -> &'static [Slot] {
        use Slot::*;
        match self {
            Op::Matmul { .. } | Op::Gemm { .. } | Op::GetRows { .. } => &[Uniform, Read, Read, ReadWrite],
            Op::MatVec {
                pro: Some(Prologue::AddNorm),
                ..
            } => &[Uniform, Read, Read, ReadWrite, Read, Read, Read, Read, ReadWrite],
            Op::MatVec { .. } | Op::GemmQ { .. } => &[Uniform, Read, Read, ReadWrite, Read, Read],
            Op::RmsNorm(NormMode::AddTo) => &[Uniform, ReadWrite, Read, ReadWrite, Read],
            Op::RmsNorm(_) => &[Uniform, ReadWrite, Read, ReadWrite],
            Op::Softmax => &[Uniform, ReadWrite],
            Op::Rope => &[Uniform, ReadWrite, Read],
            Op::Add => &[Uniform, ReadWrite, Read],
            Op::Glu(_) => &[Uniform, ReadWrite, ReadWrite],
            Op::Attention { .. } => &[Uniform, Read, Read, Read, ReadWrite, ReadWrite],
            Op::AttentionRope { .. } => &[
                Uniform, Read, ReadWrite, ReadWrite, ReadWrite, ReadWrite, Read, Read, Read, Read, Read,
            ],
            Op::QuantizeAct { glu: None } => &[Uniform, Read, ReadWrite, ReadWrite],
            Op::QuantizeAct { glu: Some(_) } => &[Uniform, Read, ReadWrite, ReadWrite, Read],
            Op::RopeKv => &[Uniform, ReadWrite, Read, ReadWrite, ReadWrite, ReadWrite, ReadWrite],
            Op::NormQuant => &[Uniform, Read, Read, ReadWrite, ReadWrite],
        }
    }

    /// Short name for measurement (`FERRO_GPU_SKIP`).
    fn kind(self) -> &'static str {
        match self {
            Op::Matmul { .. } => "matmul",
            Op::Gemm { .. } => "gemm",
            Op::GemmQ { .. } => "gemmq",
            Op::MatVec { pro: None, .. } => "matvec",
            Op::MatVec {
                pro: Some(Prologue::Norm),
                ..
            } => "matvec_norm",
            Op::MatVec {
                pro: Some(Prologue::AddNorm),
                ..
            } => "matvec_addnorm",
            Op::MatVec {
                pro: Some(Prologue::Round),
                ..
            } => "matvec_round",
            Op::MatVec {
                pro: Some(Prologue::Gated(_)),
                ..
            } => "matvec_glu",
            Op::GetRows { .. } => "get_rows",
            Op::RmsNorm(_) => "rms_norm",
            Op::Rope => "rope",
            Op::Softmax => "softmax",
            Op::Glu(_) => "glu",
            Op::Add => "add",
            Op::Attention { .. } => "attention",
            Op::AttentionRope { .. } => "attention_rope",
            Op::QuantizeAct { glu: None } => "quantize",
            Op::QuantizeAct { glu: Some(_) } => "glu_quantize",
            Op::RopeKv => "rope_kv",
            Op::NormQuant => "norm_quant",
        }
    }

    fn entry(self) -> &'static str {
        match self {
            Op::RmsNorm(NormMode::Out) => "main",
            Op::RmsNorm(NormMode::InPlace) => "main_inplace",
            Op::RmsNorm(NormMode::Add) => "main_add",
            Op::RmsNorm(NormMode::AddTo) => "main_add_to",
            Op::Glu(Glu::SwiGlu) => "swiglu",
            Op::Glu(Glu::GeGlu) => "geglu",
            Op::Gemm {
                tile: GEMM_BIG_TILE, ..
            } => "main128",
            _ => "main",
        }
    }

    /// The shader text; `mode` picks the workgroup reductions (subgroup shuffles or shared
    /// memory) of the ops that have them.
    fn source(self, mode: MatVecMode) -> Result<String> {
        let wg_reduce = if mode.subgroups {
            format!(
                "const SG: u32 = {}u;\n{}\n{}",
                mode.lanes,
                include_str!("wg_reduce_subgroup.wgsl"),
                include_str!("wg_tree.wgsl")
            )
        } else {
            format!(
                "{}\n{}",
                include_str!("wg_reduce_shared.wgsl"),
                include_str!("wg_tree.wgsl")
            )
        };
        let step = include_str!("step.wgsl");
        let quant = |ty: GgmlType| quant_source(ty).ok_or(GpuError::UnsupportedType(ty.name()));
        Ok(match self {
            Op::Matmul { ty, tile } => format!(
                "{step}\n{}\n{}\n{}\nconst TILE: u32 = {tile}u;\nconst LANES: u32 = {}u;\n{}",
                PRODUCT_PARAMS,
                include_str!("common.wgsl"),
                quant(ty)?,
                matmul_lanes(tile),
                include_str!("matmul.wgsl")
            ),
            Op::MatVec { ty, mode, k, toks, pro } => {
                let unit = matvec_source(ty).ok_or(GpuError::UnsupportedType(ty.name()))?;
                // Up to 64 parts (of 32 weights) a lane are written out.
                let straight = (k / 32 <= 64 * mode.lanes).then_some((k / 32, mode.lanes));
                // The format's quant_*.wgsl comes too: its layout helpers (load8 goes unused).
                // naga takes subgroup built-ins without `enable subgroups;` once the device has
                // the feature (and rejects the directive).
                let reduce = if mode.subgroups {
                    include_str!("reduce_subgroup.wgsl")
                } else {
                    include_str!("reduce_shared.wgsl")
                };
                let main = matvec_main(mode.rows, straight, toks, toks > 1 && unit.contains("fn part_w("));
                let (act, main) = match pro {
                    None => (
                        include_str!("act_global.wgsl").to_string(),
                        main.replace("//PROLOGUE", ""),
                    ),
                    Some(pro) => {
                        // The input's loads and the row scale(s).
                        let (load, rms) = match pro {
                            Prologue::Norm | Prologue::Round => (
                                input_loads("x"),
                                if pro == Prologue::Norm {
                                    include_str!("rms_common.wgsl")
                                } else {
                                    ""
                                }
                                .to_string(),
                            ),
                            Prologue::AddNorm => (add_norm_source(k), String::new()),
                            Prologue::Gated(kind) => (gated_load(kind, "aux"), String::new()),
                        };
                        let call = if pro == Prologue::AddNorm {
                            "    prologue(li, wid.x + wid.y * nwg.x == 0u);"
                        } else {
                            "    prologue(li);"
                        };
                        (
                            format!(
                                "const XS_VEC4: u32 = {}u;\n{}\n{load}\n{}\n{}\n{rms}\n{wg_reduce}",
                                fused_act_vec4s(k),
                                include_str!("act_fused.wgsl"),
                                fused_prologue(k, mode.norm_wg, pro),
                                include_str!("quant_round.wgsl"),
                            ),
                            main.replace("//PROLOGUE", call),
                        )
                    }
                };
                format!(
                    "{step}\n{}\n{}\n{}\n{}\n{act}\n{}\n{unit}\nconst LANES: u32 = {}u;\nconst ROWS: u32 = {}u;\n{reduce}\n{main}",
                    include_str!("f16.wgsl"),
                    PRODUCT_PARAMS,
                    include_str!("common.wgsl"),
                    include_str!("int8_product.wgsl"),
                    quant(ty)?,
                    mode.lanes,
                    mode.rows,
                )
            }
            Op::Gemm { ty, tile } => format!(
                "{step}\n{}\n{}\n{}\n{}\n{}",
                PRODUCT_PARAMS,
                include_str!("common.wgsl"),
                quant(ty)?,
                include_str!("gemm.wgsl").replace("//KK_STEPS", &gemm_steps(64)),
                if tile == GEMM_BIG_TILE {
                    include_str!("gemm128.wgsl").replace("//KK_STEPS", &gemm_steps(GEMM_BIG_TILE))
                } else {
                    String::new()
                }
            ),
            Op::GemmQ { ty, rows, toks, db } => {
                let unit = matvec_source(ty).ok_or(GpuError::UnsupportedType(ty.name()))?;
                let (halves, mins) = gemmq_terms(ty);
                format!(
                    "{step}\n{}\n{}\n{}\n{}\n{}\n{}\n{unit}\nconst TR: u32 = {rows}u;\nconst TT: u32 = {toks}u;\n\
                     const GQ_MINS: bool = {mins};\nconst GQ_MIN_F16: bool = {};\nconst GQ_DB: bool = {};\n{}",
                    include_str!("f16.wgsl"),
                    PRODUCT_PARAMS,
                    include_str!("common.wgsl"),
                    include_str!("int8_product.wgsl"),
                    include_str!("act_global.wgsl"),
                    quant(ty)?,
                    ty == GgmlType::Q4_1,
                    db,
                    gemmq_main(rows / 16, gemmq_thread_toks(toks), toks, halves, mins)
                )
            }
            Op::GetRows { ty } => format!(
                "{step}\n{}\n{}\n{}",
                include_str!("common.wgsl"),
                quant(ty)?,
                include_str!("get_rows.wgsl")
            ),
            Op::RmsNorm(_) => format!(
                "{step}\n{}\n{}\n{wg_reduce}",
                include_str!("rms_common.wgsl"),
                include_str!("rms_norm.wgsl")
            ),
            Op::Rope => format!(
                "{step}\n{}\n{}",
                include_str!("rope_common.wgsl"),
                include_str!("rope.wgsl")
            ),
            Op::Softmax => format!("{step}\n{}", include_str!("softmax.wgsl")),
            Op::Glu(_) => format!(
                "{step}\n{}\n{}",
                include_str!("glu_common.wgsl"),
                include_str!("glu.wgsl")
            ),
            Op::Add => format!(
                "{step}\n{}\n{}",
                include_str!("add.wgsl"),
                include_str!("out_index.wgsl")
            ),
            Op::Attention { .. } => format!(
                "{step}\n{}\n{}\n{}\n{wg_reduce}\n{}",
                include_str!("f16.wgsl"),
                QUANT_CORE,
                include_str!("attention.wgsl"),
                key_sum(mode)
            ),
            Op::AttentionRope { .. } => {
                // attention.wgsl with writable caches and its q load replaced by the prologue.
                let text = include_str!("attention.wgsl")
                    .replace("var<storage, read> kc", "var<storage, read_write> kc")
                    .replace("var<storage, read> vc", "var<storage, read_write> vc");
                let begin = text.find("//Q_LOAD_BEGIN").unwrap_or(0);
                let end = text.find("//Q_LOAD_END").map_or(0, |i| i + "//Q_LOAD_END".len());
                format!(
                    "{step}\n{}\n{}\n{}{}{}\n{}\n{}\n{wg_reduce}\n{}",
                    include_str!("f16.wgsl"),
                    QUANT_CORE,
                    &text[..begin],
                    "rope_prologue(h, t, kvh, li);",
                    &text[end..],
                    include_str!("rope_common.wgsl"),
                    include_str!("attention_rope.wgsl"),
                    key_sum(mode)
                )
            }
            Op::QuantizeAct { glu } => {
                let load = match glu {
                    None => "fn load4(g: u32) -> vec4<f32> {\n    return vec4<f32>(x[g], x[g + 1u], x[g + 2u], x[g + 3u]);\n}".to_string(),
                    Some(kind) => format!(
                        "@group(0) @binding(4) var<storage, read> u: array<f32>;\n{}",
                        gated_load(kind, "u")
                    ),
                };
                format!(
                    "{step}\n{}\n{}\n{}\n{load}\n{wg_reduce}",
                    include_str!("f16.wgsl"),
                    QUANT_CORE,
                    include_str!("quantize_act.wgsl")
                )
            }
            Op::NormQuant => format!(
                "{step}\n{}\n{}\n{}\n{}\n{wg_reduce}",
                include_str!("f16.wgsl"),
                QUANT_CORE,
                include_str!("rms_common.wgsl"),
                include_str!("norm_quant.wgsl")
            ),
            Op::RopeKv => format!(
                "{step}\n{}\n{}\n{}",
                include_str!("f16.wgsl"),
                include_str!("rope_common.wgsl"),
                include_str!("rope_kv.wgsl")
            ),
        })
    }
}

/// A compiled pipeline and the layout of its bind group 0.
#[derive(Clone, Debug)]
pub(crate) struct Pipeline {
    pub(crate) pipeline: wgpu::ComputePipeline,
    pub(crate) layout: wgpu::BindGroupLayout,
}

/// How many workgroups a recorded dispatch needs, given the batch's token count.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Grid {
    /// Exactly these counts.
    Fixed([u32; 3]),
    /// One workgroup per row, `per_tok` rows per token, folded over (x, y).
    Rows { per_tok: u32 },
    /// One thread per value, `per_tok` values per token.
    Threads { per_tok: u32 },
    /// Matrix product: WG / MATMUL_LANES rows per workgroup, z = token tiles.
    Matmul { rows: u32, tile: u32 },
    /// Int8 decode product: `per_wg` rows per workgroup, z = tokens.
    MatVec { rows: u32, per_wg: u32 },
    /// One workgroup per (head, token).
    Attention { n_head: u32 },
    /// One workgroup per token.
    Tokens,
}

/// A pipeline with its bound resources, ready to be recorded for any batch size.
#[derive(Clone, Debug)]
pub(crate) struct Prepared {
    pub(crate) pipeline: wgpu::ComputePipeline,
    /// Used instead of `pipeline` when the batch has more than one token (prefill matmul): the
    /// last variant whose `min_tokens` the batch reaches.
    pub(crate) batched: Vec<Batched>,
    pub(crate) bind: wgpu::BindGroup,
    pub(crate) grid: Grid,
    /// [`Op::kind`], for `FERRO_GPU_SKIP`.
    pub(crate) kind: &'static str,
}

/// The prefill variant of a matrix product: `rows` rows x `tile` tokens per workgroup, its own
/// bindings.
#[derive(Clone, Debug)]
pub(crate) struct Batched {
    pub(crate) pipeline: wgpu::ComputePipeline,
    pub(crate) bind: wgpu::BindGroup,
    pub(crate) rows: u32,
    pub(crate) tile: u32,
    /// Used for batches of at least this many tokens.
    pub(crate) min_tokens: u32,
}

/// Most tokens one submission's layers take: step.wgsl's `at` array holds this many.
pub const MAX_STEP_TOKENS: usize = 512;

/// The `Step` uniforms (bind group 1) of a submission: one for its layers, one for its head.
#[derive(Debug)]
pub(crate) struct StepState {
    bufs: [wgpu::Buffer; 2],
    pub(crate) binds: [wgpu::BindGroup; 2],
}

/// step.wgsl's `Step` as u32s: n_tok, three pads, then (position, first cache row) per token.
const STEP_WORDS: usize = 4 + 2 * MAX_STEP_TOKENS;

enum Cmd {
    Dispatch {
        pipeline: wgpu::ComputePipeline,
        bind: wgpu::BindGroup,
        wg: [u32; 3],
        /// Which `Step` it reads: 0 the layers', 1 the head's.
        step: usize,
        /// [`Op::kind`] and the rows of a product (0 for other ops), for profiling.
        kind: (&'static str, u32),
    },
    Copy {
        src: wgpu::Buffer,
        src_off: u64,
        dst: wgpu::Buffer,
        dst_off: u64,
        size: u64,
    },
}

/// attention.wgsl's `key_sum`: the sum of a value over the KS threads of a key
/// (attention_key_sum.wgsl, by shuffles); without subgroups KS is 1 and it is the value.
fn key_sum(mode: MatVecMode) -> &'static str {
    if mode.subgroups {
        include_str!("attention_key_sum.wgsl")
    } else {
        "fn key_sum(v: f32) -> f32 {\n    return v;\n}\n"
    }
}

/// Threads per attention workgroup (one per head and token) whose keys take `ks` threads
/// each: [`ATTENTION_TILE`] keys' worth, or for measurement `FERRO_GPU_ATTN_WG` (64..=1024, a
/// power of two).
fn attention_wg(ks: u32) -> u32 {
    env_u32("FERRO_GPU_ATTN_WG")
        .filter(|w| w.is_power_of_two() && (64..=1024).contains(w))
        .unwrap_or(ATTENTION_TILE * ks)
}

/// Keys per attention tile, so that short contexts take one tile.
pub const ATTENTION_TILE: u32 = 128;
/// The most threads an attention workgroup gets from its key threads (at 512 its workgroup
/// arrays take ~16 KB).
const ATTENTION_MAX_WG: u32 = 512;
/// Head dimensions per thread of a key's score: heads of 128 take two threads a key, of 256
/// four (H100, stop 25: 8B Q4_0 attention 21.3 -> 18.7 us, gemma3 27.2 -> 19.0).
const ATTENTION_DIMS_PER_KEY_THREAD: u32 = 64;

/// `FERRO_GPU_SKIP=kind,kind` (measurement only: results are wrong) leaves out the dispatches
/// of those [`Op::kind`]s, to see what each kind costs a forward pass.
fn skipped(kind: &str) -> bool {
    static SKIP: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    SKIP.get_or_init(|| {
        std::env::var("FERRO_GPU_SKIP")
            .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
            .unwrap_or_default()
    })
    .iter()
    .any(|s| s == kind)
}

/// The (position, first cache row) of `n` tokens of one sequence at positions `pos0..`, its
/// cache rows from `row0` ([`Recorder::new`]).
pub(crate) fn run_positions(n: usize, pos0: usize, row0: usize) -> Vec<[u32; 2]> {
    (0..n).map(|t| [(pos0 + t) as u32, row0 as u32]).collect()
}

/// The work of one batch, recorded and then submitted as one command encoder.
pub(crate) struct Recorder {
    /// (position, first KV cache row) of each token of the layers.
    at: Vec<[u32; 2]>,
    /// Rows of the head, once [`Recorder::start_head`] was called.
    head: Option<u32>,
    cmds: Vec<Cmd>,
}

impl Recorder {
    /// A batch whose token t sits at position `at[t].0` of the sequence whose cache rows start
    /// at `at[t].1` (at most [`MAX_STEP_TOKENS`] tokens).
    pub(crate) fn new(at: Vec<[u32; 2]>) -> Self {
        debug_assert!(at.len() <= MAX_STEP_TOKENS);
        Self {
            at,
            head: None,
            cmds: Vec::new(),
        }
    }

    /// `n` tokens of one sequence at positions `pos0..`, its cache rows from `row0`.
    pub(crate) fn run(n: usize, pos0: usize, row0: usize) -> Self {
        Self::new(run_positions(n, pos0, row0))
    }

    /// Dispatches recorded from now on read the head's `Step`, whose batch is `rows` tokens.
    pub(crate) fn start_head(&mut self, rows: usize) {
        self.head = Some(rows as u32);
    }

    pub(crate) fn record(&mut self, ctx: &GpuContext, p: &Prepared) {
        if skipped(p.kind) {
            return;
        }
        let (n, step) = match self.head {
            Some(rows) => (rows, 1),
            None => (self.at.len() as u32, 0),
        };
        let batched = p.batched.iter().rfind(|b| n > 1 && n >= b.min_tokens);
        let (pipeline, bind, wg) = match (p.grid, batched) {
            (Grid::Matmul { rows, .. } | Grid::MatVec { rows, .. }, Some(b)) => {
                let (x, y) = ctx.fold(rows.div_ceil(b.rows));
                (b.pipeline.clone(), b.bind.clone(), [x, y, n.div_ceil(b.tile)])
            }
            (grid, _) => {
                let wg = match grid {
                    Grid::Matmul { rows, tile } => {
                        let (x, y) = ctx.fold(rows.div_ceil(WG / matmul_lanes(tile)));
                        [x, y, n.div_ceil(tile)]
                    }
                    Grid::MatVec { rows, per_wg } => {
                        let (x, y) = ctx.fold(rows.div_ceil(per_wg));
                        [x, y, n]
                    }
                    Grid::Fixed(wg) => wg,
                    Grid::Rows { per_tok } => {
                        let (x, y) = ctx.fold(n * per_tok);
                        [x, y, 1]
                    }
                    Grid::Threads { per_tok } => {
                        let (x, y) = ctx.fold((n * per_tok).div_ceil(WG));
                        [x, y, 1]
                    }
                    Grid::Attention { n_head } => [n_head, n, 1],
                    Grid::Tokens => [n, 1, 1],
                };
                (p.pipeline.clone(), p.bind.clone(), wg)
            }
        };
        let rows = match p.grid {
            Grid::Matmul { rows, .. } | Grid::MatVec { rows, .. } => rows,
            _ => 0,
        };
        self.cmds.push(Cmd::Dispatch {
            pipeline,
            bind,
            wg,
            step,
            kind: (p.kind, rows),
        });
    }

    /// Recorded commands.
    pub(crate) fn len(&self) -> usize {
        self.cmds.len()
    }

    pub(crate) fn copy(&mut self, src: &wgpu::Buffer, src_off: u64, dst: &wgpu::Buffer, dst_off: u64, size: u64) {
        if skipped("copy") {
            return;
        }
        self.cmds.push(Cmd::Copy {
            src: src.clone(),
            src_off,
            dst: dst.clone(),
            dst_off,
            size,
        });
    }

    /// Encodes everything into one command encoder (consecutive dispatches share one compute pass)
    /// and submits it.
    pub(crate) fn submit(self, ctx: &GpuContext, step: &StepState) -> Result<()> {
        let mut words = vec![0u32; STEP_WORDS];
        words[0] = self.at.len() as u32;
        for (t, a) in self.at.iter().enumerate() {
            words[4 + 2 * t..6 + 2 * t].copy_from_slice(a);
        }
        ctx.queue.write_buffer(&step.bufs[0], 0, bytemuck::cast_slice(&words));
        if let Some(rows) = self.head {
            ctx.queue.write_buffer(&step.bufs[1], 0, bytemuck::bytes_of(&rows));
        }
        // Pieces of SUBMIT_PIECE commands, each submitted as soon as it is encoded, so the GPU
        // starts on the first layers while the CPU encodes the rest (encoding ~700 dispatches
        // takes about as long as the GPU needs to run an 8B model's step).
        let mut timer = (profile::enabled() && ctx.device.features().contains(wgpu::Features::TIMESTAMP_QUERY))
            .then(|| profile::Timer::new(ctx));
        let mut i = 0;
        while i < self.cmds.len() {
            let end = (i + SUBMIT_PIECE).min(self.cmds.len());
            let mut enc = ctx
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
            while i < end {
                match &self.cmds[i] {
                    Cmd::Copy {
                        src,
                        src_off,
                        dst,
                        dst_off,
                        size,
                    } => {
                        enc.copy_buffer_to_buffer(src, *src_off, dst, *dst_off, *size);
                        i += 1;
                    }
                    Cmd::Dispatch { .. } => {
                        // Profiling: one pass per dispatch, timestamps around it.
                        let timed = timer.as_mut().filter(|t| t.kinds.len() < profile::MAX_TIMED);
                        let timestamp_writes = timed.as_ref().map(|t| wgpu::ComputePassTimestampWrites {
                            query_set: &t.set,
                            beginning_of_pass_write_index: Some(2 * t.kinds.len() as u32),
                            end_of_pass_write_index: Some(2 * t.kinds.len() as u32 + 1),
                        });
                        let one = timestamp_writes.is_some();
                        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                            label: None,
                            timestamp_writes,
                        });
                        let mut bound = None;
                        while i < end {
                            let Some(Cmd::Dispatch {
                                pipeline,
                                bind,
                                wg,
                                step: which,
                                kind,
                            }) = self.cmds.get(i)
                            else {
                                break;
                            };
                            i += 1;
                            if wg.contains(&0) {
                                continue;
                            }
                            if bound != Some(*which) {
                                pass.set_bind_group(1, &step.binds[*which], &[]);
                                bound = Some(*which);
                            }
                            pass.set_pipeline(pipeline);
                            pass.set_bind_group(0, bind, &[]);
                            pass.dispatch_workgroups(wg[0], wg[1], wg[2]);
                            if one {
                                if let Some(t) = timer.as_mut() {
                                    t.kinds.push(*kind);
                                }
                                break;
                            }
                        }
                    }
                }
            }
            ctx.queue.submit([enc.finish()]);
        }
        if let Some(t) = timer {
            t.finish(ctx)?;
        }
        ctx.take_error()
    }
}

/// An open GPU device with its pipeline cache.
pub struct GpuContext {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    pub(crate) limits: wgpu::Limits,
    pub(crate) matvec: MatVecMode,
    pipelines: Mutex<HashMap<Op, Pipeline>>,
    layouts: Mutex<HashMap<&'static [Slot], (wgpu::BindGroupLayout, wgpu::PipelineLayout)>>,
    step_layout: wgpu::BindGroupLayout,
    /// Bound where an entry point ignores a binding of its layout.
    pub(crate) dummy: wgpu::Buffer,
    error: Arc<Mutex<Option<String>>>,
}

impl fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GpuContext").field("adapter", &self.info.name).finish()
    }
}

impl GpuContext {
    /// Opens the best adapter wgpu finds (a discrete GPU first; lavapipe on a machine without one).
    pub fn new() -> Result<Self> {
        let instance = instance();
        let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        }))
        .map_err(|e| GpuError::NoAdapter(e.to_string()))?;
        let info = adapter.get_info();
        let limits = adapter.limits();
        let matvec = MatVecMode::choose(adapter.features(), &info, &limits);
        let mut required_features = if matvec.subgroups {
            wgpu::Features::SUBGROUP
        } else {
            wgpu::Features::empty()
        };
        if crate::profile::enabled() {
            required_features |= adapter.features() & wgpu::Features::TIMESTAMP_QUERY;
        }
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("ferro"),
            required_features,
            required_limits: limits.clone(),
            memory_hints: wgpu::MemoryHints::Performance,
            ..Default::default()
        }))
        .map_err(|e| GpuError::Device {
            adapter: info.name.clone(),
            reason: e.to_string(),
        })?;
        let error: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let sink = error.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut slot = sink.lock().unwrap_or_else(|p| p.into_inner());
            if slot.is_none() {
                *slot = Some(e.to_string());
            }
        }));
        let step_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("step"),
            entries: &[layout_entry(0, Slot::Uniform)],
        });
        let dummy = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("dummy"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        Ok(Self {
            device,
            queue,
            info,
            limits,
            matvec,
            pipelines: Mutex::new(HashMap::new()),
            layouts: Mutex::new(HashMap::new()),
            step_layout,
            dummy,
            error,
        })
    }

    /// The adapter this context runs on.
    pub fn adapter(&self) -> AdapterSummary {
        AdapterSummary::from_info(&self.info)
    }

    /// Largest buffer one storage binding may cover.
    pub fn max_binding_bytes(&self) -> u64 {
        self.limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size)
    }

    pub(crate) fn take_error(&self) -> Result<()> {
        let mut slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
        match slot.take() {
            Some(e) => Err(GpuError::Wgpu(e)),
            None => Ok(()),
        }
    }

    /// (x, y) workgroup counts covering `n` workgroups within the per-dimension limit.
    pub(crate) fn fold(&self, n: u32) -> (u32, u32) {
        let max = self.limits.max_compute_workgroups_per_dimension.max(1);
        if n <= max {
            (n, 1)
        } else {
            let y = n.div_ceil(max);
            (n.div_ceil(y), y)
        }
    }

    /// Whether batches from [`gemm_big_min_tokens`] tokens on take the 128 x 128 tiles for
    /// products of `rows` x `k`: large enough ([`GEMM_BIG_MIN_ROWS`], [`GEMM_BIG_MIN_K`]), the
    /// adapter has the tiles' workgroup memory, and measurement did not turn them off.
    pub fn has_big_gemm_tiles(&self, rows: u32, k: u32) -> bool {
        rows >= GEMM_BIG_MIN_ROWS
            && k >= GEMM_BIG_MIN_K
            && self.limits.max_compute_workgroup_storage_size >= GEMM_BIG_SHARED_BYTES
            && gemm_big_min_tokens() > 0
    }

    /// Threads that score one key together in attention of heads of `head_dim`: with
    /// subgroups one per [`ATTENTION_DIMS_PER_KEY_THREAD`] dimensions (a power of two, up to
    /// the subgroup size, and with [`ATTENTION_TILE`] keys at most [`ATTENTION_MAX_WG`]
    /// threads), or for measurement `FERRO_GPU_ATTN_KS`; without subgroups 1.
    pub(crate) fn attention_key_threads(&self, head_dim: u32) -> u32 {
        if !self.matvec.subgroups {
            return 1;
        }
        // Workgroups of at most ATTENTION_MAX_WG threads (their workgroup arrays grow with it).
        let fit = (self.norm_wg().min(ATTENTION_MAX_WG) / ATTENTION_TILE).max(1);
        let ks = env_u32("FERRO_GPU_ATTN_KS")
            .filter(|k| k.is_power_of_two())
            .unwrap_or_else(|| (head_dim / ATTENTION_DIMS_PER_KEY_THREAD).max(1).next_power_of_two());
        ks.min(self.matvec.lanes).min(fit)
    }

    /// Attention's op for heads of `head_dim` (with `rope`: a decode step's, rope_kv's work
    /// first).
    pub(crate) fn attention_op(&self, head_dim: u32, rope: bool) -> Op {
        let ks = self.attention_key_threads(head_dim);
        if rope {
            Op::AttentionRope { ks }
        } else {
            Op::Attention { ks }
        }
    }

    /// Threads per attention workgroup for heads of `head_dim`.
    pub(crate) fn attention_threads(&self, head_dim: u32) -> u32 {
        self.workgroup_size(self.attention_op(head_dim, false))
    }

    /// Threads per workgroup of `op`: [`WG`]; the matvec's own size; for rms_norm as many as
    /// the adapter allows up to 1024, so a row takes few loop trips (each a full memory latency).
    fn workgroup_size(&self, op: Op) -> u32 {
        match op {
            Op::MatVec { mode, pro: None, .. } => mode.wg,
            Op::MatVec { pro: Some(_), .. } => self.norm_wg(),
            Op::Gemm { .. } => 256,
            // 16 threads along the rows, the rest along the tokens.
            Op::GemmQ { toks, .. } => 16 * toks / gemmq_thread_toks(toks),
            Op::Attention { ks } | Op::AttentionRope { ks } => attention_wg(ks),
            Op::RmsNorm(_) | Op::NormQuant => self.norm_wg(),
            _ => WG,
        }
    }

    /// Threads per workgroup of the norms and of the products that round their own input.
    pub(crate) fn norm_wg(&self) -> u32 {
        self.matvec.norm_wg
    }

    /// Whether a decode product over rows of `k` values can round its own input in blocks of
    /// `block` (act_fused.wgsl): whole blocks, and its workgroup arrays fit the adapter's
    /// workgroup memory ([`Prologue::AddNorm`]: with its row of f32 and its eight storage
    /// buffers).
    pub(crate) fn fits_fused_act(&self, k: u32, block: u32, pro: Prologue) -> bool {
        // The input's quants, the rms sums, the group maxima (and without subgroups their
        // integer sums and the row sums).
        let arrays = if self.matvec.subgroups { 3 } else { 5 };
        let mut bytes = 16 * fused_act_vec4s(k) + 4 * arrays * self.norm_wg();
        if pro == Prologue::AddNorm {
            if self.limits.max_storage_buffers_per_shader_stage < 8 {
                return false;
            }
            bytes += 4 * k;
        }
        k.is_multiple_of(block) && bytes <= self.limits.max_compute_workgroup_storage_size
    }

    /// The int8 decode product's mode where it rounds its own input: rows per group of lanes
    /// as the plain product's, or for measurement `FERRO_GPU_FUSED_ROWS` (1, 2 or 4: fewer
    /// workgroups, each rounding the input once for more rows); and its rows per workgroup.
    pub(crate) fn fused_matvec(&self) -> (MatVecMode, u32) {
        let rows = env_u32("FERRO_GPU_FUSED_ROWS")
            .filter(|r| [1, 2, 4].contains(r))
            .unwrap_or(self.matvec.rows);
        let mode = MatVecMode { rows, ..self.matvec };
        (mode, self.norm_wg() / mode.lanes * rows)
    }

    // ---------------------------------------------------------------- buffers

    fn storage(&self, label: &str, bytes: u64) -> Result<wgpu::Buffer> {
        let size = bytes.max(4).next_multiple_of(4);
        if size > self.max_binding_bytes() {
            return Err(GpuError::TooLarge {
                what: label.to_string(),
                bytes: size,
                limit: self.max_binding_bytes(),
            });
        }
        Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        }))
    }

    /// Writes `bytes` at `offset` in pieces, padding the tail to a multiple of 4.
    fn write_bytes(&self, buf: &wgpu::Buffer, offset: u64, bytes: &[u8]) {
        let mut off = 0;
        while off < bytes.len() {
            let end = (off + UPLOAD_PIECE).min(bytes.len());
            let piece = &bytes[off..end];
            if piece.len().is_multiple_of(4) {
                self.queue.write_buffer(buf, offset + off as u64, piece);
            } else {
                let mut padded = piece.to_vec();
                padded.resize(piece.len().next_multiple_of(4), 0);
                self.queue.write_buffer(buf, offset + off as u64, &padded);
            }
            off = end;
        }
    }

    /// A zero-filled tensor of `len` 4-byte elements.
    pub fn zeros(&self, len: usize) -> Result<GpuTensor> {
        let buf = self.storage("tensor", len as u64 * 4)?;
        Ok(GpuTensor { buf, offset: 0, len })
    }

    /// Zero-filled tensors of the given lengths, consecutive views of one buffer where the
    /// adapter's binding-offset alignment allows (so a stacked product can fill them in one
    /// dispatch, [`GpuContext::prep_matmul`]), else separate buffers.
    pub(crate) fn zeros_stacked(&self, lens: &[usize]) -> Result<Vec<GpuTensor>> {
        let all = self.zeros(lens.iter().sum())?;
        let align = self.limits.min_storage_buffer_offset_alignment as u64;
        let mut start = 0;
        let views: Option<Vec<GpuTensor>> = lens
            .iter()
            .map(|&len| {
                let v = all.view(start, len, align);
                start += len;
                v
            })
            .collect();
        match views {
            Some(v) => Ok(v),
            None => lens.iter().map(|&len| self.zeros(len)).collect(),
        }
    }

    /// Uploads f32 values.
    pub fn upload_f32(&self, data: &[f32]) -> Result<GpuTensor> {
        let t = self.zeros(data.len())?;
        self.write_bytes(&t.buf, t.offset, bytemuck::cast_slice(data));
        Ok(t)
    }

    /// Uploads u32 values (token ids).
    pub fn upload_u32(&self, data: &[u32]) -> Result<GpuTensor> {
        let t = self.zeros(data.len())?;
        self.write_bytes(&t.buf, t.offset, bytemuck::cast_slice(data));
        Ok(t)
    }

    /// Overwrites f32 values of `t` starting at element `offset`.
    pub fn write_f32(&self, t: &GpuTensor, offset: usize, data: &[f32]) -> Result<()> {
        if offset + data.len() > t.len {
            return Err(GpuError::Shape(format!(
                "write of {} values at {offset} into a tensor of {}",
                data.len(),
                t.len
            )));
        }
        self.write_bytes(&t.buf, t.offset + offset as u64 * 4, bytemuck::cast_slice(data));
        Ok(())
    }

    /// Overwrites u32 values of `t` starting at element `offset`.
    pub fn write_u32(&self, t: &GpuTensor, offset: usize, data: &[u32]) -> Result<()> {
        if offset + data.len() > t.len {
            return Err(GpuError::Shape(format!(
                "write of {} ids at {offset} into a tensor of {}",
                data.len(),
                t.len
            )));
        }
        self.write_bytes(&t.buf, t.offset + offset as u64 * 4, bytemuck::cast_slice(data));
        Ok(())
    }

    /// Reads the whole tensor back as f32 values (waits for the GPU).
    pub fn read_f32(&self, t: &GpuTensor) -> Result<Vec<f32>> {
        self.read_range(t, 0, t.len)
    }

    /// Reads `len` f32 values starting at element `offset` (waits for the GPU).
    pub fn read_range(&self, t: &GpuTensor, offset: usize, len: usize) -> Result<Vec<f32>> {
        if offset + len > t.len {
            return Err(GpuError::Shape(format!(
                "read of {len} values at {offset} from a tensor of {}",
                t.len
            )));
        }
        if len == 0 {
            return Ok(Vec::new());
        }
        let size = len as u64 * 4;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        enc.copy_buffer_to_buffer(&t.buf, t.offset + offset as u64 * 4, &staging, 0, size);
        self.queue.submit([enc.finish()]);
        self.map_read(&staging, size)
    }

    /// The first `bytes` of a MAP_READ buffer once the GPU has written them (waits for it).
    pub(crate) fn map_read<T: bytemuck::Pod>(&self, buf: &wgpu::Buffer, bytes: u64) -> Result<Vec<T>> {
        let (tx, rx) = std::sync::mpsc::channel();
        buf.map_async(wgpu::MapMode::Read, 0..bytes, move |r| {
            let _ = tx.send(r);
        });
        self.wait_for(&rx)?.map_err(|e| GpuError::Readback(e.to_string()))?;
        let out = {
            let view = buf
                .get_mapped_range(0..bytes)
                .map_err(|e| GpuError::Readback(e.to_string()))?;
            bytemuck::cast_slice::<u8, T>(&view[..]).to_vec()
        };
        buf.unmap();
        Ok(out)
    }

    /// Uploads matrices of one type and row length `k` stacked into one weight (their rows one
    /// after another), for one product that computes them all.
    pub(crate) fn upload_stacked(&self, ty: GgmlType, k: u64, parts: &[&[u8]]) -> Result<GpuWeight> {
        let row_bytes = ty
            .row_bytes(k)
            .ok_or_else(|| GpuError::Shape(format!("row length {k} for {}", ty.name())))?;
        let bytes = parts.concat();
        self.upload_weight(ty, &[k, bytes.len() as u64 / row_bytes.max(1)], &bytes)
    }

    /// Uploads a weight in its GGUF layout. `dims` are in ggml order (dims[0] = row length);
    /// `bytes` are exactly the tensor's bytes in the file. Tables larger than one storage binding
    /// are split into row chunks.
    pub fn upload_weight(&self, ty: GgmlType, dims: &[u64], bytes: &[u8]) -> Result<GpuWeight> {
        if !supports_type(ty) {
            return Err(GpuError::UnsupportedType(ty.name()));
        }
        let k = *dims
            .first()
            .ok_or_else(|| GpuError::Shape("weight with no dimensions".into()))?;
        let n_rows: u64 = dims[1..].iter().product();
        if k == 0 || !k.is_multiple_of(ty.block_size()) || !k.is_multiple_of(8) {
            return Err(GpuError::Shape(format!(
                "row length {k} of a {} weight is not a multiple of its block size and 8",
                ty.name()
            )));
        }
        let row_bytes = ty
            .row_bytes(k)
            .ok_or_else(|| GpuError::Shape(format!("row length {k} for {}", ty.name())))?;
        if row_bytes * n_rows != bytes.len() as u64 {
            return Err(GpuError::Shape(format!(
                "{} weight {dims:?} needs {} bytes, got {}",
                ty.name(),
                row_bytes * n_rows,
                bytes.len()
            )));
        }
        let too_big = || GpuError::TooLarge {
            what: format!("weight {dims:?}"),
            bytes: bytes.len() as u64,
            limit: u32::MAX as u64,
        };
        let rows_u32 = u32::try_from(n_rows).map_err(|_| too_big())?;
        let row_bytes_u32 = u32::try_from(row_bytes).map_err(|_| too_big())?;
        // Chunks leave 4 bytes of padding for the 2-byte-aligned u32 reads; each chunk's byte
        // offsets must stay below 2^32 inside the shader.
        let limit = (self.max_binding_bytes() - 8).min(u32::MAX as u64 - 8);
        let rows_per_chunk = (limit / row_bytes).max(1);
        if row_bytes > limit {
            return Err(GpuError::TooLarge {
                what: format!("one row of weight {dims:?}"),
                bytes: row_bytes,
                limit,
            });
        }
        let mut chunks = Vec::new();
        let mut row0 = 0u64;
        while row0 < n_rows {
            let n = rows_per_chunk.min(n_rows - row0);
            let lo = (row0 * row_bytes) as usize;
            let hi = ((row0 + n) * row_bytes) as usize;
            let size = ((hi - lo) as u64).next_multiple_of(4) + 4;
            let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("weight"),
                size,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            match ty {
                GgmlType::Q4_0 => self.write_bytes(&buf, 0, &split_q4_0(&bytes[lo..hi], row_bytes as usize)),
                GgmlType::Q6_K => self.write_bytes(&buf, 0, &split_q6_k(&bytes[lo..hi], row_bytes as usize)),
                _ => self.write_bytes(&buf, 0, &bytes[lo..hi]),
            }
            chunks.push(WeightChunk {
                buf,
                row0: row0 as u32,
                n_rows: n as u32,
            });
            row0 += n;
        }
        self.take_error()?;
        Ok(GpuWeight {
            ty,
            k: k as u32,
            n_rows: rows_u32,
            row_bytes: row_bytes_u32,
            chunks,
        })
    }

    // ---------------------------------------------------------------- pipelines

    fn layouts(&self, slots: &'static [Slot]) -> (wgpu::BindGroupLayout, wgpu::PipelineLayout) {
        let mut map = self.layouts.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(slots)
            .or_insert_with(|| {
                let entries: Vec<_> = slots
                    .iter()
                    .enumerate()
                    .map(|(i, s)| layout_entry(i as u32, *s))
                    .collect();
                let bgl = self.device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                    label: None,
                    entries: &entries,
                });
                let pl = self.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                    label: None,
                    bind_group_layouts: &[Some(&bgl), Some(&self.step_layout)],
                    immediate_size: 0,
                });
                (bgl, pl)
            })
            .clone()
    }

    /// The pipeline of `op`, compiled on first use.
    pub(crate) fn pipeline(&self, op: Op) -> Result<Pipeline> {
        if let Some(p) = self.pipelines.lock().unwrap_or_else(|p| p.into_inner()).get(&op) {
            return Ok(p.clone());
        }
        let source = op.source(self.matvec)?;
        let (layout, pl) = self.layouts(op.slots());
        let mut constants = vec![("WG", self.workgroup_size(op) as f64)];
        if let Op::Attention { ks } | Op::AttentionRope { ks } = op {
            // Measurement only: phases of attention left out (attention.wgsl's ABLATE).
            constants.push(("ABLATE", env_u32("FERRO_GPU_ATTN_ABLATE").unwrap_or(0) as f64));
            constants.push(("KS", ks as f64));
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(op.entry()),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(op.entry()),
            layout: Some(&pl),
            module: &module,
            entry_point: Some(op.entry()),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &constants,
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(GpuError::Wgpu(format!("pipeline {op:?}: {e}")));
        }
        let p = Pipeline { pipeline, layout };
        self.pipelines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(op, p.clone());
        Ok(p)
    }

    /// A uniform buffer holding `params`.
    pub(crate) fn uniform<T: bytemuck::Pod>(&self, params: &T) -> wgpu::Buffer {
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("params"),
            contents: bytemuck::bytes_of(params),
            usage: wgpu::BufferUsages::UNIFORM,
        })
    }

    /// Binds `params` and `buffers` (in binding order after the uniform) for `op`.
    pub(crate) fn prepare<T: bytemuck::Pod>(
        &self,
        op: Op,
        params: &T,
        buffers: &[&dyn AsBinding],
        grid: Grid,
    ) -> Result<Prepared> {
        let p = self.pipeline(op)?;
        let uni = self.uniform(params);
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: uni.as_entire_binding(),
        }];
        for (i, b) in buffers.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource: b.binding(),
            });
        }
        let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &p.layout,
            entries: &entries,
        });
        Ok(Prepared {
            pipeline: p.pipeline,
            batched: Vec::new(),
            bind,
            grid,
            kind: op.kind(),
        })
    }

    /// Fresh `Step` uniforms (the layers' and the head's) with their bind groups.
    pub(crate) fn step_state(&self) -> StepState {
        let one = || {
            let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("step"),
                size: (STEP_WORDS * 4) as u64,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("step"),
                layout: &self.step_layout,
                entries: &[wgpu::BindGroupEntry {
                    binding: 0,
                    resource: buf.as_entire_binding(),
                }],
            });
            (buf, bind)
        };
        let ((b0, g0), (b1, g1)) = (one(), one());
        StepState {
            bufs: [b0, b1],
            binds: [g0, g1],
        }
    }

    /// Waits for the value a `map_async` callback sends: by polling the device in a loop (the
    /// default: a blocking wait on some drivers, NVIDIA's among them, wakes up ~1 ms late, which
    /// is a third of a decode step) or, with `FERRO_GPU_WAIT=block`, by one blocking poll.
    pub(crate) fn wait_for<T>(&self, rx: &std::sync::mpsc::Receiver<T>) -> Result<T> {
        static BLOCK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let block = *BLOCK.get_or_init(|| std::env::var("FERRO_GPU_WAIT").is_ok_and(|v| v == "block"));
        let disconnected = || GpuError::Readback("the map callback was dropped".into());
        if block {
            self.wait()?;
            return rx.recv().map_err(|_| disconnected());
        }
        loop {
            self.device
                .poll(wgpu::PollType::Poll)
                .map_err(|e| GpuError::Wgpu(e.to_string()))?;
            match rx.try_recv() {
                Ok(v) => {
                    self.take_error()?;
                    return Ok(v);
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => std::hint::spin_loop(),
                Err(std::sync::mpsc::TryRecvError::Disconnected) => return Err(disconnected()),
            }
        }
    }

    /// Waits until the GPU has finished everything submitted.
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::Wgpu(e.to_string()))?;
        self.take_error()
    }
}

/// Q4_0 rows as the shaders read them (quant_q4_0.wgsl): each row's blocks' 16 quant bytes
/// first, then their 2-byte scales, so a block's quants are one aligned 16-byte load.
/// Q6_K rows as quant_q6_k.wgsl reads them: per row the blocks' ql (128 bytes each), then
/// their qh (64), scales (16) and d (2); the same row size.
fn split_q6_k(rows: &[u8], row_bytes: usize) -> Vec<u8> {
    const BLOCK: usize = 210;
    const FIELDS: [(usize, usize); 4] = [(0, 128), (128, 64), (192, 16), (208, 2)];
    let nb = row_bytes / BLOCK;
    let mut out = vec![0u8; rows.len()];
    for (src, dst) in rows.chunks_exact(row_bytes).zip(out.chunks_exact_mut(row_bytes)) {
        for (b, block) in src.chunks_exact(BLOCK).enumerate() {
            for (start, len) in FIELDS {
                let at = start * nb + len * b;
                dst[at..at + len].copy_from_slice(&block[start..start + len]);
            }
        }
    }
    out
}

fn split_q4_0(rows: &[u8], row_bytes: usize) -> Vec<u8> {
    const BLOCK: usize = 18;
    let nb = row_bytes / BLOCK;
    let mut out = vec![0u8; rows.len()];
    for (src, dst) in rows.chunks_exact(row_bytes).zip(out.chunks_exact_mut(row_bytes)) {
        let (qs, ds) = dst.split_at_mut(16 * nb);
        for (b, block) in src.chunks_exact(BLOCK).enumerate() {
            ds[2 * b..2 * b + 2].copy_from_slice(&block[..2]);
            qs[16 * b..16 * b + 16].copy_from_slice(&block[2..]);
        }
    }
    out
}

fn layout_entry(binding: u32, slot: Slot) -> wgpu::BindGroupLayoutEntry {
    let ty = match slot {
        Slot::Uniform => wgpu::BufferBindingType::Uniform,
        Slot::Read => wgpu::BufferBindingType::Storage { read_only: true },
        Slot::ReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
    };
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty,
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}
