// Shared by the products (product_params.wgsl's Params) and add.wgsl's bias mode: each declares
// `p` with y_stride, seg1, seg2, base1 and base2.
// Where output row r (of the whole product: row0 + the chunk's row; of the bias) of token t
// goes in y.
fn out_index(t: u32, r: u32) -> u32 {
    if (r < p.seg1) {
        return t * p.seg1 + r;
    }
    if (r < p.seg2) {
        return p.base1 + t * (p.seg2 - p.seg1) + (r - p.seg1);
    }
    return p.base2 + t * (p.y_stride - p.seg2) + (r - p.seg2);
}
