//! GGUF v3 writer: metadata and tensors in, a valid aligned file out.

use std::io::Write;
use std::path::Path;

use crate::error::{GgufError, Result};
use crate::reader::{ValueType, DEFAULT_ALIGNMENT, MAX_ALIGNMENT, MAX_DIMS};
use crate::types::GgmlType;

/// An owned metadata value, for writing.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    /// Elements must all have `elem_type`.
    Array(ValueType, Vec<MetaValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl MetaValue {
    pub fn value_type(&self) -> ValueType {
        match self {
            MetaValue::U8(_) => ValueType::U8,
            MetaValue::I8(_) => ValueType::I8,
            MetaValue::U16(_) => ValueType::U16,
            MetaValue::I16(_) => ValueType::I16,
            MetaValue::U32(_) => ValueType::U32,
            MetaValue::I32(_) => ValueType::I32,
            MetaValue::F32(_) => ValueType::F32,
            MetaValue::Bool(_) => ValueType::Bool,
            MetaValue::String(_) => ValueType::String,
            MetaValue::Array(..) => ValueType::Array,
            MetaValue::U64(_) => ValueType::U64,
            MetaValue::I64(_) => ValueType::I64,
            MetaValue::F64(_) => ValueType::F64,
        }
    }

    pub fn from_value(v: crate::reader::Value<'_>) -> MetaValue {
        use crate::reader::Value as V;
        match v {
            V::U8(x) => MetaValue::U8(x),
            V::I8(x) => MetaValue::I8(x),
            V::U16(x) => MetaValue::U16(x),
            V::I16(x) => MetaValue::I16(x),
            V::U32(x) => MetaValue::U32(x),
            V::I32(x) => MetaValue::I32(x),
            V::F32(x) => MetaValue::F32(x),
            V::Bool(x) => MetaValue::Bool(x),
            V::String(s) => MetaValue::String(String::from_utf8_lossy(s).into_owned()),
            V::Array(a) => MetaValue::Array(a.elem_type, a.iter().map(MetaValue::from_value).collect()),
            V::U64(x) => MetaValue::U64(x),
            V::I64(x) => MetaValue::I64(x),
            V::F64(x) => MetaValue::F64(x),
        }
    }

    pub fn strings<S: Into<String>>(items: impl IntoIterator<Item = S>) -> MetaValue {
        MetaValue::Array(
            ValueType::String,
            items.into_iter().map(|s| MetaValue::String(s.into())).collect(),
        )
    }

    fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        match self {
            MetaValue::U8(v) => out.push(*v),
            MetaValue::I8(v) => out.push(*v as u8),
            MetaValue::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
            MetaValue::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
            MetaValue::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
            MetaValue::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
            MetaValue::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
            MetaValue::Bool(v) => out.push(*v as u8),
            MetaValue::String(s) => encode_str(out, s),
            MetaValue::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
            MetaValue::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
            MetaValue::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
            MetaValue::Array(et, items) => {
                out.extend_from_slice(&et.id().to_le_bytes());
                out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                for it in items {
                    if it.value_type() != *et {
                        return Err(GgufError::Write(format!(
                            "array of {} holds a {}",
                            et.name(),
                            it.value_type().name()
                        )));
                    }
                    it.encode(out)?;
                }
            }
        }
        Ok(())
    }
}

fn encode_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

struct PendingTensor {
    name: String,
    dims: Vec<u64>,
    ty: GgmlType,
    data: Vec<u8>,
}

