//! Whole-model throughput of both test models: one decode step (tokens/s of single-token
//! forward passes at a short context) and one 512-token prefill from an empty context
//! (tokens/s), as llama-bench's tg and pp measure them. Threads: `FERRO_BENCH_THREADS` (default
//! one per core). Models come from `$FERRO_HOME/models`; missing ones are skipped with a message.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ferro_benches::{bench_threads, model_path, TEST_MODELS};
use ferro_engine::{Logits, Model, ModelOptions};

const N_PROMPT: usize = 512;
/// Decode steps run at positions `DECODE_CTX..DECODE_CTX + steps`, after this many cached tokens.
const DECODE_CTX: usize = 64;

fn bench_models(c: &mut Criterion) {
    let threads = bench_threads();
    let mut group = c.benchmark_group("model");
    group.sample_size(10);
    for name in TEST_MODELS {
        let path = model_path(name);
        if !path.is_file() {
            eprintln!("skipping {name}: {} not found (ferro pull {name})", path.display());
            continue;
        }
        let opts = ModelOptions {
            n_ctx: N_PROMPT + 1,
            n_batch: N_PROMPT,
            threads,
            ..ModelOptions::default()
        };
        let mut model = match Model::load(&path, &opts) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("skipping {name}: {e}");
                continue;
            }
        };
        let n_vocab = model.n_vocab() as u64;
        // Fixed pseudo-random valid token ids.
        let tokens: Vec<u32> = (0..N_PROMPT as u64)
            .map(|i| ((i * 2_654_435_761 + 12_345) % n_vocab) as u32)
            .collect();

        group.throughput(Throughput::Elements(1));
        model
            .forward(&tokens[..DECODE_CTX], 0, Logits::None)
            .expect("prefill runs");
        let mut step = 0usize;
        group.bench_function(BenchmarkId::new("decode_step", format!("{name}/t{threads}")), |b| {
            b.iter(|| {
                // Cycle over a few positions so the context stays short and fixed on average.
                let pos = DECODE_CTX + step % 64;
                step += 1;
                let logits = model
                    .forward(&tokens[pos..pos + 1], pos, Logits::Last)
                    .expect("decode step runs");
                logits[0]
            })
        });

        group.throughput(Throughput::Elements(N_PROMPT as u64));
        group.bench_function(BenchmarkId::new("prefill_512", format!("{name}/t{threads}")), |b| {
            b.iter(|| {
                let logits = model.forward(&tokens, 0, Logits::Last).expect("prefill runs");
                logits[0]
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_models);
criterion_main!(benches);
