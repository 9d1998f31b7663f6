// Causal multi-head attention with grouped-query heads and an optional sliding window,
// for decode (n_tok = 1) and prefill alike, reading the KV cache in place.
//
//   q:   [n_tok][n_head][head_dim]      (already roped)
//   kc:  [n_slots * n_ctx][n_kv_head * head_dim]  keys; a sequence's from row tok_row0(t)
//   vc:  [n_slots * n_ctx][n_kv_head * head_dim]
//   out: [n_tok][n_head][head_dim]
//
// Query t (position pos = tok_pos(t), step.wgsl) of head h reads kv head h / (n_head /
// n_kv_head) and the keys j of its sequence with j <= pos and, when window > 0, pos - j <
// window (llama.cpp's causal + SWA mask).
// One workgroup per (head, token) runs an online softmax (as flash attention) over tiles of
// WG / KS keys: KS neighbouring threads score a key (16-byte loads, four partial sums each,
// added by `key_sum`), the tile's max and sum come from wg_reduce_*.wgsl's trees, and for the
// values each thread takes four dimensions and every KP-th key of the tile (KP = WG /
// (head_dim / 4) key parts), the parts added at the end.
// head_dim is a multiple of 4 (checked by the host).

struct Params {
    n_head: u32,
    n_kv_head: u32,
    head_dim: u32,
    window: u32,   // 0 = no sliding window
    scale: f32,    // applied to q.k
    softcap: f32,  // 0 = none; else scores = softcap * tanh(scores / softcap)
    // quant = 1: the output goes out rounded as quantize_act.wgsl rounds it (mode 0: Q8_0
    // blocks of 32, mode 1: blocks of 256; inside a head, quant_core.wgsl), with its quants
    // into outq when packed = 1: the input of the output projection made in this dispatch.
    quant: u32,
    block: u32,
    mode: u32,
    packed: u32,
    d_off: u32,
    s_off: u32,
    bias: u32,     // 1: attention_rope.wgsl adds q, k and v's biases first (in q_norm)
    _pad1: u32,
    // Decode steps (attention_rope.wgsl): rope as rope_kv.wgsl's, caches f16-rounded with round = 1.
    n_rot: u32,
    neox: u32,
    base: f32,
    freq_scale: f32,
    has_factors: u32,
    round: u32,
    qk_norm: u32,  // 1: attention_rope.wgsl norms each head of q and k first (weights q_norm, k_norm)
    eps: f32,
}

override WG: u32 = 64u;
// Measurement only (FERRO_GPU_ATTN_ABLATE, results wrong): bits leave out phases to time them:
// 1 the rope prologue's work, 2 the key loads, 4 the value sums, 8 the rounded output, 16 the
// trees.
override ABLATE: u32 = 0u;
// Threads that score a key together (a power of two up to the subgroup size; 1 without
// subgroups: `key_sum`, prepended by the host, adds their parts).
override KS: u32 = 1u;
const MAX_HEAD_DIM: u32 = 512u;
const GROUPS_PER_THREAD: u32 = 2u; // head_dim / 4 <= WG * GROUPS_PER_THREAD (checked by the host)

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> kc: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> vc: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read_write> outq: array<u32>;

var<workgroup> qs: array<vec4<f32>, MAX_HEAD_DIM / 4u>;
var<workgroup> ps: array<f32, WG>;
var<workgroup> part: array<vec4<f32>, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let h = wid.x;
    let t = wid.y;
    if (t >= batch.n_tok) {
        return;
    }
    let g4 = p.head_dim / 4u;
    let kvh = h / (p.n_head / p.n_kv_head);
    let kv_stride = p.n_kv_head * g4;
    let kv_off = kvh * g4;
    let q_off = (t * p.n_head + h) * g4;
//Q_LOAD_BEGIN
    for (var d = li; d < g4; d += WG) {
        let o = 4u * (q_off + d);
        qs[d] = vec4<f32>(q[o], q[o + 1u], q[o + 2u], q[o + 3u]) * p.scale;
    }
