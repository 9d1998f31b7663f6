//! Property test: truncated, bit-flipped, overwritten and spliced GGUF files (real and written)
//! give an error or a valid parse, never a panic. On a valid parse every metadata value and every
//! tensor slice is touched, so the accessors are exercised on whatever the mutation produced.
//!
//! Memory stays bounded: the real models contribute their header region (~1.8 MB of smollm2)
//! and small files rebuilt from their real metadata and tensor table; the reader never reserves
//! more than a bounded number of entries before they have parsed.

mod common;

use std::sync::OnceLock;

use ferro_gguf::{GgmlType, Gguf, GgufWriter, MetaValue, Value, ValueType};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// One edit of a file. Positions are raw numbers reduced modulo the length when applied;
/// `hot` steers them into the structural region (header start and tensor table).
#[derive(Debug, Clone)]
enum Mutation {
    Truncate(u64),
    FlipBit {
        hot: bool,
        pos: u64,
        bit: u8,
    },
    SetByte {
        hot: bool,
        pos: u64,
        byte: u8,
    },
    /// Overwrite 4 or 8 bytes with a value that tends to reach edge cases.
    Word {
        hot: bool,
        pos: u64,
        value: u64,
        wide: bool,
    },
    /// Copy `len` bytes from `src` (in this file or in the donor) to `dst`.
    Splice {
        from_donor: bool,
        src: u64,
        dst: u64,
        len: u16,
        hot: bool,
    },
    /// Insert or delete a few bytes, shifting everything after.
    Shift {
        hot: bool,
        pos: u64,
        insert: bool,
        n: u8,
    },
}

fn interesting() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(2),
        Just(3),
        Just(4),
        Just(8),
        Just(31),
        Just(32),
        Just(255),
        Just(0x7fff_ffff),
        Just(0xffff_ffff),
        Just(1 << 32),
        Just(1 << 62),
        Just(i64::MAX as u64),
        Just(u64::MAX),
        Just(u64::MAX - 31),
        any::<u64>(),
        0u64..100_000,
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        2 => any::<u64>().prop_map(Mutation::Truncate),
        4 => (any::<bool>(), any::<u64>(), 0u8..8).prop_map(|(hot, pos, bit)| Mutation::FlipBit { hot, pos, bit }),
        2 => (any::<bool>(), any::<u64>(), any::<u8>()).prop_map(|(hot, pos, byte)| Mutation::SetByte { hot, pos, byte }),
        4 => (any::<bool>(), any::<u64>(), interesting(), any::<bool>())
            .prop_map(|(hot, pos, value, wide)| Mutation::Word { hot, pos, value, wide }),
        2 => (any::<bool>(), any::<u64>(), any::<u64>(), 1u16..512, any::<bool>())
            .prop_map(|(from_donor, src, dst, len, hot)| Mutation::Splice { from_donor, src, dst, len, hot }),
        1 => (any::<bool>(), any::<u64>(), any::<bool>(), 1u8..16)
            .prop_map(|(hot, pos, insert, n)| Mutation::Shift { hot, pos, insert, n }),
    ]
}

/// A file to mutate plus the byte range where its structure (tensor table) lives.
struct Subject {
    bytes: Vec<u8>,
    hot: std::ops::Range<usize>,
}

fn pick(len: usize, hot: &std::ops::Range<usize>, is_hot: bool, raw: u64) -> usize {
    if len == 0 {
        return 0;
    }
    if is_hot {
        // Half of the hot positions go to the first 64 bytes (counts, first key), half to the tensor table.
        let (lo, hi) = if raw & 1 == 0 {
            (0, 64.min(len))
        } else {
            (hot.start.min(len), hot.end.min(len))
        };
        if hi > lo {
            return lo + ((raw >> 1) % (hi - lo) as u64) as usize;
        }
    }
    (raw % len as u64) as usize
}

