//! One function per shader: `prep_*` binds the buffers once (the model records the result for every
//! token), and the `GpuContext` methods run one op as its own submission (tests, one-off use).

use crate::context::{
    gemm_big_min_tokens, gemm_min_tokens, gemmq_big_min_tokens, gemmq_big_tile, gemmq_double_buffer, gemmq_enabled,
    gemmq_small_tile, has_matvec, matmul_lanes, matvec_max_tokens, matvec_toks, AsBinding, Batched, Glu, GpuContext,
    GpuTensor, GpuWeight, Grid, NormMode, Op, Prepared, Prologue, Recorder, WeightChunk, GEMM_BIG_TILE, MATMUL_TILE,
    WG,
};
use crate::error::{GpuError, Result};
use ferro_gguf::GgmlType;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct MatmulParams {
    n_rows: u32,
    k: u32,
    row_bytes: u32,
    y_stride: u32,
    row0: u32,
    /// matvec.wgsl: where the scales and the sums start in the packed activations.
    d_off: u32,
    s_off: u32,
    /// 1: `y += W x`.
    accumulate: u32,
    /// Output segments (product_params.wgsl's `out_index`).
    seg1: u32,
    seg2: u32,
    base1: u32,
    base2: u32,
    /// act_fused.wgsl's prologue: the norm's eps, the rounding's block and mode, gelu by ggml's
    /// f16 table.
    eps: f32,
    block: u32,
    mode: u32,
    glu_f16: u32,
}

impl MatmulParams {
    /// The product of chunk `c` of `w` (`accumulate`: `y +=`) into product_outputs' segments
    /// `[seg1, seg2, base1, base2]`; no packed activations, no prologue.
    fn chunk(w: &GpuWeight, c: &WeightChunk, accumulate: bool, [seg1, seg2, base1, base2]: [u32; 4]) -> Self {
        MatmulParams {
            n_rows: c.n_rows,
            k: w.k,
            row_bytes: w.row_bytes,
            y_stride: w.n_rows,
            row0: c.row0,
            d_off: 0,
            s_off: 0,
            accumulate: accumulate as u32,
            seg1,
            seg2,
            base1,
            base2,
            eps: 0.0,
            block: 0,
            mode: 0,
            glu_f16: 0,
        }
    }
}

/// Activations quantized for the int8 decode product, in matvec.wgsl's layout: `max_tok` tokens
/// of `k` int8 quants (four per word), then one f32 scale per 32, then one i32 sum per 16.
#[derive(Clone, Debug)]
pub(crate) struct PackedAct {
    pub(crate) t: GpuTensor,
    k: usize,
    max_tok: usize,
    d_off: u32,
    s_off: u32,
}

impl PackedAct {
    pub(crate) fn new(ctx: &GpuContext, k: usize, max_tok: usize) -> Result<Self> {
        if !k.is_multiple_of(32) {
            return Err(GpuError::Shape(format!("{k} activations are not whole blocks of 32")));
        }
        let n = k * max_tok;
        let words = n / 4 + n / 32 + n / 16;
        let too_big = || GpuError::TooLarge {
            what: "packed activations".into(),
            bytes: words as u64 * 4,
            limit: u32::MAX as u64,
        };
        Ok(Self {
            t: ctx.zeros(words)?,
            k,
            max_tok,
            d_off: u32::try_from(n / 4).map_err(|_| too_big())?,
            s_off: u32::try_from(n / 4 + n / 32).map_err(|_| too_big())?,
        })
    }

    /// The packed quants of inputs rounded as `q`, for the roundings that have them (Q8_0, Q8K).
    pub(crate) fn for_rounding(ctx: &GpuContext, q: ActQuant, k: usize, max_tok: usize) -> Result<Option<Self>> {
        match q {
            ActQuant::Q8_0 | ActQuant::Q8K => Self::new(ctx, k, max_tok).map(Some),
            ActQuant::None | ActQuant::F16 => Ok(None),
        }
    }

    fn check(&self, k: usize, max_tok: usize) -> Result<()> {
        if self.k != k || self.max_tok < max_tok {
            return Err(GpuError::Shape(format!(
                "packed activations of {} x {} used for {max_tok} x {k}",
                self.max_tok, self.k
            )));
        }
        Ok(())
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GetRowsParams {
    k: u32,
    row_bytes: u32,
    row0: u32,
    n_rows: u32,
    scale: f32,
    _pad: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct NormParams {
    n: u32,
    rows_per_tok: u32,
    eps: f32,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct RopeUniform {
    n_heads: u32,
    head_dim: u32,
    n_rot: u32,
    neox: u32,
    base: f32,
    freq_scale: f32,
    has_factors: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct LenParams {
    n: u32,
    n_rows: u32,
    _pad: [u32; 2],
}

/// add.wgsl's parameters (out_index.wgsl's segments in mode 2).
#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct AddParams {
    y_stride: u32,
    mode: u32,
    seg1: u32,
    seg2: u32,
    base1: u32,
    base2: u32,
    b_off: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct AttnUniform {
    n_head: u32,
    n_kv_head: u32,
    head_dim: u32,
    window: u32,
    scale: f32,
    softcap: f32,
    quant: u32,
    block: u32,
    mode: u32,
    packed: u32,
    d_off: u32,
    s_off: u32,
    // attention_rope.wgsl's bias adds of q, k and v first (1).
    bias: u32,
    _pad: u32,
    // attention_rope.wgsl's rope (zeros for plain attention).
    n_rot: u32,
    neox: u32,
    base: f32,
    freq_scale: f32,
    has_factors: u32,
    round: u32,
    // attention_rope.wgsl's per-head rms norms of q and k first (1) and their eps.
    qk_norm: u32,
    eps: f32,
}

/// What a decode step's attention does first in place of rope_kv (attention_rope.wgsl): the
/// rope of q and k, and the store of k and v (unroped: `k`, `v`) into the caches.
#[derive(Clone, Copy)]
pub(crate) struct AttnRope<'a> {
    pub(crate) rope: &'a RopeParams,
    pub(crate) k: &'a GpuTensor,
    pub(crate) v: &'a GpuTensor,
    pub(crate) factors: Option<&'a GpuTensor>,
    /// Round the cached values to f16.
    pub(crate) round: bool,
    /// Per-head rms norms of q and k before the rope (gemma3's, qwen3's): their weights
    /// (head_dim each) and eps.
    pub(crate) qk_norm: Option<(&'a GpuTensor, &'a GpuTensor, f32)>,
    /// Biases added to q, k and v first (qwen2's), one after another; not with `qk_norm`.
    pub(crate) bias: Option<&'a GpuTensor>,
}

/// Rotary embedding settings of one layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RopeParams {
    pub n_heads: u32,
    pub head_dim: u32,
    /// Rotated dimensions (usually head_dim).
    pub n_rot: u32,
    /// true: pairs (i, i + n_rot/2) (neox, gemma, qwen); false: pairs (2i, 2i+1) (llama).
    pub neox: bool,
    pub base: f32,
    /// Linear position scaling (1 / rope scaling factor).
    pub freq_scale: f32,
}

/// Attention settings of one layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttnParams {
    pub n_head: u32,
    pub n_kv_head: u32,
    pub head_dim: u32,
    /// Sliding window in positions (0 = attend to the whole past).
    pub window: u32,
    /// Multiplies q.k (1/sqrt(head_dim) for most models).
    pub scale: f32,
    /// Logit soft-capping (0 = none).
    pub softcap: f32,
}

/// How llama.cpp's CPU backend rounds the activations before a product with a weight of some type
/// (quantize_act.wgsl emulates it so GPU logits follow the CPU's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActQuant {
    /// F32 weights: activations as they are.
    None,
    /// Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 weights: Q8_0/Q8_1 blocks of 32 with an f16 scale.
    Q8_0,
    /// K-quant weights: Q8_K blocks of 256 with an f32 scale.
    Q8K,
    /// F16 weights: activations rounded to f16.
    F16,
}

impl ActQuant {
    /// The rounding llama.cpp applies before a product with a `ty` weight.
    pub fn for_weight(ty: GgmlType) -> Self {
        match ty {
            GgmlType::F16 => ActQuant::F16,
            GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K | GgmlType::Q2_K | GgmlType::Q3_K => ActQuant::Q8K,
            GgmlType::F32 => ActQuant::None,
            _ => ActQuant::Q8_0,
        }
    }

