// Activations of the gated linear units (glu.wgsl; quantize_act.wgsl's gated variant):
//   silu(x) = x / (1 + exp(-x))                                     (swiglu: llama, qwen, phi3)
//   gelu(x), tanh approximation as ggml_gelu                        (geglu: gemma)
// With `f16_table`, gelu follows ggml's CPU GGML_GELU_FP16 table: the input rounded to f16, the
// result rounded to f16, 0 at or below -10 and x at or above 10.

fn silu(v: f32) -> f32 {
    return v / (1.0 + exp(-v));
}

fn gelu(x: f32, f16_table: bool) -> f32 {
    var v = x;
    if (f16_table) {
        if (v <= -10.0) {
            return 0.0;
        }
        if (v >= 10.0) {
            return v;
        }
        v = unpack2x16float(pack2x16float(vec2<f32>(v, 0.0))).x;
    }
    let inner = clamp(0.7978845608028654 * (v + 0.044715 * v * v * v), -15.0, 15.0);
    var r = 0.5 * v * (1.0 + tanh(inner));
    if (f16_table) {
        r = unpack2x16float(pack2x16float(vec2<f32>(r, 0.0))).x;
    }
    return r;
}
