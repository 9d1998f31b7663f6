//! AVX2 products of the 32-element formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) and of Q4_K (its own
//! section below) with one weight row per f32 lane: eight rows side by side, so the block scale
//! products, the int→float conversion and the FMA are paid once per eight (row, token) pairs
//! instead of once per pair.
//!
//! The arithmetic, the same in the dot, the decode tiles and the prefill tiles (so a result has
//! the same bits alone and in a batch):
//! - per block, the exact integer `i = Σ u·q − c`, where `u` are the weight quants as unsigned
//!   bytes (the nibble, plus the fifth bit for Q5), `q` the activation's quants and `c = o·Σq`
//!   with the format's offset `o` (8 for Q4_0, 16 for Q5_0, none for the formats with a min);
//!   for Q8_0's signed quants `i = Σ |w|·(q with the sign of w)` (`vpabsb`, `vpsignb`);
//! - `acc = fma(d_w·d_a, i as f32, acc)` over the blocks in order, and for the formats with a
//!   min `summ = fma(m_w, s_a, summ)`; the result is `acc + summ`.
//!
//! `vpmaddubsw` cannot saturate: `u ≤ 31`, `|q| ≤ 127` (the activation quantizers never give
//! -128), so a pair is at most 7874 in magnitude; sums of four such (5-bit) or eight with
//! `u ≤ 15` (4-bit, 3810 each) stay below 32767, which is what the prefill tiles add up in i16.
//! Q8_0: `|w| ≤ 128` (a weight of -128 becomes the unsigned byte 128), so a pair reaches
//! 2·128·127 = 32512 and every `vpmaddubsw` result is widened to i32 (`vpmaddwd`) before it is
//! added to anything.
//!
//! Decode (one token): eight rows' `vpmaddubsw` results are reduced by a `vphaddw` tree (then
//! one widening `vpmaddwd` per four rows) into one vector of eight row sums; Q8_0 widens each
//! row first and reduces with `vphaddd`. Prefill: the eight rows' unpacked quants are first laid
//! out once per call so that each 32-byte vector holds four bytes of every row (a transposed
//! copy in cache, 32 bytes per row and block), then every token costs one broadcast and one
//! `vpmaddubsw` per four elements of eight rows (Q8_0: plus one `vpsignb` and the widening
//! `vpmaddwd`).

// Tile code indexes several arrays by the same row / token / block number.
#![allow(clippy::needless_range_loop)]

use super::avx2::{bytes_from_bits, fp16, hsum_epi32, load_q8};
use super::avx2_kquants::{h2f, prefetch_next_row};
use crate::quants::q4_k::{unpack_scales_mins, BlockQ4K};
use crate::quants::q8_k::BlockQ8K;
use crate::quants::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1};
use core::arch::x86_64::*;

/// Rows per lane group.
pub(super) const L: usize = 8;
/// Tokens per prefill tile.
const T: usize = 4;
/// From this many tokens on, the prefill tiles (transposed copy) beat one decode pass per token.
pub(super) const PREFILL_MIN_TOKENS: usize = 6;

/// The weight formats: unsigned quants with an offset or a min, or signed quants (Q8_0); scale
/// (and min) in the first four bytes as fp16.
pub(crate) trait Format: bytemuck::Pod {
    type Act: Activation;
    /// Subtracted from every unsigned quant (0 for the formats with a min and the signed ones).
    const OFFSET: i32;
    const HAS_MIN: bool;
    /// Signed quants: `vpmaddubsw` gets their magnitude and the activation with their sign
    /// (see [`maddubs`]).
    const SIGNED: bool;
    /// How many `vpmaddubsw` results of a row the prefill tiles add in i16 before widening
    /// (a divisor of 8, see the module docs): 8 for 4-bit quants, 4 for 5-bit, 1 for 8-bit.
    const I16_TERMS: usize;
    /// The 32 quants in element order: unsigned bytes, or i8 for the signed formats.
    unsafe fn quants(&self) -> __m256i;
    /// The first four bytes: fp16 scale, then fp16 min (formats with a min) or anything.
    fn head(&self) -> u32 {
        let b = bytemuck::bytes_of(self);
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
}

/// The 8-bit activation blocks.
pub(crate) trait Activation: bytemuck::Pod {
    fn d(&self) -> f32;
    /// `d·Σq` as stored (Q8_1), 0 for Q8_0.
    fn s(&self) -> f32;
    fn qs(&self) -> &[i8; 32];
    /// The f16 bits of `d` and of `s` (+0 for Q8_0), for F16C's exact widening inline.
    fn head_bits(&self) -> (u16, u16);
}

impl Activation for BlockQ8_0 {
    fn head_bits(&self) -> (u16, u16) {
        (self.d.to_bits(), 0)
    }
    fn d(&self) -> f32 {
        self.d.to_f32()
    }
    fn s(&self) -> f32 {
        0.0
    }
    fn qs(&self) -> &[i8; 32] {
        &self.qs
    }
}

impl Activation for BlockQ8_1 {
    fn head_bits(&self) -> (u16, u16) {
        (self.d.to_bits(), self.s.to_bits())
    }
    fn d(&self) -> f32 {
        self.d.to_f32()
    }
    fn s(&self) -> f32 {
        self.s.to_f32()
    }
    fn qs(&self) -> &[i8; 32] {
        &self.qs
    }
}

/// 16 packed bytes -> 32 nibbles (low nibbles first, element order): one broadcast load, one
/// variable shift (0 for the low half, 4 for the high), one mask.
#[inline(always)]
pub(super) unsafe fn unpack_nibbles(qs: &[u8; 16]) -> __m256i {
    let v = _mm256_broadcastsi128_si256(_mm_loadu_si128(qs.as_ptr() as *const __m128i));
    let v = _mm256_srlv_epi64(v, _mm256_setr_epi64x(0, 0, 4, 4));
    _mm256_and_si256(v, _mm256_set1_epi8(0x0F))
}

/// The fifth bits as 0x10 bytes.
#[inline(always)]
pub(super) unsafe fn fifth_bits(qh: [u8; 4]) -> __m256i {
    _mm256_and_si256(bytes_from_bits(u32::from_le_bytes(qh)), _mm256_set1_epi8(0x10))
}

impl Format for BlockQ4_0 {
    type Act = BlockQ8_0;
    const OFFSET: i32 = 8;
    const HAS_MIN: bool = false;
    const SIGNED: bool = false;
    const I16_TERMS: usize = 8;
    #[inline(always)]
    unsafe fn quants(&self) -> __m256i {
        unpack_nibbles(&self.qs)
    }
}

impl Format for BlockQ4_1 {
    type Act = BlockQ8_1;
    const OFFSET: i32 = 0;
    const HAS_MIN: bool = true;
    const SIGNED: bool = false;
    const I16_TERMS: usize = 8;
    #[inline(always)]
    unsafe fn quants(&self) -> __m256i {
        unpack_nibbles(&self.qs)
    }
}

impl Format for BlockQ5_0 {
    type Act = BlockQ8_0;
    const OFFSET: i32 = 16;
    const HAS_MIN: bool = false;
    const SIGNED: bool = false;
    const I16_TERMS: usize = 4;
    #[inline(always)]
    unsafe fn quants(&self) -> __m256i {
        _mm256_or_si256(unpack_nibbles(&self.qs), fifth_bits(self.qh))
    }
}

impl Format for BlockQ5_1 {
    type Act = BlockQ8_1;
    const OFFSET: i32 = 0;
    const HAS_MIN: bool = true;
    const SIGNED: bool = false;
    const I16_TERMS: usize = 4;
    #[inline(always)]
    unsafe fn quants(&self) -> __m256i {
        _mm256_or_si256(unpack_nibbles(&self.qs), fifth_bits(self.qh))
    }
}

impl Format for BlockQ8_0 {
    type Act = BlockQ8_0;
    const OFFSET: i32 = 0;
    const HAS_MIN: bool = false;
    const SIGNED: bool = true;
    const I16_TERMS: usize = 1;
    #[inline(always)]
    unsafe fn quants(&self) -> __m256i {
        load_q8(&self.qs)
    }
}

/// `vpmaddubsw` of weight quants `w` (as `Format::quants` gives them) and activation quants `q`:
/// sixteen i16 sums of two products. Signed weights: `|w|` as the unsigned operand (128 for
/// -128) and `q` with the sign of `w` (0 where `w` is 0; `|q| ≤ 127`, so negating cannot wrap).
#[inline(always)]
unsafe fn maddubs<F: Format>(w: __m256i, q: __m256i) -> __m256i {
    if F::SIGNED {
        _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(q, w))
    } else {
        _mm256_maddubs_epi16(w, q)
    }
}

