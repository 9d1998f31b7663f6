//! Weights repacked at load time for the x86 decode kernels (as llama.cpp's CPU "repack" buffers
//! do for Q4_0): eight rows interleaved so that one sequential stream feeds eight row sums, the
//! eight scales of a block sit in one 16-byte load, and no block straddles an odd address.
//!
//! Layout of [`PackedMatrix::data`], Q4_0, Q4_1, Q5_0 and Q8_0 (`nb` blocks per row, QB quant
//! bytes per row and block: 16, or 32 for Q8_0): groups of eight rows (the last group padded with
//! zero rows), each group `group_bytes(nb)` long and 32-aligned. A group is a run of [`RUN`]
//! blocks after another (the last run may be shorter), each run its blocks' quants, then their
//! heads, so that decode reads one sequential stream (whole runs are whole cache lines):
//! ```text
//! quants: RUN x 8·QB bytes  block b: QB chunks of 8 bytes; chunk h*8 + s holds bytes 8h..8h+8
//!                           of the block's `qs` of the row in slot s (so 32-byte vector 2h + k
//!                           holds bytes 8h..8h+8 of slots 4k..4k+4)
//! heads:  RUN x HB bytes    block b: the eight rows' f16 scales in row order (16 bytes), then
//!                           for Q4_1 their f16 mins (16 bytes), for Q5_0 their fifth bits as
//!                           eight 32-bit masks (32 bytes, see `Q5_MASKS`)
//! pad:    after the last run, to a multiple of 32 bytes
//! ```
//!
//! Q4_K (super-blocks of 256): per super-block of a group, `Q4K_BLOCK_BYTES` = 1184 bytes:
//! ```text
//! quants: 4 x 256 bytes   sub-block pair j (sub-blocks 2j, 2j+1; 32 bytes per row, low nibbles
//!                          the first): laid out as a 4-bit block above (chunk h*8 + s holds
//!                          bytes 8h..8h+8 of slot s)
//! scales: 4 x 16 bytes     pair j: the 6-bit scales of sub-block 2j of slots 0..8, then of 2j+1
//! mins:   4 x 16 bytes     pair j: per row in row order, the mins of sub-blocks 2j and 2j+1
//! heads:  32 bytes         the eight rows' f16 d, then their f16 dmin, in row order
//! ```
//!
//! Slot s holds row `SLOT_ROW[s]` of the group: the order the x86 kernel's reduction
//! (`vphaddd` of two four-slot vectors) hands the rows back in, so its lanes come out in row
//! order.
//!
//! The packed products give the same bits as the table's products of the unpacked matrix.
//!
//! [`PackedMatrix::pack_all`] also copies matrices of the other types, as they are, into its
//! huge pages (`Layout::Rows`): the table's row kernels read those.

use crate::dispatch::KernelTable;
use crate::ops::{blocks, WeightMatrix};
use crate::quants::q4_k::unpack_scales_mins;
use crate::quants::{BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ8_0};
use crate::GgmlType;
use bytemuck::{Pod, Zeroable};
use memmap2::{Mmap, MmapMut};
use rayon::prelude::*;
use std::sync::Arc;

/// Rows per group.
pub(crate) const GROUP_ROWS: usize = 8;
/// The row held by each slot (its own inverse).
pub(crate) const SLOT_ROW: [usize; GROUP_ROWS] = [0, 1, 4, 5, 2, 3, 6, 7];

/// 32 bytes, 32-aligned: the storage unit, so every group starts on a 32-byte boundary.
#[repr(C, align(32))]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct Chunk32(pub [u8; 32]);

/// A weight matrix repacked for the kernel table that made it (see the module docs), or copied
/// as it is into [`PackedMatrix::pack_all`]'s huge pages.
pub struct PackedMatrix {
    /// Block format of the source.
    pub ty: GgmlType,
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    layout: Layout,
    data: Storage,
}

