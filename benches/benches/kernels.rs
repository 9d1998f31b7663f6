//! Kernel throughput, per format and path:
//! - `dot/<type>/<path>`: one 4096-element row, GB/s of weights;
//! - `matvec/<type>/<rows>x<cols>/<path>[/packed]/<threads>`: 4096x4096 and 14336x4096, GB/s of
//!   weights (hold it against the read bandwidth printed first); `packed`: the rows repacked at
//!   load time (`PackedMatrix`), where the path does that for the type. 14336x4096 takes three
//!   copies of the matrix in turn, so that it streams from memory (one copy, 33 MB at 4 bits,
//!   would partly stay in a 32 MB L3); 4096x4096 is one copy, as a layer's matrix in cache;
//! - `matmul/<type>/4096x4096x512/<path>/<threads>`: 512 tokens, reported as elements/s where
//!   one element is one FLOP (so Gelem/s reads as GFLOP/s).
//!
//! Threads: `1t` (a one-thread rayon pool) and `all` (the global pool). Filter with criterion's
//! name filter, e.g. `cargo bench -p ferro-benches --bench kernels -- matvec/q4_0`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ferro_benches::{matrix, values};
use ferro_kernels::{is_supported, GgmlType, KernelPath, KernelTable, PackedMatrix, WeightMatrix};
use std::hint::black_box;
use std::time::Duration;

fn types() -> Vec<GgmlType> {
    GgmlType::ALL
        .into_iter()
        .filter(|t| is_supported(*t) && *t != GgmlType::F32 && *t != GgmlType::BF16)
        .collect()
}

fn tables() -> Vec<&'static KernelTable> {
    KernelPath::available()
        .into_iter()
        .filter_map(KernelTable::for_path)
        .collect()
}

fn one_thread() -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap()
}

fn bench_dot(c: &mut Criterion) {
    let cols = 4096;
    let x = values(cols, 99);
    let mut g = c.benchmark_group("dot");
    for ty in types() {
        let (w, n) = matrix(ty, 1, cols);
        let bytes = &bytemuck::cast_slice::<u64, u8>(&w)[..n];
        let m = WeightMatrix::new(ty, 1, cols, bytes).unwrap();
        g.throughput(Throughput::Bytes(n as u64));
        for t in tables() {
            let pool = one_thread();
            let mut y = [0f32];
            g.bench_function(BenchmarkId::new(ty.name(), t.name), |b| {
                pool.install(|| b.iter(|| t.matvec(&m, black_box(&x), &mut y)))
            });
        }
    }
    g.finish();
}

fn bench_matvec(c: &mut Criterion) {
    let bw = ferro_kernels::measure_read_bandwidth(rayon::current_num_threads(), 1 << 30);
    eprintln!(
        "memory read bandwidth ({} threads): {bw:.1} GB/s",
        rayon::current_num_threads()
    );
    let mut g = c.benchmark_group("matvec");
    for ty in types() {
        for (rows, cols, copies) in [(4096, 4096, 1), (14336, 4096, 3)] {
            let (w, n) = matrix(ty, rows, cols);
            let words: Vec<Vec<u64>> = (0..copies).map(|_| w.clone()).collect();
            let ms: Vec<WeightMatrix> = words
                .iter()
                .map(|w| WeightMatrix::new(ty, rows, cols, &bytemuck::cast_slice::<u64, u8>(w)[..n]).unwrap())
                .collect();
            let x = values(cols, 7);
            let mut y = vec![0f32; rows];
            g.throughput(Throughput::Bytes(n as u64));
            for t in tables() {
                let id = format!("{}x{}/{}", rows, cols, t.name);
                let pool = one_thread();
                let mut i = 0;
                g.bench_function(BenchmarkId::new(ty.name(), format!("{id}/1t")), |b| {
                    pool.install(|| {
                        b.iter(|| {
                            i += 1;
                            t.matvec(&ms[i % copies], black_box(&x), &mut y)
                        })
                    })
                });
                g.bench_function(BenchmarkId::new(ty.name(), format!("{id}/all")), |b| {
                    b.iter(|| {
                        i += 1;
                        t.matvec(&ms[i % copies], black_box(&x), &mut y)
                    })
                });
                // The rows repacked at load time, where the path does that for the type.
                // As the engine packs them: one map, in huge pages where the system has them.
                let sets: Vec<Vec<&WeightMatrix>> = ms.iter().map(|m| vec![m]).collect();
                let packed: Option<Vec<PackedMatrix>> = PackedMatrix::pack_all(t, &sets).into_iter().collect();
                if let Some(ps) = packed {
                    g.bench_function(BenchmarkId::new(ty.name(), format!("{id}/packed/1t")), |b| {
                        pool.install(|| {
                            b.iter(|| {
                                i += 1;
                                t.matmul_packed(&ps[i % copies], black_box(&x), 1, &mut y)
                            })
                        })
                    });
                    g.bench_function(BenchmarkId::new(ty.name(), format!("{id}/packed/all")), |b| {
                        b.iter(|| {
                            i += 1;
                            t.matmul_packed(&ps[i % copies], black_box(&x), 1, &mut y)
                        })
                    });
                }
            }
        }
    }
    g.finish();
}

fn bench_matmul(c: &mut Criterion) {
    let (rows, cols, n) = (4096, 4096, 512);
    let mut g = c.benchmark_group("matmul");
    g.sample_size(10);
    g.throughput(Throughput::Elements(2 * (rows * cols * n) as u64));
    let x = values(cols * n, 5);
    let mut y = vec![0f32; rows * n];
    for ty in types() {
        let (w, nb) = matrix(ty, rows, cols);
        let m = WeightMatrix::new(ty, rows, cols, &bytemuck::cast_slice::<u64, u8>(&w)[..nb]).unwrap();
        for t in tables() {
            let id = format!("{rows}x{cols}x{n}/{}", t.name);
            let pool = one_thread();
            g.bench_function(BenchmarkId::new(ty.name(), format!("{id}/1t")), |b| {
                pool.install(|| b.iter(|| t.matmul(&m, black_box(&x), n, &mut y)))
            });
            g.bench_function(BenchmarkId::new(ty.name(), format!("{id}/all")), |b| {
                b.iter(|| t.matmul(&m, black_box(&x), n, &mut y))
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = kernels;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(10);
    targets = bench_dot, bench_matvec, bench_matmul
}
criterion_main!(kernels);
