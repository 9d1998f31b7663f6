//! One module per subcommand.

pub mod bench;
pub mod gen_model;
pub mod info;
pub mod list;
pub mod perplexity;
pub mod pull;
pub mod rm;
pub mod run;
pub mod serve;
pub mod tokenize;
