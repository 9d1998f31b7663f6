//! GGUF files: a validating memory-mapped reader and a writer.
//!
//! The reader never trusts the file: every count, length and offset is checked against the
//! bytes that remain, and errors are [`GgufError`] values naming the field and byte offset.

mod error;
mod reader;
mod types;
mod writer;

pub use error::{GgufError, Result};
pub use reader::{ArrayIter, ArrayRef, Gguf, TensorInfo, Value, ValueType, DEFAULT_ALIGNMENT, MAX_ALIGNMENT, MAX_DIMS};
pub use types::GgmlType;
pub use writer::{GgufWriter, MetaValue, TensorSpec};
