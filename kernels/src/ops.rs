//! The engine-facing API: weight matrices borrowed from a GGUF map, row (de)quantization, and
//! the matrix-vector (decode) and matrix-matrix (prefill) products on top of a [`KernelTable`].

use crate::dispatch::{DotFn, GemmFn, GemmKernels, KernelTable, PackedGemmFn};
use crate::packed::{PackedMatrix, GROUP_ROWS};
use crate::quants::{float, q2_k, q3_k, q4_0, q4_1, q4_k, q5_0, q5_1, q5_k, q6_k, q8_0, q8_1, q8_k};
use crate::quants::{BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K};
use crate::quants::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1};
use crate::{GgmlType, KernelError};
use bytemuck::Pod;
use half::{bf16, f16};
use rayon::prelude::*;
use std::borrow::Cow;

/// Whether the kernels can dequantize and multiply weights of this type.
pub fn is_supported(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::F32
            | GgmlType::F16
            | GgmlType::BF16
            | GgmlType::Q4_0
            | GgmlType::Q4_1
            | GgmlType::Q5_0
            | GgmlType::Q5_1
            | GgmlType::Q8_0
            | GgmlType::Q2_K
            | GgmlType::Q3_K
            | GgmlType::Q4_K
            | GgmlType::Q5_K
            | GgmlType::Q6_K
    )
}

/// Whether `dequantize_row` / `quantize_row` handle the type (the weight types plus Q8_1).
fn is_row_type(ty: GgmlType) -> bool {
    is_supported(ty) || matches!(ty, GgmlType::Q8_1 | GgmlType::Q8_K)
}

/// Alignment the blocks of `ty` need to be viewed in place.
fn block_align(ty: GgmlType) -> usize {
    match ty {
        GgmlType::F32 | GgmlType::Q8_K => 4,
        _ => 2,
    }
}

fn row_bytes_of(ty: GgmlType, n: usize) -> Result<usize, KernelError> {
    ty.row_bytes(n as u64)
        .and_then(|b| usize::try_from(b).ok())
        .ok_or_else(|| {
            KernelError::Shape(format!(
                "{n} elements are not a whole number of {ty} blocks of {}",
                ty.block_size()
            ))
        })
}

/// A weight matrix borrowed from the GGUF map: `rows` rows of `cols` elements, row-major blocks.
#[derive(Clone, Copy, Debug)]
pub struct WeightMatrix<'a> {
    /// Block format.
    pub ty: GgmlType,
    /// Output features.
    pub rows: usize,
    /// Input features (elements per row).
    pub cols: usize,
    /// `rows * row_bytes()` bytes.
    pub data: &'a [u8],
}

impl<'a> WeightMatrix<'a> {
    /// Check type support, that `cols` is a whole number of blocks, that `data` holds exactly
    /// `rows` rows, and that it is aligned for in-place block access (GGUF data always is).
    pub fn new(ty: GgmlType, rows: usize, cols: usize, data: &'a [u8]) -> Result<Self, KernelError> {
        if !is_supported(ty) {
            return Err(KernelError::UnsupportedType(ty));
        }
        let rb = row_bytes_of(ty, cols)?;
        let want = rb
            .checked_mul(rows)
            .ok_or_else(|| KernelError::Shape(format!("{rows} x {cols} {ty} overflows")))?;
        if data.len() != want {
            return Err(KernelError::Shape(format!(
                "{rows} x {cols} {ty} needs {want} bytes, got {}",
                data.len()
            )));
        }
        if !(data.as_ptr() as usize).is_multiple_of(block_align(ty)) {
            return Err(KernelError::Shape(format!(
                "{ty} weight data must be {}-byte aligned",
                block_align(ty)
            )));
        }
        Ok(Self { ty, rows, cols, data })
    }

    /// Bytes per row.
    pub fn row_bytes(&self) -> usize {
        self.data.len().checked_div(self.rows).unwrap_or(0)
    }

