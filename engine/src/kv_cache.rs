//! The key/value cache: every layer's keys and values for every position of the context,
//! allocated once when the model is loaded. A cache may hold several independent sequences
//! (slots) of `n_ctx` positions each, for a server decoding many requests in one batch.

use half::f16;
use half::slice::HalfFloatSliceExt;
use std::fmt;
use std::str::FromStr;

/// The element type of the cached keys and values (llama.cpp's `--cache-type-k/-v`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvType {
    /// IEEE half, rounded to nearest-even on store: half the memory of f32 and half the bytes a
    /// decode step's attention reads (5-14% faster SmolLM2 decode at 128-512 tokens), at the
    /// price of last-bit differences that the real test models amplify into greedy tokens
    /// parting from llama.cpp's reference after 14-50 tokens.
    F16,
    /// f32: the keys and values exactly as computed (the default: the fidelity tests' setting).
    #[default]
    F32,
}

impl KvType {
    /// Bytes per cached element.
    pub fn size(self) -> usize {
        match self {
            KvType::F16 => 2,
            KvType::F32 => 4,
        }
    }
}

impl fmt::Display for KvType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KvType::F16 => "f16",
            KvType::F32 => "f32",
        })
    }
}

impl FromStr for KvType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f16" => Ok(KvType::F16),
            "f32" => Ok(KvType::F32),
            other => Err(format!("unknown KV cache type {other:?} (f16 or f32)")),
        }
    }
}

/// A cached element: stored from f32, and the attention kernels that read it.
pub(crate) trait CacheElem: Copy + Send + Sync + 'static {
    const ZERO: Self;
    fn store(dst: &mut [Self], src: &[f32]);
    /// [`ferro_kernels::dots_f32`] of such keys.
    fn dots(q: &[f32], heads: usize, k: &[Self], stride: usize, out: &mut [f32]);
    /// [`ferro_kernels::weighted_sum_f32`] of such values.
    fn weighted_sum(a: &[f32], heads: usize, v: &[Self], stride: usize, out: &mut [f32]);
}

impl CacheElem for f32 {
    const ZERO: f32 = 0.0;
    fn store(dst: &mut [f32], src: &[f32]) {
        dst.copy_from_slice(src);
    }
    fn dots(q: &[f32], heads: usize, k: &[f32], stride: usize, out: &mut [f32]) {
        ferro_kernels::dots_f32(q, heads, k, stride, out)
    }
    fn weighted_sum(a: &[f32], heads: usize, v: &[f32], stride: usize, out: &mut [f32]) {
        ferro_kernels::weighted_sum_f32(a, heads, v, stride, out)
    }
}

impl CacheElem for f16 {
    const ZERO: f16 = f16::ZERO;
    fn store(dst: &mut [f16], src: &[f32]) {
        dst.convert_from_f32_slice(src);
    }
    fn dots(q: &[f32], heads: usize, k: &[f16], stride: usize, out: &mut [f32]) {
        ferro_kernels::dots_f16(q, heads, k, stride, out)
    }
    fn weighted_sum(a: &[f32], heads: usize, v: &[f16], stride: usize, out: &mut [f32]) {
        ferro_kernels::weighted_sum_f16(a, heads, v, stride, out)
    }
}

/// Every layer's keys and values of one element type: `[n_layer][n_slots][n_head][n_ctx][head_dim]`.
#[derive(Debug)]
struct Rows<E> {
    k: Vec<Vec<E>>,
    v: Vec<Vec<E>>,
}

impl<E: CacheElem> Rows<E> {
    fn new(n_layer: usize, positions: usize, k_width: usize, v_width: usize) -> Self {
        Rows {
            k: (0..n_layer).map(|_| vec![E::ZERO; positions * k_width]).collect(),
            v: (0..n_layer).map(|_| vec![E::ZERO; positions * v_width]).collect(),
        }
    }