    pub(crate) fn mode_block(self) -> Option<(u32, u32)> {
        match self {
            ActQuant::None => None,
            ActQuant::Q8_0 => Some((0, 32)),
            ActQuant::Q8K => Some((1, 256)),
            ActQuant::F16 => Some((2, 32)),
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct QuantParams {
    k: u32,
    block: u32,
    mode: u32,
    rows: u32,
    packed: u32,
    d_off: u32,
    s_off: u32,
    glu_f16: u32,
}

/// The gated activation a rounding dispatch applies first (`act(x) * up`, glu.wgsl's math):
/// the down projection's input made and rounded in one dispatch.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Gated<'a> {
    pub(crate) kind: Glu,
    pub(crate) up: &'a GpuTensor,
    /// gelu through ggml's f16 table (as glu.wgsl's `f16_table`).
    pub(crate) f16_table: bool,
}

/// A post-norm folded into the products after it ([`Prologue::AddNorm`]): their input is
/// h = x + rms_norm(delta) * weight, which also goes to `out` (the residual stream).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PostAdd<'a> {
    /// The block's output before its post-norm.
    pub(crate) delta: &'a GpuTensor,
    /// The post-norm's weights.
    pub(crate) weight: &'a GpuTensor,
    /// Where h goes.
    pub(crate) out: &'a GpuTensor,
}

/// Maximum head dimension attention.wgsl handles.
pub const MAX_HEAD_DIM: u32 = 512;

fn check_rope(r: &RopeParams, factors: Option<&GpuTensor>) -> Result<()> {
    if let Some(f) = factors {
        check_len("rope factors", f, r.n_rot as usize / 2)?;
    }
    if r.n_rot > r.head_dim || !r.n_rot.is_multiple_of(2) {
        return Err(GpuError::Shape(format!(
            "rope n_rot {} with head_dim {}",
            r.n_rot, r.head_dim
        )));
    }
    Ok(())
}

fn rope_uniform(r: &RopeParams, has_factors: bool) -> RopeUniform {
    RopeUniform {
        n_heads: r.n_heads,
        head_dim: r.head_dim,
        n_rot: r.n_rot,
        neox: r.neox as u32,
        base: r.base,
        freq_scale: r.freq_scale,
        has_factors: has_factors as u32,
        _pad: 0,
    }
}

fn check_len(what: &str, t: &GpuTensor, need: usize) -> Result<()> {
    if t.len() < need {
        return Err(GpuError::Shape(format!(
            "{what} holds {} values, needs {need}",
            t.len()
        )));
    }
    Ok(())
}

/// The output of a product into `ys` (see [`GpuContext::prep_matmul`]): the tensor through all
/// of them and product_params.wgsl's seg1, seg2, base1, base2.
fn product_outputs(w: &GpuWeight, ys: &[(&GpuTensor, usize)], max_tok: usize) -> Result<(GpuTensor, [u32; 4])> {
    let (seg1, seg2, base1, base2, y) = match *ys {
        [(y, rows)] => (rows, rows, Some(0), Some(0), Some(y.clone())),
        [(y0, r0), (y1, r1)] => (r0, r0 + r1, y0.elems_to(y1), Some(0), y0.through(y1)),
        [(y0, r0), (y1, r1), (y2, _)] => (r0, r0 + r1, y0.elems_to(y1), y0.elems_to(y2), y0.through(y2)),
        _ => return Err(GpuError::Shape(format!("a product into {} outputs", ys.len()))),
    };
    let (Some(y), Some(base1), Some(base2)) = (y, base1, base2) else {
        return Err(GpuError::Shape(
            "stacked product outputs are not views of one buffer".into(),
        ));
    };
    let out_rows: usize = ys.iter().map(|(_, r)| r).sum();
    if out_rows != w.n_rows() {
        return Err(GpuError::Shape(format!(
            "outputs of {out_rows} rows for a weight of {}",
            w.n_rows()
        )));
    }
    for (y, rows) in ys {
        check_len("matmul output", y, max_tok * rows)?;
    }
    Ok((y, [seg1 as u32, seg2 as u32, base1, base2]))
}

impl GpuContext {
    /// `y[t][..] = W x[t]` (`accumulate`: `+=`) for `max_tok` tokens: one prepared dispatch per
    /// weight chunk. With `packed` (x's quants from the same rounding dispatch) and a format that
    /// has one, a single token takes the int8 decode product; batches take matmul.wgsl's or
    /// gemm.wgsl's tiles on `x`. `ys` lists the outputs with their rows: one tensor of all `W`'s
    /// rows, or (W being several matrices stacked, as [`GpuContext::upload_stacked`] makes) one
    /// per matrix, each a later view of the same buffer ([`GpuTensor::view`]), at most three.
    pub(crate) fn prep_matmul(
        &self,
        w: &GpuWeight,
        x: &GpuTensor,
        packed: Option<&PackedAct>,
        ys: &[(&GpuTensor, usize)],
        accumulate: bool,
        max_tok: usize,
    ) -> Result<Vec<Prepared>> {
        check_len("matmul input", x, max_tok * w.k())?;
        let (y, segs) = product_outputs(w, ys, max_tok)?;
        let y = &y;
        let packed = packed.filter(|_| has_matvec(w.ty));
        if let Some(pa) = packed {
            pa.check(w.k(), max_tok)?;
        }
        w.chunks
            .iter()
            .map(|c| {
                let params = MatmulParams::chunk(w, c, accumulate, segs);
                let tiled = |tile: u32| {
                    self.prepare(
                        Op::Matmul { ty: w.ty, tile },
                        &params,
                        &[&c.buf, x, y],
                        Grid::Matmul { rows: c.n_rows, tile },
                    )
                };
                // The products on x's packed int8 quants (matvec.wgsl, gemmq.wgsl: one layout).
                let int8 = |op: Op, pa: &PackedAct, grid: Grid| {
                    self.prepare(
                        op,
                        &MatmulParams {
                            d_off: pa.d_off,
                            s_off: pa.s_off,
                            ..params
                        },
                        &[&c.buf, &pa.t, y, &c.buf, &pa.t],
                        grid,
                    )
                };
                let mode = self.matvec;
                let matvec = |toks: u32, pa: &PackedAct| {
                    let op = Op::MatVec {
                        ty: w.ty,
                        mode,
                        k: w.k,
                        toks,
                        pro: None,
                    };
                    let grid = Grid::MatVec {
                        rows: c.n_rows,
                        per_wg: mode.rows_per_wg(),
                    };
                    int8(op, pa, grid)
                };
                let mut p = match packed {
                    Some(pa) => matvec(1, pa)?,
                    None => tiled(1)?,
                };
                let toks = matvec_toks();
                if let Some(pa) = packed.filter(|_| max_tok > 1 && !toks.is_empty()) {
                    // Several sequences decoding together: one weight load for `t` tokens,
                    // taken by the batches past the previous variant's tokens.
                    let mut min_tokens = 2;
                    for &t in toks {
                        let b = matvec(t, pa)?;
                        p.batched.push(Batched {
                            pipeline: b.pipeline,
                            bind: b.bind,
                            rows: mode.rows_per_wg(),
                            tile: t,
                            min_tokens,
                        });
                        min_tokens = t + 1;
                    }
                } else if max_tok > 1 {
                    let b = tiled(MATMUL_TILE)?;
                    p.batched.push(Batched {
                        pipeline: b.pipeline,
                        bind: b.bind,
                        rows: WG / matmul_lanes(MATMUL_TILE),
                        tile: MATMUL_TILE,
                        min_tokens: 2,
                    });
                }
                if w.k.is_multiple_of(32) {
                    // The int8 tiles where the activations come packed (the f32 tiles on the
                    // rounded values otherwise).
                    let gemmq = packed.filter(|_| gemmq_enabled());
                    let big = match gemmq {
                        Some(_) => gemmq_big_min_tokens(),
                        None => gemm_big_min_tokens(),
                    };
                    // Past the batched int8 product's range where the weight has one.
                    let small = if packed.is_some() && !toks.is_empty() {
                        gemm_min_tokens().max(matvec_max_tokens() + 1)
                    } else {
                        gemm_min_tokens()
                    };
                    for (big_tiles, min_tokens) in [(false, small), (true, big.max(small))] {
                        if max_tok < min_tokens as usize || (big_tiles && !self.has_big_gemm_tiles(c.n_rows, w.k)) {
                            continue;
                        }
                        let (g, rows, toks) = match gemmq {
                            Some(pa) => {
                                let (rows, toks) = if big_tiles {
                                    gemmq_big_tile()
                                } else {
                                    gemmq_small_tile()
                                };
                                let db = gemmq_double_buffer(w.ty, rows, toks);
                                let op = Op::GemmQ {
                                    ty: w.ty,
                                    rows,
                                    toks,
                                    db,
                                };
                                let grid = Grid::Matmul {
                                    rows: c.n_rows,
                                    tile: rows,
                                };
                                (int8(op, pa, grid)?, rows, toks)
                            }
                            None => {
                                let tile = if big_tiles { GEMM_BIG_TILE } else { 64 };
                                let op = Op::Gemm { ty: w.ty, tile };
                                let grid = Grid::Matmul { rows: c.n_rows, tile };
                                (self.prepare(op, &params, &[&c.buf, x, y], grid)?, tile, tile)
                            }
                        };
                        p.batched.push(Batched {
                            pipeline: g.pipeline,
                            bind: g.bind,
                            rows,
                            tile: toks,
                            min_tokens,
                        });
                    }
                }
                Ok(p)
            })
            .collect()
    }