    /// The bytes of row `i`. Panics when `i >= rows`.
    pub fn row(&self, i: usize) -> &'a [u8] {
        let rb = self.row_bytes();
        &self.data[i * rb..(i + 1) * rb]
    }
}

/// View bytes as blocks, copying only when they are not aligned.
pub(crate) fn blocks<T: Pod>(bytes: &[u8]) -> Cow<'_, [T]> {
    match bytemuck::try_cast_slice(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => {
            let mut v = vec![T::zeroed(); bytes.len() / std::mem::size_of::<T>()];
            bytemuck::cast_slice_mut::<T, u8>(&mut v).copy_from_slice(bytes);
            Cow::Owned(v)
        }
    }
}

/// Dequantize one row (`dst.len()` elements) of type `ty` from `src`.
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), KernelError> {
    if !is_row_type(ty) {
        return Err(KernelError::UnsupportedType(ty));
    }
    let want = row_bytes_of(ty, dst.len())?;
    if src.len() != want {
        return Err(KernelError::Shape(format!(
            "{} {ty} elements need {want} bytes, got {}",
            dst.len(),
            src.len()
        )));
    }
    match ty {
        GgmlType::F32 => dst.copy_from_slice(&blocks::<f32>(src)),
        GgmlType::F16 => float::dequantize_f16(&blocks::<f16>(src), dst),
        GgmlType::BF16 => float::dequantize_bf16(&blocks::<bf16>(src), dst),
        GgmlType::Q4_0 => q4_0::dequantize(&blocks(src), dst),
        GgmlType::Q4_1 => q4_1::dequantize(&blocks(src), dst),
        GgmlType::Q5_0 => q5_0::dequantize(&blocks(src), dst),
        GgmlType::Q5_1 => q5_1::dequantize(&blocks(src), dst),
        GgmlType::Q8_0 => q8_0::dequantize(&blocks(src), dst),
        GgmlType::Q8_1 => q8_1::dequantize(&blocks(src), dst),
        GgmlType::Q2_K => q2_k::dequantize(&blocks(src), dst),
        GgmlType::Q3_K => q3_k::dequantize(&blocks(src), dst),
        GgmlType::Q4_K => q4_k::dequantize(&blocks(src), dst),
        GgmlType::Q5_K => q5_k::dequantize(&blocks(src), dst),
        GgmlType::Q6_K => q6_k::dequantize(&blocks(src), dst),
        GgmlType::Q8_K => q8_k::dequantize(&blocks(src), dst),
        _ => return Err(KernelError::UnsupportedType(ty)),
    }
    Ok(())
}

fn quantize_into<T: Pod>(src: &[f32], bs: usize, f: fn(&[f32], &mut [T])) -> Vec<u8> {
    let mut out = vec![T::zeroed(); src.len() / bs];
    f(src, &mut out);
    bytemuck::cast_slice(&out).to_vec()
}

/// Quantize one row with the reference quantizer of `ty` (bytes as llama.cpp writes them).
pub fn quantize_row(ty: GgmlType, src: &[f32]) -> Result<Vec<u8>, KernelError> {
    if !is_row_type(ty) {
        return Err(KernelError::UnsupportedType(ty));
    }
    row_bytes_of(ty, src.len())?;
    Ok(match ty {
        GgmlType::F32 => bytemuck::cast_slice(src).to_vec(),
        GgmlType::F16 => quantize_into(src, 1, float::quantize_f16),
        GgmlType::BF16 => quantize_into(src, 1, float::quantize_bf16),
        GgmlType::Q4_0 => quantize_into(src, 32, q4_0::quantize),
        GgmlType::Q4_1 => quantize_into(src, 32, q4_1::quantize),
        GgmlType::Q5_0 => quantize_into(src, 32, q5_0::quantize),
        GgmlType::Q5_1 => quantize_into(src, 32, q5_1::quantize),
        GgmlType::Q8_0 => quantize_into(src, 32, q8_0::quantize),
        GgmlType::Q8_1 => quantize_into(src, 32, q8_1::quantize),
        GgmlType::Q2_K => quantize_into(src, 256, q2_k::quantize),
        GgmlType::Q3_K => quantize_into(src, 256, q3_k::quantize),
        GgmlType::Q4_K => quantize_into(src, 256, q4_k::quantize),
        GgmlType::Q5_K => quantize_into(src, 256, q5_k::quantize),
        GgmlType::Q6_K => quantize_into(src, 256, q6_k::quantize),
        GgmlType::Q8_K => quantize_into(src, 256, q8_k::quantize),
        _ => return Err(KernelError::UnsupportedType(ty)),
    })
}

