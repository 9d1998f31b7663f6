// Residual add in place: a[i] += b[i] over n_tok * n values. mode 1: a[i] += b[i % n] (a bias
// row added to every token's). mode 2: a is q, k and v (views of one buffer, [n_tok][seg1],
// [n_tok][seg2 - seg1], [n_tok][n - seg2] from elements 0, base1 and base2) and b their
// biases one after another (qwen2): row r of token t gets b[r], as product_params.wgsl's
// out_index places it.

struct Params {
    n: u32,   // values per token
    mode: u32,
    seg1: u32,
    seg2: u32,
    base1: u32,
    base2: u32,
    _pad0: u32,
    _pad1: u32,
}

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= batch.n_tok * p.n) {
        return;
    }
    if (p.mode == 2u) {
        let t = i / p.n;
        let r = i % p.n;
        var o = p.base2 + t * (p.n - p.seg2) + (r - p.seg2);
        if (r < p.seg1) {
            o = t * p.seg1 + r;
        } else if (r < p.seg2) {
            o = p.base1 + t * (p.seg2 - p.seg1) + (r - p.seg1);
        }
        a[o] += b[r];
        return;
    }
    a[i] += b[select(i, i % p.n, p.mode == 1u)];
}
