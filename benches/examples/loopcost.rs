//! What a parallel loop of a decode step costs beyond its work, on the thread team
//! (`kernels/src/team.rs`): two tasks that each spin for a fixed time, with when each starts
//! and ends and when the loop returns (means from the loop's start); then the small models'
//! layer products from cache (the same matrix again and again) on one thread and on two.
//!
//!     cargo run --release -p ferro-benches --example loopcost
//!
//! Environment: `N` loops per measurement (100000), `TY` the products' type (q4_1).
use ferro_benches::{env, matrix, values};
use ferro_kernels::{GgmlType, KernelTable, PackedMatrix, WeightMatrix};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

fn spin(d: Duration) {
    let s = Instant::now();
    while s.elapsed() < d {}
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap()
}

fn main() {
    let n: usize = env("N").unwrap_or(100_000);
    pool(2).install(|| {
        let mut data = vec![0u64; 64];
        let base = Instant::now();
        let now = || base.elapsed().as_nanos() as u64;
        for us in [1u64, 2, 4] {
            let (start, end) = (
                [AtomicU64::new(0), AtomicU64::new(0)],
                [AtomicU64::new(0), AtomicU64::new(0)],
            );
            let mut back = 0;
            for _ in 0..n {
                let t0 = now();
                ferro_kernels::for_each_chunk(&mut data, 32, |i, c| {
                    let a = now();
                    spin(Duration::from_micros(us));
                    start[i / 32].fetch_add(a - t0, Relaxed);
                    end[i / 32].fetch_add(now() - t0, Relaxed);
                    c[0] += 1;
                });
                back += now() - t0;
            }
            let mean_us = |t: u64| t as f64 / n as f64 / 1e3;
            let (s, e) = (
                start.map(|a| mean_us(a.into_inner())),
                end.map(|a| mean_us(a.into_inner())),
            );
            println!(
                "two tasks of {us} us: caller's task {:.2}-{:.2} us, worker's {:.2}-{:.2}, back at {:.2}",
                s[0],
                e[0],
                s[1],
                e[1],
                mean_us(back)
            );
        }
    });
    let t = KernelTable::best();
    let ty = GgmlType::from_name(&std::env::var("TY").unwrap_or("q4_1".into())).expect("TY: a type name");
    for (r, c) in [(576, 576), (960, 576), (3072, 576), (576, 1536)] {
        let (words, bytes) = matrix(ty, r, c);
        let w = WeightMatrix::new(ty, r, c, &bytemuck::cast_slice::<u64, u8>(&words)[..bytes]).unwrap();
        let p = PackedMatrix::pack(t, &w).expect("a type the kernels pack");
        let (x, mut y) = (values(c, 7), vec![0f32; r]);
        let mut line = format!("{ty} {r} x {c} ({:.0} KB):", p.bytes().len() as f64 / 1e3);
        for threads in [1, 2] {
            pool(threads).install(|| {
                let loops = n / 5;
                for _ in 0..loops / 10 {
                    t.matmul_packed(&p, &x, 1, &mut y);
                }
                let s = Instant::now();
                for _ in 0..loops {
                    t.matmul_packed(&p, &x, 1, &mut y);
                }
                let dt = s.elapsed().as_secs_f64() / loops as f64;
                line += &format!("  {threads} thread(s) {:.2} us", dt * 1e6);
            });
        }
        println!("{line}");
    }
}
