//! The writer produces files the reader gives back exactly: every metadata type, nested
//! arrays, several tensor types and odd alignments. Also hand-broken files give the right error.

use ferro_gguf::{GgmlType, Gguf, GgufError, GgufWriter, MetaValue, ValueType};

fn every_type() -> Vec<(&'static str, MetaValue)> {
    use MetaValue as M;
    vec![
        ("t.u8", M::U8(200)),
        ("t.i8", M::I8(-100)),
        ("t.u16", M::U16(60000)),
        ("t.i16", M::I16(-30000)),
        ("t.u32", M::U32(4_000_000_000)),
        ("t.i32", M::I32(-2_000_000_000)),
        ("t.f32", M::F32(-1.5e-7)),
        ("t.bool.true", M::Bool(true)),
        ("t.bool.false", M::Bool(false)),
        ("t.string", M::String("héllo, wörld ✓".into())),
        ("t.string.empty", M::String(String::new())),
        ("t.u64", M::U64(u64::MAX)),
        ("t.i64", M::I64(i64::MIN)),
        ("t.f64", M::F64(std::f64::consts::PI)),
        ("a.u8", M::Array(ValueType::U8, vec![M::U8(0), M::U8(255)])),
        ("a.i8", M::Array(ValueType::I8, vec![M::I8(-1)])),
        ("a.u16", M::Array(ValueType::U16, vec![M::U16(1), M::U16(2), M::U16(3)])),
        ("a.i16", M::Array(ValueType::I16, vec![M::I16(-2)])),
        ("a.u32", M::Array(ValueType::U32, vec![M::U32(7); 5])),
        ("a.i32", M::Array(ValueType::I32, vec![M::I32(-7), M::I32(3)])),
        ("a.f32", M::Array(ValueType::F32, vec![M::F32(0.25), M::F32(-0.0)])),
        ("a.bool", M::Array(ValueType::Bool, vec![M::Bool(true), M::Bool(false)])),
        ("a.string", MetaValue::strings(["a", "", "ccc"])),
        ("a.u64", M::Array(ValueType::U64, vec![M::U64(1 << 40)])),
        ("a.i64", M::Array(ValueType::I64, vec![M::I64(-(1 << 40))])),
        ("a.f64", M::Array(ValueType::F64, vec![M::F64(1e300)])),
        ("a.empty", M::Array(ValueType::U32, vec![])),
        (
            "a.nested",
            M::Array(
                ValueType::Array,
                vec![
                    M::Array(ValueType::I32, vec![M::I32(1), M::I32(2)]),
                    MetaValue::strings(["x", "yz"]),
                    M::Array(ValueType::Array, vec![M::Array(ValueType::F64, vec![M::F64(0.5)])]),
                    M::Array(ValueType::U8, vec![]),
                ],
            ),
        ),
    ]
}

/// Deterministic filler bytes for tensor data.
fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn writer(alignment: Option<u32>) -> GgufWriter {
    let mut w = GgufWriter::new();
    w.set("general.architecture", MetaValue::String("test".into())).unwrap();
    if let Some(a) = alignment {
        w.set("general.alignment", MetaValue::U32(a)).unwrap();
    }
    for (k, v) in every_type() {
        w.set(k, v).unwrap();
    }
    // Odd sizes so that padding is exercised: 3 f32 = 12 bytes, one q4_0 block = 18 bytes ...
    let tensors: [(&str, &[u64], GgmlType); 6] = [
        ("f32.odd", &[3], GgmlType::F32),
        ("q4_0.one_block", &[32], GgmlType::Q4_0),
        ("q4_k.matrix", &[256, 3], GgmlType::Q4_K),
        ("f16.4d", &[5, 1, 3, 2], GgmlType::F16),
        ("empty", &[0, 4], GgmlType::F32),
        ("q6_k.after_empty", &[256], GgmlType::Q6_K),
    ];
    for (i, (name, dims, ty)) in tensors.iter().enumerate() {
        let n: u64 = dims.iter().product();
        let len = ty.row_bytes(dims[0]).unwrap() * (n / dims[0].max(1));
        let len = if n == 0 { 0 } else { len };
        w.add_tensor(*name, dims, *ty, bytes(len as usize, i as u8)).unwrap();
    }
    w
}

