// Shared by quantize_act.wgsl, norm_quant.wgsl and attention.wgsl (each declares `p` with block,
// mode, packed, d_off, s_off, and the `out` and `outq` bindings): quant_round.wgsl's rounding of
// the four values v (elements g..g + 4), stored: the rounded values to `out`, and with p.packed
// the quants, the scales and the 16-sums to `outq` in matvec.wgsl's layout.

fn quantize4(li: u32, g: u32, v: vec4<f32>, live: bool) {
    let r = round4(li, v, live);
    if (live) {
        out[g] = r.q.x * r.scale;
        out[g + 1u] = r.q.y * r.scale;
        out[g + 2u] = r.q.z * r.scale;
        out[g + 3u] = r.q.w * r.scale;
        if (p.packed == 1u) {
            put_quants(g, r);
        }
    }
}

// Where quant_round.wgsl's put_quants stores: word i of `outq`.
fn put(i: u32, v: u32) {
    outq[i] = v;
}
