#![forbid(unsafe_code)]
//! ferro-engine: models, KV cache, generation and perplexity on top of ferro-kernels;
//! tokenizers, chat templates and sampling.

pub mod backend;
pub mod bench;
pub mod chat_template;
pub mod gen_model;
pub mod generate;
pub mod kv_cache;
pub mod models;
pub mod ops;
pub mod perplexity;
pub mod sampler;
pub mod tokenizer;

pub use backend::{Backend, Device, Forward};
pub use kv_cache::KvType;
pub use models::{Arch, Hparams, Logits, Model, ModelError, ModelOptions, SeqStep, MAX_THREADS};
pub mod grammar;
pub mod scheduler;