    /// `out[t][..] = scale * W[ids[t]][..]`.
    pub(crate) fn prep_get_rows(
        &self,
        w: &GpuWeight,
        ids: &GpuTensor,
        out: &GpuTensor,
        max_tok: usize,
        scale: f32,
    ) -> Result<Vec<Prepared>> {
        check_len("embedding ids", ids, max_tok)?;
        check_len("embedding output", out, max_tok * w.k())?;
        w.chunks
            .iter()
            .map(|c| {
                let params = GetRowsParams {
                    k: w.k,
                    row_bytes: w.row_bytes,
                    row0: c.row0,
                    n_rows: c.n_rows,
                    scale,
                    _pad: [0; 3],
                };
                self.prepare(Op::GetRows { ty: w.ty }, &params, &[&c.buf, ids, out], Grid::Tokens)
            })
            .collect()
    }

    /// RMS norm of `rows_per_tok` rows of length `n` per token, weight `w` of length `n`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn prep_rms_norm(
        &self,
        mode: NormMode,
        x: &GpuTensor,
        w: &GpuTensor,
        y: Option<&GpuTensor>,
        n: usize,
        rows_per_tok: usize,
        eps: f32,
        max_tok: usize,
    ) -> Result<Prepared> {
        check_len("rms_norm input", x, max_tok * rows_per_tok * n)?;
        check_len("rms_norm weight", w, n)?;
        let y_buf = match (mode, y) {
            (NormMode::AddTo, _) => {
                return Err(GpuError::Shape(
                    "rms_norm AddTo takes its residual (prep_rms_norm_add_to)".into(),
                ))
            }
            (NormMode::InPlace, _) => &self.dummy as &dyn AsBinding,
            (_, Some(y)) => {
                check_len("rms_norm output", y, max_tok * rows_per_tok * n)?;
                y
            }
            (_, None) => return Err(GpuError::Shape("rms_norm needs an output".into())),
        };
        let params = NormParams {
            n: n as u32,
            rows_per_tok: rows_per_tok as u32,
            eps,
            _pad: 0,
        };
        self.prepare(
            Op::RmsNorm(mode),
            &params,
            &[x, w, y_buf],
            Grid::Rows {
                per_tok: rows_per_tok as u32,
            },
        )
    }

