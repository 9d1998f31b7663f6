// Parameters of the matrix products (matmul.wgsl, matvec.wgsl, gemm.wgsl, gemmq.wgsl), ops.rs's
// MatmulParams.
struct Params {
    n_rows: u32,     // rows in this chunk
    k: u32,          // row length
    row_bytes: u32,  // bytes per row in wq
    y_stride: u32,   // floats per output token row (all rows of the tensor)
    row0: u32,       // first row of this chunk in the tensor
    d_off: u32,      // matvec.wgsl: where the activation scales start in xq
    s_off: u32,      // matvec.wgsl: where the activation 16-sums start in xq
    accumulate: u32, // 1: y += W x (a residual add in the same pass)
    // Several matrices in one product (q, k and v; gate and up): rows [0, seg1), [seg1, seg2)
    // and [seg2, y_stride) each write their own [n_tok][rows] output, starting at element 0,
    // base1 and base2 of y. One matrix: seg1 = seg2 = y_stride.
    seg1: u32,
    seg2: u32,
    base1: u32,
    base2: u32,
    // A product that rounds its own input (act_fused.wgsl): the norm's eps, the rounding's
    // block and mode (quant_round.wgsl), gelu by ggml's f16 table (glu_common.wgsl).
    eps: f32,
    block: u32,
    mode: u32,
    glu_f16: u32,
}
