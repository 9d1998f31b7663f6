// Appended to attention.wgsl for decode steps (every token of the batch the next one of its own
// sequence), in place of its q load: rope_kv.wgsl's work for this token, so that dispatch goes
// (and with p.qk_norm the per-head rms norms of q and k before it, rms_norm.wgsl's dispatches;
// with p.bias the bias adds of q, k and v, add.wgsl's).
// The workgroup of (head h, token t) rotates its query head into `qs` (scaled), and rotates the
// key of its kv head and copies the value into the caches at the token's row (f16-rounded with
// p.round). Every query head of a group writes the same bits to that row, and each reads it
// back only after its own writes (storageBarrier): the keys before it were stored by earlier
// steps. Batches where a token attends to another token of the batch (prefill) keep rope_kv.

@group(0) @binding(6) var<storage, read> kin: array<f32>; // [n_tok][n_kv_head * head_dim]
@group(0) @binding(7) var<storage, read> vin: array<f32>;
@group(0) @binding(8) var<storage, read> factors: array<f32>; // [n_rot / 2]
// [head_dim] with p.qk_norm; with p.bias instead, the biases of q, k and v one after another
// ([n_head * head_dim], then [n_kv_head * head_dim] twice: qwen2's).
@group(0) @binding(9) var<storage, read> q_norm: array<f32>;
@group(0) @binding(10) var<storage, read> k_norm: array<f32>;

// With p.qk_norm, 1 / sqrt(mean(v^2) + eps) of the head at `base` of q (of_q) or of kin
// (rms_norm.wgsl's scale; this sum runs over this workgroup's threads), else 1.
fn head_scale(base: u32, li: u32, of_q: bool) -> f32 {
    if (p.qk_norm == 0u) {
        return 1.0;
    }
    var s = 0.0;
    for (var d = li; d < p.head_dim; d += WG) {
        let v = head_in(base + d, of_q);
        s += v * v;
    }
    return inverseSqrt(tree_sum(s, li) / f32(p.head_dim) + p.eps);
}

fn head_in(i: u32, of_q: bool) -> f32 {
    let nq = p.n_head * p.head_dim;
    if (of_q) {
        return with_bias(q[i], i % nq);
    }
    return with_bias(kin[i], nq + i % (p.n_kv_head * p.head_dim));
}

// Element i of vin (with its bias).
fn v_in(i: u32) -> f32 {
    let kv = p.n_kv_head * p.head_dim;
    return with_bias(vin[i], p.n_head * p.head_dim + kv + i % kv);
}

// x plus bias value r with p.bias (the same f32 add as add.wgsl's), else x.
fn with_bias(x: f32, r: u32) -> f32 {
    if (p.bias == 0u) {
        return x;
    }
    return x + q_norm[r];
}

// Element d of the head at `base` of q or kin, normed with scale sc (x * sc * w, as
// rms_norm.wgsl) when p.qk_norm, else as it is.
fn head_at(base: u32, d: u32, sc: f32, of_q: bool) -> f32 {
    let x = head_in(base + d, of_q);
    if (p.qk_norm == 0u) {
        return x;
    }
    if (of_q) {
        return x * sc * q_norm[d];
    }
    return x * sc * k_norm[d];
}

fn cache_value(x: f32) -> f32 {
    return select(x, f16_round(x), p.round == 1u);
}

fn set_q(d: u32, x: f32) {
    qs[d >> 2u][d & 3u] = x * p.scale;
}

fn set_k(at: u32, x: f32) {
    kc[at >> 2u][at & 3u] = cache_value(x);
}

fn set_v(at: u32, x: f32) {
    vc[at >> 2u][at & 3u] = cache_value(x);
}

fn rope_prologue(h: u32, t: u32, kvh: u32, li: u32) {
    let pos = tok_pos(t);
    let hd = p.head_dim;
    let hh = p.n_rot / 2u;
    let qb = (t * p.n_head + h) * hd;
    let kv = p.n_kv_head * hd;
    let kb = t * kv + kvh * hd;
    let qsc = head_scale(qb, li, true);
    let ksc = head_scale(kb, li, false);
    if ((ABLATE & 1u) != 0u) {
        for (var d = li; d < hd; d += WG) {
            set_q(d, q[qb + d]);
        }
        workgroupBarrier();
        return;
    }
    // Pair i of the head: rotated below n_rot / 2, passed through above.
    for (var i = li; i < hd / 2u; i += WG) {
        if (i < hh) {
            let at = rope_pair(qb, i);
            let x = rotate(vec2<f32>(head_at(qb, at.x - qb, qsc, true), head_at(qb, at.y - qb, qsc, true)), rope_cs(pos, i));
            set_q(at.x - qb, x.x);
            set_q(at.y - qb, x.y);
        } else {
            let d = p.n_rot + 2u * (i - hh);
            set_q(d, head_at(qb, d, qsc, true));
            set_q(d + 1u, head_at(qb, d + 1u, qsc, true));
        }
    }
    let c0 = (tok_row0(t) + pos) * kv + kvh * hd;
    for (var i = li; i < hd / 2u; i += WG) {
        if (i < hh) {
            let at = rope_pair(kb, i);
            let x = rotate(vec2<f32>(head_at(kb, at.x - kb, ksc, false), head_at(kb, at.y - kb, ksc, false)), rope_cs(pos, i));
            set_k(c0 + at.x - kb, x.x);
            set_k(c0 + at.y - kb, x.y);
        } else {
            let d = p.n_rot + 2u * (i - hh);
            set_k(c0 + d, head_at(kb, d, ksc, false));
            set_k(c0 + d + 1u, head_at(kb, d + 1u, ksc, false));
        }
        set_v(c0 + 2u * i, v_in(kb + 2u * i));
        set_v(c0 + 2u * i + 1u, v_in(kb + 2u * i + 1u));
    }
    storageBarrier();
}
