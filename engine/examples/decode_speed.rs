//! Prefill and greedy-decode speed of a model: `decode_speed MODEL [N_GEN] [THREADS]`.

use std::time::Instant;

use ferro_engine::generate::argmax;
use ferro_engine::{Logits, Model, ModelOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: decode_speed MODEL [N_GEN] [THREADS]")?;
    let n_gen: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(64);
    let threads: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(0);
    let mut m = Model::load(
        &path,
        &ModelOptions {
            n_ctx: 1024,
            threads,
            ..ModelOptions::default()
        },
    )?;
    let prompt: Vec<u32> = (0..128u32).map(|i| 100 + i * 7).collect();
    let t = Instant::now();
    let mut next = argmax(m.forward(&prompt, 0, Logits::Last)?);
    let pp = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for i in 0..n_gen {
        next = argmax(m.forward(&[next], prompt.len() + i, Logits::Last)?);
    }
    let tg = t.elapsed().as_secs_f64();
    println!(
        "{path}: prefill {} tokens {:.1} tok/s, decode {n_gen} tokens {:.1} tok/s ({:.2} GB/s of weights), kernels {}",
        prompt.len(),
        prompt.len() as f64 / pp,
        n_gen as f64 / tg,
        m.weight_bytes() as f64 * n_gen as f64 / tg / 1e9,
        ferro_kernels::kernel_path()
    );
    Ok(())
}
