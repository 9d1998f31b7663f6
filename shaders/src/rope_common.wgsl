// Shared by rope.wgsl and rope_kv.wgsl (each declares `p` with n_rot, neox, base, freq_scale,
// has_factors, and the `factors` binding).

// (cos, sin) of pair i at position pos: theta = pos * freq_scale * base^(-2i / n_rot), divided
// by factors[i] when the model has them.
fn rope_cs(pos: u32, i: u32) -> vec2<f32> {
    var theta = f32(pos) * p.freq_scale * pow(p.base, -2.0 * f32(i) / f32(p.n_rot));
    if (p.has_factors != 0u) {
        theta /= factors[i];
    }
    return vec2<f32>(cos(theta), sin(theta));
}

// Indices of pair i of the head starting at `base`: (2i, 2i + 1), or (i, i + n_rot / 2) (neox).
fn rope_pair(base: u32, i: u32) -> vec2<u32> {
    if (p.neox != 0u) {
        return vec2<u32>(base + i, base + i + p.n_rot / 2u);
    }
    return vec2<u32>(base + 2u * i, base + 2u * i + 1u);
}

fn rotate(v: vec2<f32>, cs: vec2<f32>) -> vec2<f32> {
    return vec2<f32>(v.x * cs.x - v.y * cs.y, v.x * cs.y + v.y * cs.x);
}
