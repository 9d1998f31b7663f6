// Gated linear units, in place on the gate: g[i] = act(g[i]) * u[i] over n_tok * n values.
//   swiglu: act = silu(x) = x / (1 + exp(-x))                       (llama)
//   geglu:  act = gelu(x), tanh approximation as ggml_gelu         (gemma)

struct Params {
    n: u32,   // values per token
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> g: array<f32>;
@group(0) @binding(2) var<storage, read> u: array<f32>;

fn flat_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}

@compute @workgroup_size(WG)
fn swiglu(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= batch.n_tok * p.n) {
        return;
    }
    let v = g[i];
    g[i] = v / (1.0 + exp(-v)) * u[i];
}

@compute @workgroup_size(WG)
fn geglu(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= batch.n_tok * p.n) {
        return;
    }
    let v = g[i];
    let inner = clamp(0.7978845608028654 * (v + 0.044715 * v * v * v), -15.0, 15.0);
    g[i] = 0.5 * v * (1.0 + tanh(inner)) * u[i];
}