/// How a packed matrix's bytes are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// Groups of eight interleaved rows (the module docs), for the table's packed kernels.
    Groups,
    /// The source's rows as they are (a type the table has no packed kernels for), read by
    /// the table's row kernels: in the arena only for its huge pages.
    Rows,
}

/// Where a packed matrix's bytes live.
enum Storage {
    /// A heap vector of its own.
    Owned(Vec<Chunk32>),
    /// `len` bytes at `off` of a read-only anonymous map that a model's packed matrices share
    /// ([`PackedMatrix::pack_all`]).
    Shared { map: Arc<Mmap>, off: usize, len: usize },
}

/// A huge page (x86-64 Linux's transparent ones): the arena of [`PackedMatrix::pack_all`]
/// starts on this boundary.
const HUGE_PAGE: usize = 2 << 20;

/// An anonymous map with room for `bytes` bytes from a huge-page boundary (the offset
/// returned), advised as transparent huge pages before anything touches it (the pages are made
/// on first touch). The advice is a hint: where the system has no transparent huge pages, the
/// map works the same with small ones. None where the map cannot be made.
pub(crate) fn huge_anon(bytes: usize) -> Option<(MmapMut, usize)> {
    let map = MmapMut::map_anon(bytes.checked_add(HUGE_PAGE)?).ok()?;
    #[cfg(target_os = "linux")]
    let _ = map.advise(memmap2::Advice::HugePage);
    let base = map.as_ptr() as usize;
    Some((map, base.next_multiple_of(HUGE_PAGE) - base))
}

/// The system's transparent huge page mode (`always`, `madvise` or `never`: the packed weights
/// get huge pages under the first two), None where it does not say (not Linux, or no
/// transparent huge pages).
pub fn transparent_huge_pages() -> Option<String> {
    let text = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").ok()?;
    thp_mode(&text)
}

/// The bracketed choice of a sysfs mode line such as `always [madvise] never`.
fn thp_mode(line: &str) -> Option<String> {
    let (_, rest) = line.split_once('[')?;
    let (mode, _) = rest.split_once(']')?;
    Some(mode.trim().to_string()).filter(|m| !m.is_empty())
}

/// Each matrix of the arena starts on a cache line.
const ARENA_ALIGN: usize = 64;

/// What [`PackedMatrix::pack_stacked`] makes of a set of matrices: type, rows, columns, bytes.
#[derive(Clone, Copy)]
struct Plan {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    layout: Layout,
    bytes: usize,
}

impl std::fmt::Debug for PackedMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedMatrix")
            .field("ty", &self.ty)
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .field("layout", &self.layout)
            .field("bytes", &self.bytes().len())
            .finish()
    }
}

/// Quant bytes of one row's block: 16 bytes of nibbles, or Q8_0's 32 bytes.
pub(crate) fn quant_bytes(ty: GgmlType) -> usize {
    match ty {
        GgmlType::Q8_0 => 32,
        _ => 16,
    }
}

/// Quant bytes of one block of a group.
pub(crate) fn group_quant_bytes(ty: GgmlType) -> usize {
    GROUP_ROWS * quant_bytes(ty)
}

/// Head bytes per block of a group: eight f16 scales, then eight f16 mins (Q4_1) or the fifth
/// bits as eight 32-bit masks (Q5_0, see [`Q5_MASKS`]).
pub(crate) fn head_bytes(ty: GgmlType) -> usize {
    match ty {
        GgmlType::Q4_1 => 32,
        GgmlType::Q5_0 => 48,
        _ => 16,
    }
}

/// Offset of Q5_0's fifth-bit masks in a block's head bytes: mask `4h + 2x + k` (for quant
/// vector V = 2h + k, the bytes 8h..8h+8 of slots 4k..4k+4; x = 0 for its low nibbles, 1 for
/// the high ones) has bit `8j + i` set where the element in byte i, nibble x of slot 4k + j has
/// its fifth bit: byte j of the mask is byte 2x + h of that slot's `qh`. So the masks of the
/// two vectors of one 64-byte load (bytes 8h..8h+8 of all eight slots) make one 64-bit mask.
pub(crate) const Q5_MASKS: usize = 16;