fn apply(f: &mut Vec<u8>, hot: &std::ops::Range<usize>, donor: &[u8], m: &Mutation) {
    match *m {
        Mutation::Truncate(raw) => {
            let n = if f.is_empty() {
                0
            } else {
                (raw % f.len() as u64) as usize
            };
            f.truncate(n);
        }
        Mutation::FlipBit { hot: h, pos, bit } => {
            if !f.is_empty() {
                let p = pick(f.len(), hot, h, pos);
                f[p] ^= 1 << bit;
            }
        }
        Mutation::SetByte { hot: h, pos, byte } => {
            if !f.is_empty() {
                let p = pick(f.len(), hot, h, pos);
                f[p] = byte;
            }
        }
        Mutation::Word {
            hot: h,
            pos,
            value,
            wide,
        } => {
            let w = if wide { 8 } else { 4 };
            if f.len() >= w {
                let p = pick(f.len() - w + 1, hot, h, pos);
                f[p..p + w].copy_from_slice(&value.to_le_bytes()[..w]);
            }
        }
        Mutation::Splice {
            from_donor,
            src,
            dst,
            len,
            hot: h,
        } => {
            let source: Vec<u8> = if from_donor { donor.to_vec() } else { f.clone() };
            if source.is_empty() || f.is_empty() {
                return;
            }
            let s = (src % source.len() as u64) as usize;
            let d = pick(f.len(), hot, h, dst);
            let n = (len as usize).min(source.len() - s).min(f.len() - d);
            f[d..d + n].copy_from_slice(&source[s..s + n]);
        }
        Mutation::Shift { hot: h, pos, insert, n } => {
            let p = pick(f.len() + 1, hot, h, pos);
            if insert {
                f.splice(p..p, std::iter::repeat_n(0xA5, n as usize));
            } else {
                let end = (p + n as usize).min(f.len());
                f.drain(p..end);
            }
        }
    }
}

/// Parse; on success read every value and slice, as a user of the crate would.
fn parse_and_touch(bytes: Vec<u8>) {
    let len = bytes.len() as u64;
    if let Ok(g) = Gguf::from_bytes(bytes) {
        fn touch(v: Value<'_>) -> usize {
            match v {
                Value::Array(a) => {
                    let _ = (a.strings(), a.f32s(), a.i64s());
                    a.iter().map(touch).sum::<usize>() + 1
                }
                Value::String(s) => s.len(),
                v => v.as_f64().map(|x| x.is_nan() as usize).unwrap_or(0),
            }
        }
        let mut n = 0;
        for (k, v) in g.metadata() {
            n += k.len() + touch(v);
            assert!(g.get(k).is_some());
        }
        let _ = g.architecture();
        let _ = g.n_elements();
        for t in g.tensors() {
            let (info, data) = g.tensor(&t.name).expect("listed tensor can be looked up");
            assert_eq!(data.len() as u64, info.n_bytes);
            assert!(info.offset + info.n_bytes <= len);
            assert_eq!(
                Some(info.n_bytes),
                info.ty.row_bytes(info.ne0()).map(|r| r * info.n_rows())
            );
        }
        std::hint::black_box(n);
    }
}

