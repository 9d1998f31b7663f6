// Residual add in place: a[i] += b[i] over n_tok * y_stride values. mode 1: a[i] +=
// b[b_off + i % y_stride] (a bias row added to every token's). mode 2: a is q, k and v (views
// of one buffer) and b their biases one after another (qwen2): row r of token t gets b[r] where
// out_index.wgsl (appended) places a stacked product's output row.

struct Params {
    y_stride: u32, // values per token
    mode: u32,
    seg1: u32,
    seg2: u32,
    base1: u32,
    base2: u32,
    b_off: u32, // mode 1: where the bias row starts in b
    _pad: u32,
}

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= batch.n_tok * p.y_stride) {
        return;
    }
    let r = i % p.y_stride;
    if (p.mode == 2u) {
        a[out_index(i / p.y_stride, r)] += b[r];
        return;
    }
    a[i] += b[select(i, p.b_off + r, p.mode == 1u)];
}
