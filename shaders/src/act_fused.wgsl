// int8_product.wgsl's activations made by the product itself (a decode step's single token):
// each workgroup first rounds the f32 input as the separate dispatch would have (norm_quant.wgsl,
// quantize_act.wgsl and its gated variant: the same functions, the same bits when WG is the
// same) into workgroup memory, in act_global.wgsl's layout with p.d_off = k / 4 and
// p.s_off = k / 4 + k / 32. This saves a dispatch per product, whose cost on a GPU is
// mostly a fixed floor; the input (k values, one token) is read by every workgroup, from cache.
// Prepended by context.rs: XS_VEC4 (the array's length), PRO_NORM, and `load4(g, sc)`: the
// input's values g..g + 3 (x, or act(x) * aux), times sc and the norm weights aux with
// PRO_NORM.

@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(5) var<storage, read> aux: array<f32>;

var<workgroup> xs: array<vec4<u32>, XS_VEC4>;

fn xw(i: u32) -> u32 {
    return xs[i >> 2u][i & 3u];
}

fn xv(i: u32) -> vec4<u32> {
    return xs[i];
}

fn put(i: u32, v: u32) {
    xs[i >> 2u][i & 3u] = v;
}

// Fills xs; every thread of the workgroup calls it first (it holds barriers).
fn prologue(li: u32) {
    var sc = 1.0;
    if (PRO_NORM) {
        sc = row_scale(0u, p.k, li);
    }
    for (var c = 0u; c < p.k; c += 4u * WG) {
        let g = c + 4u * li;
        let live = g < p.k;
        var v = vec4<f32>(0.0);
        if (live) {
            v = load4(g, sc);
        }
        let r = round4(li, v, live);
        if (live) {
            put(g / 4u, pack_quants(r.qi));
            if ((g & 31u) == 0u) {
                put(p.d_off + g / 32u, bitcast<u32>(r.scale));
            }
            if ((g & 15u) == 0u) {
                put(p.s_off + g / 16u, bitcast<u32>(r.s16));
            }
        }
    }
    workgroupBarrier();
}
