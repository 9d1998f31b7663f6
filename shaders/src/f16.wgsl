// v rounded to the nearest f16 (ties to even), as the CPU's conversion; pack2x16float's rounding
// is the implementation's choice (NVIDIA's differs).
fn f16_round(v: f32) -> f32 {
    let a = abs(v);
    if (a >= 65520.0) {
        return sign(v) * bitcast<f32>(0x7F800000u); // overflows to infinity
    }
    if (a < 6.103515625e-5) {
        // f16 subnormals: multiples of 2^-24.
        return round(v * 16777216.0) / 16777216.0;
    }
    let b = bitcast<u32>(v);
    // Keep 10 mantissa bits: add half an ulp (minus one when the kept part is even), truncate.
    return bitcast<f32>((b + 0x0FFFu + ((b >> 13u) & 1u)) & 0xFFFFE000u);
}