/// Where byte `byte` of slot `s`'s `qh` lies in the Q5_0 head bytes of a block.
pub(crate) fn q5_mask_byte(s: usize, byte: usize) -> usize {
    let (h, x) = (byte % 2, byte / 2);
    let (k, j) = (s / 4, s % 4);
    Q5_MASKS + 4 * (4 * h + 2 * x + k) + j
}

/// Blocks per run of a group: their quants, then their heads (see the module docs).
pub(crate) const RUN: usize = 4;

/// The run of blocks from `first` (a multiple of [`RUN`]) in a group of `nb` blocks of type
/// `ty`: the offsets of its quants and of its heads, and its length in blocks.
#[inline(always)]
pub(crate) fn run_offsets(ty: GgmlType, nb: usize, first: usize) -> (usize, usize, usize) {
    let (gq, hb) = (group_quant_bytes(ty), head_bytes(ty));
    let len = (nb - first).min(RUN);
    let start = first * (gq + hb);
    (start, start + len * gq, len)
}

/// Offsets of block `b`'s quants and heads in a group of `nb` blocks of type `ty`.
#[inline(always)]
pub(crate) fn block_offsets(ty: GgmlType, nb: usize, b: usize) -> (usize, usize) {
    let (first, j) = (b / RUN * RUN, b % RUN);
    let (quants, heads, _) = run_offsets(ty, nb, first);
    (quants + j * group_quant_bytes(ty), heads + j * head_bytes(ty))
}

/// Bytes of one Q4_K super-block of a group (see the module docs).
pub(crate) const Q4K_BLOCK_BYTES: usize = 1024 + 64 + 64 + 32;
/// Offsets of the Q4_K scales, mins and heads in a group's super-block.
pub(crate) const Q4K_SCALES: usize = 1024;
pub(crate) const Q4K_MINS: usize = 1088;
pub(crate) const Q4K_HEADS: usize = 1152;

/// Bytes of one group of rows of `nb` blocks.
pub(crate) fn group_bytes(ty: GgmlType, nb: usize) -> usize {
    if ty == GgmlType::Q4_K {
        return nb * Q4K_BLOCK_BYTES;
    }
    (nb * (group_quant_bytes(ty) + head_bytes(ty))).next_multiple_of(32)
}

/// The formats [`PackedMatrix::pack`] handles: an fp16 scale (and min), then the quant bytes.
trait Packable: Pod {
    fn d(&self) -> u16;
    fn m(&self) -> Option<u16> {
        None
    }
    fn qs(&self) -> &[u8];
    /// The fifth bits (Q5_0).
    fn qh(&self) -> Option<[u8; 4]> {
        None
    }
}

impl Packable for BlockQ4_0 {
    fn d(&self) -> u16 {
        self.d.to_bits()
    }
    fn qs(&self) -> &[u8] {
        &self.qs
    }
}

impl Packable for BlockQ4_1 {
    fn d(&self) -> u16 {
        self.d.to_bits()
    }
    fn m(&self) -> Option<u16> {
        Some(self.m.to_bits())
    }
    fn qs(&self) -> &[u8] {
        &self.qs
    }
}

impl Packable for BlockQ5_0 {
    fn d(&self) -> u16 {
        self.d.to_bits()
    }
    fn qs(&self) -> &[u8] {
        &self.qs
    }
    fn qh(&self) -> Option<[u8; 4]> {
        Some(self.qh)
    }
}

impl Packable for BlockQ8_0 {
    fn d(&self) -> u16 {
        self.d.to_bits()
    }
    fn qs(&self) -> &[u8] {
        bytemuck::cast_slice(&self.qs)
    }
}

