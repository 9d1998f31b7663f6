//! The tiled matrix products of the x86 tables (`GemmKernels`): the row-lane kernels of
//! `avx2_lanes.rs` for the 32-element formats and Q4_K, the K-quant tiles of `avx2_kquants.rs`
//! for Q6_K; and the shape checks their safe entry points share. The AVX-512 tables use them
//! too (AVX-512 implies AVX2, FMA and F16C): for Q8_0 the row lanes beat the former 256-bit
//! `vpdpbusd` tiles there as well (measured on a Xeon with AVX512-VNNI).

use crate::dispatch::GemmKernels;

/// The x86 tables': decode uses the tiles too (the row-lane ones for Q4_0..Q5_1, Q8_0 and
/// Q4_K; Q6_K decodes one row at a time, as its dot does, which streams fastest on Zen; on the
/// avx512-vnni table with the AVX-512 Q6_K dot, whose bits are the tiles'). The other AVX-512
/// dots are not the tiles' bits, so there matrix-vector and batched products must both use
/// the tiles, which `decode` makes them do.
pub(crate) const KERNELS: GemmKernels = GemmKernels {
    q4_0: Some(super::avx2_lanes::gemm_q4_0),
    q4_1: Some(super::avx2_lanes::gemm_q4_1),
    q5_0: Some(super::avx2_lanes::gemm_q5_0),
    q5_1: Some(super::avx2_lanes::gemm_q5_1),
    q8_0: Some(super::avx2_lanes::gemm_q8_0),
    q4_k: Some(super::avx2_lanes::gemm_q4_k),
    q6_k: Some(super::avx2_kquants::gemm_q6_k),
    packed_q4_0: Some(super::avx2_packed::gemm_q4_0),
    packed_q4_1: Some(super::avx2_packed::gemm_q4_1),
    packed_q5_0: Some(super::avx2_packed::gemm_q5_0),
    packed_q8_0: Some(super::avx2_packed::gemm_q8_0),
    packed_q4_k: Some(super::avx2_packed::gemm_q4_k),
    decode: true,
};

/// The avx512-vnni table's: the packed decode products and the prefill tiles sum with
/// `vpdpbusd` (the same integers, so the same bits).
pub(crate) const KERNELS_AVX512_VNNI: GemmKernels = GemmKernels {
    q4_0: Some(super::avx2_lanes::vnni_q4_0),
    q4_1: Some(super::avx2_lanes::vnni_q4_1),
    q5_0: Some(super::avx2_lanes::vnni_q5_0),
    q5_1: Some(super::avx2_lanes::vnni_q5_1),
    q8_0: Some(super::avx2_lanes::vnni_q8_0),
    q4_k: Some(super::avx2_lanes::vnni_q4_k),
    q6_k: Some(super::avx2_kquants::gemm_q6_k_vnni),
    packed_q4_k: Some(super::avx2_packed::vnni_q4_k),
    packed_q4_0: Some(super::avx2_packed::vnni_q4_0),
    packed_q4_1: Some(super::avx2_packed::vnni_q4_1),
    packed_q5_0: Some(super::avx2_packed::vnni_q5_0),
    packed_q8_0: Some(super::avx2_packed::vnni_q8_0),
    ..KERNELS
};

/// Tokens per pass of all rows in the K-quant tiles.
pub(super) const TOKEN_TILE: usize = 8;

/// The shape checks of the safe entry points: whole rows of `nb` blocks, and output rows (one
/// per token) far enough apart for the weight rows (each kernel checks the output length).
pub(super) fn check_shapes(w_blocks: usize, a_blocks: usize, nb: usize, ldo: usize) {
    assert!(
        nb > 0 && w_blocks.is_multiple_of(nb) && a_blocks.is_multiple_of(nb),
        "gemm: partial rows"
    );
    assert!(
        w_blocks / nb <= ldo || a_blocks / nb <= 1,
        "gemm: ldo smaller than the row count"
    );
}
