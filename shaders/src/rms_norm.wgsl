// RMS normalisation of rows: n = x / sqrt(mean(x^2) + eps) * w  (llama.cpp ggml_rms_norm + mul).
// One workgroup per row; rows = dispatch x (+ y * num_workgroups.x). A row of length `n` may be a
// whole hidden vector or one attention head (Gemma 3's per-head q/k norms).
//   main:         y[row] = n
//   main_inplace: x[row] = n
//   main_add:     y[row] += n   (post-norms whose output goes straight into the residual)
//   main_add_to:  y[row] = r[row] + n   (the same sum from a residual in another buffer: a
//                 decode step's post-norms folded into the next products, model.rs)

struct Params {
    n: u32,          // row length
    rows_per_tok: u32,
    eps: f32,
    _pad0: u32,
}

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> r: array<f32>;


fn row_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let row = row_index(wid, nwg);
    if (row >= batch.n_tok * p.rows_per_tok) {
        return;
    }
    let base = row * p.n;
    let sc = row_scale(base, p.n, li);
    for (var i = li; i < p.n; i += WG) {
        y[base + i] = x[base + i] * sc * w[i];
    }
}

@compute @workgroup_size(WG)
fn main_inplace(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let row = row_index(wid, nwg);
    if (row >= batch.n_tok * p.rows_per_tok) {
        return;
    }
    let base = row * p.n;
    let sc = row_scale(base, p.n, li);
    workgroupBarrier();
    for (var i = li; i < p.n; i += WG) {
        x[base + i] = x[base + i] * sc * w[i];
    }
}

@compute @workgroup_size(WG)
fn main_add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let row = row_index(wid, nwg);
    if (row >= batch.n_tok * p.rows_per_tok) {
        return;
    }
    let base = row * p.n;
    let sc = row_scale(base, p.n, li);
    for (var i = li; i < p.n; i += WG) {
        y[base + i] += x[base + i] * sc * w[i];
    }
}

@compute @workgroup_size(WG)
fn main_add_to(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let row = row_index(wid, nwg);
    if (row >= batch.n_tok * p.rows_per_tok) {
        return;
    }
    let base = row * p.n;
    let sc = row_scale(base, p.n, li);
    for (var i = li; i < p.n; i += WG) {
        y[base + i] = r[base + i] + x[base + i] * sc * w[i];
    }
}