/// Per activation block, as the products need them: scale, stored `s`, and the offset
/// correction negated, `-o·Σq` (added: an add of a broadcast folds into one instruction, a
/// subtraction did not).
#[derive(Default)]
pub(super) struct ActInfo {
    pub(super) d: Vec<f32>,
    pub(super) s: Vec<f32>,
    pub(super) nc: Vec<i32>,
}

#[inline(always)]
pub(super) unsafe fn act_info<F: Format>(a: &[F::Act]) -> ActInfo {
    let mut info = ActInfo::default();
    act_info_into::<F>(a, &mut info);
    info
}

/// [`act_info`] into `info`'s vectors, reusing their memory (decode keeps one per thread:
/// three allocations per task were ~2% of SmolLM2's decode).
#[inline(always)]
pub(super) unsafe fn act_info_into<F: Format>(a: &[F::Act], info: &mut ActInfo) {
    // A plain loop: a closure would not inherit the caller's target features. (The scales
    // widened here with F16C, inline: half's `to_f32` is a call per block, and prefill runs
    // this once per task over every token's blocks.)
    // Sized once and written in place: a `push` may call the allocator, which made the
    // compiler spill the vectors around every block (this ran at a quarter of the product's
    // speed per block, 10% of SmolLM2's decode products).
    let n = a.len();
    for v in [&mut info.d, &mut info.s] {
        v.clear();
        v.resize(n, 0.0);
    }
    info.nc.clear();
    info.nc.resize(n, 0);
    let out = info.d.iter_mut().zip(info.s.iter_mut()).zip(info.nc.iter_mut());
    for (b, ((d, s), nc)) in a.iter().zip(out) {
        let (bd, bs) = b.head_bits();
        let both = _mm_cvtph_ps(_mm_cvtsi32_si128((bd as u32 | (bs as u32) << 16) as i32));
        *d = _mm_cvtss_f32(both);
        *s = _mm_cvtss_f32(_mm_movehdup_ps(both));
        *nc = -correction::<F>(load_q8(b.qs()));
    }
}

/// Σ u·q of one block pair (weight quants `w`, activation quants `q`) as eight i32 partial sums.
#[inline(always)]
unsafe fn isum8<F: Format>(w: __m256i, q: __m256i) -> __m256i {
    _mm256_madd_epi16(maddubs::<F>(w, q), _mm256_set1_epi16(1))
}

/// The `vpmaddubsw` of row `r`'s block `b` with `q`.
#[inline(always)]
unsafe fn row_maddubs<F: Format>(w: &[*const F; L], r: usize, b: usize, q: __m256i) -> __m256i {
    maddubs::<F>((*w[r].add(b)).quants(), q)
}

/// As [`row_maddubs`], widened to eight i32 sums of four products.
#[inline(always)]
unsafe fn row_isum8<F: Format>(w: &[*const F; L], r: usize, b: usize, q: __m256i) -> __m256i {
    _mm256_madd_epi16(row_maddubs(w, r, b, q), _mm256_set1_epi16(1))
}

/// Σ u·q of rows `r..r + 4` of block `b`: [r r+1 r+2 r+3 | r r+1 r+2 r+3] as i32, partial
/// sums of the low and high 128-bit halves. Unsigned quants: two rounds of `vphaddw` on the
/// rows' `vpmaddubsw` pair sums (a lane then sums eight products, at most 8·31·127 = 31496 in
/// magnitude), then one widening `vpmaddwd`. Signed quants (pairs up to 32512): every row
/// widened first, then three `vphaddd`. Rows in pairs, folded at once, to keep few vectors live.
/// (Plain functions, not closures: closures do not inherit the caller's target features.)
#[inline(always)]
unsafe fn quad<F: Format>(w: &[*const F; L], r: usize, b: usize, q: __m256i) -> __m256i {
    if F::SIGNED {
        let a = _mm256_hadd_epi32(row_isum8(w, r, b, q), row_isum8(w, r + 1, b, q));
        let c = _mm256_hadd_epi32(row_isum8(w, r + 2, b, q), row_isum8(w, r + 3, b, q));
        return _mm256_hadd_epi32(a, c);
    }
    let a = _mm256_hadd_epi16(row_maddubs(w, r, b, q), row_maddubs(w, r + 1, b, q));
    let c = _mm256_hadd_epi16(row_maddubs(w, r + 2, b, q), row_maddubs(w, r + 3, b, q));
    _mm256_madd_epi16(_mm256_hadd_epi16(a, c), _mm256_set1_epi16(1))
}

/// Lane r = Σ u·q of row r of block `b`.
#[inline(always)]
unsafe fn reduce8<F: Format>(w: &[*const F; L], b: usize, q: __m256i) -> __m256i {
    let s0123 = quad(w, 0, b, q);
    let s4567 = quad(w, 4, b, q);
    let lo = _mm256_permute2x128_si256(s0123, s4567, 0x20);
    let hi = _mm256_permute2x128_si256(s0123, s4567, 0x31);
    _mm256_add_epi32(lo, hi)
}

/// Scales (and mins) of eight rows' block `b` as f32 lanes.
#[inline(always)]
unsafe fn scales8<F: Format>(w: &[*const F; L], b: usize) -> (__m256, __m256) {
    let h = |r: usize| (*w[r].add(b)).head() as i32;
    let v = _mm256_setr_epi32(h(0), h(1), h(2), h(3), h(4), h(5), h(6), h(7));
    // Low halves (scales) and high halves (mins) packed to eight u16 each, in row order.
    let pick = _mm256_setr_epi8(
        0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15, //
        0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15,
    );
    // [d0..d3 m0..m3 | d4..d7 m4..m7] -> [d0..d7 | m0..m7]
    let p = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(v, pick), 0b11_01_10_00);
    let d = _mm256_cvtph_ps(_mm256_castsi256_si128(p));
    let m = if F::HAS_MIN {
        _mm256_cvtph_ps(_mm256_extracti128_si256(p, 1))
    } else {
        _mm256_setzero_ps()
    };
    (d, m)
}

/// Scales of eight rows' block `b` as f32 lanes, for the formats without a min: the fp16 scales
/// gathered as eight u16 (fewer inserts than [`scales8`]'s dwords and shuffles).
#[inline(always)]
unsafe fn scales8_d<F: Format>(w: &[*const F; L], b: usize) -> __m256 {
    let h = |r: usize| (*w[r].add(b)).head() as u16 as i16;
    _mm256_cvtph_ps(_mm_setr_epi16(h(0), h(1), h(2), h(3), h(4), h(5), h(6), h(7)))
}

