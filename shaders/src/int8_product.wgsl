// The bindings of the products with int8 activations (matvec.wgsl, gemmq.wgsl; Op::MatVec and
// Op::GemmQ share their layout), which the format units (mv_*.wgsl) read. x is packed as
// quantize_act.wgsl packs it (the rounding llama.cpp's CPU applies before the weight type):
//   xq[0 ..]          int8 quants, four per word, [n_tok][k / 4]
//   xq[p.d_off ..]    the scale of each 32 values as f32 bits, [n_tok][k / 32]
//   xq[p.s_off ..]    the integer sum of each 16 quants as i32 bits, [n_tok][k / 16]

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> wq: array<u32>;
@group(0) @binding(2) var<storage, read> xq: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
// The same weights and activations as 16-byte vectors, for formats whose parts are aligned.
@group(0) @binding(4) var<storage, read> wq4: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read> xq4: array<vec4<u32>>;

// Sum i of 16 activation quants.
fn xsum(i: u32) -> i32 {
    return bitcast<i32>(xq[p.s_off + i]);
}

// Half h (16 weights) of a part (32 weights) as gemmq.wgsl stages it (`wpart` of the mv_*.wgsl
// units): the quants as bytes (signed or unsigned, as the format's integer sums take them),
// four per word; the scale of these 16; the min coefficient of the part (weight = s·q + m).
struct WPart {
    q: vec4<u32>,
    s: f32,
    m: f32,
}
