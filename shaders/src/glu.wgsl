// Gated linear units, in place on the gate: g[i] = act(g[i]) * u[i] over n_tok * n values.
//   swiglu: act = silu(x) = x / (1 + exp(-x))                       (llama)
//   geglu:  act = gelu(x), tanh approximation as ggml_gelu         (gemma)
// With `f16_table` set, gelu follows ggml's CPU GGML_GELU_FP16 table: the input rounded to f16,
// the result rounded to f16, 0 below -10 and x above 10.

struct Params {
    n: u32,   // values per token
    f16_table: u32,
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
    var v = g[i];
    if (p.f16_table != 0u) {
        if (v <= -10.0) {
            g[i] = 0.0;
            return;
        }
        if (v >= 10.0) {
            g[i] = v * u[i];
            return;
        }
        v = unpack2x16float(pack2x16float(vec2<f32>(v, 0.0))).x;
    }
    let inner = clamp(0.7978845608028654 * (v + 0.044715 * v * v * v), -15.0, 15.0);
    var r = 0.5 * v * (1.0 + tanh(inner));
    if (p.f16_table != 0u) {
        r = unpack2x16float(pack2x16float(vec2<f32>(r, 0.0))).x;
    }
    g[i] = r * u[i];
}
