//! Sampling throughput (tokens/s) over the vocabularies of the test models: 49152 (SmolLM2's
//! BPE) and 262144 (gemma3's SentencePiece), with greedy decoding and llama.cpp's default chain
//! (top-k 40, top-p 0.95, min-p 0.05, temperature 0.8) plus repetition penalties.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ferro_engine::sampler::{Rng, Sampler, SamplerConfig};

/// Logits shaped like a model's: a few peaked tokens over a broad noisy floor.
fn fake_logits(n_vocab: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n_vocab)
        .map(|i| {
            let noise = rng.next_f64() as f32 * 4.0 - 2.0;
            if i % 977 == 0 {
                noise + 12.0
            } else {
                noise
            }
        })
        .collect()
}

fn bench_sampler(c: &mut Criterion) {
    let mut group = c.benchmark_group("sampler");
    group.throughput(Throughput::Elements(1));
    let history: Vec<u32> = (0..256u32).map(|i| i * 97 % 40_000).collect();
    for n_vocab in [49_152usize, 262_144] {
        let logits = fake_logits(n_vocab, 7);
        let configs = [
            ("greedy", SamplerConfig::greedy()),
            (
                "default_chain",
                SamplerConfig {
                    seed: Some(1),
                    ..SamplerConfig::default()
                },
            ),
            (
                "default_chain_penalties",
                SamplerConfig {
                    seed: Some(1),
                    repeat_penalty: 1.1,
                    presence_penalty: 0.5,
                    frequency_penalty: 0.5,
                    ..SamplerConfig::default()
                },
            ),
            (
                "top_p_only",
                SamplerConfig {
                    seed: Some(1),
                    top_k: 0,
                    min_p: 0.0,
                    ..SamplerConfig::default()
                },
            ),
        ];
        for (name, cfg) in configs {
            let mut sampler = Sampler::new(cfg);
            let mut work = logits.clone();
            group.bench_function(BenchmarkId::new(name, n_vocab), |b| {
                b.iter(|| {
                    // The sampler modifies the logits in place (penalties): start fresh each time.
                    work.copy_from_slice(&logits);
                    sampler.sample(&mut work, &history)
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_sampler);
criterion_main!(benches);
