//! Tokenizer throughput (input bytes/s) of both test models: BPE (SmolLM2) and SentencePiece
//! (gemma3), on mixed English prose, code and non-Latin text; plus decode and vocab loading.
//! Models come from `$FERRO_HOME/models` (default ~/.cache/ferro); missing ones are skipped.

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ferro_engine::tokenizer::Tokenizer;

const MODELS: [&str; 2] = ["smollm2-135m-instruct", "gemma3-270m"];

const SAMPLE: &str = "The GNU General Public License is a free, copyleft license for software and \
other kinds of works. The licenses for most software and other practical works are designed to \
take away your freedom to share and change the works.\n\
fn main() {\n    let xs: Vec<u32> = (0..100).map(|i| i * 2).collect();\n    println!(\"{:?}\", xs);\n}\n\
日本語のテキストと中文, emoji 🦀🔥, numbers 1234567 3.14159 -42, café naïve résumé.\n\
<|im_start|>user\nWhat is the boiling point of water?<|im_end|>\n";

fn model_path(name: &str) -> PathBuf {
    let home = std::env::var_os("FERRO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/ferro"));
    home.join("models").join(format!("{name}.gguf"))
}

fn bench_tokenizer(c: &mut Criterion) {
    let text = SAMPLE.repeat(16);
    let mut group = c.benchmark_group("tokenizer");
    for name in MODELS {
        let path = model_path(name);
        let Ok(g) = ferro_gguf::Gguf::open(&path) else {
            eprintln!("skipping {name}: {} not found", path.display());
            continue;
        };
        group.bench_function(BenchmarkId::new("load", name), |b| {
            b.iter(|| Tokenizer::from_gguf(&g).expect("tokenizer loads"))
        });
        let tok = Tokenizer::from_gguf(&g).expect("tokenizer loads");
        let ids = tok.encode(&text, true, true);
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(BenchmarkId::new("encode", name), |b| {
            b.iter(|| tok.encode(std::hint::black_box(&text), true, true))
        });
        group.bench_function(BenchmarkId::new("decode", name), |b| {
            b.iter(|| tok.decode(std::hint::black_box(&ids)))
        });
        group.throughput(Throughput::Elements(ids.len() as u64));
        group.bench_function(BenchmarkId::new("stream_decode_tokens", name), |b| {
            b.iter(|| {
                let mut d = tok.detokenizer();
                let mut n = 0;
                for &id in &ids {
                    n += d.push(id).len();
                }
                n
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench_tokenizer
}
criterion_main!(benches);
