#![forbid(unsafe_code)]
pub mod tokenizer;
pub mod chat_template;
pub mod sampler;
