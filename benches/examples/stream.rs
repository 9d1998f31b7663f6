//! How close each packed decode product streams to the memory bandwidth: the 8b shape's
//! matrices (stacked QKV, output, stacked gate/up, down) of `LAYERS` layers per type, random
//! valid blocks, one token at a time, each pass beside a `measure_read_bandwidth` pass of the
//! same moment (the machine's bandwidth drifts, so only side-by-side shares compare).
//!
//!     cargo run --release -p ferro-benches --example stream -- [REPS] [LAYERS]
//!
//! Environment: `T` threads (2), `TYPES` (q4_0,q4_k), `ITER` passes per type and rep, best
//! taken (3), `ROWS=N` one N x 4096 matrix per layer instead of the 8b shapes (to time the
//! products from cache), `SHAPES=960x576,576x576,...` a layer's matrices (SmolLM2's:
//! `960x576,576x576,3072x576,576x1536`).
use ferro_kernels::{measure_read_bandwidth, GgmlType, KernelTable, PackedMatrix, WeightMatrix};
use std::time::Instant;

fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// Random quants with a small f16 scale (and min) in every block.
fn matrix(ty: GgmlType, rows: usize, cols: usize, seed: &mut u64) -> Vec<u8> {
    let size = ty.type_size() as usize;
    let mut v = vec![0u8; rows * cols / ty.block_size() as usize * size];
    for c in v.chunks_exact_mut(8) {
        c.copy_from_slice(&next(seed).to_le_bytes());
    }
    let d = half::f16::from_f32(0.01).to_le_bytes();
    let heads = if matches!(ty, GgmlType::Q4_1 | GgmlType::Q4_K) {
        2
    } else {
        1
    };
    for b in v.chunks_exact_mut(size) {
        for h in 0..heads {
            b[2 * h..2 * h + 2].copy_from_slice(&d);
        }
    }
    v
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|s| s.parse().ok()).collect();
    let (reps, layers) = (args.first().copied().unwrap_or(5), args.get(1).copied().unwrap_or(8));
    let threads = env("T").unwrap_or(2);
    let iters = env("ITER").unwrap_or(3);
    let shapes: Vec<(usize, usize)> = match (env::<usize>("ROWS"), std::env::var("SHAPES")) {
        (Some(r), _) => vec![(r, 4096)],
        (None, Ok(list)) => list
            .split(',')
            .map(|s| {
                let (r, c) = s.split_once('x').expect("SHAPES: ROWSxCOLS,...");
                (r.parse().expect("rows"), c.parse().expect("cols"))
            })
            .collect(),
        _ => vec![(6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336)],
    };
    let types: Vec<GgmlType> = std::env::var("TYPES")
        .unwrap_or("q4_0,q4_k".into())
        .split(',')
        .map(|n| {
            let found = GgmlType::ALL.into_iter().find(|t| t.name().eq_ignore_ascii_case(n));
            found.unwrap_or_else(|| panic!("unknown type {n}"))
        })
        .collect();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    let t = KernelTable::best();
    let mut seed = 0x1234_5678_9abc_def1u64;
    let mut sets = Vec::new();
    for ty in types {
        let mut ps = Vec::new();
        for _ in 0..layers {
            for &(r, c) in &shapes {
                let bytes = matrix(ty, r, c, &mut seed);
                let w = WeightMatrix::new(ty, r, c, &bytes).unwrap();
                ps.push(PackedMatrix::pack(t, &w).unwrap_or_else(|| panic!("{} does not pack {ty}", t.name)));
            }
        }
        let total: usize = ps.iter().map(|p| p.bytes().len()).sum();
        eprintln!(
            "{ty}: {} matrices, {:.0} MB, {} table",
            ps.len(),
            total as f64 / 1e6,
            t.name
        );
        sets.push((ty, ps, total));
    }
    let x: Vec<f32> = (0..14336).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
    let mut y = vec![0f32; 28672];
    pool.install(|| {
        for _ in 0..reps {
            let bw = measure_read_bandwidth(threads, 1 << 30);
            let mut line = format!("membw {bw:6.2} GB/s");
            for (ty, ps, total) in &sets {
                let mut best = f64::INFINITY;
                for _ in 0..iters {
                    let s = Instant::now();
                    for p in ps {
                        t.matmul_packed(p, &x[..p.cols], 1, &mut y[..p.rows]);
                    }
                    best = best.min(s.elapsed().as_secs_f64());
                }
                let gbs = *total as f64 / best / 1e9;
                line += &format!("  {ty} {gbs:6.2} ({:5.1}%)", 100.0 * gbs / bw);
            }
            println!("{line}");
        }
    });
}
