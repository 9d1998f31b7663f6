//! Both real models parse, and what ferro-gguf sees matches what gguf-py (llama.cpp's reference
//! reader) reports: fixtures written by scripts/gen-gguf-fixtures.py.

mod common;

use std::collections::BTreeMap;

use ferro_gguf::{Gguf, Value, ValueType};

/// gguf-py's GGUFValueType names for ferro's value types.
fn py_type_name(t: ValueType) -> &'static str {
    match t {
        ValueType::U8 => "uint8",
        ValueType::I8 => "int8",
        ValueType::U16 => "uint16",
        ValueType::I16 => "int16",
        ValueType::U32 => "uint32",
        ValueType::I32 => "int32",
        ValueType::F32 => "float32",
        ValueType::Bool => "bool",
        ValueType::String => "string",
        ValueType::Array => "array",
        ValueType::U64 => "uint64",
        ValueType::I64 => "int64",
        ValueType::F64 => "float64",
    }
}

fn check_model(name: &str) {
    let Some(path) = common::require_model(name) else {
        return;
    };
    let fx = common::fixture(name);
    let g = Gguf::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));

    assert_eq!(g.file_size(), fx["file_bytes"].as_u64().unwrap(), "file size");
    assert_eq!(g.version as u64, fx["version"].as_u64().unwrap(), "version");
    assert_eq!(g.architecture().unwrap(), fx["architecture"].as_str().unwrap());
    assert_eq!(g.alignment, fx["alignment"].as_u64().unwrap());
    assert_eq!(g.data_offset, fx["data_offset"].as_u64().unwrap(), "data offset");
    assert_eq!(
        g.tensors().len() as u64,
        fx["n_tensors"].as_u64().unwrap(),
        "tensor count"
    );
    assert_eq!(
        g.n_elements(),
        fx["total_elements"].as_u64().unwrap(),
        "parameter count"
    );

    // Type histogram.
    let mut hist = BTreeMap::new();
    for t in g.tensors() {
        *hist.entry(t.ty.name().to_string()).or_insert(0u64) += 1;
    }
    let want: BTreeMap<String, u64> = fx["tensor_types"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect();
    assert_eq!(hist, want, "tensor type histogram");

    // Selected tensors: shape, type, placement, and the data slice is the right size.
    for t in fx["tensors"].as_array().unwrap() {
        let tname = t["name"].as_str().unwrap();
        let (info, data) = g.tensor(tname).unwrap();
        let dims: Vec<u64> = t["dims"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        assert_eq!(info.dims, dims, "{tname} dims");
        assert_eq!(info.ty.name(), t["type"].as_str().unwrap(), "{tname} type");
        assert_eq!(info.offset, t["offset"].as_u64().unwrap(), "{tname} offset");
        assert_eq!(info.n_bytes, t["n_bytes"].as_u64().unwrap(), "{tname} bytes");
        assert_eq!(info.n_elements(), t["n_elements"].as_u64().unwrap(), "{tname} elements");
        assert_eq!(data.len() as u64, info.n_bytes);
    }

    // Every metadata key, with its type; scalars by value, strings by hash, arrays by type,
    // length and first elements.
    let meta = fx["metadata"].as_object().unwrap();
    assert_eq!(g.keys().count(), meta.len(), "metadata key count");
    for (key, v) in g.metadata() {
        let want = meta
            .get(key)
            .unwrap_or_else(|| panic!("gguf-py does not report key {key}"));
        assert_eq!(
            py_type_name(v.value_type()),
            want["type"].as_str().unwrap(),
            "{key} type"
        );
        match v {
            Value::String(s) => {
                assert_eq!(s.len() as u64, want["len"].as_u64().unwrap(), "{key} length");
                assert_eq!(sha256_hex(s), want["sha256"].as_str().unwrap(), "{key} sha256");
                if let Some(text) = want.get("value") {
                    assert_eq!(String::from_utf8_lossy(s), text.as_str().unwrap(), "{key}");
                }
            }
            Value::Array(a) => {
                assert_eq!(
                    py_type_name(a.elem_type),
                    want["elem_type"].as_str().unwrap(),
                    "{key} elements"
                );
                assert_eq!(a.len, want["len"].as_u64().unwrap(), "{key} length");
                assert_eq!(a.iter().count() as u64, a.len, "{key} iterates every element");
                for (got, w) in a.iter().zip(want["head"].as_array().unwrap()) {
                    match got {
                        Value::String(s) => assert_eq!(String::from_utf8_lossy(s), w.as_str().unwrap()),
                        Value::F32(x) => assert_eq!(x as f64, w.as_f64().unwrap()),
                        other => assert_eq!(other.as_i64(), w.as_i64(), "{key} element"),
                    }
                }
            }
            Value::F32(x) => assert_eq!(x as f64, want["value"].as_f64().unwrap(), "{key}"),
            Value::F64(x) => assert_eq!(x, want["value"].as_f64().unwrap(), "{key}"),
            Value::Bool(b) => assert_eq!(b, want["value"].as_bool().unwrap(), "{key}"),
            other => assert_eq!(other.as_i64(), want["value"].as_i64(), "{key}"),
        }
    }
}

/// Small self-contained SHA-256 (FIPS 180-4), so the gguf crate's tests need no hashing crate.
fn sha256_hex(msg: &[u8]) -> String {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
        0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
        0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
        0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
        0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
        0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
        0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
    ];
    let mut data = msg.to_vec();
    data.push(0x80);
    while data.len() % 64 != 56 {
        data.push(0);
    }
    data.extend_from_slice(&((msg.len() as u64) * 8).to_be_bytes());
    for chunk in data.chunks(64) {
        let mut w = [0u32; 64];
        for i in 0..16 {
            w[i] = u32::from_be_bytes([chunk[4 * i], chunk[4 * i + 1], chunk[4 * i + 2], chunk[4 * i + 3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16].wrapping_add(s0).wrapping_add(w[i - 7]).wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *x = x.wrapping_add(y);
        }
    }
    h.iter().map(|x| format!("{x:08x}")).collect()
}

#[test]
fn sha256_matches_known_vector() {
    assert_eq!(
        sha256_hex(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(
        sha256_hex(b""),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[test]
fn smollm2_matches_gguf_py() {
    check_model("smollm2-135m-instruct");
}

#[test]
fn gemma3_matches_gguf_py() {
    check_model("gemma3-270m");
}

#[test]
fn smollm2_hparams() {
    let Some(path) = common::require_model("smollm2-135m-instruct") else {
        return;
    };
    let g = Gguf::open(path).unwrap();
    assert_eq!(g.architecture().unwrap(), "llama");
    assert_eq!(g.require_u64("llama.block_count").unwrap(), 30);
    assert_eq!(g.require_u64("llama.embedding_length").unwrap(), 576);
    assert_eq!(g.require_str("tokenizer.ggml.model").unwrap(), "gpt2");
    assert_eq!(
        g.get_array("tokenizer.ggml.tokens").unwrap().strings().unwrap().len(),
        49152
    );
    assert!(g.get_str("tokenizer.chat_template").unwrap().contains("im_start"));
    // Tensor data are slices of the map: token_embd is the first tensor and starts the data section.
    let (info, data) = g.tensor("token_embd.weight").unwrap();
    assert_eq!(info.offset, g.data_offset);
    assert_eq!(data.as_ptr(), g.bytes()[g.data_offset as usize..].as_ptr());
}

#[test]
fn gemma3_hparams() {
    let Some(path) = common::require_model("gemma3-270m") else {
        return;
    };
    let g = Gguf::open(path).unwrap();
    assert_eq!(g.architecture().unwrap(), "gemma3");
    assert_eq!(g.require_u64("gemma3.block_count").unwrap(), 18);
    assert_eq!(g.require_u64("gemma3.attention.head_count_kv").unwrap(), 1);
    assert_eq!(g.require_str("tokenizer.ggml.model").unwrap(), "llama");
    assert_eq!(
        g.get_array("tokenizer.ggml.scores").unwrap().f32s().unwrap().len(),
        262144
    );
    assert!(g.require_u64("general.architecture").is_err());
}