/// Writes the valid lanes of `v` (rows `0..rows`) to `out[r]`.
#[inline(always)]
pub(super) unsafe fn store_lanes(v: __m256, rows: usize, out: *mut f32) {
    if rows >= L {
        return _mm256_storeu_ps(out, v);
    }
    let mut l = [0f32; L];
    _mm256_storeu_ps(l.as_mut_ptr(), v);
    core::ptr::copy_nonoverlapping(l.as_ptr(), out, rows);
}

/// The dot of one row, the reference the tiles reproduce bit for bit.
///
/// # Safety
/// AVX2, FMA and F16C; `w` and `a` the same length.
#[inline(always)]
pub(crate) unsafe fn dot<F: Format>(w: &[F], a: &[F::Act]) -> f32 {
    let mut acc = _mm_setzero_ps();
    let mut summ = _mm_setzero_ps();
    for (x, y) in w.iter().zip(a) {
        let q = load_q8(y.qs());
        let i = hsum_epi32(isum8::<F>(x.quants(), q)) - correction::<F>(q);
        let h = x.head();
        let d = _mm_set_ss(fp16(half::f16::from_bits(h as u16)) * y.d());
        acc = _mm_fmadd_ss(d, _mm_set_ss(i as f32), acc);
        if F::HAS_MIN {
            let m = _mm_set_ss(fp16(half::f16::from_bits((h >> 16) as u16)));
            summ = _mm_fmadd_ss(m, _mm_set_ss(y.s()), summ);
        }
    }
    if F::HAS_MIN {
        acc = _mm_add_ss(acc, summ);
    }
    _mm_cvtss_f32(acc)
}

/// The offset correction `o·Σq` of one activation block (0 for the formats with a min).
#[inline(always)]
unsafe fn correction<F: Format>(q: __m256i) -> i32 {
    if F::OFFSET == 0 {
        return 0;
    }
    let s = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), q), _mm256_set1_epi16(1));
    F::OFFSET * hsum_epi32(s)
}

/// What [`decode8`] does with the offset corrections `o·Σq` of the activation blocks (integers,
/// so the three give the same bits): computes them, computes and stores them to `cs[b]`, or
/// loads them from there (the later groups of a call, saving a `vpmaddubsw`, a `vpmaddwd` and
/// a horizontal sum per block).
const CORR_COMPUTE: u8 = 0;
const CORR_STORE: u8 = 1;
const CORR_LOAD: u8 = 2;

/// One token against eight rows (`w`, some possibly repeated to fill the group). Needs nothing
/// precomputed (decode calls this on small slices of rows many times per token); the first
/// group of a call leaves the activation's corrections in `cs` for the others (`C`); `cs` must
/// point to `a.len()` writable i32 unless `C` is [`CORR_COMPUTE`].
#[inline(always)]
unsafe fn decode8<F: Format, const C: u8>(w: [*const F; L], next: *const u8, a: &[F::Act], cs: *mut i32) -> __m256 {
    // Bytes of the next group per block of this one.
    let step = L * core::mem::size_of::<F>();
    let mut acc = _mm256_setzero_ps();
    let mut summ = _mm256_setzero_ps();
    for (b, y) in a.iter().enumerate() {
        // The group after this one, a proportional slice per block (rows are consecutive in
        // memory, and the hardware prefetchers lose track of eight interleaved streams).
        let ahead = next.wrapping_add(b * step) as *const i8;
        for line in 0..step.div_ceil(64) {
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * line));
        }
        let q = load_q8(y.qs());
        let mut i = reduce8(&w, b, q);
        if F::OFFSET != 0 {
            let c = if C == CORR_LOAD {
                *cs.add(b)
            } else {
                let c = correction::<F>(q);
                if C == CORR_STORE {
                    *cs.add(b) = c;
                }
                c
            };
            i = _mm256_sub_epi32(i, _mm256_set1_epi32(c));
        }
        let (dw, m) = if F::HAS_MIN {
            scales8(&w, b)
        } else {
            (scales8_d(&w, b), _mm256_setzero_ps())
        };
        let d = _mm256_mul_ps(dw, _mm256_set1_ps(y.d()));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(i), acc);
        if F::HAS_MIN {
            summ = _mm256_fmadd_ps(m, _mm256_set1_ps(y.s()), summ);
        }
    }
    if F::HAS_MIN {
        acc = _mm256_add_ps(acc, summ);
    }
    acc
}

/// The 8x8 transpose of 32-bit elements: vector k of the result holds dword k of every input
/// row (in row order). Three rounds of in-register shuffles.
#[inline(always)]
pub(super) unsafe fn transpose8(r: [__m256i; L]) -> [__m256i; L] {
    let t0 = _mm256_unpacklo_epi32(r[0], r[1]);
    let t1 = _mm256_unpackhi_epi32(r[0], r[1]);
    let t2 = _mm256_unpacklo_epi32(r[2], r[3]);
    let t3 = _mm256_unpackhi_epi32(r[2], r[3]);
    let t4 = _mm256_unpacklo_epi32(r[4], r[5]);
    let t5 = _mm256_unpackhi_epi32(r[4], r[5]);
    let t6 = _mm256_unpacklo_epi32(r[6], r[7]);
    let t7 = _mm256_unpackhi_epi32(r[6], r[7]);
    // u0 = dwords 0 and 4 of rows 0..4, u1 = dwords 1 and 5, ...
    let u0 = _mm256_unpacklo_epi64(t0, t2);
    let u1 = _mm256_unpackhi_epi64(t0, t2);
    let u2 = _mm256_unpacklo_epi64(t1, t3);
    let u3 = _mm256_unpackhi_epi64(t1, t3);
    let u4 = _mm256_unpacklo_epi64(t4, t6);
    let u5 = _mm256_unpackhi_epi64(t4, t6);
    let u6 = _mm256_unpacklo_epi64(t5, t7);
    let u7 = _mm256_unpackhi_epi64(t5, t7);
    [
        _mm256_permute2x128_si256(u0, u4, 0x20),
        _mm256_permute2x128_si256(u1, u5, 0x20),
        _mm256_permute2x128_si256(u2, u6, 0x20),
        _mm256_permute2x128_si256(u3, u7, 0x20),
        _mm256_permute2x128_si256(u0, u4, 0x31),
        _mm256_permute2x128_si256(u1, u5, 0x31),
        _mm256_permute2x128_si256(u2, u6, 0x31),
        _mm256_permute2x128_si256(u3, u7, 0x31),
    ]
}

/// Eight rows laid out for the prefill tiles: per block, eight vectors, vector k holding
/// bytes 4k..4k+4 of every row; and per block the rows' scales and mins.
pub(super) struct Group {
    pub(super) q: Vec<__m256i>,
    pub(super) d: Vec<__m256>,
    pub(super) m: Vec<__m256>,
}

#[inline(always)]
unsafe fn group<F: Format>(w: &[*const F; L], nb: usize, g: &mut Group) {
    g.q.clear();
    g.d.clear();
    g.m.clear();
    for b in 0..nb {
        let rows: [__m256i; L] = core::array::from_fn(|r| (*w[r].add(b)).quants());
        g.q.extend_from_slice(&transpose8(rows));
        let (d, m) = scales8(w, b);
        g.d.push(d);
        g.m.push(m);
    }
}