    /// `y = r + rms_norm(x) * w` for rows of `n` (one per token): [`NormMode::Add`]'s sum
    /// from a residual `r` in another buffer.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn prep_rms_norm_add_to(
        &self,
        x: &GpuTensor,
        w: &GpuTensor,
        r: &GpuTensor,
        y: &GpuTensor,
        n: usize,
        eps: f32,
        max_tok: usize,
    ) -> Result<Prepared> {
        check_len("rms_norm input", x, max_tok * n)?;
        check_len("rms_norm weight", w, n)?;
        check_len("rms_norm residual", r, max_tok * n)?;
        check_len("rms_norm output", y, max_tok * n)?;
        let params = NormParams {
            n: n as u32,
            rows_per_tok: 1,
            eps,
            _pad: 0,
        };
        self.prepare(
            Op::RmsNorm(NormMode::AddTo),
            &params,
            &[x, w, y, r],
            Grid::Rows { per_tok: 1 },
        )
    }

    pub(crate) fn prep_rope(
        &self,
        x: &GpuTensor,
        r: &RopeParams,
        factors: Option<&GpuTensor>,
        max_tok: usize,
    ) -> Result<Prepared> {
        check_rope(r, factors)?;
        check_len("rope input", x, max_tok * (r.n_heads * r.head_dim) as usize)?;
        self.prepare(
            Op::Rope,
            &rope_uniform(r, factors.is_some()),
            &[
                x,
                factors.map_or(&self.dummy as &dyn AsBinding, |f| f as &dyn AsBinding),
            ],
            Grid::Threads {
                per_tok: r.n_heads * r.n_rot / 2,
            },
        )
    }