fn run(name: &str, cases: u32, subject: &Subject, donor: &[u8]) {
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2000,
        ..Config::default()
    });
    let result = runner.run(&proptest::collection::vec(mutation(), 1..5), |muts| {
        let mut f = subject.bytes.clone();
        for m in &muts {
            apply(&mut f, &subject.hot, donor, m);
        }
        parse_and_touch(f);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
}

// ---- subjects ---------------------------------------------------------------------------------

fn written(alignment: u32, seed: u8) -> Subject {
    let mut w = GgufWriter::new();
    w.set("general.architecture", MetaValue::String("llama".into()))
        .unwrap();
    w.set("general.alignment", MetaValue::U32(alignment)).unwrap();
    w.set("llama.block_count", MetaValue::U32(2)).unwrap();
    w.set("f", MetaValue::F32(0.5)).unwrap();
    w.set("b", MetaValue::Bool(true)).unwrap();
    w.set("i64", MetaValue::I64(-3)).unwrap();
    w.set("tokens", MetaValue::strings(["<s>", "</s>", "a", "bc"])).unwrap();
    w.set(
        "scores",
        MetaValue::Array(ValueType::F32, vec![MetaValue::F32(-1.0); 4]),
    )
    .unwrap();
    w.set(
        "nested",
        MetaValue::Array(
            ValueType::Array,
            vec![
                MetaValue::strings(["x"]),
                MetaValue::Array(ValueType::U16, vec![MetaValue::U16(9)]),
            ],
        ),
    )
    .unwrap();
    let types = [
        GgmlType::F32,
        GgmlType::Q4_0,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
        GgmlType::F16,
    ];
    for (i, ty) in types.iter().enumerate() {
        let ne0 = ty.block_size() * (1 + (i as u64 + seed as u64) % 2);
        let rows = 1 + i as u64 % 3;
        let n = ty.row_bytes(ne0).unwrap() * rows;
        w.add_tensor(format!("blk.{i}.w"), &[ne0, rows], *ty, vec![seed; n as usize])
            .unwrap();
    }
    let bytes = w.to_bytes().unwrap();
    let hot = tensor_table(&bytes, "blk.0.w");
    Subject { bytes, hot }
}

/// From the length prefix of tensor `first` to the start of the data section (approximately).
fn tensor_table(bytes: &[u8], first: &str) -> std::ops::Range<usize> {
    let mut pat = (first.len() as u64).to_le_bytes().to_vec();
    pat.extend_from_slice(first.as_bytes());
    let start = bytes.windows(pat.len()).position(|w| w == pat).unwrap_or(0);
    let g = Gguf::from_bytes(bytes.to_vec());
    let end = g
        .map(|g| g.data_offset as usize)
        .unwrap_or(bytes.len())
        .min(bytes.len());
    start..end.max(start + 1)
}

/// A real model's header: every byte up to the data section plus 4 KiB of tensor data.
fn real_header(name: &str) -> Option<Subject> {
    let path = common::require_model(name)?;
    let g = Gguf::open(&path).unwrap();
    let end = (g.data_offset as usize + 4096).min(g.bytes().len());
    let bytes = g.bytes()[..end].to_vec();
    let first = &g.tensors()[0].name;
    let hot = tensor_table(&bytes, first);
    let hot = hot.start..(g.data_offset as usize);
    Some(Subject { bytes, hot })
}

/// A small valid file rebuilt from a real model: all its metadata (arrays cut to 64 entries) and
/// its whole tensor table with real names and types, each tensor shrunk to one block.
fn real_derived(name: &str) -> Option<Subject> {
    let path = common::require_model(name)?;
    let g = Gguf::open(&path).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in g.metadata() {
        let v = match v {
            Value::Array(a) => MetaValue::Array(a.elem_type, a.iter().take(64).map(MetaValue::from_value).collect()),
            v => MetaValue::from_value(v),
        };
        w.set(k, v).unwrap();
    }
    for t in g.tensors() {
        let dims: Vec<u64> = std::iter::once(t.ty.block_size())
            .chain(t.dims.iter().skip(1).map(|_| 1))
            .collect();
        w.add_tensor(&t.name, &dims, t.ty, vec![0x3c; t.ty.type_size() as usize])
            .unwrap();
    }
    let bytes = w.to_bytes().unwrap();
    let hot = tensor_table(&bytes, &g.tensors()[0].name);
    Some(Subject { bytes, hot })
}

fn donor() -> &'static [u8] {
    static D: OnceLock<Vec<u8>> = OnceLock::new();
    D.get_or_init(|| written(32, 7).bytes)
}

// ---- the properties: 11,500 cases in all --------------------------------------------------------

#[test]
fn fuzz_written_files() {
    for (i, a) in [1u32, 8, 32, 64, 4096].into_iter().enumerate() {
        let s = written(a, i as u8);
        assert!(Gguf::from_bytes(s.bytes.clone()).is_ok());
        run(&format!("written, alignment {a}"), 1200, &s, donor());
    }
}

#[test]
fn fuzz_real_derived_files() {
    for name in common::MODELS {
        let Some(s) = real_derived(name) else { continue };
        assert!(Gguf::from_bytes(s.bytes.clone()).is_ok(), "{name} rebuilt file parses");
        run(&format!("{name} rebuilt"), 2000, &s, donor());
    }
}

#[test]
fn fuzz_real_header() {
    let Some(s) = real_header("smollm2-135m-instruct") else {
        return;
    };
    run("smollm2 header region", 1500, &s, donor());
}
