#![forbid(unsafe_code)]
//! ferro-engine: models, KV cache, generation and perplexity on top of ferro-kernels.

pub mod kv_cache;
pub mod models;
pub mod ops;

pub use models::{Arch, Hparams, Logits, Model, ModelError, ModelOptions};
pub mod gen_model;
pub mod generate;
pub mod perplexity;