/// `out[h·n + j] = q_h · k[j·stride..][..d]` for the `heads` rows of `q` (`d` floats each) and
/// `n = out.len() / heads` keys `stride` floats apart, with the kernels in use (attention scores
/// of the query heads that share a key head). Each score has the same bits whatever `heads`.
///
/// # Panics
/// When `heads` does not divide `q` and `out`, or the rows do not fit in `k`.
pub fn dots_f32(q: &[f32], heads: usize, k: &[f32], stride: usize, out: &mut [f32]) {
    (KernelTable::get().dots_f32)(q, heads, k, stride, out)
}

/// `out[h·d + c] += Σ_j a[h·n + j] · v[j·stride + c]` for the `heads` rows of `a` (`n` weights
/// each) and of `out` (`d` floats each), with the kernels in use (attention's weighted sums of
/// value rows for the query heads that share a value head). Each output has the same bits
/// whatever `heads`.
///
/// # Panics
/// When `heads` does not divide `a` and `out`, or the rows do not fit in `v`.
pub fn weighted_sum_f32(a: &[f32], heads: usize, v: &[f32], stride: usize, out: &mut [f32]) {
    (KernelTable::get().weighted_sum_f32)(a, heads, v, stride, out)
}

/// [`dots_f32`] of f16 keys (the KV cache's), each widened exactly to f32.
pub fn dots_f16(q: &[f32], heads: usize, k: &[f16], stride: usize, out: &mut [f32]) {
    (KernelTable::get().dots_f16)(q, heads, k, stride, out)
}

/// [`weighted_sum_f32`] of f16 values (the KV cache's), each widened exactly to f32.
pub fn weighted_sum_f16(a: &[f32], heads: usize, v: &[f16], stride: usize, out: &mut [f32]) {
    (KernelTable::get().weighted_sum_f16)(a, heads, v, stride, out)
}

/// Softmax of `x` in place with the kernels in use (attention weights): `exp(x[i] − max)`
/// normalised to sum 1, the sum taken in f64. The x86 paths' exp is within 2 ulp of the C
/// library's.
pub fn softmax_f32(x: &mut [f32]) {
    (KernelTable::get().softmax_f32)(x)
}

/// SwiGLU in place with the kernels in use: `gate[i] = silu(gate[i]) · up[i]`.
///
/// # Panics
/// When the lengths differ.
pub fn swiglu_f32(gate: &mut [f32], up: &[f32]) {
    (KernelTable::get().swiglu_f32)(gate, up)
}

/// `gate[i] = gelu(gate[i]) · up[i]` in place, GELU as ggml's CPU backend computes it (its fp16
/// table), on the dispatched path; every path gives the scalar reference's bits.
///
/// # Panics
/// When the lengths differ.
pub fn geglu_f32(gate: &mut [f32], up: &[f32]) {
    (KernelTable::get().geglu_f32)(gate, up)
}

/// y[rows] = W · x with the kernels in use (see [`KernelTable::matvec`]).
pub fn matvec(w: &WeightMatrix, x: &[f32], y: &mut [f32]) {
    KernelTable::get().matvec(w, x, y)
}

/// Y[n][rows] = X[n][cols] · Wᵀ with the kernels in use (see [`KernelTable::matmul`]).
pub fn matmul(w: &WeightMatrix, x: &[f32], n: usize, y: &mut [f32]) {
    KernelTable::get().matmul(w, x, n, y)
}

