#![forbid(unsafe_code)]
//! ferro-engine: models, KV cache, generation and perplexity on top of ferro-kernels.

pub mod kv_cache;
pub mod models;
pub mod ops;

pub use models::{Arch, Hparams, Logits, Model, ModelError, ModelOptions, SeqStep};
pub mod generate;
pub mod perplexity;
pub mod gen_model;
pub mod grammar;
pub mod scheduler;
