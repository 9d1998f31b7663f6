// int8_product.wgsl's activations from storage: the packed quants another dispatch wrote
// (quantize_act.wgsl, norm_quant.wgsl, attention.wgsl), and the same as 16-byte vectors.

@group(0) @binding(2) var<storage, read> xq: array<u32>;
@group(0) @binding(5) var<storage, read> xq4: array<vec4<u32>>;

fn xw(i: u32) -> u32 {
    return xq[i];
}

fn xv(i: u32) -> vec4<u32> {
    return xq4[i];
}
