//! Times single ops on the current adapter: `cargo run -p ferro-shaders --example optime`.

use std::time::Instant;

use ferro_gguf::GgmlType;
use ferro_shaders::GpuContext;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ctx = GpuContext::new()?;
    println!("adapter: {}", ctx.adapter());
    for (ty, k, rows) in [
        (GgmlType::Q4_1, 576usize, 1536usize),
        (GgmlType::Q8_0, 576, 49152),
        (GgmlType::Q8_0, 640, 262144),
    ] {
        let bytes = vec![0u8; ty.row_bytes(k as u64).unwrap() as usize * rows];
        let w = ctx.upload_weight(ty, &[k as u64, rows as u64], &bytes)?;
        let x = ctx.zeros(k)?;
        let y = ctx.zeros(rows)?;
        ctx.matmul(&w, &x, &y, 1)?;
        ctx.wait()?;
        let t = Instant::now();
        for _ in 0..3 {
            ctx.matmul(&w, &x, &y, 1)?;
        }
        ctx.wait()?;
        println!("{} {k}x{rows}: {:.2?}", ty.name(), t.elapsed() / 3);
    }
    Ok(())
}