/// `f(group, slot, row, b, block)` for block `b` of every row of `w`, where `group` is the
/// row's group in `out` (whole groups of `gb` bytes), `slot` its place there and `row` its
/// index in the group (`SLOT_ROW[slot]`). Rows past `w` (the last group's padding) are skipped.
fn each_block<B>(w: &[&[B]], gb: usize, out: &mut [u8], mut f: impl FnMut(&mut [u8], usize, usize, usize, &B)) {
    for (g, dst) in out.chunks_exact_mut(gb).enumerate() {
        for (s, &r) in SLOT_ROW.iter().enumerate() {
            let Some(row) = w.get(g * GROUP_ROWS + r) else {
                continue;
            };
            for (b, blk) in row.iter().enumerate() {
                f(dst, s, r, b, blk);
            }
        }
    }
}

/// Writes the groups of `rows` (each `nb` blocks of type `ty`) into `out` (whole groups, zeroed).
fn pack_rows<B: Packable>(w: &[&[B]], ty: GgmlType, nb: usize, out: &mut [u8]) {
    let (gq, hb) = (group_quant_bytes(ty), head_bytes(ty));
    each_block(w, group_bytes(ty, nb), out, |dst, s, r, b, blk| {
        let (qo, ho) = block_offsets(ty, nb, b);
        let q = &mut dst[qo..qo + gq];
        // Chunk h * 8 + s: bytes 8h..8h+8 of slot s.
        for (h, bytes) in blk.qs().chunks_exact(8).enumerate() {
            q[64 * h + 8 * s..64 * h + 8 * s + 8].copy_from_slice(bytes);
        }
        let h = &mut dst[ho..ho + hb];
        h[2 * r..2 * r + 2].copy_from_slice(&blk.d().to_le_bytes());
        if let Some(m) = blk.m() {
            h[16 + 2 * r..16 + 2 * r + 2].copy_from_slice(&m.to_le_bytes());
        }
        if let Some(qh) = blk.qh() {
            for (byte, bits) in qh.into_iter().enumerate() {
                h[q5_mask_byte(s, byte)] = bits;
            }
        }
    });
}

/// Writes the groups of the Q4_K rows `w` (`nb` super-blocks each) into `out` (whole groups,
/// zeroed).
fn pack_rows_q4k(w: &[&[BlockQ4K]], nb: usize, out: &mut [u8]) {
    each_block(w, group_bytes(GgmlType::Q4_K, nb), out, |dst, s, r, b, blk| {
        let d = &mut dst[b * Q4K_BLOCK_BYTES..(b + 1) * Q4K_BLOCK_BYTES];
        let sm = unpack_scales_mins(&blk.scales);
        for (j, pair) in blk.qs.chunks_exact(32).enumerate() {
            for (h, bytes) in pair.chunks_exact(8).enumerate() {
                let at = 256 * j + 64 * h + 8 * s;
                d[at..at + 8].copy_from_slice(bytes);
            }
            d[Q4K_SCALES + 16 * j + s] = sm[2 * j];
            d[Q4K_SCALES + 16 * j + 8 + s] = sm[2 * j + 1];
            d[Q4K_MINS + 16 * j + 2 * r] = sm[8 + 2 * j];
            d[Q4K_MINS + 16 * j + 2 * r + 1] = sm[8 + 2 * j + 1];
        }
        d[Q4K_HEADS + 2 * r..Q4K_HEADS + 2 * r + 2].copy_from_slice(&blk.d);
        d[Q4K_HEADS + 16 + 2 * r..Q4K_HEADS + 16 + 2 * r + 2].copy_from_slice(&blk.dmin);
    });
}

