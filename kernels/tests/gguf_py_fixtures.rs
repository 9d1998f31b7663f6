//! Agreement with gguf-py's `quants` module on random blocks of every format (fixtures written by
//! scripts/gen-quant-fixtures.py and committed).
//!
//! Bounds: dequantization of the 32-element formats and float rows is bit-exact (same f32
//! operations); K-quants within 1e-6 relative (operation order may differ). Quantization
//! (llama.cpp `quantize_row_*_ref` rounding, which gguf-py mirrors) must give identical bytes.

use ferro_kernels::{dequantize_row, quantize_row, GgmlType};
use std::path::Path;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn is_k_quant(ty: GgmlType) -> bool {
    ty.block_size() == 256
}

#[test]
fn dequantize_and_quantize_agree_with_gguf_py() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.starts_with("quant-") {
            continue;
        }
        let fx: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let tname = fx["type"].as_str().unwrap();
        let ty = GgmlType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(tname))
            .unwrap();
        let n = fx["n_elements"].as_u64().unwrap() as usize;
        let blocks = unhex(fx["blocks_hex"].as_str().unwrap());
        let want = floats(&fx["dequantized"]);
        let mut got = vec![0f32; n];
        dequantize_row(ty, &blocks, &mut got).unwrap();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            if is_k_quant(ty) {
                assert!(
                    (g - w).abs() <= 1e-6 * w.abs() + 1e-30,
                    "{ty} element {i}: {g} vs gguf-py {w}"
                );
            } else {
                assert_eq!(g.to_bits(), w.to_bits(), "{ty} element {i}: {g} vs gguf-py {w}");
            }
        }
        if let Some(input) = fx.get("quant_input") {
            let q = quantize_row(ty, &floats(input)).unwrap();
            assert_eq!(
                q,
                unhex(fx["quantized_hex"].as_str().unwrap()),
                "{ty}: quantized bytes differ from gguf-py"
            );
        }
        checked.push(ty);
    }
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::F16,
        GgmlType::BF16,
    ] {
        assert!(checked.contains(&ty), "no fixture checked for {ty}");
    }
}
