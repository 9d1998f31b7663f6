//! Hand-written SIMD kernels. All `unsafe` of the crate lives below this module.
//!
//! Each ISA module exposes a `table()` that returns its [`KernelTable`] only after checking the
//! CPU features it needs; the `#[target_feature]` functions are reachable only through it.

use crate::dispatch::KernelTable;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2_gemm;
#[cfg(target_arch = "x86_64")]
mod avx2_lanes;
#[cfg(target_arch = "x86_64")]
mod avx2_packed;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "aarch64")]
mod neon;

// K-quant kernels (Q2_K..Q6_K against Q8_K), their own files; their tables are embedded in ours.
#[cfg(target_arch = "x86_64")]
pub mod avx2_kquants;
#[cfg(target_arch = "x86_64")]
#[allow(dead_code)] // its `kernels()` helper is used by its own tests only
pub mod avx512_kquants;
#[cfg(target_arch = "aarch64")]
pub mod neon_kquants;

pub(crate) fn avx2_table() -> Option<&'static KernelTable> {
    #[cfg(target_arch = "x86_64")]
    {
        avx2::table()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

pub(crate) fn avx512_table() -> Option<&'static KernelTable> {
    #[cfg(target_arch = "x86_64")]
    {
        avx512::table()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

/// Every AVX-512 table this CPU can run (see `avx512::tables`).
pub(crate) fn avx512_tables() -> Vec<&'static KernelTable> {
    #[cfg(target_arch = "x86_64")]
    {
        avx512::tables()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Vec::new()
    }
}

pub(crate) fn neon_table() -> Option<&'static KernelTable> {
    #[cfg(target_arch = "aarch64")]
    {
        neon::table()
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        None
    }
}

/// Asks the CPU to bring the cache line holding `addr` into its L2 cache. Only a hint: the
/// address may be anything (a prefetch reads nothing and never faults); a no-op elsewhere.
#[inline]
pub(crate) fn prefetch_l2(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT1 has no architectural effect and does not fault on any address.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T1 }>(addr as *const i8)
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: PRFM has no architectural effect and does not fault on any address.
    unsafe {
        core::arch::asm!("prfm pldl2keep, [{0}]", in(reg) addr, options(nostack, preserves_flags, readonly))
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = addr;
}

pub(crate) fn cpu_features() -> Vec<&'static str> {
    let mut v = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! probe {
            ($($f:tt),*) => {$( if std::arch::is_x86_feature_detected!($f) { v.push($f); } )*};
        }
        probe!(
            "sse4.2",
            "avx",
            "avx2",
            "fma",
            "f16c",
            "avx512f",
            "avx512bw",
            "avx512vl",
            "avx512vnni"
        );
    }
    #[cfg(target_arch = "aarch64")]
    {
        macro_rules! probe {
            ($($f:tt),*) => {$( if std::arch::is_aarch64_feature_detected!($f) { v.push($f); } )*};
        }
        probe!("neon", "dotprod", "fp16", "i8mm", "sve");
    }
    v
}

/// Test data for the tile tests: smooth values with a spike every 29th.
#[cfg(all(test, target_arch = "x86_64"))]
pub(crate) fn test_values(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as f32 * 0.37 + seed as f32).sin() * 3.0) * if i % 29 == 0 { 40.0 } else { 1.0 })
        .collect()
}
