//! Bad input to the real binary: each gives one clear `error:` line on stderr and exit code 1.

use std::path::PathBuf;

use ferro_gguf::{GgmlType, GgufWriter, MetaValue};
use ferro_tests::{assert_one_line_error, run_ferro, TempDir};

fn small() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.set("general.architecture", MetaValue::String("llama".into()))
        .unwrap();
    w.add_tensor("a", &[8], GgmlType::F32, vec![1; 32]).unwrap();
    w.add_tensor("b", &[32, 2], GgmlType::Q8_0, vec![2; 68]).unwrap();
    w.to_bytes().unwrap()
}

/// Offset of tensor `b`'s type field: its info is len(8) + "b" + n_dims(4) + 2 dims(16).
fn b_type_at(f: &[u8]) -> usize {
    let pat = [&1u64.to_le_bytes()[..], b"b"].concat();
    f.windows(pat.len()).position(|w| w == pat).unwrap() + 8 + 1 + 4 + 16
}

fn info_of(dir: &TempDir, name: &str, bytes: &[u8]) -> std::process::Output {
    let p: PathBuf = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    run_ferro(dir.path(), &["info", p.to_str().unwrap()])
}

#[test]
fn the_valid_file_is_accepted() {
    let dir = TempDir::new("bad-ok");
    let out = info_of(&dir, "ok.gguf", &small());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn missing_file() {
    let dir = TempDir::new("bad-missing");
    let p = dir.path().join("nope.gguf");
    assert_one_line_error(&run_ferro(dir.path(), &["info", p.to_str().unwrap()]), "no such file");
}

#[test]
fn directory() {
    let dir = TempDir::new("bad-dir");
    assert_one_line_error(
        &run_ferro(dir.path(), &["info", dir.path().to_str().unwrap()]),
        "is a directory",
    );
}

#[test]
fn not_gguf() {
    let dir = TempDir::new("bad-notgguf");
    assert_one_line_error(&info_of(&dir, "x.gguf", b"hello, this is text\n"), "not a GGUF file");
    assert_one_line_error(&info_of(&dir, "empty.gguf", b""), "not a GGUF file");
}

#[test]
fn truncated() {
    let dir = TempDir::new("bad-trunc");
    let f = small();
    // Inside the header, and inside the tensor data.
    assert_one_line_error(&info_of(&dir, "t1.gguf", &f[..40]), "truncated");
    // Cut one byte before the end of the last tensor's data (the writer pads after it).
    let g = ferro_gguf::Gguf::from_bytes(f.clone()).unwrap();
    let data_end = g.tensors().iter().map(|t| t.offset + t.n_bytes).max().unwrap() as usize;
    assert_one_line_error(
        &info_of(&dir, "t2.gguf", &f[..data_end - 1]),
        "past the end of the file",
    );
}

#[test]
fn gguf_v1() {
    let dir = TempDir::new("bad-v1");
    let mut f = small();
    f[4..8].copy_from_slice(&1u32.to_le_bytes());
    let line = assert_one_line_error(&info_of(&dir, "v1.gguf", &f), "version 1");
    assert!(line.contains("v1"), "{line}");
}

#[test]
fn unknown_tensor_type() {
    let dir = TempDir::new("bad-type");
    let mut f = small();
    let at = b_type_at(&f);
    f[at..at + 4].copy_from_slice(&77u32.to_le_bytes());
    assert_one_line_error(&info_of(&dir, "ty.gguf", &f), "unknown ggml type id 77");
}

#[test]
fn tensor_past_end_of_file() {
    let dir = TempDir::new("bad-oob");
    let mut f = small();
    let at = b_type_at(&f) + 4;
    f[at..at + 8].copy_from_slice(&(1u64 << 30).to_le_bytes());
    let line = assert_one_line_error(&info_of(&dir, "oob.gguf", &f), "past the end of the file");
    assert!(line.contains("'b'"), "{line}");
}

#[test]
fn unknown_store_name() {
    let dir = TempDir::new("bad-name");
    let line = assert_one_line_error(
        &run_ferro(dir.path(), &["info", "no-such-model"]),
        "unknown model 'no-such-model'",
    );
    assert!(line.contains("smollm2-135m-instruct"), "lists the known names: {line}");
    assert_one_line_error(&run_ferro(dir.path(), &["rm", "no-such-model"]), "no model named");
    assert_one_line_error(&run_ferro(dir.path(), &["pull", "no-such-model"]), "unknown model name");
}
