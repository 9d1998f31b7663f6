//! WGSL compute shaders (GPU backend). Placeholder until the GPU issue lands.