    /// One head's keys (or values) of consecutive positions: `src` is `[n][width]` rows, of which
    /// the head's `hd` elements from `src_at` go to `dst_at`, `dst_at + hd`, ... of `layer`.
    fn store_head(dst: &mut [E], dst_at: usize, src: &[f32], width: usize, src_at: usize, hd: usize) {
        for (i, row) in src.chunks_exact(width).enumerate() {
            E::store(
                &mut dst[dst_at + i * hd..dst_at + (i + 1) * hd],
                &row[src_at..src_at + hd],
            );
        }
    }

    /// Copies `n` elements from `from` to `to` (element offsets) in every layer's keys (`k`)
    /// or values.
    fn copy(&mut self, k: bool, from: usize, to: usize, n: usize) {
        for rows in if k { &mut self.k } else { &mut self.v } {
            rows.copy_within(from..from + n, to);
        }
    }
}

#[derive(Debug)]
enum Store {
    F16(Rows<f16>),
    F32(Rows<f32>),
}

/// `$body` with `$r` bound to the store's rows, whatever their element type.
macro_rules! with_rows {
    ($store:expr, $r:ident => $body:expr) => {
        match $store {
            Store::F16($r) => $body,
            Store::F32($r) => $body,
        }
    };
}

/// One layer's keys `[n_slots][n_head][n_ctx][head_dim_k]` and values (the same with
/// `head_dim_v`), in the cache's element type ([`KvCache::plane`] finds a slot's head).
pub(crate) enum KvLayer<'a> {
    F16(&'a [f16], &'a [f16]),
    F32(&'a [f32], &'a [f32]),
}

/// Keys and values per layer, in planes of one (slot, key head) each: a head's keys of all
/// positions of a sequence are consecutive, so a decode step's attention reads each head's keys
/// (and values) as one stream (position-major rows, whose heads interleave, read a third of
/// every cache line run for SmolLM2's three key heads and left the hardware prefetchers short
/// streams).
#[derive(Debug)]
pub struct KvCache {
    /// Positions one sequence holds (the context size).
    pub n_ctx: usize,
    /// Independent sequences held.
    pub n_slots: usize,
    /// Elements per position of one layer's keys: `n_head_kv * head_dim_k`.
    pub k_width: usize,
    /// Elements per position of one layer's values: `n_head_kv * head_dim_v`.
    pub v_width: usize,
    /// Key (and value) heads.
    pub n_head: usize,
    n_layer: usize,
    store: Store,
}

/// A cache that would not fit: its size in bytes and the memory there is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheTooLarge {
    /// None: the positions past `usize` or the bytes past `u128`.
    pub bytes: Option<u128>,
    pub memory: Option<u64>,
}

impl fmt::Display for CacheTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let gib = |b: f64| b / (1u64 << 30) as f64;
        match (self.bytes, self.memory) {
            (Some(b), Some(m)) => write!(
                f,
                "the KV cache would take {:.1} GiB, more than this machine's {:.1} GiB of memory",
                gib(b as f64),
                gib(m as f64)
            ),
            (Some(b), None) => write!(f, "the KV cache would take {:.1} GiB", gib(b as f64)),
            (None, _) => write!(f, "the KV cache would be larger than the address space"),
        }
    }
}

/// Total memory of this machine in bytes (Linux: `/proc/meminfo`'s MemTotal), if known.
fn total_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

impl KvCache {
    pub fn new(
        n_layer: usize,
        n_ctx: usize,
        n_head: usize,
        k_width: usize,
        v_width: usize,
        ty: KvType,
    ) -> Result<Self, CacheTooLarge> {
        Self::with_slots(n_layer, n_ctx, 1, n_head, k_width, v_width, ty)
    }

    /// Bytes of a cache of `positions` positions (all slots), None past `u128`.
    pub fn bytes_for(n_layer: usize, positions: usize, k_width: usize, v_width: usize, ty: KvType) -> Option<u128> {
        let elem: u128 = match ty {
            KvType::F16 => 2,
            KvType::F32 => 4,
        };
        (positions as u128)
            .checked_mul(k_width as u128 + v_width as u128)?
            .checked_mul(n_layer as u128)?
            .checked_mul(elem)
    }

