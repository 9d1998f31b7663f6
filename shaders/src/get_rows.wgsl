// Embedding lookup: out[t][:] = scale * W[ids[t]][:], dequantizing the row from its GGUF blocks.
// One workgroup per token (x = token); a token whose id is outside this chunk's rows is skipped
// (large tables are split into chunks that each fit one storage binding).

struct Params {
    k: u32,          // row length (multiple of 8)
    row_bytes: u32,
    row0: u32,       // first row of this chunk
    n_rows: u32,     // rows in this chunk
    scale: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> wq: array<u32>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;          // [n_tok]
@group(0) @binding(3) var<storage, read_write> out: array<vec4<f32>>; // [n_tok][k]

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let t = wid.x;
    let id = ids[t];
    if (id < p.row0 || id >= p.row0 + p.n_rows) {
        return;
    }
    let rb = (id - p.row0) * p.row_bytes;
    let k4 = p.k / 4u;
    for (var g = li; g < p.k / 8u; g += WG) {
        let w = load8(rb, g);
        out[t * k4 + 2u * g] = w.a * p.scale;
        out[t * k4 + 2u * g + 1u] = w.b * p.scale;
    }
}
