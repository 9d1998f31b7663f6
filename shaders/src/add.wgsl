// Residual add in place: a[i] += b[i] over n_tok * n values; with bcast = 1, a[i] += b[i % n]
// (a bias row added to every token's).

struct Params {
    n: u32,   // values per token
    bcast: u32,
    _pad1: u32,
    _pad2: u32,
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
    a[i] += b[select(i, i % p.n, p.bcast == 1u)];
}
