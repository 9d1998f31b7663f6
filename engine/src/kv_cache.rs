//! The key/value cache: every layer's keys and values for every position of the context,
//! allocated once when the model is loaded. A cache may hold several independent sequences
//! (slots) of `n_ctx` positions each, for a server decoding many requests in one batch.

/// Keys and values per layer, f32, position-major; slot `s` owns positions
/// `s * n_ctx .. (s + 1) * n_ctx` of every layer.
#[derive(Debug)]
pub struct KvCache {
    /// Positions one sequence holds (the context size).
    pub n_ctx: usize,
    /// Independent sequences held.
    pub n_slots: usize,
    /// Floats per position of one layer's keys: `n_head_kv * head_dim_k`.
    pub k_width: usize,
    /// Floats per position of one layer's values: `n_head_kv * head_dim_v`.
    pub v_width: usize,
    /// `[n_layer][n_slots * n_ctx][k_width]`.
    k: Vec<Vec<f32>>,
    /// `[n_layer][n_slots * n_ctx][v_width]`.
    v: Vec<Vec<f32>>,
}

impl KvCache {
    pub fn new(n_layer: usize, n_ctx: usize, k_width: usize, v_width: usize) -> Self {
        Self::with_slots(n_layer, n_ctx, 1, k_width, v_width)
    }

    /// A cache of `n_slots` sequences of `n_ctx` positions each.
    pub fn with_slots(n_layer: usize, n_ctx: usize, n_slots: usize, k_width: usize, v_width: usize) -> Self {
        let n_slots = n_slots.max(1);
        KvCache {
            n_ctx,
            n_slots,
            k_width,
            v_width,
            k: (0..n_layer).map(|_| vec![0.0; n_slots * n_ctx * k_width]).collect(),
            v: (0..n_layer).map(|_| vec![0.0; n_slots * n_ctx * v_width]).collect(),
        }
    }

    /// Store `n` consecutive positions starting at `pos` of slot 0: `k` is `[n][k_width]`, `v` `[n][v_width]`.
    pub fn store(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        self.store_slot(layer, 0, pos, k, v)
    }

    /// Store `n` consecutive positions starting at `pos` of `slot`.
    pub fn store_slot(&mut self, layer: usize, slot: usize, pos: usize, k: &[f32], v: &[f32]) {
        let (kw, vw) = (self.k_width, self.v_width);
        let n = k.len() / kw;
        let p = slot * self.n_ctx + pos;
        self.k[layer][p * kw..(p + n) * kw].copy_from_slice(k);
        self.v[layer][p * vw..(p + n) * vw].copy_from_slice(v);
    }

    /// A layer's keys `[n_slots * n_ctx][k_width]` and values `[n_slots * n_ctx][v_width]`
    /// (slot 0 first).
    pub fn layer(&self, layer: usize) -> (&[f32], &[f32]) {
        (&self.k[layer], &self.v[layer])
    }

    /// Copy positions `0..n` of slot `from` into slot `to` in every layer (a shared prefix).
    pub fn copy_prefix(&mut self, from: usize, to: usize, n: usize) {
        if from == to || n == 0 {
            return;
        }
        let (c, kw, vw) = (self.n_ctx, self.k_width, self.v_width);
        let n = n.min(c);
        for k in &mut self.k {
            k.copy_within(from * c * kw..(from * c + n) * kw, to * c * kw);
        }
        for v in &mut self.v {
            v.copy_within(from * c * vw..(from * c + n) * vw, to * c * vw);
        }
    }

    /// Bytes held.
    pub fn size_bytes(&self) -> usize {
        self.k.len() * self.n_slots * self.n_ctx * (self.k_width + self.v_width) * 4
    }
}