/// The Q4_K rows of one packed group (`g`, `nb` super-blocks), rebuilt into `out` (eight rows).
/// Only the x86 kernels have a packed Q4_K product.
#[cfg(target_arch = "x86_64")]
pub(crate) fn unpack_group_q4k(g: &[u8], nb: usize, out: &mut [BlockQ4K]) {
    for (s, &r) in SLOT_ROW.iter().enumerate() {
        for (b, blk) in out[r * nb..(r + 1) * nb].iter_mut().enumerate() {
            let d = &g[b * Q4K_BLOCK_BYTES..(b + 1) * Q4K_BLOCK_BYTES];
            let (mut ls, mut lm) = ([0u8; 8], [0u8; 8]);
            for (j, pair) in blk.qs.chunks_exact_mut(32).enumerate() {
                for (h, bytes) in pair.chunks_exact_mut(8).enumerate() {
                    let at = 256 * j + 64 * h + 8 * s;
                    bytes.copy_from_slice(&d[at..at + 8]);
                }
                ls[2 * j] = d[Q4K_SCALES + 16 * j + s];
                ls[2 * j + 1] = d[Q4K_SCALES + 16 * j + 8 + s];
                lm[2 * j] = d[Q4K_MINS + 16 * j + 2 * r];
                lm[2 * j + 1] = d[Q4K_MINS + 16 * j + 2 * r + 1];
            }
            blk.scales = crate::quants::q4_k::pack_scales_mins(&ls, &lm);
            blk.d.copy_from_slice(&d[Q4K_HEADS + 2 * r..Q4K_HEADS + 2 * r + 2]);
            blk.dmin
                .copy_from_slice(&d[Q4K_HEADS + 16 + 2 * r..Q4K_HEADS + 16 + 2 * r + 2]);
        }
    }
}

/// The types a table may have packed kernels for ([`packs_type`]).
const PACKABLE: [GgmlType; 5] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
];

/// Whether `table` has packed kernels for `ty`.
fn packs_type(table: &KernelTable, ty: GgmlType) -> bool {
    let g = &table.gemm;
    match ty {
        GgmlType::Q4_0 => g.packed_q4_0.is_some(),
        GgmlType::Q4_1 => g.packed_q4_1.is_some(),
        GgmlType::Q5_0 => g.packed_q5_0.is_some(),
        GgmlType::Q8_0 => g.packed_q8_0.is_some(),
        GgmlType::Q4_K => g.packed_q4_k.is_some(),
        _ => false,
    }
}

/// Whether `table` has packed kernels at all (the x86 tables).
fn packs_any(table: &KernelTable) -> bool {
    PACKABLE.iter().any(|&ty| packs_type(table, ty))
}

/// The packed matrix `ws` stack into, or None when `table` has no packed kernels for their type,
/// or they differ in type or columns.
fn plan(table: &KernelTable, ws: &[&WeightMatrix]) -> Option<Plan> {
    let (ty, cols) = (ws.first()?.ty, ws[0].cols);
    let has = packs_type(table, ty);
    let rows: usize = ws.iter().map(|w| w.rows).sum();
    if !has || rows == 0 || cols == 0 || ws.iter().any(|w| w.ty != ty || w.cols != cols) {
        return None;
    }
    let nb = cols / ty.block_size() as usize;
    let bytes = rows.div_ceil(GROUP_ROWS) * group_bytes(ty, nb);
    Some(Plan {
        ty,
        rows,
        cols,
        layout: Layout::Groups,
        bytes,
    })
}

/// What [`PackedMatrix::pack_all`] makes of a set: its packed matrix, or where the set is one
/// matrix of a type without packed kernels and `table` packs others, a copy of its rows.
fn plan_or_copy(table: &KernelTable, ws: &[&WeightMatrix]) -> Option<Plan> {
    plan(table, ws).or_else(|| match ws {
        [w] if packs_any(table) && w.rows > 0 && w.cols > 0 => Some(Plan {
            ty: w.ty,
            rows: w.rows,
            cols: w.cols,
            layout: Layout::Rows,
            bytes: w.data.len(),
        }),
        _ => None,
    })
}

