// One dispatch between the q/k/v products and attention: rotary embedding of q in place (as
// rope.wgsl), and the batch's keys (rotated) and values stored into the caches at their
// tokens' positions (f16-rounded with p.round, as llama.cpp's f16 cache), in the rows of each
// token's sequence (step.wgsl):
//   kc[tok_row0(t) + tok_pos(t)][..] = rope(k[t]), vc[same][..] = v[t].
// One thread per pair of values: per token n_head * n_rot / 2 pairs of q, then
// n_kv_head * head_dim / 2 pairs of k (rotated below n_rot, copied above), then as many of v.

struct Params {
    n_heads: u32,
    head_dim: u32,
    n_rot: u32,
    neox: u32,
    base: f32,
    freq_scale: f32,
    has_factors: u32,
    _pad0: u32,
    n_kv_heads: u32,
    round: u32,
    _pad1: u32,
    _pad2: u32,
}

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> q: array<f32>;
@group(0) @binding(2) var<storage, read> factors: array<f32>; // [n_rot / 2]
// k and v are only read; read_write because they may be views of q's buffer (one product fills
// q, k and v), and wgpu takes a buffer bound read-write in a dispatch for no other use.
@group(0) @binding(3) var<storage, read_write> k: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;
@group(0) @binding(5) var<storage, read_write> kc: array<f32>;
@group(0) @binding(6) var<storage, read_write> vc: array<f32>;

fn cache_value(x: f32) -> f32 {
    return select(x, f16_round(x), p.round == 1u);
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let hh = p.n_rot / 2u;
    let q_pairs = p.n_heads * hh;
    let kv_pairs = p.n_kv_heads * p.head_dim / 2u;
    let per_tok = q_pairs + 2u * kv_pairs;
    let idx = gid.x + gid.y * nwg.x * WG;
    if (idx >= batch.n_tok * per_tok) {
        return;
    }
    let t = idx / per_tok;
    let r = idx % per_tok;
    let pos = tok_pos(t);
    if (r < q_pairs) {
        let at = rope_pair((t * p.n_heads + r / hh) * p.head_dim, r % hh);
        let x = rotate(vec2<f32>(q[at.x], q[at.y]), rope_cs(pos, r % hh));
        q[at.x] = x.x;
        q[at.y] = x.y;
        return;
    }
    let kv = p.n_kv_heads * p.head_dim;
    let c0 = (tok_row0(t) + pos) * kv;
    if (r < q_pairs + kv_pairs) {
        let j = r - q_pairs;
        let h = j / (p.head_dim / 2u);
        let i = j % (p.head_dim / 2u);
        let base = t * kv + h * p.head_dim;
        if (i < hh) {
            let at = rope_pair(base, i);
            let x = rotate(vec2<f32>(k[at.x], k[at.y]), rope_cs(pos, i));
            kc[c0 + at.x - t * kv] = cache_value(x.x);
            kc[c0 + at.y - t * kv] = cache_value(x.y);
        } else {
            // Dimensions past n_rot pass through.
            let d = base + p.n_rot + 2u * (i - hh);
            kc[c0 + d - t * kv] = cache_value(k[d]);
            kc[c0 + d + 1u - t * kv] = cache_value(k[d + 1u]);
        }
        return;
    }
    let j = 2u * (r - q_pairs - kv_pairs);
    let src = t * kv + j;
    vc[c0 + j] = cache_value(v[src]);
    vc[c0 + j + 1u] = cache_value(v[src + 1u]);
}
