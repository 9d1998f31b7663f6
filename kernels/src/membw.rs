//! Memory read bandwidth, the yardstick for the memory-bound matvec.

use std::time::Instant;

/// Streaming-read bandwidth in GB/s (10⁹ bytes/s) with `threads` threads over a buffer of
/// `bytes` bytes (use ≥ 1 GiB so caches do not flatter it), in huge pages where the system has
/// them. The buffer is written once, then
/// read in passes totalling at least 1 GiB; the best pass time is reported.
pub fn measure_read_bandwidth(threads: usize, bytes: usize) -> f64 {
    const GIB: usize = 1 << 30;
    let threads = threads.max(1);
    let words = (bytes / 8).max(threads * 1024);
    // In transparent huge pages where the system has them, as the engine's packed weights
    // are: with 4 KiB pages the stream would also pay a page walk every 4 KiB.
    let (mut mapped, mut owned);
    let buf: &mut [u64] = match crate::packed::huge_anon(words * 8) {
        Some((m, start)) => {
            mapped = m;
            bytemuck::cast_slice_mut(&mut mapped[start..start + words * 8])
        }
        None => {
            owned = vec![0u64; words];
            &mut owned
        }
    };
    for (i, w) in buf.iter_mut().enumerate() {
        *w = i as u64;
    }
    let buf = &*buf;
    let pool = match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
        Ok(p) => p,
        Err(_) => return 0.0,
    };
    let passes = GIB.div_ceil(words * 8).clamp(3, 64);
    let per = words.div_ceil(threads);
    let mut best = f64::INFINITY;
    let mut sink = 0u64;
    for _ in 0..passes {
        let t = Instant::now();
        let x = pool.install(|| {
            use rayon::prelude::*;
            buf.par_chunks(per)
                .map(|c| {
                    c.chunks_exact(8).fold([0u64; 8], |mut a, w| {
                        for k in 0..8 {
                            a[k] ^= w[k];
                        }
                        a
                    })
                })
                .reduce(
                    || [0u64; 8],
                    |mut a, b| {
                        for k in 0..8 {
                            a[k] ^= b[k];
                        }
                        a
                    },
                )
        });
        best = best.min(t.elapsed().as_secs_f64());
        sink ^= std::hint::black_box(x)[0];
    }
    std::hint::black_box(sink);
    (words * 8) as f64 / best / 1e9
}
