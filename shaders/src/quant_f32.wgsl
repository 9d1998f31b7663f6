// F32 rows: 4 bytes per weight. Group g = weights 8g..8g+8 of the row starting at byte rb.
fn load8(rb: u32, g: u32) -> W8 {
    let w = (rb >> 2u) + g * 8u;
    return W8(
        bitcast<vec4<f32>>(vec4<u32>(wq[w], wq[w + 1u], wq[w + 2u], wq[w + 3u])),
        bitcast<vec4<f32>>(vec4<u32>(wq[w + 4u], wq[w + 5u], wq[w + 6u], wq[w + 7u])),
    );
}
