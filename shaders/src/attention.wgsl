// Causal multi-head attention with grouped-query heads and an optional sliding window,
// for decode (n_tok = 1) and prefill alike, reading the KV cache in place.
//
//   q:   [n_tok][n_head][head_dim]      (already roped)
//   kc:  [n_ctx][n_kv_head * head_dim]  keys of positions 0..pos0 + n_tok
//   vc:  [n_ctx][n_kv_head * head_dim]
//   out: [n_tok][n_head][head_dim]
//
// Query t (position pos = pos0 + t) of head h reads kv head h / (n_head / n_kv_head) and the
// keys j with j <= pos and, when window > 0, pos - j < window (llama.cpp's causal + SWA mask).
// One workgroup per (head, token) runs an online softmax (as flash attention) over tiles of WG
// keys: each thread scores one key, the tile's max and sum come from shared-memory reductions,
// and each thread accumulates head_dim / WG output dimensions.

struct Params {
    n_head: u32,
    n_kv_head: u32,
    head_dim: u32,
    window: u32,   // 0 = no sliding window
    scale: f32,    // applied to q.k
    softcap: f32,  // 0 = none; else scores = softcap * tanh(scores / softcap)
    _pad0: u32,
    _pad1: u32,
}

override WG: u32 = 64u;
const MAX_HEAD_DIM: u32 = 512u;
const DIMS_PER_THREAD: u32 = 8u; // head_dim <= WG * DIMS_PER_THREAD (checked by the host)

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> kc: array<f32>;
@group(0) @binding(3) var<storage, read> vc: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

var<workgroup> qs: array<f32, MAX_HEAD_DIM>;
var<workgroup> ps: array<f32, WG>;
var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let h = wid.x;
    let t = wid.y;
    if (t >= batch.n_tok) {
        return;
    }
    let hd = p.head_dim;
    let kvh = h / (p.n_head / p.n_kv_head);
    let kv_stride = p.n_kv_head * hd;
    let kv_off = kvh * hd;
    let q_off = (t * p.n_head + h) * hd;
    for (var d = li; d < hd; d += WG) {
        qs[d] = q[q_off + d] * p.scale;
    }
    workgroupBarrier();

    let pos = batch.pos0 + t;
    let end = pos + 1u;
    var start = 0u;
    if (p.window > 0u && end > p.window) {
        start = end - p.window;
    }

    var m = -1.0e30;
    var l = 0.0;
    var acc: array<f32, DIMS_PER_THREAD>;
    for (var i = 0u; i < DIMS_PER_THREAD; i++) {
        acc[i] = 0.0;
    }

    for (var base = start; base < end; base += WG) {
        let j = base + li;
        var s = -1.0e30;
        if (j < end) {
            let ko = j * kv_stride + kv_off;
            // Four partial sums: four loads in flight per trip instead of one.
            var d0 = 0.0;
            var d1 = 0.0;
            var d2 = 0.0;
            var d3 = 0.0;
            var d = 0u;
            for (; d + 3u < hd; d += 4u) {
                d0 += qs[d] * kc[ko + d];
                d1 += qs[d + 1u] * kc[ko + d + 1u];
                d2 += qs[d + 2u] * kc[ko + d + 2u];
                d3 += qs[d + 3u] * kc[ko + d + 3u];
            }
            for (; d < hd; d++) {
                d0 += qs[d] * kc[ko + d];
            }
            s = (d0 + d1) + (d2 + d3);
            if (p.softcap > 0.0) {
                s = p.softcap * tanh(s / p.softcap);
            }
        }
        red[li] = s;
        workgroupBarrier();
        for (var k = WG / 2u; k > 0u; k >>= 1u) {
            if (li < k) {
                red[li] = max(red[li], red[li + k]);
            }
            workgroupBarrier();
        }
        let m_new = max(m, red[0]);
        workgroupBarrier();
        var pj = 0.0;
        if (j < end) {
            pj = exp(s - m_new);
        }
        ps[li] = pj;
        red[li] = pj;
        workgroupBarrier();
        for (var k = WG / 2u; k > 0u; k >>= 1u) {
            if (li < k) {
                red[li] += red[li + k];
            }
            workgroupBarrier();
        }
        let corr = exp(m - m_new);
        l = l * corr + red[0];
        m = m_new;
        let n_here = min(WG, end - base);
        for (var i = 0u; i < DIMS_PER_THREAD; i++) {
            let d = li + i * WG;
            if (d < hd) {
                let vo = base * kv_stride + kv_off + d;
                var a0 = acc[i] * corr;
                var a1 = 0.0;
                var a2 = 0.0;
                var a3 = 0.0;
                var jj = 0u;
                for (; jj + 3u < n_here; jj += 4u) {
                    a0 += ps[jj] * vc[vo + jj * kv_stride];
                    a1 += ps[jj + 1u] * vc[vo + (jj + 1u) * kv_stride];
                    a2 += ps[jj + 2u] * vc[vo + (jj + 2u) * kv_stride];
                    a3 += ps[jj + 3u] * vc[vo + (jj + 3u) * kv_stride];
                }
                for (; jj < n_here; jj++) {
                    a0 += ps[jj] * vc[vo + jj * kv_stride];
                }
                acc[i] = (a0 + a1) + (a2 + a3);
            }
        }
        workgroupBarrier();
    }

    let inv = 1.0 / l;
    for (var i = 0u; i < DIMS_PER_THREAD; i++) {
        let d = li + i * WG;
        if (d < hd) {
            out[q_off + d] = acc[i] * inv;
        }
    }
}
