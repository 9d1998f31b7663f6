// Gated linear units, in place on the gate: g[i] = act(g[i]) * u[i] over n_tok * n values, act
// from glu_common.wgsl (silu for swiglu, gelu for geglu).

struct Params {
    n: u32,   // values per token
    f16_table: u32,
    _pad1: u32,
    _pad2: u32,
}

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> g: array<f32>;
// Only read; read_write because it may be a view of g's buffer (see rope_kv.wgsl).
@group(0) @binding(2) var<storage, read_write> u: array<f32>;

fn flat_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}

@compute @workgroup_size(WG)
fn swiglu(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= batch.n_tok * p.n) {
        return;
    }
    g[i] = silu(g[i]) * u[i];
}

@compute @workgroup_size(WG)
fn geglu(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= batch.n_tok * p.n) {
        return;
    }
    g[i] = gelu(g[i], p.f16_table != 0u) * u[i];
}
