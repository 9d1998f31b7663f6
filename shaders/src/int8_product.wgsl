// The bindings of the products with int8 activations (matvec.wgsl, gemmq.wgsl; Op::MatVec and
// Op::GemmQ share their layout), which the format units (mv_*.wgsl) read. The activations
// come through `xw(i)` (word i), `xv(i)` (words 4i..4i + 3) and `xsum(i)`, from storage
// (act_global.wgsl) or from workgroup memory that the product's prologue filled
// (act_fused.wgsl). They are packed as quantize_act.wgsl packs them (the rounding llama.cpp's
// CPU applies before the weight type):
//   xw(0 ..)          int8 quants, four per word, [n_tok][k / 4]
//   xw(p.d_off ..)    the scale of each 32 values as f32 bits, [n_tok][k / 32]
//   xw(p.s_off ..)    the integer sum of each 16 quants as i32 bits, [n_tok][k / 16]

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> wq: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
// The same weights as 16-byte vectors, for formats whose parts are aligned.
@group(0) @binding(4) var<storage, read> wq4: array<vec4<u32>>;

// Sum i of 16 activation quants.
fn xsum(i: u32) -> i32 {
    return bitcast<i32>(xw(p.s_off + i));
}

// Half h (16 weights) of a part (32 weights) as gemmq.wgsl stages it (`wpart` of the mv_*.wgsl
// units): the quants as bytes (signed or unsigned, as the format's integer sums take them),
// four per word; the scale of these 16; the min coefficient of the part (weight = s·q + m).
struct WPart {
    q: vec4<u32>,
    s: f32,
    m: f32,
}
