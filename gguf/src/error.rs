//! Typed errors of the GGUF reader and writer. Every variant names what was wrong and where.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is a directory, not a GGUF file")]
    IsDirectory { path: PathBuf },
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a GGUF file: the first bytes are {found:02x?}, expected \"GGUF\"")]
    BadMagic { found: Vec<u8> },
    #[error("unsupported GGUF version {version} at byte 4: {hint}")]
    UnsupportedVersion { version: u32, hint: &'static str },
    #[error("file truncated: {what} at byte {offset} needs {need} bytes, only {have} remain")]
    Truncated {
        what: String,
        offset: u64,
        need: u64,
        have: u64,
    },
    #[error("invalid {what} at byte {offset}: {reason}")]
    Invalid { what: String, offset: u64, reason: String },
    #[error("tensor '{tensor}' has unknown ggml type id {id} (type field at byte {offset})")]
    UnknownTensorType { tensor: String, id: u32, offset: u64 },
    #[error(
        "tensor '{tensor}' (described at byte {info_offset}) has data [{start}, {end}) past the end of the file \
         ({file_size} bytes)"
    )]
    TensorOutOfBounds {
        tensor: String,
        info_offset: u64,
        start: u64,
        end: u64,
        file_size: u64,
    },
    #[error("tensors '{a}' and '{b}' overlap in the file: [{a_start}, {a_end}) and [{b_start}, {b_end})")]
    TensorOverlap {
        a: String,
        a_start: u64,
        a_end: u64,
        b: String,
        b_start: u64,
        b_end: u64,
    },
    #[error("metadata key '{key}': {reason}")]
    Metadata { key: String, reason: String },
    #[error("no tensor named '{0}'")]
    MissingTensor(String),
    #[error("cannot write GGUF: {0}")]
    Write(String),
}

pub type Result<T> = std::result::Result<T, GgufError>;