/// Four bytes of an activation block's quants, broadcast.
#[inline(always)]
unsafe fn bcast(qs: &[i8; 32], k: usize) -> __m256i {
    _mm256_set1_epi32(core::ptr::read_unaligned(qs.as_ptr().add(4 * k) as *const i32))
}

/// `TT` tokens (activation rows `a[t]`, info offset `off[t]`) against a laid-out group. With
/// `VNNI` (AVX-512 VNNI + VL) each vector's products go into the i32 sums with one `vpdpbusd`:
/// the same exact integers as the `vpmaddubsw` chains, so the same bits.
#[inline(always)]
unsafe fn prefill_tile<F: Format, const TT: usize, const VNNI: bool>(
    g: &Group,
    a: [&[F::Act]; TT],
    info: &ActInfo,
    off: [usize; TT],
) -> [__m256; TT] {
    let nb = g.d.len();
    let mut acc = [_mm256_setzero_ps(); TT];
    let ones = _mm256_set1_epi16(1);
    for b in 0..nb {
        let wq = &g.q[b * L..(b + 1) * L];
        let mut i = [_mm256_setzero_si256(); TT];
        if VNNI {
            for (k, &w) in wq.iter().enumerate() {
                // Signed weights: |w| against the activation with w's sign (see `maddubs`).
                let u = if F::SIGNED { _mm256_abs_epi8(w) } else { w };
                for t in 0..TT {
                    let q = bcast(a[t][b].qs(), k);
                    let q = if F::SIGNED { _mm256_sign_epi8(q, w) } else { q };
                    i[t] = _mm256_dpbusd_epi32(i[t], u, q);
                }
            }
        } else {
            // `I16_TERMS` results added in i16 before widening (for Q8_0 one: each is widened).
            let step = F::I16_TERMS;
            for k0 in (0..L).step_by(step) {
                let mut s = [_mm256_setzero_si256(); TT];
                for k in k0..k0 + step {
                    for t in 0..TT {
                        let p = maddubs::<F>(wq[k], bcast(a[t][b].qs(), k));
                        s[t] = _mm256_add_epi16(s[t], p);
                    }
                }
                for t in 0..TT {
                    i[t] = _mm256_add_epi32(i[t], _mm256_madd_epi16(s[t], ones));
                }
            }
        }
        for t in 0..TT {
            if F::OFFSET != 0 {
                i[t] = _mm256_add_epi32(i[t], _mm256_set1_epi32(info.nc[off[t] + b]));
            }
            let d = _mm256_mul_ps(g.d[b], _mm256_set1_ps(info.d[off[t] + b]));
            acc[t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(i[t]), acc[t]);
        }
    }
    if F::HAS_MIN {
        for t in 0..TT {
            let mut summ = _mm256_setzero_ps();
            for b in 0..nb {
                summ = _mm256_fmadd_ps(g.m[b], _mm256_set1_ps(info.s[off[t] + b]), summ);
            }
            acc[t] = _mm256_add_ps(acc[t], summ);
        }
    }
    acc
}

/// `out[t * ldo + r] = dot(w[r], a[t])` for every row of `w` and token of `a` (rows of `nb`
/// blocks).
///
/// # Safety
/// AVX2, FMA and F16C; whole rows (checked by the caller); `out` large enough (checked here).
#[inline(always)]
pub(crate) unsafe fn gemm<F: Format, const VNNI: bool>(w: &[F], a: &[F::Act], nb: usize, out: &mut [f32], ldo: usize) {
    if nb == 0 {
        return;
    }
    let rows = w.len() / nb;
    let n = a.len() / nb;
    if rows == 0 || n == 0 {
        return;
    }
    assert!((n - 1) * ldo + rows <= out.len(), "gemm: output too small");
    let o = out.as_mut_ptr();
    // Row pointers of the group starting at r0; missing rows repeat the last one.
    let rows_of =
        |r0: usize| -> [*const F; L] { core::array::from_fn(|i| w.as_ptr().add((r0 + i).min(rows - 1) * nb)) };
    if n < PREFILL_MIN_TOKENS {
        // Offset corrections per token and block, kept by the first group for the others.
        let mut cs = if rows > L && F::OFFSET != 0 {
            vec![0i32; a.len()]
        } else {
            Vec::new()
        };
        for r0 in (0..rows).step_by(L) {
            let wr = rows_of(r0);
            for t in 0..n {
                let next = w.as_ptr().wrapping_add((r0 + L) * nb) as *const u8;
                let at = &a[t * nb..(t + 1) * nb];
                let c = cs.as_mut_ptr().wrapping_add(t * nb);
                let v = if cs.is_empty() {
                    decode8::<F, CORR_COMPUTE>(wr, next, at, c)
                } else if r0 == 0 {
                    decode8::<F, CORR_STORE>(wr, next, at, c)
                } else {
                    decode8::<F, CORR_LOAD>(wr, next, at, c)
                };
                store_lanes(v, (rows - r0).min(L), o.add(t * ldo + r0));
            }
        }
        return;
    }
    prefill_groups::<F, _, VNNI>(&RowGroups(rows_of), rows, a, nb, out, ldo);
}

/// Where the prefill tiles get their laid-out groups of eight rows from.
pub(super) trait GroupSource<F: Format> {
    /// Lays out the group of rows `r0..r0 + 8` (rows of `nb` blocks) in `g`.
    unsafe fn fill(&self, r0: usize, nb: usize, g: &mut Group);
}

/// The rows of the GGUF layout: the group's row pointers.
struct RowGroups<R>(R);

impl<F: Format, R: Fn(usize) -> [*const F; L]> GroupSource<F> for RowGroups<R> {
    #[inline(always)]
    unsafe fn fill(&self, r0: usize, nb: usize, g: &mut Group) {
        group(&(self.0)(r0), nb, g)
    }
}

/// The prefill tiles over all groups of `rows` rows and all tokens of `a` (`n ≥ 1` rows of `nb`
/// blocks): `out[t * ldo + r]`, bounds checked by the caller.
#[inline(always)]
pub(super) unsafe fn prefill_groups<F: Format, S: GroupSource<F>, const VNNI: bool>(
    src: &S,
    rows: usize,
    a: &[F::Act],
    nb: usize,
    out: &mut [f32],
    ldo: usize,
) {
    let o = out.as_mut_ptr();
    let info = act_info::<F>(a);
    let mut g = Group {
        q: Vec::with_capacity(nb * L),
        d: Vec::with_capacity(nb),
        m: Vec::with_capacity(nb),
    };
    for r0 in (0..rows).step_by(L) {
        src.fill(r0, nb, &mut g);
        sweep_all::<_, VNNI>(
            &Laid::<F> {
                g: &g,
                info: &info,
                format: core::marker::PhantomData,
            },
            a,
            nb,
            (rows - r0).min(L),
            o.add(r0),
            ldo,
        );
    }
}

/// A laid-out group of eight rows that the prefill tiles run tokens against.
trait Tiles {
    type Act;
    /// Tokens `t..t + TT` of `a` (`nb` blocks each): lane r of result k = dot(row r, a[t + k]).
    unsafe fn tile<const TT: usize, const VNNI: bool>(&self, a: &[Self::Act], nb: usize, t: usize) -> [__m256; TT];
}

/// A 32-element format's group and its activations' infos.
struct Laid<'a, F: Format> {
    g: &'a Group,
    info: &'a ActInfo,
    format: core::marker::PhantomData<F>,
}

