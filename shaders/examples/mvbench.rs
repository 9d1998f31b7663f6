//! Times the one-token decode product on the 8b shapes (stacked QKV, output, stacked gate/up,
//! down) on the current adapter: each product after the one before (as in a model) and eight
//! independent products back to back, with the bandwidth each reaches and the time per product
//! by which the CPU had encoded and submitted them all.
//!
//!     cargo run --release -p ferro-shaders --example mvbench -- [REPS]
//!
//! Environment: `TYPES` (q4_0,q4_k,q6_k), `SHAPES` (`KxROWS,...`); the `FERRO_GPU_MATVEC_*`
//! knobs pick variants.
use ferro_gguf::GgmlType;
use ferro_shaders::GpuContext;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let reps: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(32);
    let types: Vec<GgmlType> = std::env::var("TYPES")
        .unwrap_or("q4_0,q4_k,q6_k".into())
        .split(',')
        .map(|n| GgmlType::from_name(n).unwrap_or_else(|| panic!("unknown type {n}")))
        .collect();
    // `SHAPES=KxROWS,...` replaces the 8b shapes (k = the row length).
    let shapes: Vec<(usize, usize)> = match std::env::var("SHAPES") {
        Ok(list) => list
            .split(',')
            .map(|s| {
                let (k, r) = s.split_once('x').expect("SHAPES: KxROWS,...");
                (k.parse().expect("k"), r.parse().expect("rows"))
            })
            .collect(),
        Err(_) => vec![(4096, 6144), (4096, 4096), (4096, 28672), (14336, 4096)],
    };
    let ctx = GpuContext::new()?;
    println!("adapter: {}", ctx.adapter());
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    for ty in types {
        for &(k, rows) in &shapes {
            let n = ty.row_bytes(k as u64).ok_or("row bytes")? as usize * rows;
            // Random bytes, the f16 scales' exponents held small (timing only).
            let bytes: Vec<u8> = (0..n)
                .map(|i| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    if i % 2 == 1 {
                        (seed as u8) & 0x3b
                    } else {
                        seed as u8
                    }
                })
                .collect();
            let w = ctx.upload_weight(ty, &[k as u64, rows as u64], &bytes)?;
            let x = ctx.upload_f32(&(0..k).map(|i| ((i * 7 % 13) as f32 - 6.0) / 6.0).collect::<Vec<_>>())?;
            let xr = ctx.zeros(k)?;
            let ys: Vec<_> = (0..8).map(|_| ctx.zeros(rows)).collect::<Result<_, _>>()?;
            let all: Vec<_> = ys.iter().collect();
            let (one, one_cpu) = ctx.time_matvec(&w, &x, &xr, &all[..1], reps)?;
            let (eight, eight_cpu) = ctx.time_matvec(&w, &x, &xr, &all, reps.div_ceil(8))?;
            let gbs = |t: std::time::Duration| n as f64 / t.as_secs_f64() / 1e9;
            let us = |t: std::time::Duration| t.as_secs_f64() * 1e6;
            println!(
                "{:5} {k:5} x {rows:5} {:6.1} MB  dependent {:7.1} us {:6.0} GB/s (submitted at {:5.1})  \
                 independent {:7.1} us {:6.0} GB/s (submitted at {:5.1})",
                ty.name(),
                n as f64 / 1e6,
                us(one),
                gbs(one),
                us(one_cpu),
                us(eight),
                gbs(eight),
                us(eight_cpu)
            );
        }
    }
    Ok(())
}
