//! `ferro info` on written files and on the real models, human and JSON.

use ferro_gguf::{GgmlType, GgufWriter, MetaValue, ValueType};
use ferro_tests::{require_model, run_ferro, TempDir};
use serde_json::Value;

fn info_json(home: &std::path::Path, model: &str) -> Value {
    let out = run_ferro(home, &["info", model, "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("--json prints one JSON object")
}

#[test]
fn info_of_a_written_file() {
    let dir = TempDir::new("info-written");
    let mut w = GgufWriter::new();
    w.set("general.architecture", MetaValue::String("llama".into()))
        .unwrap();
    w.set("general.name", MetaValue::String("tiny".into())).unwrap();
    w.set("llama.context_length", MetaValue::U32(128)).unwrap();
    w.set("llama.embedding_length", MetaValue::U32(32)).unwrap();
    w.set("llama.block_count", MetaValue::U32(1)).unwrap();
    w.set("llama.attention.head_count", MetaValue::U32(4)).unwrap();
    w.set("llama.attention.head_count_kv", MetaValue::U32(2)).unwrap();
    w.set("tokenizer.ggml.model", MetaValue::String("gpt2".into())).unwrap();
    w.set("tokenizer.ggml.tokens", MetaValue::strings(["a", "b", "c"]))
        .unwrap();
    w.set("long", MetaValue::String("x".repeat(5000))).unwrap();
    w.set(
        "nested",
        MetaValue::Array(ValueType::Array, vec![MetaValue::strings(["q"])]),
    )
    .unwrap();
    w.set("neg", MetaValue::I32(-5)).unwrap();
    w.add_tensor("token_embd.weight", &[32, 3], GgmlType::Q8_0, vec![0; 3 * 34])
        .unwrap();
    w.add_tensor("output_norm.weight", &[32], GgmlType::F32, vec![0; 128])
        .unwrap();
    let p = dir.path().join("tiny.gguf");
    w.write_file(&p).unwrap();

    let j = info_json(dir.path(), p.to_str().unwrap());
    assert_eq!(j["architecture"], "llama");
    assert_eq!(j["name"], "tiny");
    assert_eq!(j["n_params"], 32 * 3 + 32);
    assert_eq!(j["file_bytes"], std::fs::metadata(&p).unwrap().len());
    assert_eq!(j["tensor_types"]["q8_0"], 1);
    assert_eq!(j["tensor_types"]["f32"], 1);
    assert_eq!(j["context_length"], 128);
    assert_eq!(j["embedding_length"], 32);
    assert_eq!(j["block_count"], 1);
    assert_eq!(j["head_count"], 4);
    assert_eq!(j["head_count_kv"], 2);
    assert_eq!(j["vocab_size"], 3);
    assert_eq!(j["tokenizer"], "gpt2");
    assert_eq!(j["chat_template"], false);
    let m = &j["metadata"];
    assert_eq!(m.as_object().unwrap().len(), 12, "every key");
    assert_eq!(m["tokenizer.ggml.tokens"]["elem_type"], "string");
    assert_eq!(m["tokenizer.ggml.tokens"]["len"], 3);
    assert_eq!(m["nested"]["elem_type"], "array");
    assert_eq!(m["neg"], -5);
    let long = m["long"].as_str().unwrap();
    assert!(long.len() < 400 && long.ends_with("(5000 bytes)"), "{long}");
    assert!(j["cpu_features"].is_array());
    assert!(j["kernels"].is_string());
    assert!(j["huge_pages"].is_string() || j["huge_pages"].is_null());

    // Human summary.
    let out = run_ferro(dir.path(), &["info", p.to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("architecture") && text.contains("llama"), "{text}");
    assert!(text.contains("q8_0 1"), "{text}");
    assert!(text.contains("huge pages "), "{text}");

    // A store name resolves to the store.
    std::fs::create_dir_all(dir.path().join("models")).unwrap();
    std::fs::copy(&p, dir.path().join("models/tiny-stored.gguf")).unwrap();
    assert_eq!(info_json(dir.path(), "tiny-stored")["name"], "tiny");
}

#[test]
fn info_of_the_real_models() {
    for (name, arch, blocks, types, template) in [
        (
            "smollm2-135m-instruct",
            "llama",
            30,
            vec![("q4_1", 210), ("q8_0", 1), ("f32", 61)],
            true,
        ),
        (
            "gemma3-270m",
            "gemma3",
            18,
            vec![("q4_K", 27), ("q5_0", 81), ("q6_K", 9), ("q8_0", 10), ("f32", 109)],
            false,
        ),
    ] {
        let Some(path) = require_model(name) else { continue };
        let home = path.parent().unwrap().parent().unwrap();
        let j = info_json(home, name);
        assert_eq!(j["architecture"], arch, "{name}");
        assert_eq!(j["block_count"], blocks, "{name}");
        assert_eq!(j["chat_template"], template, "{name}");
        for (t, n) in types {
            assert_eq!(j["tensor_types"][t], n, "{name} {t}");
        }
        assert_eq!(j["file_bytes"], std::fs::metadata(&path).unwrap().len());
        assert!(j["n_params"].as_u64().unwrap() > 100_000_000, "{name}");
        assert_eq!(j["metadata"].as_object().unwrap().len(), 33, "{name}");
    }
}