impl<F: Format> Tiles for Laid<'_, F> {
    type Act = F::Act;
    #[inline(always)]
    unsafe fn tile<const TT: usize, const VNNI: bool>(&self, a: &[F::Act], nb: usize, t: usize) -> [__m256; TT] {
        let acts: [&[F::Act]; TT] = core::array::from_fn(|k| &a[(t + k) * nb..(t + k + 1) * nb]);
        prefill_tile::<F, TT, VNNI>(self.g, acts, self.info, core::array::from_fn(|k| (t + k) * nb))
    }
}

impl Tiles for GroupK {
    type Act = BlockQ8K;
    #[inline(always)]
    unsafe fn tile<const TT: usize, const VNNI: bool>(&self, a: &[BlockQ8K], nb: usize, t: usize) -> [__m256; TT] {
        prefill_tile_k::<TT, VNNI>(self, core::array::from_fn(|k| &a[(t + k) * nb..(t + k + 1) * nb]))
    }
}

/// Every token of `a` against group `g`, storing the `valid` lanes of token t at `o + t * ldo`:
/// eight tokens per row pass with VNNI (AVX-512 VL's 32 vector registers hold their sums; a
/// token's block sum is a chain of dependent `vpdpbusd`, and four chains left the unit idle),
/// then four, then one at a time.
#[inline(always)]
unsafe fn sweep_all<S: Tiles, const VNNI: bool>(g: &S, a: &[S::Act], nb: usize, valid: usize, o: *mut f32, ldo: usize) {
    let n = a.len() / nb;
    let mut t = 0;
    if VNNI {
        t = sweep::<S, 8, VNNI>(g, a, nb, t..n, valid, o, ldo);
    }
    t = sweep::<S, T, VNNI>(g, a, nb, t..n, valid, o, ldo);
    sweep::<S, 1, VNNI>(g, a, nb, t..n, valid, o, ldo);
}

/// Tiles of `TT` tokens from `ts.start` while whole tiles fit before `ts.end`: stores their
/// `valid` lanes at `o + t * ldo`; returns the first token left.
#[inline(always)]
unsafe fn sweep<S: Tiles, const TT: usize, const VNNI: bool>(
    g: &S,
    a: &[S::Act],
    nb: usize,
    ts: core::ops::Range<usize>,
    valid: usize,
    o: *mut f32,
    ldo: usize,
) -> usize {
    let mut t = ts.start;
    while t + TT <= ts.end {
        for (k, v) in g.tile::<TT, VNNI>(a, nb, t).iter().enumerate() {
            store_lanes(*v, valid, o.add((t + k) * ldo));
        }
        t += TT;
    }
    t
}

macro_rules! entry {
    ($dot:ident, $gemm:ident, $w:ty, $a:ty) => {
        /// Safe entry point, reachable only through tables handed out after AVX2, FMA and F16C
        /// were detected.
        pub(crate) fn $dot(w: &[$w], a: &[$a]) -> f32 {
            assert_eq!(w.len(), a.len());
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn imp(w: &[$w], a: &[$a]) -> f32 {
                dot(w, a)
            }
            // SAFETY: features detected before the table was handed out; lengths equal.
            unsafe { imp(w, a) }
        }

        /// Safe entry point, as above. `out[t * ldo + r]` for every row r of `w`, token t of `a`.
        pub(crate) fn $gemm(w: &[$w], a: &[$a], nb: usize, out: &mut [f32], ldo: usize) {
            super::avx2_gemm::check_shapes(w.len(), a.len(), nb, ldo);
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn imp(w: &[$w], a: &[$a], nb: usize, out: &mut [f32], ldo: usize) {
                gemm::<_, false>(w, a, nb, out, ldo)
            }
            // SAFETY: features detected before the table was handed out; whole rows checked
            // above, the output size inside `gemm`.
            unsafe { imp(w, a, nb, out, ldo) }
        }
    };
}

macro_rules! vnni_entry {
    ($gemm:ident, $w:ty, $a:ty) => {
        /// The avx512-vnni table's product (prefill tiles with `vpdpbusd`; the same bits), handed
        /// out only after AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C were detected.
        pub(crate) fn $gemm(w: &[$w], a: &[$a], nb: usize, out: &mut [f32], ldo: usize) {
            super::avx2_gemm::check_shapes(w.len(), a.len(), nb, ldo);
            #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
            unsafe fn imp(w: &[$w], a: &[$a], nb: usize, out: &mut [f32], ldo: usize) {
                gemm::<_, true>(w, a, nb, out, ldo)
            }
            // SAFETY: as the plain entries'.
            unsafe { imp(w, a, nb, out, ldo) }
        }
    };
}

entry!(dot_q4_0, gemm_q4_0, BlockQ4_0, BlockQ8_0);
entry!(dot_q4_1, gemm_q4_1, BlockQ4_1, BlockQ8_1);
entry!(dot_q5_0, gemm_q5_0, BlockQ5_0, BlockQ8_0);
entry!(dot_q5_1, gemm_q5_1, BlockQ5_1, BlockQ8_1);
entry!(dot_q8_0, gemm_q8_0, BlockQ8_0, BlockQ8_0);
vnni_entry!(vnni_q4_0, BlockQ4_0, BlockQ8_0);
vnni_entry!(vnni_q4_1, BlockQ4_1, BlockQ8_1);
vnni_entry!(vnni_q5_0, BlockQ5_0, BlockQ8_0);
vnni_entry!(vnni_q5_1, BlockQ5_1, BlockQ8_1);
vnni_entry!(vnni_q8_0, BlockQ8_0, BlockQ8_0);

// ------------------------------------------------------------------------------------------
// Q4_K: the same idea per 256-element super-block. Per (row, token) and super-block:
// `i = Σ_s sc[s]·Σ_{l∈s} u·q` and `m = Σ_s min[s]·(bsum[2s] + bsum[2s+1])`, both exact i32
// (|i| ≤ 8·63·32·15·127 < 2^31); `acc = fma(d·d_a, i, acc)`, `accm = fma(dmin·d_a, m, accm)`
// over the super-blocks in order; the result is `acc − accm`. In the prefill tiles a
// sub-block's 32 products per row are summed in i16 (eight `vpmaddubsw` of 4-bit quants, at most
// 30480) and multiplied by the row's scale with one `vpmaddwd`.

/// The unsigned quants of sub-block `s` (32 bytes, element order).
#[inline(always)]
unsafe fn q4k_sub(x: &BlockQ4K, s: usize) -> __m256i {
    let q = _mm256_loadu_si256(x.qs.as_ptr().add(32 * (s / 2)) as *const __m256i);
    let q = if s % 2 == 1 { _mm256_srli_epi16(q, 4) } else { q };
    _mm256_and_si256(q, _mm256_set1_epi8(0x0F))
}

/// The exact `(i, m)` of one super-block pair (see above).
#[inline(always)]
unsafe fn q4k_sums(x: &BlockQ4K, y: &BlockQ8K, sm: &[u8; 16]) -> (i32, i32) {
    let mut sumi = _mm256_setzero_si256();
    for s in 0..8 {
        let a = _mm256_loadu_si256(y.qs.as_ptr().add(32 * s) as *const __m256i);
        let p = _mm256_maddubs_epi16(q4k_sub(x, s), a);
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, _mm256_set1_epi16(sm[s] as i16)));
    }
    // bsums [16 x i16] against the mins, each repeated for its two 16-element halves.
    let mins = _mm_loadl_epi64(sm.as_ptr().add(8) as *const __m128i);
    let mins = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(mins, mins));
    let bs = _mm256_loadu_si256(y.bsums.as_ptr() as *const __m256i);
    let summ = _mm256_madd_epi16(mins, bs);
    (hsum_epi32(sumi), hsum_epi32(summ))
}

