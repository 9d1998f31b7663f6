//! How close each packed decode product streams to the memory bandwidth: the 8b shape's
//! matrices (stacked QKV, output, stacked gate/up, down) of `LAYERS` layers per type (the
//! kernel benches' `matrix`), one token at a time, each pass beside a `measure_read_bandwidth`
//! pass of the same moment (the machine's bandwidth drifts, so only side-by-side shares
//! compare).
//!
//!     cargo run --release -p ferro-benches --example stream -- [REPS] [LAYERS]
//!
//! Environment: `T` threads (2), `TYPES` (q4_0,q4_k), `ITER` passes per type and rep, best
//! taken (3), `ROWS=N` one N x 4096 matrix per layer instead of the 8b shapes (to time the
//! products from cache), `SHAPES=960x576,576x576,...` a layer's matrices (SmolLM2's:
//! `960x576,576x576,3072x576,576x1536`).
use ferro_benches::{env, matrix, values};
use ferro_kernels::{measure_read_bandwidth, GgmlType, KernelTable, PackedMatrix, WeightMatrix};
use std::time::Instant;

/// A matrix as the engine keeps it: repacked where the table packs its type, else the GGUF
/// blocks (the words and their byte count).
enum Matrix {
    Packed(PackedMatrix),
    Plain(Vec<u64>, GgmlType, usize, usize, usize),
}

impl Matrix {
    fn bytes(&self) -> usize {
        match self {
            Matrix::Packed(p) => p.bytes().len(),
            Matrix::Plain(_, _, _, _, n) => *n,
        }
    }

    fn matvec(&self, t: &KernelTable, x: &[f32], y: &mut [f32]) {
        match self {
            Matrix::Packed(p) => t.matmul_packed(p, &x[..p.cols], 1, &mut y[..p.rows]),
            Matrix::Plain(words, ty, r, c, n) => {
                let w = WeightMatrix::new(*ty, *r, *c, &bytemuck::cast_slice::<u64, u8>(words)[..*n]).unwrap();
                t.matvec(&w, &x[..*c], &mut y[..*r])
            }
        }
    }
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
        .map(|n| GgmlType::from_name(n).unwrap_or_else(|| panic!("unknown type {n}")))
        .collect();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    let t = KernelTable::best();
    let mut sets = Vec::new();
    for ty in types {
        let plain: Vec<_> = (0..layers)
            .flat_map(|_| shapes.iter().map(|&(r, c)| (matrix(ty, r, c), r, c)))
            .collect();
        let ws: Vec<WeightMatrix> = plain
            .iter()
            .map(|((words, n), r, c)| {
                WeightMatrix::new(ty, *r, *c, &bytemuck::cast_slice::<u64, u8>(words)[..*n]).unwrap()
            })
            .collect();
        // Packed as the engine packs a model: all in one map, in huge pages where the system has them.
        let packed = PackedMatrix::pack_all(t, &ws.iter().map(|w| vec![w]).collect::<Vec<_>>());
        let ps: Vec<Matrix> = plain
            .into_iter()
            .zip(packed)
            .map(|(((words, n), r, c), p)| match p {
                Some(p) => Matrix::Packed(p),
                None => Matrix::Plain(words, ty, r, c, n),
            })
            .collect();
        let total: usize = ps.iter().map(Matrix::bytes).sum();
        eprintln!(
            "{ty}: {} matrices ({} packed), {:.0} MB, {} table",
            ps.len(),
            ps.iter().filter(|p| matches!(p, Matrix::Packed(_))).count(),
            total as f64 / 1e6,
            t.name
        );
        sets.push((ty, ps, total));
    }
    let max_cols = shapes.iter().map(|s| s.1).max().unwrap_or(0);
    let max_rows = shapes.iter().map(|s| s.0).max().unwrap_or(0);
    let x = values(max_cols, 7);
    let mut y = vec![0f32; max_rows];
    pool.install(|| {
        for _ in 0..reps {
            let bw = measure_read_bandwidth(threads, 1 << 30);
            let mut line = format!("membw {bw:6.2} GB/s");
            for (ty, ps, total) in &sets {
                let mut best = f64::INFINITY;
                for _ in 0..iters {
                    let s = Instant::now();
                    for p in ps {
                        p.matvec(t, &x, &mut y);
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