/// Writes the packed groups of `ws` (as `p` plans them) into `out` (`p.bytes` long, zeroed,
/// 32-aligned).
fn fill(ws: &[&WeightMatrix], p: Plan, out: &mut [u8]) {
    if p.layout == Layout::Rows {
        return out.copy_from_slice(ws[0].data);
    }
    /// `f` of the rows of every matrix, in order (blocks borrowed, or copied when unaligned).
    fn with_rows<B: Pod>(ws: &[&WeightMatrix], nb: usize, f: impl FnOnce(&[&[B]])) {
        let all: Vec<_> = ws.iter().map(|w| blocks::<B>(w.data)).collect();
        f(&all.iter().flat_map(|b| b.chunks_exact(nb)).collect::<Vec<_>>())
    }
    let (ty, nb) = (p.ty, p.cols / p.ty.block_size() as usize);
    match ty {
        GgmlType::Q4_0 => with_rows::<BlockQ4_0>(ws, nb, |r| pack_rows(r, ty, nb, out)),
        GgmlType::Q4_1 => with_rows::<BlockQ4_1>(ws, nb, |r| pack_rows(r, ty, nb, out)),
        GgmlType::Q5_0 => with_rows::<BlockQ5_0>(ws, nb, |r| pack_rows(r, ty, nb, out)),
        GgmlType::Q8_0 => with_rows::<BlockQ8_0>(ws, nb, |r| pack_rows(r, ty, nb, out)),
        GgmlType::Q4_K => with_rows::<BlockQ4K>(ws, nb, |r| pack_rows_q4k(r, nb, out)),
        _ => unreachable!("planned"),
    }
}

impl PackedMatrix {
    /// `w` repacked for `table`, or None when the table has no packed kernels for its type (then
    /// the products of the map's bytes are what that table runs best).
    pub fn pack(table: &KernelTable, w: &WeightMatrix) -> Option<PackedMatrix> {
        Self::pack_stacked(table, &[w])
    }

    /// The rows of every matrix of `ws`, one after another, repacked as one matrix for `table`
    /// (one product for the projections that read the same input, e.g. Q, K and V); None when
    /// the table has no packed kernels for their type, or they differ in type or columns.
    pub fn pack_stacked(table: &KernelTable, ws: &[&WeightMatrix]) -> Option<PackedMatrix> {
        let p = plan(table, ws)?;
        let mut data = vec![Chunk32([0; 32]); p.bytes / 32];
        fill(ws, p, bytemuck::cast_slice_mut(&mut data));
        Some(PackedMatrix {
            ty: p.ty,
            rows: p.rows,
            cols: p.cols,
            layout: p.layout,
            data: Storage::Owned(data),
        })
    }

    /// Whether [`pack_stacked`](Self::pack_stacked) packs `ws`.
    pub fn packs(table: &KernelTable, ws: &[&WeightMatrix]) -> bool {
        plan(table, ws).is_some()
    }