/// The Q4_K dot of one row, the reference the Q4_K tiles reproduce bit for bit.
///
/// # Safety
/// AVX2, FMA and F16C; `w` and `a` the same length.
#[inline(always)]
unsafe fn dot_q4k(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
    let mut acc = _mm_setzero_ps();
    let mut accm = _mm_setzero_ps();
    for (b, (x, y)) in w.iter().zip(a).enumerate() {
        prefetch_next_row(w, b);
        let sm = unpack_scales_mins(&x.scales);
        let (i, m) = q4k_sums(x, y, &sm);
        acc = _mm_fmadd_ss(_mm_set_ss(h2f(x.d) * y.d), _mm_set_ss(i as f32), acc);
        accm = _mm_fmadd_ss(_mm_set_ss(h2f(x.dmin) * y.d), _mm_set_ss(m as f32), accm);
    }
    _mm_cvtss_f32(_mm_sub_ss(acc, accm))
}

/// Eight Q4_K rows laid out for the prefill tiles: per super-block, per sub-block, eight
/// vectors (vector k: bytes 4k..4k+4 of the sub-block of every row); the rows' scales and mins
/// per sub-block as i16 pairs (one dword lane per row); `d` and `dmin` per super-block.
struct GroupK {
    q: Vec<__m256i>,
    sc: Vec<__m256i>,
    mn: Vec<__m256i>,
    d: Vec<__m256>,
    dm: Vec<__m256>,
}

#[inline(always)]
unsafe fn group_k(w: &[*const BlockQ4K; L], nb: usize, g: &mut GroupK) {
    g.q.clear();
    g.sc.clear();
    g.mn.clear();
    g.d.clear();
    g.dm.clear();
    for b in 0..nb {
        let x: [&BlockQ4K; L] = core::array::from_fn(|r| &*w[r].add(b));
        let sm: [[u8; 16]; L] = core::array::from_fn(|r| unpack_scales_mins(&x[r].scales));
        for s in 0..8 {
            let rows: [__m256i; L] = core::array::from_fn(|r| q4k_sub(x[r], s));
            g.q.extend_from_slice(&transpose8(rows));
            let pair = |v: u8| (v as u32) * 0x0001_0001;
            let sc: [u32; L] = core::array::from_fn(|r| pair(sm[r][s]));
            let mn: [u32; L] = core::array::from_fn(|r| pair(sm[r][8 + s]));
            g.sc.push(_mm256_loadu_si256(sc.as_ptr() as *const __m256i));
            g.mn.push(_mm256_loadu_si256(mn.as_ptr() as *const __m256i));
        }
        let d: [f32; L] = core::array::from_fn(|r| h2f(x[r].d));
        let dm: [f32; L] = core::array::from_fn(|r| h2f(x[r].dmin));
        g.d.push(_mm256_loadu_ps(d.as_ptr()));
        g.dm.push(_mm256_loadu_ps(dm.as_ptr()));
    }
}

/// `TT` tokens against a laid-out Q4_K group: lane r of result t = dot(row r, a[t]).
/// `VNNI` (AVX-512 VNNI + VL): each sub-block's products summed straight into i32 with
/// `vpdpbusd`, then times its scales (`vpmulld`): the same exact integers.
#[inline(always)]
unsafe fn prefill_tile_k<const TT: usize, const VNNI: bool>(g: &GroupK, a: [&[BlockQ8K]; TT]) -> [__m256; TT] {
    let nb = g.d.len();
    let mut acc = [_mm256_setzero_ps(); TT];
    for b in 0..nb {
        let mut i = [_mm256_setzero_si256(); TT];
        for s in 0..8 {
            let wq = &g.q[(b * 8 + s) * L..(b * 8 + s + 1) * L];
            if VNNI {
                let mut s32 = [_mm256_setzero_si256(); TT];
                for (k, &w) in wq.iter().enumerate() {
                    for t in 0..TT {
                        let q = _mm256_set1_epi32(core::ptr::read_unaligned(
                            a[t][b].qs.as_ptr().add(32 * s + 4 * k) as *const i32
                        ));
                        s32[t] = _mm256_dpbusd_epi32(s32[t], w, q);
                    }
                }
                // The scales are i16 pairs (the same value twice): their low halves as i32.
                let sc = _mm256_and_si256(g.sc[b * 8 + s], _mm256_set1_epi32(0xFFFF));
                for t in 0..TT {
                    i[t] = _mm256_add_epi32(i[t], _mm256_mullo_epi32(s32[t], sc));
                }
                continue;
            }
            let mut s16 = [_mm256_setzero_si256(); TT];
            for k in 0..L {
                for t in 0..TT {
                    let q = _mm256_set1_epi32(core::ptr::read_unaligned(
                        a[t][b].qs.as_ptr().add(32 * s + 4 * k) as *const i32
                    ));
                    s16[t] = _mm256_add_epi16(s16[t], _mm256_maddubs_epi16(wq[k], q));
                }
            }
            let sc = g.sc[b * 8 + s];
            for t in 0..TT {
                i[t] = _mm256_add_epi32(i[t], _mm256_madd_epi16(s16[t], sc));
            }
        }
        for t in 0..TT {
            let d = _mm256_mul_ps(g.d[b], _mm256_set1_ps(a[t][b].d));
            acc[t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(i[t]), acc[t]);
        }
    }
    for t in 0..TT {
        let mut accm = _mm256_setzero_ps();
        for b in 0..nb {
            let mut m = _mm256_setzero_si256();
            for s in 0..8 {
                let bs = _mm256_set1_epi32(core::ptr::read_unaligned(
                    a[t][b].bsums.as_ptr().add(2 * s) as *const i32
                ));
                m = _mm256_add_epi32(m, _mm256_madd_epi16(g.mn[b * 8 + s], bs));
            }
            let d = _mm256_mul_ps(g.dm[b], _mm256_set1_ps(a[t][b].d));
            accm = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(m), accm);
        }
        acc[t] = _mm256_sub_ps(acc[t], accm);
    }
    acc
}

/// `out[t * ldo + r] = dot_q4k(w[r], a[t])` for every row and token.
#[inline(always)]
pub(super) unsafe fn gemm_q4k<const VNNI: bool>(
    w: &[BlockQ4K],
    a: &[BlockQ8K],
    nb: usize,
    out: &mut [f32],
    ldo: usize,
) {
    let rows = w.len() / nb;
    let n = a.len() / nb;
    if rows == 0 || n == 0 {
        return;
    }
    assert!((n - 1) * ldo + rows <= out.len(), "gemm: output too small");
    let act = |t: usize| &a[t * nb..(t + 1) * nb];
    if n < PREFILL_MIN_TOKENS {
        for r in 0..rows {
            for t in 0..n {
                out[t * ldo + r] = dot_q4k(&w[r * nb..(r + 1) * nb], act(t));
            }
        }
        return;
    }
    let o = out.as_mut_ptr();
    let mut g = GroupK {
        q: Vec::with_capacity(nb * 8 * L),
        sc: Vec::with_capacity(nb * 8),
        mn: Vec::with_capacity(nb * 8),
        d: Vec::with_capacity(nb),
        dm: Vec::with_capacity(nb),
    };
    for r0 in (0..rows).step_by(L) {
        let wr: [*const BlockQ4K; L] = core::array::from_fn(|i| w.as_ptr().add((r0 + i).min(rows - 1) * nb));
        group_k(&wr, nb, &mut g);
        sweep_all::<_, VNNI>(&g, a, nb, (rows - r0).min(L), o.add(r0), ldo);
    }
}

