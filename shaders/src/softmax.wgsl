// Softmax of rows in place: x[r] = exp(x[r] - max) / sum. One workgroup per row (x + y * nwg.x).

struct Params {
    n: u32,      // row length
    n_rows: u32,
    _pad0: u32,
    _pad1: u32,
}

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;

var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.n_rows) {
        return;
    }
    let base = row * p.n;
    var m = -3.0e38;
    for (var i = li; i < p.n; i += WG) {
        m = max(m, x[base + i]);
    }
    red[li] = m;
    workgroupBarrier();
    for (var k = WG / 2u; k > 0u; k >>= 1u) {
        if (li < k) {
            red[li] = max(red[li], red[li + k]);
        }
        workgroupBarrier();
    }
    let mx = red[0];
    workgroupBarrier();
    var s = 0.0;
    for (var i = li; i < p.n; i += WG) {
        let e = exp(x[base + i] - mx);
        x[base + i] = e;
        s += e;
    }
    red[li] = s;
    workgroupBarrier();
    for (var k = WG / 2u; k > 0u; k >>= 1u) {
        if (li < k) {
            red[li] += red[li + k];
        }
        workgroupBarrier();
    }
    let inv = 1.0 / red[0];
    for (var i = li; i < p.n; i += WG) {
        x[base + i] *= inv;
    }
}
