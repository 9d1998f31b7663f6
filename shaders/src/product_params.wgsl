// Parameters of the matrix products (matmul.wgsl, matvec.wgsl, gemm.wgsl), ops.rs's
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
}