/// `y[n][rows] = x[n][cols] · Wᵀ` of a matrix packed with the kernels in use (see
/// [`KernelTable::matmul_packed`]).
pub fn matmul_packed(w: &PackedMatrix, x: &[f32], n: usize, y: &mut [f32]) {
    KernelTable::get().matmul_packed(w, x, n, y)
}

/// Weight bytes one matmul task keeps hot while it runs over all tokens (fits L2).
const MATMUL_CHUNK_BYTES: usize = 128 * 1024;
/// Tokens per weight-row pass inside a matmul chunk.
const TOKEN_TILE: usize = 8;

/// Where the tiled kernels (`KernelTable::gemm`) are used: by default as the table says
/// (`GemmKernels::decode`), or forced with `FERRO_GEMM=off` (never: a dot per row and token),
/// `matmul` (prefill only) or `all` (decode too). A measurement knob: forcing a mode the table
/// does not choose may let a batched result differ in the last bits from the same one alone.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum GemmMode {
    Table,
    Off,
    Matmul,
    All,
}

fn gemm_mode() -> GemmMode {
    static MODE: std::sync::OnceLock<GemmMode> = std::sync::OnceLock::new();
    *MODE.get_or_init(|| match std::env::var("FERRO_GEMM").as_deref().map(str::trim) {
        Ok("off") => GemmMode::Off,
        Ok("matmul") => GemmMode::Matmul,
        Ok("all") => GemmMode::All,
        _ => GemmMode::Table,
    })
}

/// Rows per parallel task: enough tasks to balance the threads, few enough to amortise them.
fn matvec_chunk(rows: usize) -> usize {
    let threads = crate::team::threads().max(1);
    // A multiple of 8: the row-lane kernels take rows eight at a time, packed ones in groups.
    rows.div_ceil(threads * GROUP_ROWS).next_multiple_of(GROUP_ROWS)
}

/// `y[r] = dot(w[r], act)` for every row `r`, rows split across rayon tasks.
fn run_matvec<W: Pod + Sync, A: Sync>(
    w: &[W],
    per_row: usize,
    act: &[A],
    dot: DotFn<W, A>,
    gemm: Option<GemmFn<W, A>>,
    y: &mut [f32],
) {
    matvec_tasks(bytemuck::cast_slice(w), y, |r0, ys| {
        if let Some(gemm) = gemm {
            let ldo = ys.len();
            return gemm(&w[r0 * per_row..(r0 + ys.len()) * per_row], act, per_row, ys, ldo);
        }
        for (i, y) in ys.iter_mut().enumerate() {
            let r = r0 + i;
            *y = dot(&w[r * per_row..(r + 1) * per_row], act);
        }
    })
}

/// Splits `y` (one value per row) into rayon tasks of [`matvec_chunk`] rows: `f(r0, ys)`.
/// `weights`: the matrix's bytes, for the thread team's warming of the next product.
fn matvec_tasks(weights: &[u8], y: &mut [f32], f: impl Fn(usize, &mut [f32]) + Sync) {
    crate::team::product_starts(weights);
    let chunk = matvec_chunk(y.len());
    crate::team::for_each_chunk(y, chunk, f);
}

/// `Y[t][r] = dot(w[r], act[t])`. Rows are split into chunks whose weights fit in L2; a task
/// keeps its chunk hot while it sweeps all tokens, so each weight byte comes from memory once.
fn run_matmul<W: Pod + Sync, A: Sync>(
    w: &[W],
    per_row: usize,
    act: &[A],
    n: usize,
    dot: DotFn<W, A>,
    gemm: Option<GemmFn<W, A>>,
    y: &mut [f32],
) {
    let row_bytes = per_row * std::mem::size_of::<W>();
    matmul_tasks(y, n, row_bytes, 1, |r0, nr, out| {
        let ws = &w[r0 * per_row..(r0 + nr) * per_row];
        if let Some(gemm) = gemm {
            // All tokens at once: each kernel tiles them as its layout wants.
            return gemm(ws, act, per_row, out, nr);
        }
        for t0 in (0..n).step_by(TOKEN_TILE) {
            let t1 = (t0 + TOKEN_TILE).min(n);
            for (i, wr) in ws.chunks_exact(per_row).enumerate() {
                for t in t0..t1 {
                    out[t * nr + i] = dot(wr, &act[t * per_row..(t + 1) * per_row]);
                }
            }
        }
    })
}

