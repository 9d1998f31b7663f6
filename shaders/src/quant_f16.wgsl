// F16 rows: 2 bytes per weight (rows start 4-byte aligned because the row length is a multiple of 8).
fn load8(rb: u32, g: u32) -> W8 {
    let w = (rb >> 2u) + g * 4u;
    let a = unpack2x16float(wq[w]);
    let b = unpack2x16float(wq[w + 1u]);
    let c = unpack2x16float(wq[w + 2u]);
    let d = unpack2x16float(wq[w + 3u]);
    return W8(vec4<f32>(a, b), vec4<f32>(c, d));
}
