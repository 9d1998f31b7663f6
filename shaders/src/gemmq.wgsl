// Prefill product with int8 activations: y[t][row0 + r] = Σ_k W[r][k] x[t][k] (or += with
// p.accumulate) for tiles of TR rows x TT tokens per workgroup (16 threads along the rows,
// WG / 16 along the tokens), x packed as int8_product.wgsl (prepended, with the bindings)
// describes: int8 quants, a scale per 32, a sum per 16.
//
// Each step of 32 along k (one part), the workgroup stages its rows' part as int8 quants with
// their scales (`wpart` of the format's mv_*.wgsl: 16 signed or unsigned quants, the scale of
// those 16 and the part's min coefficient) and its tokens' quants with their scales in shared
// memory. Every thread then adds a block of rows x tokens: per word of four quants, one
// dot4I8Packed per row and token into integer sums, which are folded into the f32 sums once per
// part (per half for formats with a scale per 16):
//   acc[r][t] += f32(isum[r][t]) · s[r] · dx[t]  (+ m[r] · xs[t] for formats with a min)
// with dx the token's activation scale and xs its scale times its quant sum (rounded to f16
// for Q4_1, as llama.cpp's Q8_1 blocks keep it). The integer sums are exact, as llama.cpp's
// CPU kernels have them. Thread (cr, ct) = (li % 16, li / 16) takes rows 4·cr + 64·b + e and
// tokens 4·ct + 4·(WG / 16)·c + e. context.rs writes the declarations, a part's products and
// the stores out per row and token at the GQ_DECL, GQ_STEP and GQ_STORE markers (gemmq_main),
// and sets TR, TT, GQ_MINS (a min term), GQ_MIN_F16 (Q4_1's rounding of it) and GQ_DB.
//
// The loads of part u + 1 are issued before part u's products (registers hold them); with
// GQ_DB they are staged into a second buffer while other threads may still read the first.
// Rows past the end read row 0 and tokens past the end the last token; their outputs are never
// stored. Dispatch: (x, y) fold the row tiles, z = token tiles. k is a multiple of 32.

// [word][row / 4] and [word][token / 4]: four rows (tokens) per vector; words 0..8 of a part.
// With GQ_DB two of each (the part being added and the next one).
const NBUF: u32 = select(1u, 2u, GQ_DB);
var<workgroup> wsq: array<vec4<u32>, NBUF * 8u * TR / 4u>;
var<workgroup> xsq: array<vec4<u32>, NBUF * 8u * TT / 4u>;
// [half][row / 4]: the scale of each half part (both alike for formats with a scale a part).
var<workgroup> wsc: array<vec4<f32>, NBUF * 2u * TR / 4u>;
// [row / 4]: the min coefficient; [token / 4]: the activation scale and its sum term.
var<workgroup> wmn: array<vec4<f32>, NBUF * TR / 4u>;
var<workgroup> xdv: array<vec4<f32>, NBUF * TT / 4u>;
var<workgroup> xsv: array<vec4<f32>, NBUF * TT / 4u>;

// One token's half part: quants (16, four per word), scale, scale x quant sum of the part.
struct XHalf {
    q: vec4<u32>,
    d: f32,
    s: f32,
}

fn xhalf(t: u32, u: u32, h: u32) -> XHalf {
    let np = p.k / 32u;
    let q = xv((t * (p.k / 4u) + 8u * u + 4u * h) >> 2u);
    let d = bitcast<f32>(xw(p.d_off + t * np + u));
    var s = 0.0;
    if (GQ_MINS) {
        let n = f32(xsum(t * 2u * np + 2u * u) + xsum(t * 2u * np + 2u * u + 1u));
        s = d * n;
        if (GQ_MIN_F16) {
            s = f16_round(s);
        }
    }
    return XHalf(q, d, s);
}

// 16·TT/CT threads (the host passes it; the tile math assumes it).
override WG: u32 = 256u;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let r0 = (wid.x + wid.y * nwg.x) * TR;
    let t0 = wid.z * TT;
    let np = p.k / 32u;
    // Loading: half lh of row (token) lr's part; threads past 2·TR (2·TT) load no rows (tokens).
    let lr = (li / 2u) % TR;
    let lt = (li / 2u) % TT;
    let lh = li % 2u;
    let wrow = r0 + lr;
    let rb = select(0u, wrow, wrow < p.n_rows) * p.row_bytes;
    let xt = min(t0 + lt, batch.n_tok - 1u);
    let load_w = li < 2u * TR;
    let load_x = li < 2u * TT;
    // Computing: rows 4·cr + 64·b + e, tokens 4·ct + 4·(WG / 16)·c + e.
    let cr = li % 16u;
    let ct = li / 16u;
//GQ_DECL
    var wv = wpart(rb, 0u, lh);
    var xh = xhalf(xt, 0u, lh);
    if (GQ_DB) {
        // One barrier a part: part u + 1 is staged into the other buffer after part u's products.
        stage(0u, lr, lt, lh, load_w, load_x, wv, xh);
        workgroupBarrier();
        for (var u = 0u; u < np; u++) {
            let un = min(u + 1u, np - 1u);
            wv = wpart(rb, un, lh);
            xh = xhalf(xt, un, lh);
            let bo = u & 1u;
//GQ_STEP
            stage(1u - bo, lr, lt, lh, load_w, load_x, wv, xh);
            workgroupBarrier();
        }
    } else {
        for (var u = 0u; u < np; u++) {
            stage(0u, lr, lt, lh, load_w, load_x, wv, xh);
            workgroupBarrier();
            // The next part's loads (the last part loads itself again).
            let un = min(u + 1u, np - 1u);
            wv = wpart(rb, un, lh);
            xh = xhalf(xt, un, lh);
            let bo = 0u;
//GQ_STEP
            workgroupBarrier();
        }
    }
//GQ_STORE
}

// Half lh of row lr's and token lt's part into buffer bo of the shared arrays.
fn stage(bo: u32, lr: u32, lt: u32, lh: u32, load_w: bool, load_x: bool, wv: WPart, xh: XHalf) {
    if (load_w) {
        let w0 = bo * (8u * TR / 4u) + 4u * lh * (TR / 4u) + lr / 4u;
        wsq[w0][lr % 4u] = wv.q.x;
        wsq[w0 + TR / 4u][lr % 4u] = wv.q.y;
        wsq[w0 + 2u * (TR / 4u)][lr % 4u] = wv.q.z;
        wsq[w0 + 3u * (TR / 4u)][lr % 4u] = wv.q.w;
        wsc[bo * (2u * TR / 4u) + lh * (TR / 4u) + lr / 4u][lr % 4u] = wv.s;
        if (lh == 0u) {
            wmn[bo * (TR / 4u) + lr / 4u][lr % 4u] = wv.m;
        }
    }
    if (load_x) {
        let x0 = bo * (8u * TT / 4u) + 4u * lh * (TT / 4u) + lt / 4u;
        xsq[x0][lt % 4u] = xh.q.x;
        xsq[x0 + TT / 4u][lt % 4u] = xh.q.y;
        xsq[x0 + 2u * (TT / 4u)][lt % 4u] = xh.q.z;
        xsq[x0 + 3u * (TT / 4u)][lt % 4u] = xh.q.w;
        if (lh == 0u) {
            xdv[bo * (TT / 4u) + lt / 4u][lt % 4u] = xh.d;
            xsv[bo * (TT / 4u) + lt / 4u][lt % 4u] = xh.s;
        }
    }
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
