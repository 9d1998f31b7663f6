// llama.cpp's rounding of four consecutive values v by a workgroup whose threads hold
// consecutive fours, a block's threads finding its largest magnitude together
// (wg_reduce_*.wgsl). Threads past the data (live = false) take part in the reductions. The
// including file's `p` has `block` (32 or 256), `mode` (quantize_act.wgsl's modes 0 and 1),
// `d_off` and `s_off`, and it defines `put`: quant_core.wgsl stores the quants for other
// dispatches, act_fused.wgsl keeps them in workgroup memory for its product.

// The quants of four values, the scale of their block, and the sum of the 16 quants of their
// aligned group of four threads.
struct Rounded {
    q: vec4<f32>,
    qi: vec4<i32>,
    scale: f32,
    s16: i32,
}

fn round4(li: u32, v: vec4<f32>, live: bool) -> Rounded {
    // The largest magnitude and its signed value (the first one on ties), per thread, then
    // per block (group_max of wg_reduce_*.wgsl).
    var m = abs(v.x);
    var mx = v.x;
    if (abs(v.y) > m) {
        m = abs(v.y);
        mx = v.y;
    }
    if (abs(v.z) > m) {
        m = abs(v.z);
        mx = v.z;
    }
    if (abs(v.w) > m) {
        m = abs(v.w);
        mx = v.w;
    }
    let per_block = p.block / 4u; // threads per block: 8 or 64
    let bm = group_max(m, mx, li, per_block);
    let bmax = bm.x;
    let bval = bm.y;
    var q = vec4<f32>(0.0);
    var scale = 0.0;
    if (live && bmax != 0.0) {
        var mul: f32;
        if (p.mode == 0u) {
            let d = bmax / 127.0;
            mul = 1.0 / d;
            scale = f16_round(d);
        } else {
            mul = -127.0 / bval;
            scale = 1.0 / mul;
        }
        q = min(vec4<f32>(127.0), round(mul * v));
    }
    let qi = vec4<i32>(q);
    // Sums of 16 quants: four threads each.
    let s16 = quad_sum(qi.x + qi.y + qi.z + qi.w, li);
    return Rounded(q, qi, scale, s16);
}

// Round r of values g..g + 3 in int8_product.wgsl's layout, each word through the including
// file's `put(word, value)`: the four quants as one word of signed bytes, the block's scale at
// p.d_off (once per 32 values) and the sum of 16 quants at p.s_off (once per 16).
fn put_quants(g: u32, r: Rounded) {
    let b = bitcast<vec4<u32>>(r.qi) & vec4<u32>(0xFFu);
    put(g / 4u, b.x | (b.y << 8u) | (b.z << 16u) | (b.w << 24u));
    if ((g & 31u) == 0u) {
        put(p.d_off + g / 32u, bitcast<u32>(r.scale));
    }
    if ((g & 15u) == 0u) {
        put(p.s_off + g / 16u, bitcast<u32>(r.s16));
    }
}
