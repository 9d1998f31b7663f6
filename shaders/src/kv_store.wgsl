// Stores the batch's keys and values into the caches at their positions:
//   kc[pos0 + t][i] = k[t][i], vc[pos0 + t][i] = v[t][i] (i < n, the kv heads' values per token),
// rounded to f16 when p.round = 1 (llama.cpp keeps its cache in f16). One thread per value.

struct Params {
    n: u32,     // values per token
    round: u32, // 1: round to f16
    _pad0: u32,
    _pad1: u32,
}

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> kc: array<f32>;
@group(0) @binding(4) var<storage, read_write> vc: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= batch.n_tok * p.n) {
        return;
    }
    let o = batch.pos0 * p.n + i;
    if (p.round == 1u) {
        kc[o] = f16_round(k[i]);
        vc[o] = f16_round(v[i]);
    } else {
        kc[o] = k[i];
        vc[o] = v[i];
    }
}