/// Safe entry point of the Q4_K dot, reachable only through tables handed out after AVX2, FMA
/// and F16C were detected.
pub(crate) fn dot_q4_k(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
    assert_eq!(w.len(), a.len(), "dot_q4_k: length mismatch");
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn imp(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
        dot_q4k(w, a)
    }
    // SAFETY: features detected before the table was handed out; lengths equal.
    unsafe { imp(w, a) }
}

/// Safe entry point of the Q4_K product, as above.
pub(crate) fn gemm_q4_k(w: &[BlockQ4K], a: &[BlockQ8K], nb: usize, out: &mut [f32], ldo: usize) {
    super::avx2_gemm::check_shapes(w.len(), a.len(), nb, ldo);
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn imp(w: &[BlockQ4K], a: &[BlockQ8K], nb: usize, out: &mut [f32], ldo: usize) {
        gemm_q4k::<false>(w, a, nb, out, ldo)
    }
    // SAFETY: features detected before the table was handed out; whole rows checked above,
    // the output size inside `gemm_q4k`.
    unsafe { imp(w, a, nb, out, ldo) }
}

/// The avx512-vnni table's [`gemm_q4_k`] (prefill tiles with `vpdpbusd`; the same bits).
pub(crate) fn vnni_q4_k(w: &[BlockQ4K], a: &[BlockQ8K], nb: usize, out: &mut [f32], ldo: usize) {
    super::avx2_gemm::check_shapes(w.len(), a.len(), nb, ldo);
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn imp(w: &[BlockQ4K], a: &[BlockQ8K], nb: usize, out: &mut [f32], ldo: usize) {
        gemm_q4k::<true>(w, a, nb, out, ldo)
    }
    // SAFETY: handed out only by the avx512-vnni table, after its features were detected.
    unsafe { imp(w, a, nb, out, ldo) }
}

#[cfg(test)]
mod tests {
    use crate::dispatch::{DotFn, GemmFn};
    use crate::quants::{q4_0, q4_1, q5_0, q5_1, q8_0, q8_1, BlockQ8_0};
    use bytemuck::Zeroable;
    use half::f16;

    use super::super::test_values as values;

