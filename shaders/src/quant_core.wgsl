// Shared by quantize_act.wgsl, norm_quant.wgsl and attention.wgsl (each declares `p` with block,
// mode, packed, d_off, s_off, and the `out` and `outq` bindings): llama.cpp's rounding of four consecutive
// values v (elements g..g + 4) by a workgroup whose threads hold consecutive fours, a block's
// threads finding its largest magnitude together (wg_reduce_*.wgsl). Threads past the data
// (live = false) take part in the reductions. Modes 0 and 1 (see quantize_act.wgsl).

fn quantize4(li: u32, g: u32, v: vec4<f32>, live: bool) {
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
    if (live) {
        out[g] = q.x * scale;
        out[g + 1u] = q.y * scale;
        out[g + 2u] = q.z * scale;
        out[g + 3u] = q.w * scale;
        if (p.packed == 1u) {
            let b = bitcast<vec4<u32>>(qi) & vec4<u32>(0xFFu);
            outq[g / 4u] = b.x | (b.y << 8u) | (b.z << 16u) | (b.w << 24u);
            if ((g & 31u) == 0u) {
                outq[p.d_off + g / 32u] = bitcast<u32>(scale);
            }
            if ((g & 15u) == 0u) {
                outq[p.s_off + g / 16u] = bitcast<u32>(s16);
            }
        }
    }
}
