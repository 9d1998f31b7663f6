//! Thread-free SIMD-vs-scalar check (`harness = false`, a plain `main`).
//!
//! qemu-user on our CI machines hangs on any aarch64 binary that creates a thread, so libtest
//! (a thread per test), proptest and rayon cannot run under it. This binary creates no thread:
//! it draws random blocks from a small deterministic PRNG and compares every SIMD path this CPU
//! offers against the scalar reference. On aarch64 that is NEON (with `sdot` when the CPU, or
//! qemu's `-cpu`, has dotprod); on x86-64 it is AVX2 / AVX-512, so the binary means something on
//! every host. `scripts/test-neon.sh` runs it under qemu.
//!
//! Bounds are those of `simd_vs_scalar.rs` and `kquants.rs`: quantizers bit-exact; legacy dots
//! within 1e-5 · Σ|w a|; K-quant dots within 2e-5 · Σ|w a| (and the scalar one within the same
//! bound of the f64 dot product of the dequantized rows).
//!
//! Exits 1 with a message on any mismatch, or when an expected SIMD path was not checked.

use bytemuck::Zeroable;
use ferro_kernels::quants::q2_k::{self, BlockQ2K};
use ferro_kernels::quants::q3_k::{self, BlockQ3K};
use ferro_kernels::quants::q4_k::{self, BlockQ4K};
use ferro_kernels::quants::q5_k::{self, BlockQ5K};
use ferro_kernels::quants::q6_k::{self, BlockQ6K};
use ferro_kernels::quants::q8_k::{self, BlockQ8K, KQuantKernels, QK_K};
use ferro_kernels::quants::{float, q4_0, q4_1, q5_0, q5_1, q8_0, q8_1};
use ferro_kernels::quants::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1};
use ferro_kernels::{KernelPath, KernelTable};
use half::{bf16, f16};

/// Cases per format.
const CASES: usize = 300;
/// At most this many mismatch messages are printed per format.
const MAX_REPORTS: usize = 5;

// ---------------------------------------------------------------- PRNG

/// SplitMix64: tiny, deterministic, good enough for test data.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in 0..n.
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    /// Uniform in [lo, hi).
    fn range(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }
    fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        std::array::from_fn(|_| self.byte())
    }
}

// ---------------------------------------------------------------- bookkeeping

/// Mismatch counter of one format.
struct Check {
    name: &'static str,
    compared: usize,
    failures: usize,
    paths: Vec<&'static str>,
}

impl Check {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            compared: 0,
            failures: 0,
            paths: Vec::new(),
        }
    }

    fn saw(&mut self, path: &'static str) {
        if !self.paths.contains(&path) {
            self.paths.push(path);
        }
    }

    fn fail(&mut self, msg: String) {
        if self.failures < MAX_REPORTS {
            eprintln!("MISMATCH {}: {msg}", self.name);
        }
        self.failures += 1;
    }

    /// `got` must equal `want` or lie within `rel · mag` of it (NaN never passes).
    fn close(&mut self, path: &'static str, case: usize, got: f64, want: f64, rel: f64, mag: f64) {
        self.saw(path);
        self.compared += 1;
        let ok = got == want || (got - want).abs() <= rel * mag + 1e-30;
        if !ok {
            self.fail(format!(
                "case {case} on {path}: simd {got} vs scalar {want} (magnitude {mag}, bound {})",
                rel * mag + 1e-30
            ));
        }
    }

    fn same<T: PartialEq + std::fmt::Debug>(&mut self, path: &'static str, case: usize, got: &[T], want: &[T]) {
        self.saw(path);
        self.compared += 1;
        if got != want {
            let i = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
            self.fail(format!(
                "case {case} on {path}: block {i} differs: simd {:?} vs scalar {:?}",
                got.get(i),
                want.get(i)
            ));
        }
    }

    /// Prints the format's line; returns whether it passed.
    fn report(&self) -> bool {
        let status = if self.failures == 0 { "ok" } else { "FAILED" };
        println!(
            "{:<10} {status}: {} comparisons, {} mismatches, paths [{}]",
            self.name,
            self.compared,
            self.failures,
            self.paths.join(", ")
        );
        self.failures == 0
    }
}

