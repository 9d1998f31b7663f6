#![forbid(unsafe_code)]
pub mod chat_template;
pub mod sampler;
pub mod tokenizer;
