//! ferro-kernels: quantized block formats, scalar reference kernels and SIMD paths.
//!
//! Minimal crate root for the K-quant work; the framework (dispatch, matvec) lands from `kcore`.

pub mod quants;
pub mod simd;