/// Collects metadata and tensors, then writes a GGUF v3 file.
pub struct GgufWriter {
    metadata: Vec<(String, MetaValue)>,
    tensors: Vec<PendingTensor>,
    alignment: u64,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufWriter {
    pub fn new() -> Self {
        GgufWriter {
            metadata: Vec::new(),
            tensors: Vec::new(),
            alignment: DEFAULT_ALIGNMENT,
        }
    }

    /// Add or replace a metadata key. `general.alignment` also sets the data alignment.
    pub fn set(&mut self, key: impl Into<String>, value: MetaValue) -> Result<&mut Self> {
        let key = key.into();
        if key == "general.alignment" {
            let a = match value {
                MetaValue::U32(a) => a as u64,
                MetaValue::U64(a) => a,
                _ => return Err(GgufError::Write("general.alignment must be u32".into())),
            };
            if a == 0 || !a.is_power_of_two() || a > MAX_ALIGNMENT {
                return Err(GgufError::Write(format!(
                    "alignment {a} is not a power of two between 1 and {MAX_ALIGNMENT}"
                )));
            }
            self.alignment = a;
        }
        if let Some(slot) = self.metadata.iter_mut().find(|(k, _)| *k == key) {
            slot.1 = value;
        } else {
            self.metadata.push((key, value));
        }
        Ok(self)
    }

    /// Add a tensor. `dims` are in ggml order (row length first); `data` must hold exactly
    /// the bytes the shape and type need.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ty: GgmlType,
        data: Vec<u8>,
    ) -> Result<&mut Self> {
        let name = name.into();
        if dims.is_empty() || dims.len() > MAX_DIMS as usize {
            return Err(GgufError::Write(format!(
                "tensor '{name}' has {} dimensions",
                dims.len()
            )));
        }
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(GgufError::Write(format!("duplicate tensor '{name}'")));
        }
        let n: u64 = dims
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .ok_or_else(|| GgufError::Write(format!("tensor '{name}' is too large")))?;
        if !dims[0].is_multiple_of(ty.block_size()) {
            return Err(GgufError::Write(format!(
                "tensor '{name}': row length {} is not a multiple of {}",
                dims[0],
                ty.block_size()
            )));
        }
        let need = (n / ty.block_size())
            .checked_mul(ty.type_size())
            .ok_or_else(|| GgufError::Write(format!("tensor '{name}' is too large")))?;
        if data.len() as u64 != need {
            return Err(GgufError::Write(format!(
                "tensor '{name}' needs {need} bytes of {ty}, got {}",
                data.len()
            )));
        }
        self.tensors.push(PendingTensor {
            name,
            dims: dims.to_vec(),
            ty,
            data,
        });
        Ok(self)
    }

    fn header(&self) -> Result<(Vec<u8>, Vec<u64>)> {
        let infos: Vec<(&str, &[u64], GgmlType, u64)> = self
            .tensors
            .iter()
            .map(|t| (t.name.as_str(), t.dims.as_slice(), t.ty, t.data.len() as u64))
            .collect();
        self.header_for(&infos)
    }

    /// The header for tensors given as (name, dims, type, bytes), with their data offsets.
    fn header_for(&self, infos: &[(&str, &[u64], GgmlType, u64)]) -> Result<(Vec<u8>, Vec<u64>)> {
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(infos.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            encode_str(&mut out, k);
            out.extend_from_slice(&v.value_type().id().to_le_bytes());
            v.encode(&mut out)?;
        }
        let mut offsets = Vec::with_capacity(infos.len());
        let mut off = 0u64;
        for &(name, dims, ty, n_bytes) in infos {
            encode_str(&mut out, name);
            out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&ty.id().to_le_bytes());
            out.extend_from_slice(&off.to_le_bytes());
            offsets.push(off);
            off = (off + n_bytes).div_ceil(self.alignment) * self.alignment;
        }
        let padded = (out.len() as u64).div_ceil(self.alignment) * self.alignment;
        out.resize(padded as usize, 0);
        Ok((out, offsets))
    }

    /// Write the file to any writer.
    pub fn write_to(&self, w: &mut impl Write) -> Result<()> {
        let (header, _) = self.header()?;
        w.write_all(&header)?;
        for t in &self.tensors {
            w.write_all(&t.data)?;
            let pad = (t.data.len() as u64).div_ceil(self.alignment) * self.alignment - t.data.len() as u64;
            w.write_all(&vec![0u8; pad as usize])?;
        }
        Ok(())
    }

    /// Encode into memory.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        self.write_to(&mut v)?;
        Ok(v)
    }

    /// Write to `path` atomically: a temporary file beside it, renamed into place when complete.
    pub fn write_file(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let tmp = path.with_extension("gguf.partial");
        let res = (|| {
            let f = std::fs::File::create(&tmp)?;
            let mut w = std::io::BufWriter::new(f);
            self.write_to(&mut w)?;
            w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            std::fs::rename(&tmp, path)?;
            Ok(())
        })();
        if res.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        res
    }

    /// Write the metadata and the tensors of `specs` to `path` atomically, asking `fill` for
    /// each tensor's bytes in order while writing, so files larger than memory can be made.
    /// Tensors added with [`add_tensor`](Self::add_tensor) are not written. `fill` must write
    /// exactly the bytes the tensor's shape and type need.
    pub fn write_file_streaming(
        &self,
        path: impl AsRef<Path>,
        specs: &[TensorSpec],
        mut fill: impl FnMut(usize, &TensorSpec, &mut dyn Write) -> std::io::Result<()>,
    ) -> Result<()> {
        let mut infos = Vec::with_capacity(specs.len());
        for t in specs {
            if t.dims.is_empty() || t.dims.len() > MAX_DIMS as usize || !t.dims[0].is_multiple_of(t.ty.block_size()) {
                return Err(GgufError::Write(format!("tensor '{}' has a bad shape {:?}", t.name, t.dims)));
            }
            let n = t.dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
            let bytes = n
                .map(|n| n / t.ty.block_size() * t.ty.type_size())
                .ok_or_else(|| GgufError::Write(format!("tensor '{}' is too large", t.name)))?;
            infos.push((t.name.as_str(), t.dims.as_slice(), t.ty, bytes));
        }
        let (header, _) = self.header_for(&infos)?;
        let path = path.as_ref();
        let tmp = path.with_extension("gguf.partial");
        let res = (|| {
            let f = std::fs::File::create(&tmp)?;
            let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
            w.write_all(&header)?;
            for (i, (t, info)) in specs.iter().zip(&infos).enumerate() {
                let mut counted = CountingWriter { inner: &mut w, n: 0 };
                fill(i, t, &mut counted)?;
                if counted.n != info.3 {
                    return Err(GgufError::Write(format!(
                        "tensor '{}' needs {} bytes, {} were written",
                        t.name, info.3, counted.n
                    )));
                }
                let pad = info.3.div_ceil(self.alignment) * self.alignment - info.3;
                w.write_all(&vec![0u8; pad as usize])?;
            }
            w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            std::fs::rename(&tmp, path)?;
            Ok(())
        })();
        if res.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        res
    }
}

/// A tensor to be written by [`GgufWriter::write_file_streaming`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    /// ggml order: row length first.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
}

struct CountingWriter<'a, W: Write> {
    inner: &'a mut W,
    n: u64,
}

impl<W: Write> Write for CountingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n += k as u64;
        Ok(k)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