/// The tasks of a matrix product of `n` tokens into `y` (`[n][rows]`): row chunks of about
/// [`MATMUL_CHUNK_BYTES`] of weights (a multiple of `align` rows), `f(r0, rows, out)` with the
/// results in a scratch `out[t][row]` (the thread's, reused), which the task then copies into
/// its columns of `y`, one run per token.
fn matmul_tasks(y: &mut [f32], n: usize, row_bytes: usize, align: usize, f: impl Fn(usize, usize, &mut [f32]) + Sync) {
    let rows = y.len() / n.max(1);
    if n == 0 || rows == 0 {
        return;
    }
    let threads = crate::team::threads().max(1);
    let chunk = (MATMUL_CHUNK_BYTES / row_bytes.max(1))
        .clamp(1, rows.div_ceil(threads).max(1))
        .next_multiple_of(align);
    // Each task's columns of every token's row of `y`: parts[c][t] = y[t][c·chunk..][..rows].
    let mut parts: Vec<Vec<&mut [f32]>> = (0..rows.div_ceil(chunk)).map(|_| Vec::with_capacity(n)).collect();
    for mut rest in y.chunks_exact_mut(rows) {
        for p in parts.iter_mut() {
            let (a, b) = rest.split_at_mut(chunk.min(rest.len()));
            p.push(a);
            rest = b;
        }
    }
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    parts.into_par_iter().enumerate().for_each(|(c, mut outs)| {
        let nr = outs[0].len();
        let mut run = |buf: &mut Vec<f32>| {
            buf.resize(nr * n, 0.0);
            let out = &mut buf[..nr * n];
            f(c * chunk, nr, out);
            for (o, src) in outs.iter_mut().zip(out.chunks_exact(nr)) {
                o.copy_from_slice(src);
            }
        };
        // A fresh buffer if this thread's is in use (a task that waits inside a product may run
        // another task of this one on the same thread).
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut buf) => run(&mut buf),
            Err(_) => run(&mut Vec::new()),
        })
    });
}

/// The product of a packed matrix with `n` tokens' activations (`y[t][r]`), task splits as the
/// unpacked products' on whole groups of rows.
fn run_packed<A: Sync>(p: &PackedMatrix, act: &[A], n: usize, f: PackedGemmFn<A>, y: &mut [f32]) {
    let nb = p.blocks_per_row();
    let gb = p.group_bytes();
    let w = p.bytes();
    let groups = |r0: usize, nr: usize| &w[r0 / GROUP_ROWS * gb..(r0 + nr).div_ceil(GROUP_ROWS) * gb];
    if n == 1 {
        // matvec_chunk is a multiple of the group size.
        return matvec_tasks(w, y, |r0, ys| f(groups(r0, ys.len()), ys.len(), nb, act, ys, ys.len()));
    }
    let row_bytes = gb / GROUP_ROWS;
    matmul_tasks(y, n, row_bytes, GROUP_ROWS, |r0, nr, out| {
        f(groups(r0, nr), nr, nb, act, out, nr)
    })
}

/// Activations of `n` rows quantized with `q`, in the calling thread's reused buffer.
fn quantize_acts<A: Pod + Send>(x: &[f32], n: usize, per_row: usize, q: fn(&[f32], &mut [A])) -> Acts<A> {
    let mut act = Acts::new(n * per_row);
    let cols = x.len() / n.max(1);
    if n == 1 {
        q(x, &mut act);
    } else {
        act.par_chunks_mut(per_row)
            .zip(x.par_chunks(cols))
            .for_each(|(a, x)| q(x, a));
    }
    act
}