fn check_round_trip(alignment: Option<u32>) {
    let w = writer(alignment);
    let file = w.to_bytes().unwrap();
    let g = Gguf::from_bytes(file.clone()).unwrap();
    let align = alignment.unwrap_or(32) as u64;
    assert_eq!(g.version, 3);
    assert_eq!(g.alignment, align);
    assert_eq!(g.data_offset % align, 0);
    // Metadata: same keys in the same order with the same values.
    let mut want = vec![("general.architecture".to_string(), MetaValue::String("test".into()))];
    if let Some(a) = alignment {
        want.push(("general.alignment".into(), MetaValue::U32(a)));
    }
    want.extend(every_type().into_iter().map(|(k, v)| (k.to_string(), v)));
    let got: Vec<(String, MetaValue)> = g
        .metadata()
        .map(|(k, v)| (k.to_string(), MetaValue::from_value(v)))
        .collect();
    assert_eq!(got, want);
    // Typed accessors.
    assert_eq!(g.get_u64("t.u32"), Some(4_000_000_000));
    assert_eq!(g.get_u64("t.i8"), None, "negative values are not u64");
    assert_eq!(g.get_f64("t.f64"), Some(std::f64::consts::PI));
    assert_eq!(g.get_bool("t.bool.true"), Some(true));
    assert_eq!(g.get_str("t.string"), Some("héllo, wörld ✓"));
    let strings = g.get_array("a.string").unwrap().strings().unwrap();
    assert_eq!(strings, vec![&b"a"[..], b"", b"ccc"]);
    assert_eq!(g.get_array("a.f32").unwrap().f32s().unwrap(), vec![0.25, -0.0]);
    assert_eq!(g.get_array("a.i32").unwrap().i64s().unwrap(), vec![-7, 3]);
    assert_eq!(g.get_array("a.nested").unwrap().len, 4);
    // Tensors: same shapes, types and bytes; offsets aligned and inside the file.
    assert_eq!(g.tensors().len(), 6);
    for (i, t) in g.tensors().iter().enumerate() {
        assert_eq!(t.rel_offset % align, 0, "{} offset aligned to {align}", t.name);
        assert_eq!(t.offset, g.data_offset + t.rel_offset);
        let (_, data) = g.tensor(&t.name).unwrap();
        assert_eq!(data, &bytes(t.n_bytes as usize, i as u8)[..], "{} bytes", t.name);
    }
    assert_eq!(g.tensor_info("q4_k.matrix").unwrap().dims, vec![256, 3]);
    assert_eq!(g.tensor_info("q4_k.matrix").unwrap().n_bytes, 3 * 144);
    assert_eq!(g.tensor_info("f16.4d").unwrap().dims, vec![5, 1, 3, 2]);
    assert!(matches!(g.tensor("nope"), Err(GgufError::MissingTensor(_))));
    // Writing what was read gives the same file back.
    let mut w2 = GgufWriter::new();
    for (k, v) in g.metadata() {
        w2.set(k, MetaValue::from_value(v)).unwrap();
    }
    for t in g.tensors() {
        w2.add_tensor(&t.name, &t.dims, t.ty, g.tensor_data(t).to_vec())
            .unwrap();
    }
    assert_eq!(w2.to_bytes().unwrap(), file, "re-encoding is byte-identical");
}

#[test]
fn round_trip_default_alignment() {
    check_round_trip(None);
}

#[test]
fn round_trip_odd_alignments() {
    for a in [1, 2, 8, 64, 4096] {
        check_round_trip(Some(a));
    }
}