fn simd_tables() -> Vec<&'static KernelTable> {
    KernelPath::available()
        .into_iter()
        .filter(|p| *p != KernelPath::Scalar)
        .filter_map(KernelTable::for_path)
        .collect()
}

fn simd_kquants() -> Vec<KQuantKernels> {
    KQuantKernels::available()
        .into_iter()
        .filter(|k| k.name != "scalar")
        .collect()
}

// ---------------------------------------------------------------- legacy formats

/// An f16 scale: ordinary, tiny (subnormal), huge, zero, or any finite positive bit pattern.
fn scale(r: &mut Rng) -> f16 {
    match r.below(8) {
        0..=3 => f16::from_f32(r.range(-2.0, 2.0)),
        4 => f16::from_f32(6.0e-8),
        5 => f16::from_f32(-1000.0),
        6 => f16::from_f32(0.0),
        _ => f16::from_bits(1 + r.below(0x7bff - 1) as u16),
    }
}

/// 32 activation floats: random at one of several magnitudes, all zero, or all at ±1e6.
fn act_block(r: &mut Rng, out: &mut Vec<f32>) {
    match r.below(8) {
        0..=5 => {
            let m = [1e-6f32, 1.0, 1e3, 1e6][r.below(4)];
            out.extend((0..32).map(|_| r.range(-1.0, 1.0) * m));
        }
        6 => out.extend([0.0f32; 32]),
        _ => out.extend((0..32).map(|_| if r.byte() & 1 == 0 { -1e6f32 } else { 1e6 })),
    }
}

fn acts(r: &mut Rng, n: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(n * 32);
    for _ in 0..n {
        act_block(r, &mut v);
    }
    v
}

fn nibbles(r: &mut Rng) -> [u8; 16] {
    match r.below(6) {
        0..=3 => r.bytes(),
        4 => [0; 16],
        _ => [0xFF; 16],
    }
}

fn q8s(r: &mut Rng) -> [i8; 32] {
    match r.below(7) {
        0..=3 => r.bytes::<32>().map(|b| b as i8),
        4 => [0; 32],
        5 => [127; 32],
        _ => [-128; 32],
    }
}

fn quant_q8_0(x: &[f32]) -> Vec<BlockQ8_0> {
    let mut a = vec![BlockQ8_0::zeroed(); x.len() / 32];
    q8_0::quantize_activations(x, &mut a);
    a
}

/// Q8_1 stores `d·Σq` as f16, which overflows for |x| beyond ~8e3, so its inputs are scaled
/// down by 1e3 (as in `simd_vs_scalar.rs`).
fn scaled_for_q8_1(x: &[f32]) -> Vec<f32> {
    x.iter().map(|v| v * 1e-3).collect()
}

fn quant_q8_1(x: &[f32]) -> Vec<BlockQ8_1> {
    let mut a = vec![BlockQ8_1::zeroed(); x.len() / 32];
    q8_1::quantize_activations(&scaled_for_q8_1(x), &mut a);
    a
}

fn deq_q8_0(a: &[BlockQ8_0]) -> Vec<f32> {
    let mut v = vec![0f32; a.len() * 32];
    q8_0::dequantize(a, &mut v);
    v
}

fn magnitude(w: &[f32], a: &[f32]) -> f64 {
    w.iter().zip(a).map(|(x, y)| (x * y).abs()).sum::<f32>() as f64
}

/// Legacy dot bound: 1e-5 relative (simd_vs_scalar.rs).
const LEGACY_REL: f64 = 1e-5;

fn blocks_count(r: &mut Rng) -> usize {
    1 + r.below(17)
}

