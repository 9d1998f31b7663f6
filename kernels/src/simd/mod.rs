//! SIMD kernels: all `unsafe` of the crate lives here.

#[cfg(target_arch = "x86_64")]
pub mod avx2_kquants;
#[cfg(target_arch = "x86_64")]
pub mod avx512_kquants;
#[cfg(target_arch = "aarch64")]
pub mod neon_kquants;
