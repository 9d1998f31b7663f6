//! ferro-kernels: quantized block formats, their scalar reference kernels, hand-written SIMD
//! paths (AVX2, AVX-512, NEON) chosen once at run time, and the matrix-vector / matrix-matrix
//! products the engine runs on top of them.
//!
//! Every `unsafe` of this crate lives in [`simd`](crate::simd), but for one in the decode loops'
//! thread team (`team.rs`); the scalar code in [`quants`] is always compiled and is the oracle
//! the SIMD paths are tested against.

pub mod dispatch;
mod membw;
mod ops;
mod packed;
pub mod quants;
mod simd;
mod team;

pub use dispatch::{cpu_features, kernel_path, KernelPath, KernelTable};
pub use ferro_gguf::GgmlType;
pub use membw::measure_read_bandwidth;
pub use ops::{
    dequantize_row, dots_f16, dots_f32, geglu_f32, is_supported, matmul, matmul_packed, matvec, quantize_row,
    softmax_f32, swiglu_f32, weighted_sum_f16, weighted_sum_f32, WeightMatrix,
};
pub use packed::{transparent_huge_pages, PackedMatrix};
pub use team::{for_each_chunk, for_each_run, threads, with_threads};

/// Errors of the kernel API.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The type has no kernels (yet).
    #[error("tensor type {0} is not supported by the CPU kernels")]
    UnsupportedType(GgmlType),
    /// Lengths that do not fit the type or each other.
    #[error("shape error: {0}")]
    Shape(String),
}