    /// A cache of `n_slots` sequences of `n_ctx` positions each, for `n_head` key heads (which
    /// divide `k_width` and `v_width`); an error, instead of an allocation failure, where it
    /// would not fit in the machine's memory. (The planes are zeroed lazily by the system:
    /// positions never used take no memory.)
    ///
    /// # Panics
    /// When `n_head` is 0 or does not divide the widths.
    pub fn with_slots(
        n_layer: usize,
        n_ctx: usize,
        n_slots: usize,
        n_head: usize,
        k_width: usize,
        v_width: usize,
        ty: KvType,
    ) -> Result<Self, CacheTooLarge> {
        assert!(
            n_head > 0 && k_width.is_multiple_of(n_head) && v_width.is_multiple_of(n_head),
            "KV cache: {n_head} heads do not divide widths {k_width} and {v_width}"
        );
        let n_slots = n_slots.max(1);
        let positions = n_slots.checked_mul(n_ctx);
        let bytes = positions.and_then(|p| Self::bytes_for(n_layer, p, k_width, v_width, ty));
        let memory = total_memory();
        // Without a memory size, at most what a Vec may hold.
        let limit = memory.map_or(isize::MAX as u128, u128::from).min(isize::MAX as u128);
        let Some(positions) = positions.filter(|_| bytes.is_some_and(|b| b <= limit)) else {
            return Err(CacheTooLarge { bytes, memory });
        };
        let store = match ty {
            KvType::F16 => Store::F16(Rows::new(n_layer, positions, k_width, v_width)),
            KvType::F32 => Store::F32(Rows::new(n_layer, positions, k_width, v_width)),
        };
        Ok(KvCache {
            n_ctx,
            n_slots,
            k_width,
            v_width,
            n_head,
            n_layer,
            store,
        })
    }

    /// The element type.
    pub fn ty(&self) -> KvType {
        match self.store {
            Store::F16(_) => KvType::F16,
            Store::F32(_) => KvType::F32,
        }
    }

    /// Store `n` consecutive positions starting at `pos` of slot 0: `k` is `[n][k_width]`, `v` `[n][v_width]`.
    pub fn store(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        self.store_slot(layer, 0, pos, k, v)
    }

    /// Store `n` consecutive positions starting at `pos` of `slot` (f16: rounded to nearest-even).
    pub fn store_slot(&mut self, layer: usize, slot: usize, pos: usize, k: &[f32], v: &[f32]) {
        let (kw, vw) = (self.k_width, self.v_width);
        let (hk, hv) = (kw / self.n_head, vw / self.n_head);
        for h in 0..self.n_head {
            let (ko, vo) = self.plane(slot, h);
            let (ko, vo) = (ko + pos * hk, vo + pos * hv);
            with_rows!(&mut self.store, r => {
                Rows::store_head(&mut r.k[layer], ko, k, kw, h * hk, hk);
                Rows::store_head(&mut r.v[layer], vo, v, vw, h * hv, hv);
            })
        }
    }

    /// Element offsets, in a layer's keys and in its values, of position 0 of `slot`'s plane of
    /// key head `head`; its positions follow `head_dim` elements apart.
    pub(crate) fn plane(&self, slot: usize, head: usize) -> (usize, usize) {
        let plane = (slot * self.n_head + head) * self.n_ctx;
        (
            plane * (self.k_width / self.n_head),
            plane * (self.v_width / self.n_head),
        )
    }

