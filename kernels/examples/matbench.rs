//! Quick timing of the matrix products on random weights (no model file needed):
//!
//!   cargo run --release -p ferro-kernels --example matbench -- [TYPE ...]
//!
//! For each type: matvec and a 512-token matmul on 4096 x 4096, 14336 x 4096 and 4096 x 14336 (the 8b shapes)
//! and on 1536 x 576 (SmolLM2's FFN) and 640 x 2048 (gemma3-270m's FFN down), with the rayon threads of RAYON_NUM_THREADS. Reports GB/s of
//! weights (matvec) and GFLOP/s (matmul). FERRO_KERNELS and FERRO_GEMM choose the kernels;
//! MATBENCH_N sets the matmul's token count (default 512; e.g. 4 for a batched decode step);
//! MATBENCH_PACKED=1 times the matrices repacked as the engine loads them (where the path packs
//! the type).
//! The criterion suite (benches/) is the reference measurement; this is the quick loop.

use ferro_kernels::{quantize_row, GgmlType, KernelTable, WeightMatrix};
use std::time::Instant;

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn main() {
    // On a pool thread, as the engine runs its products (`install`): tasks fork from a worker
    // instead of being injected from outside the pool.
    rayon::scope(|_| run());
}

fn run() {
    let names: Vec<String> = std::env::args().skip(1).collect();
    let types: Vec<GgmlType> = if names.is_empty() {
        vec![
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_0,
            GgmlType::Q8_0,
            GgmlType::Q4_K,
            GgmlType::Q6_K,
        ]
    } else {
        names
            .iter()
            .map(|n| GgmlType::from_name(n).unwrap_or_else(|| panic!("unknown type {n}")))
            .collect()
    };
    let table = KernelTable::get();
    println!(
        "kernels {} gemm {} threads {}",
        table.name,
        std::env::var("FERRO_GEMM").unwrap_or_else(|_| "all".into()),
        rayon::current_num_threads()
    );
    for ty in types {
        for (rows, cols) in [
            (1536usize, 576usize),
            (640, 2048),
            (4096, 4096),
            (14336, 4096),
            (4096, 14336),
        ] {
            if cols % ty.block_size() as usize != 0 {
                continue;
            }
            let row: Vec<u8> = quantize_row(ty, &values(cols, 1)).unwrap();
            // Distinct rows would cost minutes to quantize; copies of one row stream the same bytes.
            // MATBENCH_COPIES copies of the whole matrix, used in turn, keep the matvec out of
            // the last-level cache (default 1: the matrix alone, cache-friendly when small).
            let copies: usize = std::env::var("MATBENCH_COPIES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(1)
                .clamp(1, 64);
            let len = row.len() * rows;
            let mut store = vec![0u32; (len * copies).div_ceil(4)];
            let all = &mut bytemuck::cast_slice_mut::<u32, u8>(&mut store)[..len * copies];
            for r in all.chunks_mut(row.len()) {
                r.copy_from_slice(&row);
            }
            let ws: Vec<WeightMatrix> = all
                .chunks(len)
                .map(|b| WeightMatrix::new(ty, rows, cols, b).unwrap())
                .collect();
            let packed: Vec<Option<ferro_kernels::PackedMatrix>> =
                if std::env::var("MATBENCH_PACKED").as_deref() == Ok("1") {
                    ws.iter().map(|w| ferro_kernels::PackedMatrix::pack(table, w)).collect()
                } else {
                    ws.iter().map(|_| None).collect()
                };
            let product = |i: usize, x: &[f32], n: usize, y: &mut [f32]| match &packed[i] {
                Some(p) => table.matmul_packed(p, x, n, y),
                None => table.matmul(&ws[i], x, n, y),
            };
            let bytes = &all[..len];
            let x = values(cols * 512, 2);
            let mut y = vec![0f32; rows * 512];
            let reps = (2_000_000_000 / bytes.len().max(1)).clamp(5, 2000);
            product(0, &x[..cols], 1, &mut y[..rows]);
            // Each call timed: the mean, and the median that a busy machine disturbs less.
            let mut times = Vec::with_capacity(reps);
            for i in 0..reps {
                let t = Instant::now();
                product(
                    i % copies,
                    &x[(i % 512) * cols..(i % 512 + 1) * cols],
                    1,
                    &mut y[..rows],
                );
                times.push(t.elapsed().as_secs_f64());
            }
            let mv = times.iter().sum::<f64>() / reps as f64;
            times.sort_by(f64::total_cmp);
            let med = times[reps / 2];
            let n: usize = std::env::var("MATBENCH_N")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(512)
                .clamp(1, 512);
            let mreps = if rows * cols * n > 20_000_000 * 512 {
                1
            } else {
                (3 * 512 / n).max(3)
            };
            let t = Instant::now();
            for _ in 0..mreps {
                product(0, &x[..n * cols], n, &mut y[..n * rows]);
            }
            let mm = t.elapsed().as_secs_f64() / mreps as f64;
            println!(
                "{:>5} {rows:>5}x{cols:<5} matvec {:8.1} us {:6.2} GB/s (median {:6.2}) | matmul{n} {:8.3} ms {:7.1} GFLOP/s",
                ty.name(),
                mv * 1e6,
                bytes.len() as f64 / mv / 1e9,
                bytes.len() as f64 / med / 1e9,
                mm * 1e3,
                2.0 * (rows * cols * n) as f64 / mm / 1e9
            );
        }
    }
}