    /// Token counts: every decode count, the prefill tiles with every remainder, and more than
    /// one pass of tiles.
    const TOKENS: [usize; 10] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 17];

    /// A format's quantizer, dequantizer and products: the AVX2 dot, the scalar reference dot
    /// and the AVX2 matrix product.
    struct Kernels<W, A> {
        qw: fn(&[f32], &mut [W]),
        dw: fn(&[W], &mut [f32]),
        qa: fn(&[f32], &mut [A]),
        da: fn(&[A], &mut [f32]),
        dot: DotFn<W, A>,
        scalar: DotFn<W, A>,
        gemm: GemmFn<W, A>,
    }

    /// Every shape (row groups with remainders, decode and prefill token counts with
    /// remainders) gives the dot's exact bits, and the dot is within rounding of the scalar one.
    fn check<W: bytemuck::Pod, A: bytemuck::Pod>(k: Kernels<W, A>) {
        let (rows, n, nb) = (19, 17, 5);
        let mut w = vec![W::zeroed(); rows * nb];
        (k.qw)(&values(rows * nb * 32, 1), &mut w);
        let mut a = vec![A::zeroed(); n * nb];
        (k.qa)(&values(n * nb * 32, 2), &mut a);
        check_blocks(&k, &w, &a, nb);
    }

    /// [`check`] on given blocks (`w`: rows of `nb` blocks, `a`: at least 17 tokens).
    fn check_blocks<W: bytemuck::Pod, A: bytemuck::Pod>(k: &Kernels<W, A>, w: &[W], a: &[A], nb: usize) {
        let (dot, scalar, gemm) = (k.dot, k.scalar, k.gemm);
        let rows = w.len() / nb;
        for tokens in TOKENS {
            let mut out = vec![f32::NAN; rows * tokens];
            gemm(w, &a[..tokens * nb], nb, &mut out, rows);
            for r in 0..rows {
                for t in 0..tokens {
                    let (wr, at) = (&w[r * nb..(r + 1) * nb], &a[t * nb..(t + 1) * nb]);
                    let want = dot(wr, at);
                    assert_eq!(
                        out[t * rows + r].to_bits(),
                        want.to_bits(),
                        "row {r} token {t} of {tokens}"
                    );
                    // Within f32 rounding of the products' magnitude (the sum may cancel).
                    let s = scalar(wr, at);
                    let (mut wf, mut af) = (vec![0f32; nb * 32], vec![0f32; nb * 32]);
                    (k.dw)(wr, &mut wf);
                    (k.da)(at, &mut af);
                    let mag: f32 = wf.iter().zip(&af).map(|(x, y)| (x * y).abs()).sum();
                    assert!(
                        (want - s).abs() <= 1e-5 * mag + 1e-6,
                        "dot {want} scalar {s} (mag {mag})"
                    );
                }
            }
        }
    }

    #[test]
    fn lanes_equal_the_dot_bit_for_bit() {
        if !super::super::avx2::detected() {
            eprintln!("skipped: no AVX2 on this CPU");
            return;
        }
        use super::*;
        check(Kernels {
            qw: q4_0::quantize,
            dw: q4_0::dequantize,
            qa: q8_0::quantize_activations,
            da: q8_0::dequantize,
            dot: dot_q4_0,
            scalar: q4_0::vec_dot,
            gemm: gemm_q4_0,
        });
        check(Kernels {
            qw: q4_1::quantize,
            dw: q4_1::dequantize,
            qa: q8_1::quantize_activations,
            da: q8_1::dequantize,
            dot: dot_q4_1,
            scalar: q4_1::vec_dot,
            gemm: gemm_q4_1,
        });
        check(Kernels {
            qw: q5_0::quantize,
            dw: q5_0::dequantize,
            qa: q8_0::quantize_activations,
            da: q8_0::dequantize,
            dot: dot_q5_0,
            scalar: q5_0::vec_dot,
            gemm: gemm_q5_0,
        });
        check(Kernels {
            qw: q5_1::quantize,
            dw: q5_1::dequantize,
            qa: q8_1::quantize_activations,
            da: q8_1::dequantize,
            dot: dot_q5_1,
            scalar: q5_1::vec_dot,
            gemm: gemm_q5_1,
        });
        check(Kernels {
            qw: q8_0::quantize,
            dw: q8_0::dequantize,
            qa: q8_0::quantize_activations,
            da: q8_0::dequantize,
            dot: dot_q8_0,
            scalar: q8_0::vec_dot,
            gemm: gemm_q8_0,
        });
    }

    /// Q8_0 weights with the extreme quants -128, -127 and 127 (a file may hold -128, the
    /// quantizer never writes it) against activations at ±127: `vpmaddubsw` pairs reach
    /// ±2·128·127, so any i16 sum of two of them would wrap. With unit scales every partial sum
    /// is an integer below 2^24, so dot, decode and prefill must give the exact integer; and
    /// with real scales (-128 written into quantized weights) the bits of the dot and the
    /// scalar reference's value within rounding. Through the AVX2 table, which must hand out
    /// these kernels.
    #[test]
    fn q8_0_lanes_are_exact_at_the_extremes() {
        if !super::super::avx2::detected() {
            eprintln!("skipped: no AVX2 on this CPU");
            return;
        }
        let t = super::super::avx2::table().unwrap();
        let (dot, gemm) = (t.dot_q8_0, t.gemm.q8_0.unwrap());
        let (rows, n, nb) = (13, 17, 3);
        // Block patterns: all -128, all 127, -128 / -127 / 127 mixed, and a ramp over the range.
        let weight = |i: usize| -> i8 {
            let (blk, e) = (i / 32, i % 32);
            match blk % 4 {
                0 => -128,
                1 => 127,
                2 => [-128, -127, 127, -128][(e / 2 + blk) % 4],
                _ => (e as i32 * 8 - 128 + blk as i32) as i8,
            }
        };
        let act = |i: usize| -> i8 {
            let (blk, e) = (i / 32, i % 32);
            match blk % 3 {
                0 => -127,
                1 => 127,
                _ => [127, -127, 5, -127][(e / 2 + blk) % 4],
            }
        };
        let unit = f16::from_f32(1.0);
        let w: Vec<BlockQ8_0> = (0..rows * nb)
            .map(|b| BlockQ8_0 {
                d: unit,
                qs: core::array::from_fn(|e| weight(b * 32 + e + b / 3)),
            })
            .collect();
        let a: Vec<BlockQ8_0> = (0..n * nb)
            .map(|b| BlockQ8_0 {
                d: unit,
                qs: core::array::from_fn(|e| act(b * 32 + e + b / 5)),
            })
            .collect();
        assert!(w.iter().any(|b| b.qs.contains(&-128)) && a.iter().any(|b| b.qs.contains(&-127)));
        for tokens in TOKENS {
            let mut out = vec![f32::NAN; rows * tokens];
            gemm(&w, &a[..tokens * nb], nb, &mut out, rows);
            for r in 0..rows {
                for t in 0..tokens {
                    let (wr, at) = (&w[r * nb..(r + 1) * nb], &a[t * nb..(t + 1) * nb]);
                    let exact: i64 = wr
                        .iter()
                        .zip(at)
                        .flat_map(|(x, y)| x.qs.iter().zip(&y.qs))
                        .map(|(&p, &q)| p as i64 * q as i64)
                        .sum();
                    assert!(exact.abs() < 1 << 24);
                    let got = out[t * rows + r];
                    assert_eq!(got, exact as f32, "row {r} token {t} of {tokens}");
                    assert_eq!(dot(wr, at), exact as f32, "dot, row {r} token {t}");
                }
            }
        }

        // Quantized weights with extremes written in, real scales.
        let (rows, n, nb) = (21, 17, 4);
        let mut w = vec![BlockQ8_0::zeroed(); rows * nb];
        q8_0::quantize(&values(rows * nb * 32, 7), &mut w);
        for (b, x) in w.iter_mut().enumerate() {
            x.qs[b % 32] = -128;
            x.qs[(b + 7) % 32] = 127;
            x.qs[(b + 8) % 32] = -128;
        }
        let mut a = vec![BlockQ8_0::zeroed(); n * nb];
        q8_0::quantize_activations(&values(n * nb * 32, 8), &mut a);
        let k = Kernels {
            qw: q8_0::quantize,
            dw: q8_0::dequantize,
            qa: q8_0::quantize_activations,
            da: q8_0::dequantize,
            dot,
            scalar: q8_0::vec_dot,
            gemm,
        };
        check_blocks(&k, &w, &a, nb);
    }

    #[test]
    fn q4_k_lanes_equal_the_dot_bit_for_bit() {
        if !super::super::avx2::detected() {
            eprintln!("skipped: no AVX2 on this CPU");
            return;
        }
        use crate::quants::{q4_k, q8_k};
        let (rows, n, nb) = (19, 11, 3);
        let mut w = vec![super::BlockQ4K::zeroed(); rows * nb];
        q4_k::quantize(&values(rows * nb * 256, 3), &mut w);
        let mut a = vec![super::BlockQ8K::zeroed(); n * nb];
        q8_k::quantize(&values(n * nb * 256, 4), &mut a);
        for tokens in [1, 3, 4, 5, n] {
            let mut out = vec![f32::NAN; rows * tokens];
            super::gemm_q4_k(&w, &a[..tokens * nb], nb, &mut out, rows);
            for r in 0..rows {
                for t in 0..tokens {
                    let (wr, at) = (&w[r * nb..(r + 1) * nb], &a[t * nb..(t + 1) * nb]);
                    let want = super::dot_q4_k(wr, at);
                    assert_eq!(
                        out[t * rows + r].to_bits(),
                        want.to_bits(),
                        "row {r} token {t} of {tokens}"
                    );
                    // Against the scalar oracle within f32 rounding of the products' magnitude
                    // (the min term is summed apart from the scale term: they can cancel).
                    let s = q4_k::vec_dot_scalar(wr, at);
                    let (mut wf, mut af) = (vec![0f32; nb * 256], vec![0f32; nb * 256]);
                    q4_k::dequantize(wr, &mut wf);
                    q8_k::dequantize(at, &mut af);
                    let mag: f32 = wf.iter().zip(&af).map(|(x, y)| (x * y).abs()).sum();
                    assert!(
                        (want - s).abs() <= 1e-5 * mag + 1e-6,
                        "dot {want} scalar {s} (mag {mag})"
                    );
                }
            }
        }
    }

    /// The AVX-512 Q6_K row kernel (512-bit) gives the bits of the 256-bit Q6_K tiles: the same
    /// eight i32 lanes of partial sums (its two 256-bit halves added lane by lane), the same
    /// FMA per lane and super-block, the same final sum.
    #[test]
    fn q6_k_avx512_dot_equals_the_tiles_bit_for_bit() {
        if !(std::is_x86_feature_detected!("avx512vnni")
            && std::is_x86_feature_detected!("avx512vl")
            && std::is_x86_feature_detected!("avx512bw")
            && super::super::avx2::detected())
        {
            eprintln!("skipped: no AVX-512 VNNI on this CPU");
            return;
        }
        use crate::quants::{q6_k, q8_k};
        use crate::simd::{avx2_kquants, avx512_kquants};
        let (rows, nb) = (23, 5);
        let mut w = vec![q6_k::BlockQ6K::zeroed(); rows * nb];
        q6_k::quantize(&values(rows * nb * 256, 7), &mut w);
        w[0].ql = [0xFF; 128];
        w[0].qh = [0xFF; 64];
        w[0].scales[5] = -128;
        let mut a = vec![super::BlockQ8K::zeroed(); nb];
        q8_k::quantize(&values(nb * 256, 8), &mut a);
        let mut out = vec![f32::NAN; rows];
        avx2_kquants::gemm_q6_k_vnni(&w, &a, nb, &mut out, rows);
        let mut tiles = vec![f32::NAN; rows];
        avx2_kquants::gemm_q6_k(&w, &a, nb, &mut tiles, rows);
        for r in 0..rows {
            let wr = &w[r * nb..(r + 1) * nb];
            // SAFETY: AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C detected above.
            let (d, dv) = unsafe {
                (
                    avx512_kquants::vec_dot_q6_k(wr, &a),
                    avx512_kquants::vec_dot_q6_k_vnni(wr, &a),
                )
            };
            assert_eq!(
                out[r].to_bits(),
                dv.to_bits(),
                "row {r}: vnni tile {} vs vnni dot {dv}",
                out[r]
            );
            assert_eq!(tiles[r].to_bits(), d.to_bits(), "row {r}: tile {} vs dot {d}", tiles[r]);
        }
    }
}
