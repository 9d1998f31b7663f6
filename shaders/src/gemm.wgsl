// Prefill product: y[t][row0 + r] = Σ_k W[r][k] x[t][k] (or += with p.accumulate) for tiles of
// TR rows x TT tokens per workgroup of 256 threads.
//
// W is in its GGUF block format (`load8` from the quant_*.wgsl prepended to this file). Each step
// of KS = 32 along k, the workgroup dequantizes its rows' 32 weights once into shared memory (one
// load8 per thread) and copies the tokens' 32 activations beside them; then every thread adds a
// 4-row x 4-token block of products from shared memory (two 16-byte reads per 16 FMAs).
// Dispatch: (x, y) fold the row tiles, z = token tiles. k is a multiple of 32 (checked by the host).

// 256 threads (the host passes it; the tile math below assumes it).
override WG: u32 = 256u;
const TR: u32 = 64u;
const TT: u32 = 64u;
const KS: u32 = 32u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> wq: array<u32>;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;   // [n_tok][k]
@group(0) @binding(3) var<storage, read_write> y: array<f32>;  // [n_tok][y_stride]

// [kk][row / 4] and [kk][token / 4]: four rows (tokens) per vector.
var<workgroup> ws: array<vec4<f32>, KS * TR / 4u>;
var<workgroup> xs: array<vec4<f32>, KS * TT / 4u>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let r0 = (wid.x + wid.y * nwg.x) * TR;
    let t0 = wid.z * TT;
    // Loading: row (token) li / 4, eight values li % 4 of the step.
    let lr = li / 4u;
    let lg = li % 4u;
    let wrow = r0 + lr;
    let rb = select(0u, wrow, wrow < p.n_rows) * p.row_bytes;
    let tok = t0 + lr;
    let k4 = p.k / 4u;
    // Computing: rows 4·(li % 16).., tokens 4·(li / 16)..
    let cr = li % 16u;
    let ct = li / 16u;
    // accI[e]: token 4·ct + I, row 4·cr + e (named, not an array: a dynamically indexed array
    // would live in memory instead of registers)
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);

    // The loads of step k0 + KS are issued before step k0's products, which context.rs writes
    // out at the KK_STEPS marker (see gemm128.wgsl). Tokens past the end load the last token.
    let xt = min(tok, batch.n_tok - 1u);
    var w = load8(rb, lg);
    var xa = x[xt * k4 + 2u * lg];
    var xb = x[xt * k4 + 2u * lg + 1u];
    let kb = 8u * lg;
    let slot = lr / 4u;
    let lane = lr % 4u;
    for (var k0 = 0u; k0 < p.k; k0 += KS) {
        ws[kb * 16u + slot][lane] = w.a.x;
        ws[(kb + 1u) * 16u + slot][lane] = w.a.y;
        ws[(kb + 2u) * 16u + slot][lane] = w.a.z;
        ws[(kb + 3u) * 16u + slot][lane] = w.a.w;
        ws[(kb + 4u) * 16u + slot][lane] = w.b.x;
        ws[(kb + 5u) * 16u + slot][lane] = w.b.y;
        ws[(kb + 6u) * 16u + slot][lane] = w.b.z;
        ws[(kb + 7u) * 16u + slot][lane] = w.b.w;
        xs[kb * 16u + slot][lane] = xa.x;
        xs[(kb + 1u) * 16u + slot][lane] = xa.y;
        xs[(kb + 2u) * 16u + slot][lane] = xa.z;
        xs[(kb + 3u) * 16u + slot][lane] = xa.w;
        xs[(kb + 4u) * 16u + slot][lane] = xb.x;
        xs[(kb + 5u) * 16u + slot][lane] = xb.y;
        xs[(kb + 6u) * 16u + slot][lane] = xb.z;
        xs[(kb + 7u) * 16u + slot][lane] = xb.w;
        workgroupBarrier();
        let kn = min(k0 + KS, p.k - KS);
        w = load8(rb, kn / 8u + lg);
        let xn = xt * k4 + (kn + kb) / 4u;
        xa = x[xn];
        xb = x[xn + 1u];
//KK_STEPS
        workgroupBarrier();
    }

    store(t0 + 4u * ct, r0 + 4u * cr, acc0);
    store(t0 + 4u * ct + 1u, r0 + 4u * cr, acc1);
    store(t0 + 4u * ct + 2u, r0 + 4u * cr, acc2);
    store(t0 + 4u * ct + 3u, r0 + 4u * cr, acc3);
}

// Outputs of token t for rows r..r + 4.
fn store(t: u32, r: u32, v: vec4<f32>) {
    if (t >= batch.n_tok) {
        return;
    }
    for (var e = 0u; e < 4u; e++) {
        if (r + e < p.n_rows) {
            let o = out_index(t, p.row0 + r + e);
            y[o] = select(v[e], y[o] + v[e], p.accumulate == 1u);
        }
    }
}