fn check_quantizers(r: &mut Rng, tables: &[&'static KernelTable]) -> bool {
    let mut c0 = Check::new("q8_0-quant");
    let mut c1 = Check::new("q8_1-quant");
    for case in 0..CASES {
        let n = 1 + r.below(8);
        let x = acts(r, n);
        let (a0, a1) = (quant_q8_0(&x), quant_q8_1(&x));
        let x1 = scaled_for_q8_1(&x);
        for t in tables {
            let mut b0 = vec![BlockQ8_0::zeroed(); n];
            (t.quantize_q8_0)(&x, &mut b0);
            c0.same(t.name, case, &b0, &a0);
            let mut b1 = vec![BlockQ8_1::zeroed(); n];
            (t.quantize_q8_1)(&x1, &mut b1);
            c1.same(t.name, case, &b1, &a1);
        }
    }
    // Ties (x·id exactly k + 0.5) round to even.
    let mut x = [0f32; 32];
    x[0] = 127.0;
    for (i, v) in x.iter_mut().enumerate().skip(1) {
        *v = (i as f32 - 16.0) + 0.5;
    }
    let a = quant_q8_0(&x);
    for t in tables {
        let mut b = [BlockQ8_0::zeroed()];
        (t.quantize_q8_0)(&x, &mut b);
        c0.same(t.name, CASES, &b, &a);
    }
    c0.report() & c1.report()
}

fn check_q4_0(r: &mut Rng, tables: &[&'static KernelTable]) -> bool {
    let mut c = Check::new("q4_0");
    for case in 0..CASES {
        let n = blocks_count(r);
        let w: Vec<BlockQ4_0> = (0..n)
            .map(|_| BlockQ4_0 {
                d: scale(r),
                qs: nibbles(r),
            })
            .collect();
        let a = quant_q8_0(&acts(r, n));
        let mut wf = vec![0f32; n * 32];
        q4_0::dequantize(&w, &mut wf);
        let want = q4_0::vec_dot(&w, &a) as f64;
        let mag = magnitude(&wf, &deq_q8_0(&a));
        for t in tables {
            c.close(t.name, case, (t.dot_q4_0)(&w, &a) as f64, want, LEGACY_REL, mag);
        }
    }
    c.report()
}

fn check_q4_1(r: &mut Rng, tables: &[&'static KernelTable]) -> bool {
    let mut c = Check::new("q4_1");
    for case in 0..CASES {
        let n = blocks_count(r);
        let w: Vec<BlockQ4_1> = (0..n)
            .map(|_| BlockQ4_1 {
                d: scale(r),
                m: scale(r),
                qs: nibbles(r),
            })
            .collect();
        let a = quant_q8_1(&acts(r, n));
        let want = q4_1::vec_dot(&w, &a) as f64;
        let mag: f32 = w
            .iter()
            .zip(&a)
            .map(|(x, y)| {
                x.d.to_f32().abs() * y.d.to_f32().abs() * 15.0 * 127.0 * 32.0 + (x.m.to_f32() * y.s.to_f32()).abs()
            })
            .sum();
        for t in tables {
            c.close(t.name, case, (t.dot_q4_1)(&w, &a) as f64, want, LEGACY_REL, mag as f64);
        }
    }
    c.report()
}

fn check_q5_0(r: &mut Rng, tables: &[&'static KernelTable]) -> bool {
    let mut c = Check::new("q5_0");
    for case in 0..CASES {
        let n = blocks_count(r);
        let w: Vec<BlockQ5_0> = (0..n)
            .map(|_| BlockQ5_0 {
                d: scale(r),
                qh: r.bytes(),
                qs: nibbles(r),
            })
            .collect();
        let a = quant_q8_0(&acts(r, n));
        let mut wf = vec![0f32; n * 32];
        q5_0::dequantize(&w, &mut wf);
        let want = q5_0::vec_dot(&w, &a) as f64;
        let mag = magnitude(&wf, &deq_q8_0(&a));
        for t in tables {
            c.close(t.name, case, (t.dot_q5_0)(&w, &a) as f64, want, LEGACY_REL, mag);
        }
    }
    c.report()
}

fn check_q5_1(r: &mut Rng, tables: &[&'static KernelTable]) -> bool {
    let mut c = Check::new("q5_1");
    for case in 0..CASES {
        let n = blocks_count(r);
        let w: Vec<BlockQ5_1> = (0..n)
            .map(|_| BlockQ5_1 {
                d: scale(r),
                m: scale(r),
                qh: r.bytes(),
                qs: nibbles(r),
            })
            .collect();
        let a = quant_q8_1(&acts(r, n));
        let want = q5_1::vec_dot(&w, &a) as f64;
        let mag: f32 = w
            .iter()
            .zip(&a)
            .map(|(x, y)| {
                x.d.to_f32().abs() * y.d.to_f32().abs() * 31.0 * 127.0 * 32.0 + (x.m.to_f32() * y.s.to_f32()).abs()
            })
            .sum();
        for t in tables {
            c.close(t.name, case, (t.dot_q5_1)(&w, &a) as f64, want, LEGACY_REL, mag as f64);
        }
    }
    c.report()
}

fn check_q8_0(r: &mut Rng, tables: &[&'static KernelTable]) -> bool {
    let mut c = Check::new("q8_0");
    for case in 0..CASES {
        let n = blocks_count(r);
        let w: Vec<BlockQ8_0> = (0..n)
            .map(|_| BlockQ8_0 {
                d: scale(r),
                qs: q8s(r),
            })
            .collect();
        let a = quant_q8_0(&acts(r, n));
        let want = q8_0::vec_dot(&w, &a) as f64;
        let mag = magnitude(&deq_q8_0(&w), &deq_q8_0(&a));
        for t in tables {
            c.close(t.name, case, (t.dot_q8_0)(&w, &a) as f64, want, LEGACY_REL, mag);
        }
    }
    c.report()
}

fn check_floats(r: &mut Rng, tables: &[&'static KernelTable]) -> bool {
    let mut c = Check::new("f32/f16/bf16");
    for case in 0..CASES {
        let n = 1 + r.below(299);
        let w: Vec<f32> = (0..n).map(|_| r.range(-1e3, 1e3)).collect();
        let x: Vec<f32> = (0..n).map(|_| r.range(-1e3, 1e3)).collect();
        let w16: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
        let wb: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
        let mag = magnitude(&w, &x) * 1.01;
        let (s32, s16, sb) = (
            float::vec_dot_f32(&w, &x) as f64,
            float::vec_dot_f16(&w16, &x) as f64,
            float::vec_dot_bf16(&wb, &x) as f64,
        );
        for t in tables {
            c.close(t.name, case, (t.dot_f32)(&w, &x) as f64, s32, LEGACY_REL, mag);
            c.close(t.name, case, (t.dot_f16)(&w16, &x) as f64, s16, LEGACY_REL, mag);
            c.close(t.name, case, (t.dot_bf16)(&wb, &x) as f64, sb, LEGACY_REL, mag);
        }
    }
    c.report()
}

// ---------------------------------------------------------------- K-quants

/// K-quant dot bound (kquants.rs `DOT_REL_BOUND`).
const DOT_REL_BOUND: f64 = 2e-5;

/// What the generic K-quant check needs to know about a weight format.
trait KFormat: bytemuck::Pod {
    const NAME: &'static str;
    fn dequantize(b: &[Self], out: &mut [f32]);
    fn dot(k: &KQuantKernels) -> fn(&[Self], &[BlockQ8K]) -> f32;
    fn set_scales(&mut self, d: [u8; 2], dmin: [u8; 2]);
    /// The same block with every quant bit cleared (its dequantized values are the offsets).
    fn zero_quants(&self) -> Self;
}

macro_rules! kformat {
    ($ty:ty, $name:literal, $module:ident, $dot:ident, |$s:ident, $d:ident, $dmin:ident| $set:block, $zero:expr) => {
        impl KFormat for $ty {
            const NAME: &'static str = $name;
            fn dequantize(b: &[Self], out: &mut [f32]) {
                $module::dequantize(b, out)
            }
            fn dot(k: &KQuantKernels) -> fn(&[Self], &[BlockQ8K]) -> f32 {
                k.$dot
            }
            #[allow(unused_variables)]
            fn set_scales(&mut self, $d: [u8; 2], $dmin: [u8; 2]) {
                let $s = self;
                $set
            }
            fn zero_quants(&self) -> Self {
                let f: fn(&Self) -> Self = $zero;
                f(self)
            }
        }
    };
}

kformat!(
    BlockQ2K,
    "q2_k",
    q2_k,
    dot_q2_k,
    |s, d, dmin| {
        s.d = d;
        s.dmin = dmin;
    },
    |b| BlockQ2K { qs: [0; 64], ..*b }
);
kformat!(
    BlockQ3K,
    "q3_k",
    q3_k,
    dot_q3_k,
    |s, d, dmin| {
        s.d = d;
    },
    |b| BlockQ3K {
        qs: [0; 64],
        hmask: [0; 32],
        ..*b
    }
);
kformat!(
    BlockQ4K,
    "q4_k",
    q4_k,
    dot_q4_k,
    |s, d, dmin| {
        s.d = d;
        s.dmin = dmin;
    },
    |b| BlockQ4K { qs: [0; 128], ..*b }
);
kformat!(
    BlockQ5K,
    "q5_k",
    q5_k,
    dot_q5_k,
    |s, d, dmin| {
        s.d = d;
        s.dmin = dmin;
    },
    |b| BlockQ5K {
        qs: [0; 128],
        qh: [0; 32],
        ..*b
    }
);
kformat!(
    BlockQ6K,
    "q6_k",
    q6_k,
    dot_q6_k,
    |s, d, dmin| {
        s.d = d;
    },
    |b| BlockQ6K {
        ql: [0; 128],
        qh: [0; 64],
        ..*b
    }
);

fn f16_bytes(v: f32) -> [u8; 2] {
    f16::from_f32(v).to_le_bytes()
}

/// fp16 scales: zero, subnormal, the fp16 maximum, negative, small..ordinary, ordinary.
fn k_scale(r: &mut Rng) -> [u8; 2] {
    match r.below(6) {
        0 => f16_bytes(0.0),
        1 => f16_bytes(6e-8),
        2 => f16_bytes(65504.0),
        3 => f16_bytes(-1.5),
        4 => f16_bytes(r.range(1e-6, 10.0)),
        _ => f16_bytes(r.range(-2.0, 2.0)),
    }
}

/// Random weight blocks: random bytes, all-zero or all-ones quants, random fp16 scale fields.
fn k_blocks<B: KFormat>(r: &mut Rng, n: usize) -> Vec<B> {
    let mut b = vec![B::zeroed(); n];
    let bytes = bytemuck::cast_slice_mut::<B, u8>(&mut b);
    match r.below(4) {
        1 => bytes.fill(0),
        2 => bytes.fill(0xFF),
        _ => bytes.iter_mut().for_each(|v| *v = r.byte()),
    }
    for blk in &mut b {
        let (d, dmin) = (k_scale(r), k_scale(r));
        blk.set_scales(d, dmin);
    }
    b
}

/// Random Q8_K blocks with consistent bsums: random quants, all ±127, zero, or half -128.
fn q8k_blocks(r: &mut Rng, n: usize) -> Vec<BlockQ8K> {
    (0..n)
        .map(|_| {
            let pattern = r.below(5);
            let mut b = BlockQ8K::ZERO;
            for (i, q) in b.qs.iter_mut().enumerate() {
                *q = match pattern {
                    1 => 127,
                    2 => -127,
                    3 => 0,
                    4 if i % 2 == 0 => -128,
                    _ => r.byte() as i8,
                };
            }
            b.d = match r.below(4) {
                0 => 0.0,
                1 => 1e-30,
                2 => r.range(1e-4, 1e3),
                _ => r.range(-1e3, -1e-4),
            };
            q8_k::fill_bsums(&mut b);
            b
        })
        .collect()
}

fn check_kquant<B: KFormat>(r: &mut Rng, kernels: &[KQuantKernels]) -> bool {
    let mut c = Check::new(B::NAME);
    for case in 0..CASES {
        let n = 1 + r.below(7);
        let w = k_blocks::<B>(r, n);
        let a = q8k_blocks(r, n);
        let len = n * QK_K;
        let (mut wf, mut w0, mut af) = (vec![0f32; len], vec![0f32; len], vec![0f32; len]);
        B::dequantize(&w, &mut wf);
        let zeroed: Vec<B> = w.iter().map(B::zero_quants).collect();
        B::dequantize(&zeroed, &mut w0);
        q8_k::dequantize(&a, &mut af);
        let mag: f64 = (0..len)
            .map(|i| ((wf[i] - w0[i]).abs() as f64 + w0[i].abs() as f64) * af[i].abs() as f64)
            .sum();
        let exact: f64 = wf.iter().zip(&af).map(|(&x, &y)| x as f64 * y as f64).sum();
        let scalar = B::dot(&KQuantKernels::SCALAR)(&w, &a) as f64;
        c.close("scalar-vs-f64", case, scalar, exact, DOT_REL_BOUND, mag);
        for k in kernels {
            c.close(k.name, case, B::dot(k)(&w, &a) as f64, scalar, DOT_REL_BOUND, mag);
        }
    }
    c.report()
}

fn check_q8_k_quantizer(r: &mut Rng, kernels: &[KQuantKernels]) -> bool {
    let mut c = Check::new("q8_k-quant");
    for case in 0..CASES {
        let n = 1 + r.below(5);
        let x: Vec<f32> = (0..n * QK_K)
            .map(|_| match r.below(9) {
                0..=3 => r.range(-10.0, 10.0),
                4 => 0.0,
                5 => -3.0,
                6 => 3.0,
                7 => r.range(-1e-30, 1e-30),
                _ => r.range(-1e30, 1e30),
            })
            .collect();
        let mut want = vec![BlockQ8K::ZERO; n];
        q8_k::quantize(&x, &mut want);
        for k in kernels {
            let mut got = vec![BlockQ8K::ZERO; n];
            (k.quantize_q8_k)(&x, &mut got);
            c.same(k.name, case, &got, &want);
        }
    }
    // All zero, and tied maxima of opposite sign (the first decides the sign).
    let mut x = vec![0.0f32; 2 * QK_K];
    x[QK_K + 10] = -5.0;
    x[QK_K + 200] = 5.0;
    x[QK_K + 3] = 2.5;
    let mut want = vec![BlockQ8K::ZERO; 2];
    q8_k::quantize(&x, &mut want);
    for k in kernels {
        let mut got = vec![BlockQ8K::ZERO; 2];
        (k.quantize_q8_k)(&x, &mut got);
        c.same(k.name, CASES, &got, &want);
    }
    c.report()
}

// ---------------------------------------------------------------- main

fn main() {
    let tables = simd_tables();
    let kq = simd_kquants();
    let names: Vec<&str> = tables.iter().map(|t| t.name).collect();
    let kq_names: Vec<&str> = kq.iter().map(|k| k.name).collect();
    println!(
        "neon_single_thread: arch {}, cpu features [{}], SIMD tables {names:?}, K-quant tables {kq_names:?}",
        std::env::consts::ARCH,
        ferro_kernels::cpu_features().join(" ")
    );

    // Guard against a silently skipped run: the baseline SIMD path of the target must be here.
    let mut missing = Vec::new();
    if cfg!(target_arch = "aarch64") {
        if !KernelPath::Neon.is_available() {
            missing.push("NEON kernel table");
        }
        if !kq_names.contains(&"neon") {
            missing.push("NEON K-quant table");
        }
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        if !KernelPath::Avx2.is_available() {
            missing.push("AVX2 kernel table");
        }
        if !kq_names.contains(&"avx2") {
            missing.push("AVX2 K-quant table");
        }
    }
    if !missing.is_empty() {
        eprintln!("FAILED: expected SIMD paths not available: {}", missing.join(", "));
        std::process::exit(1);
    }
    if tables.is_empty() && kq.is_empty() {
        println!("no SIMD path on this CPU: nothing to compare (scalar-only host)");
    }

    let mut r = Rng(0x5EED_F3E2_0000_0001);
    let mut ok = true;
    ok &= check_quantizers(&mut r, &tables);
    ok &= check_q4_0(&mut r, &tables);
    ok &= check_q4_1(&mut r, &tables);
    ok &= check_q5_0(&mut r, &tables);
    ok &= check_q5_1(&mut r, &tables);
    ok &= check_q8_0(&mut r, &tables);
    ok &= check_floats(&mut r, &tables);
    ok &= check_q8_k_quantizer(&mut r, &kq);
    ok &= check_kquant::<BlockQ2K>(&mut r, &kq);
    ok &= check_kquant::<BlockQ3K>(&mut r, &kq);
    ok &= check_kquant::<BlockQ4K>(&mut r, &kq);
    ok &= check_kquant::<BlockQ5K>(&mut r, &kq);
    ok &= check_kquant::<BlockQ6K>(&mut r, &kq);

    if !ok {
        eprintln!("FAILED: SIMD results differ from the scalar reference (see MISMATCH lines above)");
        std::process::exit(1);
    }
    println!("all SIMD paths match the scalar reference");
}
