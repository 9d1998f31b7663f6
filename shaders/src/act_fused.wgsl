// int8_product.wgsl's activations made by the product itself (a decode step's single token):
// each workgroup first rounds the f32 input as the separate dispatch would have (norm_quant.wgsl,
// quantize_act.wgsl and its gated variant: the same functions, the same bits when WG is the
// same) into workgroup memory, in act_global.wgsl's layout with p.d_off = k / 4 and
// p.s_off = k / 4 + k / 32. This saves the dispatch before the product, but every workgroup
// pays the rounding instead (model.rs's FuseAct says where that wins); the input (k values, one
// token) is read by every workgroup, from cache.
// context.rs prepends XS_VEC4 (the array's length) and `load4(g)`, the input's values g..g + 3
// (x, or act(x) * aux), and appends `prologue(li)`, written out per trip of 4·WG values (all
// loads first, so their latencies overlap): every thread calls it first (it holds barriers).
// With the norm, the values are x · row_scale · aux (norm_quant.wgsl's order).

@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(5) var<storage, read> aux: array<f32>;

var<workgroup> xs: array<vec4<u32>, XS_VEC4>;

fn xw(i: u32) -> u32 {
    return xs[i >> 2u][i & 3u];
}

fn xv(i: u32) -> vec4<u32> {
    return xs[i];
}

// Where quant_round.wgsl's put_quants stores: word i of xs.
fn put(i: u32, v: u32) {
    xs[i >> 2u][i & 3u] = v;
}
