// Rotary position embedding, in place, on x[n_tok][n_heads][head_dim] (llama.cpp ggml_rope_ext).
// Token t sits at position tok_pos(t) (step.wgsl). Pair i (0 <= i < n_rot / 2) rotates by
//   theta = pos * freq_scale * base^(-2i / n_rot)
// normal layout (llama): the pair is (2i, 2i + 1); neox layout (gemma, qwen): (i, i + n_rot / 2).
// With per-pair frequency factors (llama 3's rope_freqs.weight) theta is divided by factors[i].
// Dimensions >= n_rot pass through. One thread per pair; threads fold over (x, y).

struct Params {
    n_heads: u32,
    head_dim: u32,
    n_rot: u32,
    neox: u32,
    base: f32,
    freq_scale: f32,
    has_factors: u32,
    _pad1: u32,
}

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> factors: array<f32>; // [n_rot / 2]

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let hh = p.n_rot / 2u;
    let idx = gid.x + gid.y * nwg.x * WG;
    let per_tok = p.n_heads * hh;
    if (idx >= batch.n_tok * per_tok) {
        return;
    }
    let t = idx / per_tok;
    let r = idx % per_tok;
    let h = r / hh;
    let i = r % hh;
    let cs = rope_cs(tok_pos(t), i);
    let at = rope_pair((t * p.n_heads + h) * p.head_dim, i);
    let v = rotate(vec2<f32>(x[at.x], x[at.y]), cs);
    x[at.x] = v.x;
    x[at.y] = v.y;
}
