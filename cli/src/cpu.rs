//! What this CPU offers, for `ferro info`. Stand-in until ferro-kernels exposes its own
//! detection and the kernel path it dispatches to.

/// Features relevant to ferro's kernels that this CPU has, in a fixed order.
pub fn features() -> Vec<String> {
    let mut out = Vec::new();
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        macro_rules! check {
            ($($f:tt),*) => {$(
                if std::is_x86_feature_detected!($f) {
                    out.push($f.to_string());
                }
            )*};
        }
        check!("sse3", "ssse3", "sse4.1", "sse4.2", "avx", "avx2", "fma", "f16c", "avxvnni");
        check!("avx512f", "avx512bw", "avx512vl", "avx512vnni", "avx512bf16");
    }
    #[cfg(target_arch = "aarch64")]
    {
        macro_rules! check {
            ($($f:tt),*) => {$(
                if std::arch::is_aarch64_feature_detected!($f) {
                    out.push($f.to_string());
                }
            )*};
        }
        check!("neon", "dotprod", "fp16", "i8mm");
    }
    out
}

/// The kernel path the engine will use.
pub fn kernel_path() -> String {
    "scalar".to_string()
}