    /// [`pack_stacked`](Self::pack_stacked) of every set of `jobs` (in parallel), all into one
    /// anonymous map, in the order given, each on a cache line, the map advised to the kernel
    /// as huge pages (Linux).
    ///
    /// Decode streams every weight once a token, and with 4 KiB pages every 4 KiB of that
    /// stream is a TLB miss and a page walk: a model's weights are tens to thousands of times
    /// what the TLB covers. Per-token A/B with the weights in transparent huge pages against
    /// without: SmolLM2 tg128 +13-20%, gemma3 +15%, the 8b Q4_0 shape +1.5% (DEVELOPERS.md).
    /// Where the map cannot be made, each matrix gets a vector of its own, as `pack_stacked`
    /// gives it.
    ///
    /// Where the table packs some types, a set that is one matrix of a type it has no packed
    /// kernels for (Q6_K, the other K-quants, floats) is copied into the map as it is, rows
    /// and all, for the huge pages alone; [`matmul_packed`](KernelTable::matmul_packed) runs
    /// the table's row kernels on the copy. Per-token A/B: the 8b Q4_K_M shape (39% of its
    /// bytes Q6_K) +2.1% and +1.2%, gemma3 +1.8% and +2.0%.
    pub fn pack_all(table: &KernelTable, jobs: &[Vec<&WeightMatrix>]) -> Vec<Option<PackedMatrix>> {
        let plans: Vec<Option<Plan>> = jobs.iter().map(|ws| plan_or_copy(table, ws)).collect();
        let total: usize = plans
            .iter()
            .flatten()
            .map(|p| p.bytes.next_multiple_of(ARENA_ALIGN))
            .sum();
        if total == 0 {
            return plans.iter().map(|_| None).collect();
        }
        // Without the map (or its read-only protection): a vector per matrix.
        let alone = || jobs.par_iter().map(|ws| Self::pack_stacked(table, ws)).collect();
        let Some((mut map, start)) = huge_anon(total) else {
            return alone();
        };
        let mut offs = Vec::with_capacity(plans.len());
        let mut parts = Vec::with_capacity(plans.len());
        let (mut off, mut rest) = (start, &mut map[start..]);
        for p in &plans {
            let len = p.map_or(0, |p| p.bytes.next_multiple_of(ARENA_ALIGN));
            let (part, tail) = std::mem::take(&mut rest).split_at_mut(len);
            offs.push(off);
            parts.push(part);
            (off, rest) = (off + len, tail);
        }
        parts.into_par_iter().zip(jobs).zip(&plans).for_each(|((out, ws), p)| {
            if let Some(p) = p {
                fill(ws, *p, &mut out[..p.bytes]);
            }
        });
        let map = match map.make_read_only() {
            Ok(m) => Arc::new(m),
            Err(_) => return alone(),
        };
        plans
            .into_iter()
            .zip(offs)
            .map(|(p, off)| {
                p.map(|p| PackedMatrix {
                    ty: p.ty,
                    rows: p.rows,
                    cols: p.cols,
                    layout: p.layout,
                    data: Storage::Shared {
                        map: Arc::clone(&map),
                        off,
                        len: p.bytes,
                    },
                })
            })
            .collect()
    }

    /// The matrix as the source's rows, where it is a copy of them (a type the table has no
    /// packed kernels for, in [`pack_all`](Self::pack_all)'s arena).
    pub fn as_rows(&self) -> Option<WeightMatrix<'_>> {
        (self.layout == Layout::Rows).then(|| WeightMatrix {
            ty: self.ty,
            rows: self.rows,
            cols: self.cols,
            data: self.bytes(),
        })
    }

    /// The packed bytes (whole groups, or the copied rows).
    pub fn bytes(&self) -> &[u8] {
        match &self.data {
            Storage::Owned(v) => bytemuck::cast_slice(v),
            Storage::Shared { map, off, len } => &map[*off..*off + *len],
        }
    }

    /// Blocks per row.
    pub(crate) fn blocks_per_row(&self) -> usize {
        self.cols / self.ty.block_size() as usize
    }

    /// Bytes of one group.
    pub(crate) fn group_bytes(&self) -> usize {
        group_bytes(self.ty, self.blocks_per_row())
    }
}

#[cfg(test)]
mod tests {
    use super::thp_mode;

    #[test]
    fn reads_the_chosen_huge_page_mode() {
        assert_eq!(thp_mode("always [madvise] never\n").as_deref(), Some("madvise"));
        assert_eq!(thp_mode("[always] madvise never").as_deref(), Some("always"));
        assert_eq!(thp_mode("always madvise [never]").as_deref(), Some("never"));
        assert_eq!(thp_mode("always madvise never"), None);
        assert_eq!(thp_mode("[]"), None);
        assert_eq!(thp_mode(""), None);
    }
}