#[test]
fn write_file_is_atomic_and_readable() {
    let dir = std::env::temp_dir().join(format!("ferro-gguf-rt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.gguf");
    writer(Some(64)).write_file(&path).unwrap();
    let g = Gguf::open(&path).unwrap();
    assert_eq!(g.alignment, 64);
    assert!(!dir.join("m.gguf.partial").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn writer_rejects_bad_input() {
    let mut w = GgufWriter::new();
    assert!(w.set("general.alignment", MetaValue::U32(3)).is_err());
    assert!(w.set("general.alignment", MetaValue::U32(0)).is_err());
    assert!(w.set("general.alignment", MetaValue::String("x".into())).is_err());
    assert!(
        w.add_tensor("t", &[33], GgmlType::Q4_0, vec![0; 18]).is_err(),
        "partial block"
    );
    assert!(
        w.add_tensor("t", &[32], GgmlType::Q4_0, vec![0; 17]).is_err(),
        "wrong size"
    );
    assert!(w.add_tensor("t", &[], GgmlType::F32, vec![]).is_err(), "no dims");
    assert!(
        w.add_tensor("t", &[1, 1, 1, 1, 1], GgmlType::F32, vec![0; 4]).is_err(),
        "5 dims"
    );
    assert!(
        w.add_tensor("t", &[1 << 62, 1 << 62], GgmlType::F32, vec![]).is_err(),
        "overflow"
    );
    w.add_tensor("t", &[1], GgmlType::F32, vec![0; 4]).unwrap();
    assert!(w.add_tensor("t", &[1], GgmlType::F32, vec![0; 4]).is_err(), "duplicate");
    w.set("bad", MetaValue::Array(ValueType::U8, vec![MetaValue::U16(1)]))
        .unwrap();
    assert!(w.to_bytes().is_err(), "mixed array");
}

// ---- hand-broken files ----------------------------------------------------------------------

fn small() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.set("general.architecture", MetaValue::String("llama".into()))
        .unwrap();
    w.add_tensor("a", &[8], GgmlType::F32, vec![1; 32]).unwrap();
    w.add_tensor("b", &[32, 2], GgmlType::Q8_0, vec![2; 68]).unwrap();
    w.to_bytes().unwrap()
}

/// Byte offset of the tensor info of `name` (its length prefix).
fn tensor_info_at(file: &[u8], name: &str) -> usize {
    let mut pat = (name.len() as u64).to_le_bytes().to_vec();
    pat.extend_from_slice(name.as_bytes());
    file.windows(pat.len()).position(|w| w == pat).unwrap()
}

fn err(file: Vec<u8>) -> GgufError {
    Gguf::from_bytes(file).expect_err("must be rejected")
}

#[test]
fn every_truncation_is_an_error() {
    let file = small();
    let g = Gguf::from_bytes(file.clone()).unwrap();
    let end = g.tensors().iter().map(|t| t.offset + t.n_bytes).max().unwrap() as usize;
    // Every prefix that cuts the header or a tensor's data is invalid; only the padding after
    // the last tensor may go.
    for n in 0..end {
        let e = err(file[..n].to_vec());
        assert!(!e.to_string().is_empty());
    }
    for n in end..=file.len() {
        assert!(Gguf::from_bytes(file[..n].to_vec()).is_ok());
    }
}

#[test]
fn bad_magic_and_versions() {
    let mut f = small();
    f[0] = b'X';
    assert!(matches!(err(f), GgufError::BadMagic { .. }));
    assert!(matches!(err(b"GG".to_vec()), GgufError::BadMagic { .. }));
    for (v, needle) in [(1u32, "v1"), (4, "versions 2 and 3"), (3u32.swap_bytes(), "big-endian")] {
        let mut f = small();
        f[4..8].copy_from_slice(&v.to_le_bytes());
        let e = err(f);
        assert!(matches!(e, GgufError::UnsupportedVersion { version, .. } if version == v));
        assert!(e.to_string().contains(needle), "{e}");
    }
    // Version 2 files have the same layout and are read.
    let mut f = small();
    f[4..8].copy_from_slice(&2u32.to_le_bytes());
    assert_eq!(Gguf::from_bytes(f).unwrap().version, 2);
}

#[test]
fn absurd_counts_are_rejected_before_allocating() {
    for (at, name) in [(8, "tensor count"), (16, "metadata count")] {
        let mut f = small();
        f[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        let e = err(f);
        assert!(e.to_string().contains(name), "{e}");
        assert!(e.to_string().contains(&format!("at byte {at}")), "{e}");
    }
}

#[test]
fn unknown_tensor_type_names_tensor_and_offset() {
    let mut f = small();
    let at = tensor_info_at(&f, "b") + 8 + 1 + 4 + 16; // len, name, n_dims, 2 dims
    f[at..at + 4].copy_from_slice(&99u32.to_le_bytes());
    let e = err(f);
    assert!(
        matches!(e, GgufError::UnknownTensorType { ref tensor, id: 99, offset } if tensor == "b" && offset == at as u64)
    );
}

#[test]
fn tensor_past_end_and_overlap() {
    let file = small();
    let off_at = tensor_info_at(&file, "b") + 8 + 1 + 4 + 16 + 4;
    let mut f = file.clone();
    f[off_at..off_at + 8].copy_from_slice(&(1u64 << 20).to_le_bytes());
    assert!(matches!(err(f), GgufError::TensorOutOfBounds { ref tensor, .. } if tensor == "b"));
    let mut f = file.clone();
    f[off_at..off_at + 8].copy_from_slice(&u64::MAX.wrapping_sub(31).to_le_bytes());
    assert!(matches!(err(f), GgufError::TensorOutOfBounds { .. }), "offset overflow");
    let mut f = file.clone();
    f[off_at..off_at + 8].copy_from_slice(&0u64.to_le_bytes());
    assert!(matches!(err(f), GgufError::TensorOverlap { .. }));
    let mut f = file;
    f[off_at..off_at + 8].copy_from_slice(&33u64.to_le_bytes());
    assert!(err(f).to_string().contains("alignment"));
}

#[test]
fn bad_dims() {
    let file = small();
    let nd_at = tensor_info_at(&file, "b") + 9;
    for n_dims in [0u32, 5, u32::MAX] {
        let mut f = file.clone();
        f[nd_at..nd_at + 4].copy_from_slice(&n_dims.to_le_bytes());
        assert!(err(f).to_string().contains("dimension count"));
    }
    let mut f = file.clone();
    f[nd_at + 4..nd_at + 12].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(err(f).to_string().contains("overflow"));
    let mut f = file;
    f[nd_at + 4..nd_at + 12].copy_from_slice(&33u64.to_le_bytes());
    assert!(err(f).to_string().contains("block size"));
}

#[test]
fn bad_metadata() {
    let build = |k: &str, v: MetaValue| {
        let mut w = GgufWriter::new();
        w.set(k, v).unwrap();
        w.to_bytes().unwrap()
    };
    // Key at 24: len 8 bytes + "k" (1) + type (4) = value at 37.
    let mut f = build("k", MetaValue::Bool(true));
    f[37] = 2;
    assert!(err(f).to_string().contains("bool"));
    let mut f = build("k", MetaValue::U8(1));
    f[33..37].copy_from_slice(&13u32.to_le_bytes());
    assert!(err(f).to_string().contains("unknown type id 13"));
    let mut f = build("k", MetaValue::String("abc".into()));
    f[37..45].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let e = err(f);
    assert!(
        matches!(e, GgufError::Truncated { .. }) && e.to_string().contains("'k'"),
        "{e}"
    );
    let mut f = build("k", MetaValue::Array(ValueType::U32, vec![MetaValue::U32(1)]));
    f[41..49].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(err(f).to_string().contains("array length of 'k'"));
    let mut f = build("k", MetaValue::Array(ValueType::U32, vec![MetaValue::U32(1)]));
    f[37..41].copy_from_slice(&77u32.to_le_bytes());
    assert!(err(f).to_string().contains("element type"));
    // Duplicate keys.
    let mut w = GgufWriter::new();
    w.set("aa", MetaValue::U8(1)).unwrap();
    w.set("ab", MetaValue::U8(1)).unwrap();
    let mut f = w.to_bytes().unwrap();
    let second = f.windows(2).rposition(|w| w == b"ab").unwrap();
    f[second + 1] = b'a';
    assert!(err(f).to_string().contains("duplicate key"));
    // general.alignment that is not a power of two, or not an integer.
    let mut f = build("general.alignment", MetaValue::U32(64));
    let at = 24 + 8 + "general.alignment".len() + 4;
    assert_eq!(f[at..at + 4], 64u32.to_le_bytes());
    f[at..at + 4].copy_from_slice(&48u32.to_le_bytes());
    assert!(err(f).to_string().contains("general.alignment"));
    // Arrays nested deeper than the limit.
    let mut v = MetaValue::Array(ValueType::U8, vec![]);
    for _ in 0..10 {
        v = MetaValue::Array(ValueType::Array, vec![v]);
    }
    assert!(err(build("deep", v)).to_string().contains("nested"));
}

#[test]
fn ggml_type_table_is_consistent() {
    for t in GgmlType::ALL {
        assert_eq!(GgmlType::from_id(t.id()), Some(t));
        assert!(t.block_size() >= 1 && t.type_size() >= 1);
        assert_eq!(t.row_bytes(t.block_size() * 3), Some(t.type_size() * 3));
        assert_eq!(t.to_string(), t.name());
    }
    for removed in [4, 5, 31, 32, 33, 36, 37, 38, 40, u32::MAX] {
        assert_eq!(GgmlType::from_id(removed), None);
    }
    assert_eq!(GgmlType::Q4_K.type_size(), 144);
    assert_eq!(GgmlType::Q6_K.type_size(), 210);
    assert_eq!(GgmlType::Q8_0.type_size(), 34);
    assert_eq!(GgmlType::Q4_0.row_bytes(33), None);
}