    /// A layer's keys and values.
    pub(crate) fn layer(&self, layer: usize) -> KvLayer<'_> {
        match &self.store {
            Store::F16(r) => KvLayer::F16(&r.k[layer], &r.v[layer]),
            Store::F32(r) => KvLayer::F32(&r.k[layer], &r.v[layer]),
        }
    }

    /// Copy positions `0..n` of slot `from` into slot `to` in every layer (a shared prefix).
    pub fn copy_prefix(&mut self, from: usize, to: usize, n: usize) {
        if from == to || n == 0 {
            return;
        }
        let n = n.min(self.n_ctx);
        let (hk, hv) = (self.k_width / self.n_head, self.v_width / self.n_head);
        for h in 0..self.n_head {
            let ((kf, vf), (kt, vt)) = (self.plane(from, h), self.plane(to, h));
            with_rows!(&mut self.store, r => {
                r.copy(true, kf, kt, n * hk);
                r.copy(false, vf, vt, n * hv);
            })
        }
    }

    /// Bytes held.
    pub fn size_bytes(&self) -> usize {
        self.n_layer * self.n_slots * self.n_ctx * (self.k_width + self.v_width) * self.ty().size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_types_store_copy_and_read_back() {
        for ty in [KvType::F16, KvType::F32] {
            // Two key heads of 3 (keys) and 2 (values) elements, two positions stored.
            let mut kv = KvCache::with_slots(2, 4, 2, 2, 6, 4, ty).unwrap();
            assert_eq!(kv.size_bytes(), 2 * 2 * 4 * 10 * ty.size());
            let k = [1.0, -2.5, 0.1, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0];
            let v = [0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5];
            kv.store_slot(1, 0, 2, &k, &v);
            kv.copy_prefix(0, 1, 4);
            let want = |x: f32| {
                if ty == KvType::F16 {
                    f16::from_f32(x).to_f32()
                } else {
                    x
                }
            };
            let (kr, vr): (Vec<f32>, Vec<f32>) = match kv.layer(1) {
                KvLayer::F16(k, v) => (
                    k.iter().map(|x| x.to_f32()).collect(),
                    v.iter().map(|x| x.to_f32()).collect(),
                ),
                KvLayer::F32(k, v) => (k.to_vec(), v.to_vec()),
            };
            for slot in 0..2 {
                for h in 0..2 {
                    // Positions 2 and 3 of the head's plane: its parts of the two rows.
                    let (k0, v0) = kv.plane(slot, h);
                    let (k0, v0) = (k0 + 2 * 3, v0 + 2 * 2);
                    let wk: Vec<f32> = [&k[3 * h..3 * h + 3], &k[6 + 3 * h..6 + 3 * h + 3]].concat();
                    let wv: Vec<f32> = [&v[2 * h..2 * h + 2], &v[4 + 2 * h..4 + 2 * h + 2]].concat();
                    let wk: Vec<f32> = wk.iter().map(|&x| want(x)).collect();
                    let wv: Vec<f32> = wv.iter().map(|&x| want(x)).collect();
                    assert_eq!(kr[k0..k0 + 6], wk[..], "{ty} slot {slot} head {h}");
                    assert_eq!(vr[v0..v0 + 4], wv[..], "{ty} slot {slot} head {h}");
                    // Positions 0, 1 untouched.
                    assert!(kr[k0 - 6..k0].iter().all(|&x| x == 0.0), "{ty} slot {slot} head {h}");
                }
            }
            // Layer 0 untouched.
            assert!(
                matches!(kv.layer(0), KvLayer::F16(k, _) if k.iter().all(|x| x.to_f32() == 0.0))
                    || matches!(kv.layer(0), KvLayer::F32(k, _) if k.iter().all(|&x| x == 0.0))
            );
        }
        assert_eq!("F32".parse::<KvType>(), Ok(KvType::F32));
        assert!("q8_0".parse::<KvType>().is_err());
    }

    /// A cache past the machine's memory (or past any address space) is an error, not an
    /// aborted allocation.
    #[test]
    fn a_cache_too_large_is_an_error() {
        let e = KvCache::with_slots(32, 100_000_000, 1, 8, 1024, 1024, KvType::F32).unwrap_err();
        assert_eq!(e.bytes, Some(32 * 100_000_000 * 2048 * 4));
        assert!(e.to_string().contains("GiB"), "{e}");
        let e = KvCache::with_slots(usize::MAX, usize::MAX, 2, 1, 8, 8, KvType::F16).unwrap_err();
        assert_eq!(e.bytes, None);
        assert!(e.to_string().contains("address space"), "{e}");
        assert!(KvCache::with_slots(2, 16, 2, 2, 8, 8, KvType::F16).is_ok());
    }
}
