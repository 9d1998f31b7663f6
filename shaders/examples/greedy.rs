//! Greedy decoding of token ids on the GPU, with timings:
//! `cargo run -p ferro-shaders --example greedy -- MODEL.gguf N_NEW TOKEN...`

use std::sync::Arc;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        return Err("usage: greedy MODEL.gguf N_NEW TOKEN...".into());
    }
    let g = ferro_gguf::Gguf::open(&args[1])?;
    let n_new: usize = args[2].parse()?;
    let prompt: Vec<u32> = args[3..].iter().map(|s| s.parse()).collect::<Result<_, _>>()?;
    let ctx = Arc::new(ferro_shaders::GpuContext::new()?);
    println!("adapter: {}", ctx.adapter());
    let t = Instant::now();
    let mut model = ferro_shaders::GpuModel::from_gguf(ctx, &g, 256)?;
    println!("load: {:.2?}", t.elapsed());
    let t = Instant::now();
    let mut logits = model.forward(&prompt, 0)?;
    println!("prefill {} tokens: {:.2?}", prompt.len(), t.elapsed());
    let t = Instant::now();
    let mut out = Vec::new();
    for i in 0..n_new {
        let (best, _) = logits
            .iter()
            .enumerate()
            .fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b });
        let mut sorted = logits.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        out.push(best as u32);
        println!("token {best} margin {:.3}", sorted[0] - sorted[1]);
        logits = model.forward(&[best as u32], prompt.len() + i)?;
    }
    let dt = t.elapsed();
    println!("{:?}\ndecode: {:.2?} per token", out, dt / n_new.max(1) as u32);
    Ok(())
}