    /// `y = W f(x)` (`accumulate`: `y += ..`) for one token, by the int8 decode product that
    /// rounds its input as `q` itself (act_fused.wgsl), so one dispatch does the work of two:
    /// f(x) = rms_norm(x) * aux with `eps` ([`Prologue::Norm`], norm_quant.wgsl's bits), x
    /// ([`Prologue::Round`]), act(x) * aux ([`Prologue::Gated`]; `glu_f16` as
    /// quantize_act.wgsl's) or rms_norm(h) * aux of h = x + rms_norm(post.delta) * post.weight,
    /// h also written to `post.out` ([`Prologue::AddNorm`]). `ys` as
    /// [`GpuContext::prep_matmul`]'s. None where W has no int8 product, `q` is not an 8-bit
    /// rounding, or the row does not fit workgroup memory: the caller keeps the separate
    /// dispatches. Recorded only for batches of one token.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn prep_matvec_fused(
        &self,
        w: &GpuWeight,
        pro: Prologue,
        x: &GpuTensor,
        aux: Option<&GpuTensor>,
        post: Option<PostAdd<'_>>,
        q: ActQuant,
        eps: f32,
        glu_f16: bool,
        ys: &[(&GpuTensor, usize)],
        accumulate: bool,
    ) -> Result<Option<Vec<Prepared>>> {
        let (mode, block) = match q.mode_block() {
            Some(mb @ (0 | 1, _)) => mb,
            _ => return Ok(None),
        };
        if !has_matvec(w.ty) || !self.fits_fused_act(w.k, block, pro) {
            return Ok(None);
        }
        let k = w.k();
        check_len("product input", x, k)?;
        let post = match (pro, post) {
            (Prologue::AddNorm, Some(pa)) => {
                check_len("post-norm input", pa.delta, k)?;
                check_len("post-norm weights", pa.weight, k)?;
                check_len("residual output", pa.out, k)?;
                Some(pa)
            }
            (Prologue::AddNorm, None) => return Err(GpuError::Shape("AddNorm needs its post-norm".into())),
            _ => None,
        };
        let aux = match (pro, aux) {
            (Prologue::Round, _) => x,
            (_, Some(a)) => {
                check_len("product input weights", a, k)?;
                a
            }
            (_, None) => return Err(GpuError::Shape(format!("{pro:?} needs its second input"))),
        };
        let (y, segs) = product_outputs(w, ys, 1)?;
        let (mv, per_wg) = self.fused_matvec();
        let op = Op::MatVec {
            ty: w.ty,
            mode: mv,
            k: w.k,
            toks: 1,
            pro: Some(pro),
        };
        w.chunks
            .iter()
            .map(|c| {
                let params = MatmulParams {
                    d_off: w.k / 4,
                    s_off: w.k / 4 + w.k / 32,
                    eps,
                    block,
                    mode,
                    glu_f16: glu_f16 as u32,
                    ..MatmulParams::chunk(w, c, accumulate, segs)
                };
                let grid = Grid::MatVec { rows: c.n_rows, per_wg };
                match post {
                    Some(pa) => self.prepare(
                        op,
                        &params,
                        &[&c.buf, x, &y, &c.buf, aux, pa.delta, pa.weight, pa.out],
                        grid,
                    ),
                    None => self.prepare(op, &params, &[&c.buf, x, &y, &c.buf, aux], grid),
                }
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// `out = x` rounded as `q` (see [`ActQuant`]), and the quants into `packed` (Q8_0 and Q8_K
    /// roundings); `rows` = Some(n) processes n tokens whatever the batch size (the single-row
    /// head of the model).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn prep_quantize_act(
        &self,
        q: ActQuant,
        x: &GpuTensor,
        out: &GpuTensor,
        packed: Option<&PackedAct>,
        k: usize,
        max_tok: usize,
        rows: Option<usize>,
        gated: Option<Gated<'_>>,
    ) -> Result<Option<Prepared>> {
        let Some((mode, block)) = q.mode_block() else {
            return Ok(None);
        };
        if !k.is_multiple_of(block as usize) {
            return Err(GpuError::Shape(format!(
                "{k} activations are not whole blocks of {block}"
            )));
        }
        let n = rows.unwrap_or(max_tok);
        check_len("quantize input", x, n * k)?;
        check_len("quantize output", out, n * k)?;
        let packed = packed.filter(|_| mode != 2);
        if let Some(pa) = packed {
            pa.check(k, n)?;
        }
        let params = QuantParams {
            k: k as u32,
            block,
            mode,
            rows: rows.unwrap_or(0) as u32,
            packed: packed.is_some() as u32,
            d_off: packed.map_or(0, |pa| pa.d_off),
            s_off: packed.map_or(0, |pa| pa.s_off),
            glu_f16: gated.is_some_and(|g| g.f16_table) as u32,
        };
        // Four values per thread (quantize_act.wgsl).
        let per_tok = (k / 4) as u32;
        let grid = match rows {
            Some(r) => {
                let (gx, gy) = self.fold((r as u32 * per_tok).div_ceil(WG));
                Grid::Fixed([gx, gy, 1])
            }
            None => Grid::Threads { per_tok },
        };
        let q_buf = packed.map_or(&self.dummy as &dyn AsBinding, |pa| &pa.t as &dyn AsBinding);
        match gated {
            Some(g) => {
                check_len("glu up", g.up, n * k)?;
                self.prepare(
                    Op::QuantizeAct { glu: Some(g.kind) },
                    &params,
                    &[x, out, q_buf, g.up],
                    grid,
                )
            }
            None => self.prepare(Op::QuantizeAct { glu: None }, &params, &[x, out, q_buf], grid),
        }
        .map(Some)
    }

    /// `out = round(rms_norm(x) * w)` over rows of `n` (one per token) with llama.cpp's 8-bit
    /// activation rounding `q` (Q8_0 or Q8K), and the quants into `packed`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn prep_norm_quant(
        &self,
        x: &GpuTensor,
        w: &GpuTensor,
        out: &GpuTensor,
        packed: Option<&PackedAct>,
        n: usize,
        q: ActQuant,
        eps: f32,
        max_tok: usize,
    ) -> Result<Prepared> {
        let (mode, block) = match q.mode_block() {
            Some(mb @ (0 | 1, _)) => mb,
            _ => return Err(GpuError::Shape(format!("norm_quant takes 8-bit roundings, not {q:?}"))),
        };
        if !n.is_multiple_of(block as usize) {
            return Err(GpuError::Shape(format!(
                "{n} activations are not whole blocks of {block}"
            )));
        }
        check_len("norm input", x, max_tok * n)?;
        check_len("norm weight", w, n)?;
        check_len("norm output", out, max_tok * n)?;
        if let Some(pa) = packed {
            pa.check(n, max_tok)?;
        }
        #[repr(C)]
        #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
        struct NormQuantParams {
            n: u32,
            eps: f32,
            block: u32,
            mode: u32,
            packed: u32,
            d_off: u32,
            s_off: u32,
            _pad: u32,
        }
        let params = NormQuantParams {
            n: n as u32,
            eps,
            block,
            mode,
            packed: packed.is_some() as u32,
            d_off: packed.map_or(0, |pa| pa.d_off),
            s_off: packed.map_or(0, |pa| pa.s_off),
            _pad: 0,
        };
        let q_buf = packed.map_or(&self.dummy as &dyn AsBinding, |pa| &pa.t as &dyn AsBinding);
        self.prepare(Op::NormQuant, &params, &[x, w, out, q_buf], Grid::Rows { per_tok: 1 })
    }

    pub(crate) fn prep_glu(
        &self,
        kind: Glu,
        gate: &GpuTensor,
        up: &GpuTensor,
        n: usize,
        max_tok: usize,
        f16_table: bool,
    ) -> Result<Prepared> {
        check_len("glu gate", gate, max_tok * n)?;
        check_len("glu up", up, max_tok * n)?;
        let params = LenParams {
            n: n as u32,
            n_rows: f16_table as u32,
            _pad: [0; 2],
        };
        self.prepare(Op::Glu(kind), &params, &[gate, up], Grid::Threads { per_tok: n as u32 })
    }

    /// Rotary embedding of `q` in place, and the batch's keys (rotated with `r`'s settings for
    /// `n_kv_head` heads) and values into the caches at positions pos0.. (f16-rounded with
    /// `round`); the caches hold whole positions of `n_kv_head * head_dim` values.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn prep_rope_kv(
        &self,
        q: &GpuTensor,
        k: &GpuTensor,
        v: &GpuTensor,
        k_cache: &GpuTensor,
        v_cache: &GpuTensor,
        r: &RopeParams,
        n_kv_head: u32,
        factors: Option<&GpuTensor>,
        round: bool,
        max_tok: usize,
    ) -> Result<Prepared> {
        check_rope(r, factors)?;
        let kv = (n_kv_head * r.head_dim) as usize;
        check_len("rope q", q, max_tok * (r.n_heads * r.head_dim) as usize)?;
        check_len("kv store keys", k, max_tok * kv)?;
        check_len("kv store values", v, max_tok * kv)?;
        if !r.head_dim.is_multiple_of(2) || k_cache.len() != v_cache.len() || !k_cache.len().is_multiple_of(kv.max(1)) {
            return Err(GpuError::Shape(format!(
                "kv caches of {} and {} values for {kv} per position (head_dim {})",
                k_cache.len(),
                v_cache.len(),
                r.head_dim
            )));
        }
        #[repr(C)]
        #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
        struct RopeKvUniform {
            rope: RopeUniform,
            n_kv_heads: u32,
            round: u32,
            _pad: [u32; 2],
        }
        let params = RopeKvUniform {
            rope: rope_uniform(r, factors.is_some()),
            n_kv_heads: n_kv_head,
            round: round as u32,
            _pad: [0; 2],
        };
        self.prepare(
            Op::RopeKv,
            &params,
            &[
                q,
                factors.map_or(&self.dummy as &dyn AsBinding, |f| f as &dyn AsBinding),
                k,
                v,
                k_cache,
                v_cache,
            ],
            Grid::Threads {
                per_tok: r.n_heads * r.n_rot / 2 + n_kv_head * r.head_dim,
            },
        )
    }

    pub(crate) fn prep_add(&self, a: &GpuTensor, b: &GpuTensor, n: usize, max_tok: usize) -> Result<Prepared> {
        check_len("add a", a, max_tok * n)?;
        check_len("add b", b, max_tok * n)?;
        let params = AddParams {
            y_stride: n as u32,
            ..AddParams::default()
        };
        self.prepare(Op::Add, &params, &[a, b], Grid::Threads { per_tok: n as u32 })
    }

    /// `y[t][..] += bias` for every token of each (y, rows) of `ys` (qwen2's q, k and v
    /// biases), `bias` holding their rows one after another: one dispatch where the outputs are
    /// views of one buffer (as a stacked product's), else one per output.
    pub(crate) fn prep_bias(
        &self,
        ys: &[(&GpuTensor, usize)],
        bias: &GpuTensor,
        max_tok: usize,
    ) -> Result<Vec<Prepared>> {
        let n: usize = ys.iter().map(|(_, r)| r).sum();
        if bias.len() != n {
            return Err(GpuError::Shape(format!("{} bias values for {n} rows", bias.len())));
        }
        for (y, rows) in ys {
            check_len("bias input", y, max_tok * rows)?;
        }
        let stacked = match *ys {
            [(y0, r0), (y1, r1), (y2, _)] => {
                y0.elems_to(y1)
                    .zip(y0.elems_to(y2))
                    .zip(y0.through(y2))
                    .map(|((base1, base2), all)| {
                        let params = AddParams {
                            y_stride: n as u32,
                            mode: 2,
                            seg1: r0 as u32,
                            seg2: (r0 + r1) as u32,
                            base1,
                            base2,
                            ..AddParams::default()
                        };
                        (params, all)
                    })
            }
            _ => None,
        };
        if let Some((params, all)) = stacked {
            return Ok(vec![self.prepare(
                Op::Add,
                &params,
                &[&all, bias],
                Grid::Threads { per_tok: n as u32 },
            )?]);
        }
        let mut start = 0;
        let mut out = Vec::new();
        for (y, rows) in ys {
            let params = AddParams {
                y_stride: *rows as u32,
                mode: 1,
                b_off: start as u32,
                ..AddParams::default()
            };
            out.push(self.prepare(Op::Add, &params, &[*y, bias], Grid::Threads { per_tok: *rows as u32 })?);
            start += rows;
        }
        Ok(out)
    }

    pub(crate) fn prep_softmax(&self, x: &GpuTensor, n: usize, rows: usize) -> Result<Prepared> {
        check_len("softmax input", x, n * rows)?;
        let params = LenParams {
            n: n as u32,
            n_rows: rows as u32,
            _pad: [0; 2],
        };
        let (gx, gy) = self.fold(rows as u32);
        self.prepare(Op::Softmax, &params, &[x], Grid::Fixed([gx, gy, 1]))
    }

    /// Attention of `max_tok` queries over a KV cache of `n_ctx` positions. With `rounded`, the
    /// output is written rounded as that activation rounding (and packed into its quants when
    /// given); an error where [`GpuContext::attention_rounds`] says it cannot be.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn prep_attention(
        &self,
        q: &GpuTensor,
        k_cache: &GpuTensor,
        v_cache: &GpuTensor,
        out: &GpuTensor,
        a: &AttnParams,
        max_tok: usize,
        n_ctx: usize,
        rounded: Option<(ActQuant, Option<&PackedAct>)>,
        rope: Option<AttnRope<'_>>,
    ) -> Result<Prepared> {
        if a.head_dim > MAX_HEAD_DIM || a.head_dim > WG * 8 || !a.head_dim.is_multiple_of(4) {
            return Err(GpuError::Shape(format!(
                "head_dim {}: the attention shader takes multiples of 4 up to {MAX_HEAD_DIM}",
                a.head_dim
            )));
        }
        if a.n_kv_head == 0 || !a.n_head.is_multiple_of(a.n_kv_head) {
            return Err(GpuError::Shape(format!(
                "{} heads cannot share {} kv heads",
                a.n_head, a.n_kv_head
            )));
        }
        let q_len = max_tok * (a.n_head * a.head_dim) as usize;
        let kv_len = n_ctx * (a.n_kv_head * a.head_dim) as usize;
        check_len("attention q", q, q_len)?;
        check_len("attention out", out, q_len)?;
        check_len("k cache", k_cache, kv_len)?;
        check_len("v cache", v_cache, kv_len)?;
        if let Some((q, _)) = rounded.filter(|&(q, _)| !self.attention_rounds(q, a.head_dim)) {
            return Err(GpuError::Shape(format!(
                "attention cannot round its output as {q:?} with head_dim {}",
                a.head_dim
            )));
        }
        let packed = rounded.and_then(|(_, pa)| pa);
        if let Some(pa) = packed {
            pa.check((a.n_head * a.head_dim) as usize, max_tok)?;
        }
        let (mode, block) = rounded.and_then(|(q, _)| q.mode_block()).unwrap_or((0, 32));
        let params = AttnUniform {
            n_head: a.n_head,
            n_kv_head: a.n_kv_head,
            head_dim: a.head_dim,
            window: a.window,
            scale: a.scale,
            softcap: a.softcap,
            quant: rounded.is_some() as u32,
            block,
            mode,
            packed: packed.is_some() as u32,
            d_off: packed.map_or(0, |pa| pa.d_off),
            s_off: packed.map_or(0, |pa| pa.s_off),
            bias: 0,
            _pad: 0,
            n_rot: 0,
            neox: 0,
            base: 0.0,
            freq_scale: 0.0,
            has_factors: 0,
            round: 0,
            qk_norm: 0,
            eps: 0.0,
        };
        let q_buf = packed.map_or(&self.dummy as &dyn AsBinding, |pa| &pa.t as &dyn AsBinding);
        let grid = Grid::Attention { n_head: a.n_head };
        let Some(r) = rope else {
            let op = self.attention_op(a.head_dim, false);
            return self.prepare(op, &params, &[q, k_cache, v_cache, out, q_buf], grid);
        };
        check_rope(r.rope, r.factors)?;
        let kv = (a.n_kv_head * a.head_dim) as usize;
        check_len("attention keys", r.k, max_tok * kv)?;
        check_len("attention values", r.v, max_tok * kv)?;
        if r.rope.head_dim != a.head_dim || r.rope.n_heads != a.n_head {
            return Err(GpuError::Shape(format!(
                "rope of {} heads of {} for attention of {} heads of {}",
                r.rope.n_heads, r.rope.head_dim, a.n_head, a.head_dim
            )));
        }
        let ru = rope_uniform(r.rope, r.factors.is_some());
        let params = AttnUniform {
            n_rot: ru.n_rot,
            neox: ru.neox,
            base: ru.base,
            freq_scale: ru.freq_scale,
            has_factors: ru.has_factors,
            round: r.round as u32,
            qk_norm: r.qk_norm.is_some() as u32,
            eps: r.qk_norm.map_or(0.0, |(_, _, eps)| eps),
            bias: r.bias.is_some() as u32,
            ..params
        };
        if (r.qk_norm.is_some() || r.bias.is_some()) && !self.attention_norms_heads() {
            return Err(GpuError::Shape(
                "the adapter cannot bind attention's head norms or biases".into(),
            ));
        }
        if let Some((qn, kn, _)) = r.qk_norm {
            check_len("attention q norm", qn, a.head_dim as usize)?;
            check_len("attention k norm", kn, a.head_dim as usize)?;
        }
        if let Some(b) = r.bias {
            if r.qk_norm.is_some() {
                return Err(GpuError::Shape("attention takes head norms or biases, not both".into()));
            }
            check_len("attention biases", b, (a.n_head * a.head_dim) as usize + 2 * kv)?;
        }
        // Without factors or norms, any read-only buffer (the dummy may be bound read-write as
        // outq).
        let factors = r.factors.unwrap_or(r.k);
        let (qn, kn) = match (r.qk_norm, r.bias) {
            (Some((qn, kn, _)), _) => (qn, kn),
            (None, Some(b)) => (b, r.k),
            (None, None) => (r.k, r.k),
        };
        self.prepare(
            self.attention_op(a.head_dim, true),
            &params,
            &[
                q,
                k_cache,
                v_cache,
                out,
                q_buf,
                r.k,
                r.v,
                factors as &dyn AsBinding,
                qn,
                kn,
            ],
            grid,
        )
    }

    /// Whether a decode step's attention can norm its heads of q and k itself (ten storage
    /// buffers a shader).
    pub(crate) fn attention_norms_heads(&self) -> bool {
        self.limits.max_storage_buffers_per_shader_stage >= 10
    }

    /// Whether attention can write its output rounded as `q`: blocks inside a head (Q8_0's 32,
    /// or the K-quants' 256 where heads are multiples of 256), each head's dimensions held one
    /// group of four per thread.
    pub(crate) fn attention_rounds(&self, q: ActQuant, head_dim: u32) -> bool {
        match q.mode_block() {
            Some((0 | 1, block)) => head_dim.is_multiple_of(block) && head_dim / 4 <= self.attention_threads(head_dim),
            _ => false,
        }
    }

    fn run(&self, n_tok: usize, pos0: usize, ops: &[Prepared]) -> Result<()> {
        let mut rec = Recorder::run(n_tok, pos0, 0);
        for p in ops {
            rec.record(self, p);
        }
        let step = self.step_state();
        rec.submit(self, &step)
    }

    // ------------------------------------------------- one op per submission

    /// `y[t][r] = sum_k W[r][k] x[t][k]` for `n_tok` tokens; `x` is [n_tok][k], `y` [n_tok][n_rows].
    pub fn matmul(&self, w: &GpuWeight, x: &GpuTensor, y: &GpuTensor, n_tok: usize) -> Result<()> {
        let ops = self.prep_matmul(w, x, None, &[(y, w.n_rows())], false, n_tok)?;
        self.run(n_tok, 0, &ops)
    }

    /// The decode path of a model: `x` ([n_tok][k]) rounded as llama.cpp's CPU rounds it for
    /// this weight type, then `y = W x` per token with the int8 product (matmul.wgsl for formats
    /// without one); `x_rounded` receives the rounded activations. `batched`: the product a
    /// batch of `n_tok` tokens takes in a model (from 2 tokens the batched int8 product, one
    /// weight load for several tokens, and past its range the gemm tiles); otherwise the
    /// one-token product once per token.
    pub fn matvec_quantized(
        &self,
        w: &GpuWeight,
        x: &GpuTensor,
        x_rounded: &GpuTensor,
        y: &GpuTensor,
        n_tok: usize,
        batched: bool,
    ) -> Result<()> {
        let (mut ops, products) = self.prep_matvec_quantized(w, x, x_rounded, &[y], n_tok, batched)?;
        ops.extend(products);
        self.run(n_tok, 0, &ops)
    }

    /// The ops of [`matvec_quantized`](Self::matvec_quantized) into each of `ys`: the
    /// rounding of `x` (none where the weight takes f32), then one product per `y`.
    fn prep_matvec_quantized(
        &self,
        w: &GpuWeight,
        x: &GpuTensor,
        x_rounded: &GpuTensor,
        ys: &[&GpuTensor],
        n_tok: usize,
        batched: bool,
    ) -> Result<(Vec<Prepared>, Vec<Prepared>)> {
        let q = ActQuant::for_weight(w.ty);
        let packed = PackedAct::for_rounding(self, q, w.k(), n_tok)?;
        let quant: Vec<Prepared> = self
            .prep_quantize_act(q, x, x_rounded, packed.as_ref(), w.k(), n_tok, None, None)?
            .into_iter()
            .collect();
        let src = if quant.is_empty() { x } else { x_rounded };
        let mut products = Vec::new();
        for y in ys {
            for mut p in self.prep_matmul(w, src, packed.as_ref(), &[(*y, w.n_rows())], false, n_tok)? {
                if !batched {
                    p.batched.clear();
                }
                products.push(p);
            }
        }
        Ok((quant, products))
    }

    /// Wall time per product of `reps` rounds of the one-token decode product `y = W x` into
    /// each of `ys` in turn, recorded as one batch after one warm-up round (`x` rounded once
    /// first, into `x_rounded`), and the part of it until the last piece was encoded and
    /// submitted (the CPU's share: when it is close to the whole, the GPU waited for the CPU).
    /// With one `y` every product waits for the one before (as in a model); with several,
    /// consecutive products are independent. For measurement (`examples/mvbench.rs`).
    #[doc(hidden)]
    pub fn time_matvec(
        &self,
        w: &GpuWeight,
        x: &GpuTensor,
        x_rounded: &GpuTensor,
        ys: &[&GpuTensor],
        reps: usize,
    ) -> Result<(std::time::Duration, std::time::Duration)> {
        let (quant, products) = self.prep_matvec_quantized(w, x, x_rounded, ys, 1, false)?;
        let round = |reps: usize| -> Result<(std::time::Duration, std::time::Duration)> {
            let t = std::time::Instant::now();
            let mut ops: Vec<&Prepared> = quant.iter().collect();
            for _ in 0..reps {
                ops.extend(products.iter());
            }
            let mut rec = Recorder::run(1, 0, 0);
            for p in ops {
                rec.record(self, p);
            }
            rec.submit(self, &self.step_state())?;
            let submitted = t.elapsed();
            self.wait()?;
            Ok((t.elapsed(), submitted))
        };
        round(1)?;
        let (all, submitted) = round(reps)?;
        let n = (reps * ys.len()).max(1) as u32;
        Ok((all / n, submitted / n))
    }

    /// Embedding lookup: `out[t] = scale * W[ids[t]]`, dequantized from the weight's blocks.
    pub fn get_rows(&self, w: &GpuWeight, ids: &GpuTensor, out: &GpuTensor, n_tok: usize, scale: f32) -> Result<()> {
        let ops = self.prep_get_rows(w, ids, out, n_tok, scale)?;
        self.run(n_tok, 0, &ops)
    }

    /// RMS norm of `rows` rows of length `n`: `y = x / rms(x) * w` (or in place / added to y).
    #[allow(clippy::too_many_arguments)]
    pub fn rms_norm(
        &self,
        mode: NormMode,
        x: &GpuTensor,
        w: &GpuTensor,
        y: Option<&GpuTensor>,
        n: usize,
        rows: usize,
        eps: f32,
    ) -> Result<()> {
        let op = self.prep_rms_norm(mode, x, w, y, n, rows, eps, 1)?;
        self.run(1, 0, &[op])
    }

    /// Rotary embedding in place on x [n_tok][n_heads][head_dim], token t at position pos0 + t;
    /// `factors` [n_rot / 2] divide the angles (llama 3's `rope_freqs.weight`).
    pub fn rope(
        &self,
        x: &GpuTensor,
        r: &RopeParams,
        factors: Option<&GpuTensor>,
        n_tok: usize,
        pos0: usize,
    ) -> Result<()> {
        let op = self.prep_rope(x, r, factors, n_tok)?;
        self.run(n_tok, pos0, &[op])
    }

    /// Rotary embedding of `q` ([n_tok][r.n_heads][head_dim]) in place, and the keys (rotated)
    /// and values ([n_tok][n_kv_head][head_dim]) into the caches at positions pos0..
    /// (f16-rounded with `round`), as a model's layer does between its products and attention.
    #[allow(clippy::too_many_arguments)]
    pub fn rope_kv(
        &self,
        q: &GpuTensor,
        k: &GpuTensor,
        v: &GpuTensor,
        k_cache: &GpuTensor,
        v_cache: &GpuTensor,
        r: &RopeParams,
        n_kv_head: u32,
        round: bool,
        n_tok: usize,
        pos0: usize,
    ) -> Result<()> {
        let per_pos = (n_kv_head * r.head_dim) as usize;
        if (pos0 + n_tok) * per_pos > k_cache.len() {
            return Err(GpuError::Shape(format!(
                "positions up to {} in a cache of {} values",
                pos0 + n_tok,
                k_cache.len()
            )));
        }
        let op = self.prep_rope_kv(q, k, v, k_cache, v_cache, r, n_kv_head, None, round, n_tok)?;
        self.run(n_tok, pos0, &[op])
    }

    /// Softmax in place over `rows` rows of length `n`.
    pub fn softmax(&self, x: &GpuTensor, n: usize, rows: usize) -> Result<()> {
        let op = self.prep_softmax(x, n, rows)?;
        self.run(1, 0, &[op])
    }

    /// `gate = act(gate) * up` over n_tok * n values.
    pub fn glu(&self, kind: Glu, gate: &GpuTensor, up: &GpuTensor, n: usize, n_tok: usize) -> Result<()> {
        let op = self.prep_glu(kind, gate, up, n, n_tok, false)?;
        self.run(n_tok, 0, &[op])
    }

    /// `out = x` ([n_tok][k]) rounded as llama.cpp's CPU rounds activations for `q`.
    pub fn quantize_act(&self, q: ActQuant, x: &GpuTensor, out: &GpuTensor, k: usize, n_tok: usize) -> Result<()> {
        match self.prep_quantize_act(q, x, out, None, k, n_tok, None, None)? {
            Some(op) => self.run(n_tok, 0, &[op]),
            None => Err(GpuError::Shape("no rounding for F32 weights".into())),
        }
    }

    /// `out = act(gate) * up` ([n_tok][k]) rounded as [`GpuContext::quantize_act`] rounds, in
    /// one dispatch (the input of a down projection); `gate` is left as it was.
    #[allow(clippy::too_many_arguments)]
    pub fn glu_quantize(
        &self,
        kind: Glu,
        gate: &GpuTensor,
        up: &GpuTensor,
        q: ActQuant,
        out: &GpuTensor,
        k: usize,
        n_tok: usize,
    ) -> Result<()> {
        let gated = Gated {
            kind,
            up,
            f16_table: false,
        };
        match self.prep_quantize_act(q, gate, out, None, k, n_tok, None, Some(gated))? {
            Some(op) => self.run(n_tok, 0, &[op]),
            None => Err(GpuError::Shape("no rounding for F32 weights".into())),
        }
    }

    /// `a += b` over n_tok * n values.
    pub fn add(&self, a: &GpuTensor, b: &GpuTensor, n: usize, n_tok: usize) -> Result<()> {
        let op = self.prep_add(a, b, n, n_tok)?;
        self.run(n_tok, 0, &[op])
    }

    /// Causal attention of q [n_tok][n_head][head_dim] (token t at position pos0 + t) over the
    /// caches [n_ctx][n_kv_head][head_dim], which must already hold positions 0..pos0 + n_tok.
    #[allow(clippy::too_many_arguments)]
    pub fn attention(
        &self,
        q: &GpuTensor,
        k_cache: &GpuTensor,
        v_cache: &GpuTensor,
        out: &GpuTensor,
        a: &AttnParams,
        n_tok: usize,
        pos0: usize,
    ) -> Result<()> {
        let per_pos = (a.n_kv_head * a.head_dim) as usize;
        let n_ctx = k_cache.len().checked_div(per_pos).unwrap_or(0);
        if pos0 + n_tok > n_ctx {
            return Err(GpuError::Shape(format!(
                "positions up to {} in a cache of {n_ctx}",
                pos0 + n_tok
            )));
        }
        let op = self.prep_attention(q, k_cache, v_cache, out, a, n_tok, n_ctx, None, None)?;
        self.run(n_tok, pos0, &[op])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// qwen2's bias adds: q, k and v as views of one buffer (one dispatch, out_index.wgsl's
    /// segments) and as buffers of their own (one dispatch each, the bias read from its
    /// offset), for every token of a batch.
    #[test]
    fn bias_adds_reach_every_output() {
        let ctx = match GpuContext::new() {
            Ok(c) => c,
            Err(e) if std::env::var("FERRO_SKIP_GPU_TESTS").as_deref() == Ok("1") => {
                eprintln!("skipping GPU test: {e}");
                return;
            }
            Err(e) => panic!("{e} (set FERRO_SKIP_GPU_TESTS=1 to skip GPU tests)"),
        };
        // Outputs of 64-float multiples, so the views fall on binding-offset boundaries.
        let (rows, n_tok) = ([64usize, 32, 32], 2);
        let n: usize = rows.iter().sum();
        let bias: Vec<f32> = (0..n).map(|i| 100.0 * (i + 1) as f32).collect();
        let b = ctx.upload_f32(&bias).unwrap();
        let lens: Vec<usize> = rows.iter().map(|r| r * n_tok).collect();
        let stacked = ctx.zeros_stacked(&lens).unwrap();
        let separate: Vec<GpuTensor> = lens.iter().map(|&l| ctx.zeros(l).unwrap()).collect();
        for (ys, dispatches) in [(&stacked, 1), (&separate, 3)] {
            let outs: Vec<(&GpuTensor, usize)> = ys.iter().zip(rows).collect();
            for (i, (y, _)) in outs.iter().enumerate() {
                let init: Vec<f32> = (0..y.len()).map(|j| (10 * i + j) as f32).collect();
                ctx.write_f32(y, 0, &init).unwrap();
            }
            let ops = ctx.prep_bias(&outs, &b, n_tok).unwrap();
            assert_eq!(ops.len(), dispatches);
            ctx.run(n_tok, 0, &ops).unwrap();
            let mut start = 0;
            for (i, (y, r)) in outs.iter().enumerate() {
                let got = ctx.read_f32(y).unwrap();
                for (j, v) in got.iter().enumerate() {
                    let want = (10 * i + j) as f32 + bias[start + j % r];
                    assert_eq!(*v, want, "output {i} element {j} ({dispatches} dispatches)");
                }
                start += r;
            }
        }
        assert!(ctx.prep_bias(&[(&stacked[0], 64)], &b, n_tok).is_err(), "bias length");
    }
}
