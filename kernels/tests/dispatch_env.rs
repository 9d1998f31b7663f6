//! `FERRO_KERNELS` pins the path (its own test binary: the choice is made once per process).

#[test]
fn ferro_kernels_env_pins_the_path() {
    // Set before the first kernel call of this process; nothing else runs in this binary.
    std::env::set_var("FERRO_KERNELS", "scalar");
    assert_eq!(ferro_kernels::kernel_path(), "scalar");
    assert_eq!(ferro_kernels::KernelTable::get().path, ferro_kernels::KernelPath::Scalar);
    assert_eq!(ferro_kernels::KernelPath::from_name("AVX2"), Some(ferro_kernels::KernelPath::Avx2));
    assert_eq!(ferro_kernels::KernelPath::from_name("sse"), None);
}