thread_local! {
    /// The words of the thread's [`Acts`] between calls.
    static ACT_WORDS: std::cell::Cell<Vec<u32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// `len` activation blocks in a buffer the thread keeps from call to call: a decode step
/// rounds the input of every product, and a fresh zeroed vector each time (allocation, memset,
/// free) showed in the caller's profile between the products. The quantizers write every
/// block, so the buffer is not cleared; it goes back to the thread when dropped.
struct Acts<A> {
    words: Vec<u32>,
    len: usize,
    _blocks: std::marker::PhantomData<A>,
}

impl<A: Pod> Acts<A> {
    fn new(len: usize) -> Self {
        let mut words = ACT_WORDS.with(std::cell::Cell::take);
        let need = (len * std::mem::size_of::<A>()).div_ceil(4);
        if words.len() < need {
            words.resize(need, 0);
        }
        Acts {
            words,
            len,
            _blocks: std::marker::PhantomData,
        }
    }

    fn bytes(&self) -> usize {
        self.len * std::mem::size_of::<A>()
    }
}

impl<A: Pod> std::ops::Deref for Acts<A> {
    type Target = [A];
    fn deref(&self) -> &[A] {
        // u32 words are 4-aligned, more than any activation block needs.
        bytemuck::cast_slice(&bytemuck::cast_slice::<u32, u8>(&self.words)[..self.bytes()])
    }
}

impl<A: Pod> std::ops::DerefMut for Acts<A> {
    fn deref_mut(&mut self) -> &mut [A] {
        let bytes = self.bytes();
        bytemuck::cast_slice_mut(&mut bytemuck::cast_slice_mut::<u32, u8>(&mut self.words)[..bytes])
    }
}

impl<A> Drop for Acts<A> {
    fn drop(&mut self) {
        let words = std::mem::take(&mut self.words);
        ACT_WORDS.with(|c| c.set(words));
    }
}

macro_rules! dispatch_types {
    ($self:ident, $w:ident, $x:ident, $n:ident, $run:ident, $y:ident) => {{
        let per_row = $w.cols / ($w.ty.block_size() as usize);
        match $w.ty {
            GgmlType::F32 => $run(&blocks::<f32>($w.data), per_row, $x, $n, $self.dot_f32, None, $y),
            GgmlType::F16 => $run(&blocks::<f16>($w.data), per_row, $x, $n, $self.dot_f16, None, $y),
            GgmlType::BF16 => $run(&blocks::<bf16>($w.data), per_row, $x, $n, $self.dot_bf16, None, $y),
            GgmlType::Q4_0 => {
                let a = quantize_acts::<BlockQ8_0>($x, $n, per_row, $self.quantize_q8_0);
                $run(
                    &blocks::<BlockQ4_0>($w.data),
                    per_row,
                    &a,
                    $n,
                    $self.dot_q4_0,
                    $self.gemm.q4_0,
                    $y,
                )
            }
            GgmlType::Q4_1 => {
                let a = quantize_acts::<BlockQ8_1>($x, $n, per_row, $self.quantize_q8_1);
                $run(
                    &blocks::<BlockQ4_1>($w.data),
                    per_row,
                    &a,
                    $n,
                    $self.dot_q4_1,
                    $self.gemm.q4_1,
                    $y,
                )
            }
            GgmlType::Q5_0 => {
                let a = quantize_acts::<BlockQ8_0>($x, $n, per_row, $self.quantize_q8_0);
                $run(
                    &blocks::<BlockQ5_0>($w.data),
                    per_row,
                    &a,
                    $n,
                    $self.dot_q5_0,
                    $self.gemm.q5_0,
                    $y,
                )
            }
            GgmlType::Q5_1 => {
                let a = quantize_acts::<BlockQ8_1>($x, $n, per_row, $self.quantize_q8_1);
                $run(
                    &blocks::<BlockQ5_1>($w.data),
                    per_row,
                    &a,
                    $n,
                    $self.dot_q5_1,
                    $self.gemm.q5_1,
                    $y,
                )
            }
            GgmlType::Q8_0 => {
                let a = quantize_acts::<BlockQ8_0>($x, $n, per_row, $self.quantize_q8_0);
                $run(
                    &blocks::<BlockQ8_0>($w.data),
                    per_row,
                    &a,
                    $n,
                    $self.dot_q8_0,
                    $self.gemm.q8_0,
                    $y,
                )
            }
            GgmlType::Q2_K => {
                let a = quantize_acts::<BlockQ8K>($x, $n, per_row, $self.kquants.quantize_q8_k);
                $run(
                    &blocks::<BlockQ2K>($w.data),
                    per_row,
                    &a,
                    $n,
                    $self.kquants.dot_q2_k,
                    None,
                    $y,
                )
            }
            GgmlType::Q3_K => {
                let a = quantize_acts::<BlockQ8K>($x, $n, per_row, $self.kquants.quantize_q8_k);
                $run(
                    &blocks::<BlockQ3K>($w.data),
                    per_row,
                    &a,
                    $n,
                    $self.kquants.dot_q3_k,
                    None,
                    $y,
                )
            }
            GgmlType::Q4_K => {
                let a = quantize_acts::<BlockQ8K>($x, $n, per_row, $self.kquants.quantize_q8_k);
                $run(
                    &blocks::<BlockQ4K>($w.data),
                    per_row,
                    &a,
                    $n,
                    $self.kquants.dot_q4_k,
                    $self.gemm.q4_k,
                    $y,
                )
            }
            GgmlType::Q5_K => {
                let a = quantize_acts::<BlockQ8K>($x, $n, per_row, $self.kquants.quantize_q8_k);
                $run(
                    &blocks::<BlockQ5K>($w.data),
                    per_row,
                    &a,
                    $n,
                    $self.kquants.dot_q5_k,
                    None,
                    $y,
                )
            }
            GgmlType::Q6_K => {
                let a = quantize_acts::<BlockQ8K>($x, $n, per_row, $self.kquants.quantize_q8_k);
                $run(
                    &blocks::<BlockQ6K>($w.data),
                    per_row,
                    &a,
                    $n,
                    $self.kquants.dot_q6_k,
                    $self.gemm.q6_k,
                    $y,
                )
            }
            // WeightMatrix::new only admits supported types.
            ty => unreachable!("WeightMatrix of unsupported type {ty}"),
        }
    }};
}

fn mv<W: Pod + Sync, A: Sync>(
    w: &[W],
    per_row: usize,
    act: &[A],
    _n: usize,
    dot: DotFn<W, A>,
    gemm: Option<GemmFn<W, A>>,
    y: &mut [f32],
) {
    run_matvec(w, per_row, act, dot, gemm, y)
}

impl KernelTable {
    /// The same table with the dots only.
    fn without_tiles(&self) -> KernelTable {
        KernelTable {
            gemm: GemmKernels::NONE,
            ..*self
        }
    }

    /// y[rows] = W · x, x: [cols]. Quantizes x once (Q8_0, Q8_1 or Q8_K per the weight type; floats
    /// use x as is), then runs the rows in parallel with rayon.
    ///
    /// # Panics
    /// When `x.len() != w.cols` or `y.len() != w.rows`.
    pub fn matvec(&self, w: &WeightMatrix, x: &[f32], y: &mut [f32]) {
        assert_eq!(
            x.len(),
            w.cols,
            "matvec: x has {} elements, W has {} columns",
            x.len(),
            w.cols
        );
        assert_eq!(
            y.len(),
            w.rows,
            "matvec: y has {} elements, W has {} rows",
            y.len(),
            w.rows
        );
        let n = 1usize;
        let decode_tiles = match gemm_mode() {
            GemmMode::Table => self.gemm.decode,
            mode => mode == GemmMode::All,
        };
        let t = if decode_tiles { *self } else { self.without_tiles() };
        dispatch_types!(t, w, x, n, mv, y)
    }

    /// Y[n][rows] = X[n][cols] · Wᵀ (prefill). Each token's activations are quantized once;
    /// rows are split into L2-sized chunks swept over all tokens so weights are read once.
    ///
    /// # Panics
    /// When `x.len() != n * w.cols` or `y.len() != n * w.rows`.
    pub fn matmul(&self, w: &WeightMatrix, x: &[f32], n: usize, y: &mut [f32]) {
        assert_eq!(
            x.len(),
            n * w.cols,
            "matmul: x has {} elements, want {n} x {}",
            x.len(),
            w.cols
        );
        assert_eq!(
            y.len(),
            n * w.rows,
            "matmul: y has {} elements, want {n} x {}",
            y.len(),
            w.rows
        );
        if n == 1 {
            return self.matvec(w, x, y);
        }
        let t = if gemm_mode() == GemmMode::Off {
            self.without_tiles()
        } else {
            *self
        };
        dispatch_types!(t, w, x, n, run_matmul, y)
    }

    /// `y[n][rows] = x[n][cols] · Wᵀ` for a matrix this table packed ([`PackedMatrix::pack`]):
    /// the same bits as [`matmul`](Self::matmul) (or [`matvec`](Self::matvec) for one token) of
    /// the unpacked matrix.
    ///
    /// # Panics
    /// When the shapes do not match, or when the table has no packed kernel for the matrix's type
    /// (it did not pack it).
    pub fn matmul_packed(&self, w: &PackedMatrix, x: &[f32], n: usize, y: &mut [f32]) {
        assert_eq!(
            x.len(),
            n * w.cols,
            "matmul_packed: x has {} elements, want {n} x {}",
            x.len(),
            w.cols
        );
        assert_eq!(
            y.len(),
            n * w.rows,
            "matmul_packed: y has {} elements, want {n} x {}",
            y.len(),
            w.rows
        );
        if let Some(rows) = w.as_rows() {
            return self.matmul(&rows, x, n, y);
        }
        let per_row = w.blocks_per_row();
        let missing = || -> ! { panic!("matmul_packed: the {} table has no packed {} kernel", self.name, w.ty) };
        match w.ty {
            GgmlType::Q4_0 => {
                let f = self.gemm.packed_q4_0.unwrap_or_else(|| missing());
                let a = quantize_acts::<BlockQ8_0>(x, n, per_row, self.quantize_q8_0);
                run_packed(w, &a, n, f, y)
            }
            GgmlType::Q4_1 => {
                let f = self.gemm.packed_q4_1.unwrap_or_else(|| missing());
                let a = quantize_acts::<BlockQ8_1>(x, n, per_row, self.quantize_q8_1);
                run_packed(w, &a, n, f, y)
            }
            GgmlType::Q5_0 => {
                let f = self.gemm.packed_q5_0.unwrap_or_else(|| missing());
                let a = quantize_acts::<BlockQ8_0>(x, n, per_row, self.quantize_q8_0);
                run_packed(w, &a, n, f, y)
            }
            GgmlType::Q8_0 => {
                let f = self.gemm.packed_q8_0.unwrap_or_else(|| missing());
                let a = quantize_acts::<BlockQ8_0>(x, n, per_row, self.quantize_q8_0);
                run_packed(w, &a, n, f, y)
            }
            GgmlType::Q4_K => {
                let f = self.gemm.packed_q4_k.unwrap_or_else(|| missing());
                let a = quantize_acts::<BlockQ8K>(x, n, per_row, self.kquants.quantize_q8_k);
                run_packed(w, &a, n, f, y)
            }
            _ => missing(),
        }
    }
}