//Q_LOAD_END
    workgroupBarrier();

    let pos = tok_pos(t);
    let row0 = tok_row0(t);
    let end = pos + 1u;
    var start = 0u;
    if (p.window > 0u && end > p.window) {
        start = end - p.window;
    }

    // Values: this thread's dimension groups and key part.
    let kp_count = max(1u, WG / g4);
    let kp = li / g4;
    let g0 = li % g4;
    let v_live = kp < kp_count;

    var m = -1.0e30;
    var l = 0.0;
    // The value sums of dimension groups g0 and g0 + WG (named: an indexed array would live in
    // memory).
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);

    let tk = WG / KS; // keys per tile: KS threads score a key together
    for (var base = start; base < end; base += tk) {
        let j = base + li / KS;
        let kpart = li % KS;
        var s = -1.0e30;
        var dot = 0.0;
        if (j < end) {
            let ko = (row0 + j) * kv_stride + kv_off;
            // Eight loads in flight per trip (named sums; each trip waits for its loads); this
            // thread's dimension groups kpart, kpart + KS, ...
            var d0 = vec4<f32>(0.0);
            var d1 = vec4<f32>(0.0);
            var d2 = vec4<f32>(0.0);
            var d3 = vec4<f32>(0.0);
            var d = kpart;
            if ((ABLATE & 2u) != 0u) {
                d = g4;
                d0 = qs[li % g4] * f32(j);
            }
            for (; d + 7u * KS < g4; d += 8u * KS) {
                d0 += qs[d] * kc[ko + d] + qs[d + 4u * KS] * kc[ko + d + 4u * KS];
                d1 += qs[d + KS] * kc[ko + d + KS] + qs[d + 5u * KS] * kc[ko + d + 5u * KS];
                d2 += qs[d + 2u * KS] * kc[ko + d + 2u * KS] + qs[d + 6u * KS] * kc[ko + d + 6u * KS];
                d3 += qs[d + 3u * KS] * kc[ko + d + 3u * KS] + qs[d + 7u * KS] * kc[ko + d + 7u * KS];
            }
            for (; d < g4; d += KS) {
                d0 += qs[d] * kc[ko + d];
            }
            let sv = (d0 + d1) + (d2 + d3);
            dot = (sv.x + sv.y) + (sv.z + sv.w);
        }
        // The key's KS parts added (every thread takes part: shuffles).
        dot = key_sum(dot);
        if (j < end) {
            s = dot;
            if (p.softcap > 0.0) {
                s = p.softcap * tanh(s / p.softcap);
            }
        }
        var m_new = max(m, s);
        if ((ABLATE & 16u) == 0u) {
            m_new = max(m, tree_max(s, li));
        }
        // One thread of each key weighs it (ps is read after the tree's barriers).
        var pj = 0.0;
        if (j < end && kpart == 0u) {
            pj = exp(s - m_new);
        }
        if (kpart == 0u) {
            ps[li / KS] = pj;
        }
        var tile_sum = pj;
        if ((ABLATE & 16u) == 0u) {
            tile_sum = tree_sum(pj, li);
        }
        let corr = exp(m - m_new);
        l = l * corr + tile_sum;
        m = m_new;
        let n_here = min(tk, end - base);
        if (v_live && (ABLATE & 4u) == 0u) {
            acc0 = value_sum(acc0 * corr, g0, row0 + base, kv_stride, kv_off, kp, kp_count, n_here, g4);
            acc1 = value_sum(acc1 * corr, g0 + WG, row0 + base, kv_stride, kv_off, kp, kp_count, n_here, g4);
        }
        workgroupBarrier();
    }

    // Add the key parts (thread kp = 0 of each group keeps the sum) and normalise. Rounded
    // output: thread li < g4 holds dimensions 4li.. of the head, so a block's eight threads
    // are neighbours (the host asks for it only where head_dim is a multiple of 32 and g4 <= WG).
    let inv = 1.0 / l;
    let r0 = finish(acc0, li, g0, kp, kp_count, g4, inv);
    if (p.quant == 1u && (ABLATE & 8u) == 0u) {
        quantize4(li, 4u * (q_off + g0), r0, kp == 0u && g0 < g4);
        return;
    }
    store4(r0, q_off + g0, kp == 0u && g0 < g4);
    let r1 = finish(acc1, li, g0 + WG, kp, kp_count, g4, inv);
    store4(r1, q_off + g0 + WG, kp == 0u && g0 + WG < g4);
}

fn store4(v: vec4<f32>, o: u32, live: bool) {
    if (live) {
        out[4u * o] = v.x;
        out[4u * o + 1u] = v.y;
        out[4u * o + 2u] = v.z;
        out[4u * o + 3u] = v.w;
    }
}

// `a` plus the tile's keys kp, kp + KP, ... (of n_here, from cache row `base`) weighted by ps,
// dimension group g.
fn value_sum(a: vec4<f32>, g: u32, base: u32, kv_stride: u32, kv_off: u32, kp: u32, kp_count: u32, n_here: u32, g4: u32) -> vec4<f32> {
    if (g >= g4) {
        return a;
    }
    let vo = base * kv_stride + kv_off + g;
    // Eight keys' loads in flight per trip (each trip waits for its loads).
    var a0 = a;
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    let kc1 = kp_count;
    var jj = kp;
    for (; jj + 7u * kc1 < n_here; jj += 8u * kc1) {
        a0 += ps[jj] * vc[vo + jj * kv_stride] + ps[jj + 4u * kc1] * vc[vo + (jj + 4u * kc1) * kv_stride];
        a1 += ps[jj + kc1] * vc[vo + (jj + kc1) * kv_stride] + ps[jj + 5u * kc1] * vc[vo + (jj + 5u * kc1) * kv_stride];
        a2 += ps[jj + 2u * kc1] * vc[vo + (jj + 2u * kc1) * kv_stride] + ps[jj + 6u * kc1] * vc[vo + (jj + 6u * kc1) * kv_stride];
        a3 += ps[jj + 3u * kc1] * vc[vo + (jj + 3u * kc1) * kv_stride] + ps[jj + 7u * kc1] * vc[vo + (jj + 7u * kc1) * kv_stride];
    }
    for (; jj < n_here; jj += kc1) {
        a0 += ps[jj] * vc[vo + jj * kv_stride];
    }
    return (a0 + a1) + (a2 + a3);
}

// The key parts of dimension group g added (thread kp = 0 keeps the sum) and normalised; 0 for
// the other threads.
fn finish(a: vec4<f32>, li: u32, g: u32, kp: u32, kp_count: u32, g4: u32, inv: f32) -> vec4<f32> {
    part[li] = a;
    workgroupBarrier();
    var r = vec4<f32>(0.0);
    if (kp == 0u && g < g4) {
        var sum = part[li];
        for (var k = 1u; k < kp_count; k++) {
            sum += part[li + k * g4];
        }
        r = sum * inv;
    }
    workgroupBarrier();
    return r;
}
