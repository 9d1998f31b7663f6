//! The key/value cache: every layer's keys and values for every position of the context,
//! allocated once when the model is loaded.

/// Keys and values per layer, f32, position-major.
#[derive(Debug)]
pub struct KvCache {
    /// Positions the cache holds (the context size).
    pub n_ctx: usize,
    /// Floats per position of one layer's keys: `n_head_kv * head_dim_k`.
    pub k_width: usize,
    /// Floats per position of one layer's values: `n_head_kv * head_dim_v`.
    pub v_width: usize,
    /// `[n_layer][n_ctx][k_width]`.
    k: Vec<Vec<f32>>,
    /// `[n_layer][n_ctx][v_width]`.
    v: Vec<Vec<f32>>,
}

impl KvCache {
    pub fn new(n_layer: usize, n_ctx: usize, k_width: usize, v_width: usize) -> Self {
        KvCache {
            n_ctx,
            k_width,
            v_width,
            k: (0..n_layer).map(|_| vec![0.0; n_ctx * k_width]).collect(),
            v: (0..n_layer).map(|_| vec![0.0; n_ctx * v_width]).collect(),
        }
    }

    /// Store `n` consecutive positions starting at `pos`: `k` is `[n][k_width]`, `v` `[n][v_width]`.
    pub fn store(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        let (kw, vw) = (self.k_width, self.v_width);
        let n = k.len() / kw;
        self.k[layer][pos * kw..(pos + n) * kw].copy_from_slice(k);
        self.v[layer][pos * vw..(pos + n) * vw].copy_from_slice(v);
    }

    /// A layer's keys `[n_ctx][k_width]` and values `[n_ctx][v_width]`.
    pub fn layer(&self, layer: usize) -> (&[f32], &[f32]) {
        (&self.k[layer], &self.v[layer])
    }

    /// Bytes held.
    pub fn size_bytes(&self) -> usize {
        self.k.len() * self.n_ctx * (self.k_width + self.v_width) * 4
    }
}
