//! Errors of the GPU backend.

/// Everything the GPU backend can fail with.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// wgpu found no adapter (no GPU driver, or no Vulkan/Metal/DX12 implementation).
    #[error(
        "no usable GPU adapter found ({0}); on Linux install a Vulkan driver \
         (e.g. `apt-get install mesa-vulkan-drivers libvulkan1`)"
    )]
    NoAdapter(String),
    /// The adapter exists but refused to open a device.
    #[error("could not open a device on GPU adapter {adapter}: {reason}")]
    Device { adapter: String, reason: String },
    /// The tensor type has no GPU shader.
    #[error("tensor type {0} is not supported on the GPU")]
    UnsupportedType(&'static str),
    /// Sizes do not agree with each other or with the shader's constraints.
    #[error("shape error: {0}")]
    Shape(String),
    /// A buffer is larger than the device allows.
    #[error("{what} needs {bytes} bytes, more than the device's limit of {limit}")]
    TooLarge { what: String, bytes: u64, limit: u64 },
    /// wgpu reported a validation or out-of-memory error.
    #[error("GPU error: {0}")]
    Wgpu(String),
    /// Reading results back from the GPU failed.
    #[error("GPU readback failed: {0}")]
    Readback(String),
    /// The model needs a tensor that was not supplied.
    #[error("missing tensor {0}")]
    MissingTensor(String),
    /// Reading the GGUF file failed.
    #[error(transparent)]
    Gguf(#[from] ferro_gguf::GgufError),
    /// The architecture has no GPU forward pass.
    #[error("architecture {0} is not supported on the GPU")]
    UnsupportedArch(String),
    /// A model hyper-parameter is out of range.
    #[error("bad model parameter: {0}")]
    Hparams(String),
}

/// Result with [`GpuError`].
pub type Result<T, E = GpuError> = std::result::Result<T, E>;
