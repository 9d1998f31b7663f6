// Appended to attention.wgsl for decode steps (every token of the batch the next one of its own
// sequence), in place of its q load: rope_kv.wgsl's work for this token, so that dispatch goes.
// The workgroup of (head h, token t) rotates its query head into `qs` (scaled), and rotates the
// key of its kv head and copies the value into the caches at the token's row (f16-rounded with
// p.round). Every query head of a group writes the same bits to that row, and each reads it
// back only after its own writes (storageBarrier): the keys before it were stored by earlier
// steps. Batches where a token attends to another token of the batch (prefill) keep rope_kv.

@group(0) @binding(6) var<storage, read> kin: array<f32>; // [n_tok][n_kv_head * head_dim]
@group(0) @binding(7) var<storage, read> vin: array<f32>;
@group(0) @binding(8) var<storage, read> factors: array<f32>; // [n_rot / 2]

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
    // Pair i of the head: rotated below n_rot / 2, passed through above.
    for (var i = li; i < hd / 2u; i += WG) {
        if (i < hh) {
            let at = rope_pair(qb, i);
            let x = rotate(vec2<f32>(q[at.x], q[at.y]), rope_cs(pos, i));
            set_q(at.x - qb, x.x);
            set_q(at.y - qb, x.y);
        } else {
            let d = p.n_rot + 2u * (i - hh);
            set_q(d, q[qb + d]);
            set_q(d + 1u, q[qb + d + 1u]);
        }
    }
    let kv = p.n_kv_head * hd;
    let kb = t * kv + kvh * hd;
    let c0 = (tok_row0(t) + pos) * kv + kvh * hd;
    for (var i = li; i < hd / 2u; i += WG) {
        if (i < hh) {
            let at = rope_pair(kb, i);
            let x = rotate(vec2<f32>(kin[at.x], kin[at.y]), rope_cs(pos, i));
            set_k(c0 + at.x - kb, x.x);
            set_k(c0 + at.y - kb, x.y);
        } else {
            let d = p.n_rot + 2u * (i - hh);
            set_k(c0 + d, kin[kb + d]);
            set_k(c0 + d + 1u, kin[kb + d + 1u]);
        }
        set_v(c0 + 2u * i, vin[kb + 2u * i]);
        set_v(c0 + 2u * i + 1u, vin[kb + 2u * i + 1u]);
    }
    storageBarrier();
}
