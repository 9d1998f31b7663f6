//! Memory-mapped GGUF reader. Layout (gguf-py `constants.py`, llama.cpp `gguf.cpp`):
//!
//! ```text
//! magic "GGUF" | version u32 | n_tensors u64 | n_kv u64
//! n_kv x { key: string, type: u32, value }
//! n_tensors x { name: string, n_dims: u32, dims: u64 x n_dims, type: u32, offset: u64 }
//! padding to general.alignment (default 32) | tensor data (offsets relative to here)
//! ```
//! Strings are `u64 length + bytes`; arrays are `u32 element type + u64 count + elements`.
//! Every length, count and offset is checked against the bytes that remain before it is used,
//! so no input can make the reader allocate much more than the file's size or read out of bounds.

use std::collections::HashMap;
use std::ops::{Deref, Range};
use std::path::Path;

use crate::error::{GgufError, Result};
use crate::types::GgmlType;

/// The bytes a [`Gguf`] reads: a read-only memory map, or an owned buffer (tests, fuzzing).
enum Backing {
    Mmap(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Deref for Backing {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Backing::Mmap(m) => m,
            Backing::Owned(v) => v,
        }
    }
}

/// Metadata value types (gguf `GGUFValueType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    F32,
    Bool,
    String,
    Array,
    U64,
    I64,
    F64,
}

impl ValueType {
    pub fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => Self::U8,
            1 => Self::I8,
            2 => Self::U16,
            3 => Self::I16,
            4 => Self::U32,
            5 => Self::I32,
            6 => Self::F32,
            7 => Self::Bool,
            8 => Self::String,
            9 => Self::Array,
            10 => Self::U64,
            11 => Self::I64,
            12 => Self::F64,
            _ => return None,
        })
    }

    pub fn id(self) -> u32 {
        match self {
            Self::U8 => 0,
            Self::I8 => 1,
            Self::U16 => 2,
            Self::I16 => 3,
            Self::U32 => 4,
            Self::I32 => 5,
            Self::F32 => 6,
            Self::Bool => 7,
            Self::String => 8,
            Self::Array => 9,
            Self::U64 => 10,
            Self::I64 => 11,
            Self::F64 => 12,
        }
    }

    /// Fixed encoded size, or None for strings and arrays.
    pub fn fixed_size(self) -> Option<u64> {
        match self {
            Self::U8 | Self::I8 | Self::Bool => Some(1),
            Self::U16 | Self::I16 => Some(2),
            Self::U32 | Self::I32 | Self::F32 => Some(4),
            Self::U64 | Self::I64 | Self::F64 => Some(8),
            Self::String | Self::Array => None,
        }
    }

    /// Smallest number of bytes one value of this type can take (used to bound counts).
    fn min_size(self) -> u64 {
        match self {
            Self::String => 8,
            Self::Array => 12,
            t => t.fixed_size().unwrap_or(1),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::U8 => "u8",
            Self::I8 => "i8",
            Self::U16 => "u16",
            Self::I16 => "i16",
            Self::U32 => "u32",
            Self::I32 => "i32",
            Self::F32 => "f32",
            Self::Bool => "bool",
            Self::String => "string",
            Self::Array => "array",
            Self::U64 => "u64",
            Self::I64 => "i64",
            Self::F64 => "f64",
        }
    }
}

/// Nested arrays deeper than this are rejected (no real file nests more than once).
const MAX_ARRAY_DEPTH: u32 = 8;
/// Tensors with more dimensions than this are rejected (ggml's GGML_MAX_DIMS).
pub const MAX_DIMS: u32 = 4;
/// Default `general.alignment`.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Largest `general.alignment` accepted (keeps padding arithmetic far from overflow).
pub const MAX_ALIGNMENT: u64 = 1 << 30;
/// Element counts at or above this are rejected (ggml's int64 sizes stay far from overflow).
const MAX_ELEMENTS: u64 = 1 << 62;
/// Never reserve more entries than this before they have parsed.
const PREALLOC_MAX: u64 = 1024;

/// Where a metadata value lies in the file; materialised into a [`Value`] on access.
#[derive(Debug, Clone)]
struct RawValue {
    ty: ValueType,
    /// For arrays: element type and count.
    elem: Option<(ValueType, u64)>,
    /// Bytes of the encoded value (for arrays: the elements, after type and count).
    range: Range<usize>,
}

/// A metadata value borrowed from the file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    /// Raw bytes of the string; GGUF says UTF-8 but vocabularies sometimes are not.
    String(&'a [u8]),
    Array(ArrayRef<'a>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl<'a> Value<'a> {
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Array(_) => ValueType::Array,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
        }
    }

    /// Any integer type that fits in u64 (negative values give None).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            Value::Bool(v) => Some(v as u64),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::I8(v) => Some(v as i64),
            Value::I16(v) => Some(v as i64),
            Value::I32(v) => Some(v as i64),
            Value::I64(v) => Some(v),
            Value::U64(v) => i64::try_from(v).ok(),
            _ => self.as_u64().map(|v| v as i64),
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&'a str> {
        match *self {
            Value::String(s) => std::str::from_utf8(s).ok(),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<ArrayRef<'a>> {
        match *self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// An array value: element type, count and encoded elements, all borrowed from the file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ArrayRef<'a> {
    pub elem_type: ValueType,
    pub len: u64,
    bytes: &'a [u8],
}

impl<'a> ArrayRef<'a> {
    /// Iterate the elements. The array was validated when the file was opened.
    pub fn iter(&self) -> ArrayIter<'a> {
        ArrayIter {
            elem_type: self.elem_type,
            remaining: self.len,
            cur: Cursor::new(self.bytes, 0),
        }
    }

    /// Elements as strings (lossless bytes); None unless this is an array of strings.
    pub fn strings(&self) -> Option<Vec<&'a [u8]>> {
        if self.elem_type != ValueType::String {
            return None;
        }
        Some(
            self.iter()
                .filter_map(|v| if let Value::String(s) = v { Some(s) } else { None })
                .collect(),
        )
    }

    /// Elements converted to f32; None unless the elements are numbers.
    pub fn f32s(&self) -> Option<Vec<f32>> {
        match self.elem_type {
            ValueType::String | ValueType::Array | ValueType::Bool => None,
            _ => Some(self.iter().map(|v| v.as_f64().unwrap_or(0.0) as f32).collect()),
        }
    }

    /// Elements converted to i64; None unless the elements are integers.
    pub fn i64s(&self) -> Option<Vec<i64>> {
        match self.elem_type {
            ValueType::String | ValueType::Array | ValueType::F32 | ValueType::F64 => None,
            _ => self.iter().map(|v| v.as_i64()).collect(),
        }
    }
}

pub struct ArrayIter<'a> {
    elem_type: ValueType,
    remaining: u64,
    cur: Cursor<'a>,
}

impl<'a> Iterator for ArrayIter<'a> {
    type Item = Value<'a>;
    fn next(&mut self) -> Option<Value<'a>> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let raw = self.cur.value(self.elem_type, "array element", 0).ok()?;
        Some(materialize(self.cur.data, &raw))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::try_from(self.remaining).unwrap_or(usize::MAX);
        (n, Some(n))
    }
}

/// One tensor's description from the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the row length (contiguous), `dims[1]` the number of rows, ...
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Offset relative to the start of the data section, as stored.
    pub rel_offset: u64,
    /// Absolute offset in the file.
    pub offset: u64,
    /// Size in bytes of the tensor's data.
    pub n_bytes: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().fold(1u64, |a, &d| a.saturating_mul(d))
    }

    /// Row length (ne0).
    pub fn ne0(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }

    /// Number of rows (product of all dims but the first).
    pub fn n_rows(&self) -> u64 {
        self.dims.iter().skip(1).fold(1u64, |a, &d| a.saturating_mul(d))
    }
}

/// A parsed GGUF file. Metadata values and tensor data borrow from the file's bytes.
pub struct Gguf {
    data: Backing,
    pub version: u32,
    keys: Vec<(String, RawValue)>,
    index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    pub alignment: u64,
    /// Absolute offset of the tensor data section.
    pub data_offset: u64,
}

impl std::fmt::Debug for Gguf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gguf")
            .field("version", &self.version)
            .field("n_kv", &self.keys.len())
            .field("n_tensors", &self.tensors.len())
            .field("file_size", &self.data.len())
            .finish()
    }
}

impl Gguf {
    /// Memory-map and parse a file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let open_err = |source| GgufError::Open {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(open_err)?;
        if meta.is_dir() {
            return Err(GgufError::IsDirectory {
                path: path.to_path_buf(),
            });
        }
        let file = std::fs::File::open(path).map_err(open_err)?;
        if meta.len() == 0 {
            return Self::parse(Backing::Owned(Vec::new()));
        }
        // SAFETY: the map is read-only; ferro never writes model files it has open. Another
        // process truncating the file underneath us is outside what any mmap reader can defend.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(open_err)?;
        Self::parse(Backing::Mmap(mmap))
    }

    /// Parse a GGUF image held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        Self::parse(Backing::Owned(bytes))
    }

    fn parse(data: Backing) -> Result<Self> {
        let bytes: &[u8] = &data;
        let file_size = bytes.len() as u64;
        let mut cur = Cursor::new(bytes, 0);
        if bytes.len() < 4 || &bytes[..4] != b"GGUF" {
            return Err(GgufError::BadMagic {
                found: bytes[..bytes.len().min(4)].to_vec(),
            });
        }
        cur.pos = 4;
        let version = cur.u32("version")?;
        if version != 2 && version != 3 {
            let hint = if version == 1 {
                "GGUF v1 (2023) is obsolete and not supported; ferro reads versions 2 and 3, re-convert the model \
                 with a current llama.cpp"
            } else if matches!(version.swap_bytes(), 2 | 3) {
                "this looks like a big-endian GGUF file, which ferro does not read"
            } else {
                "ferro reads versions 2 and 3"
            };
            return Err(GgufError::UnsupportedVersion { version, hint });
        }
        let n_tensors = cur.u64("tensor count")?;
        let n_kv = cur.u64("metadata count")?;
        // Each key-value pair takes at least 8 (key length) + 4 (type) + 1 bytes; each tensor
        // info at least 8 + 4 + 8 + 4 + 8. Reject absurd counts before allocating anything, and
        // never reserve more than a small amount up front: vectors grow with what really parses.
        cur.check_count(n_kv, 13, "metadata count", 8)?;
        cur.check_count(n_tensors, 32, "tensor count", 16)?;

        let mut keys = Vec::with_capacity(n_kv.min(PREALLOC_MAX) as usize);
        let mut index = HashMap::with_capacity(n_kv.min(PREALLOC_MAX) as usize);
        for _ in 0..n_kv {
            let key_off = cur.pos as u64;
            let key = cur.string("metadata key")?;
            let key = std::str::from_utf8(key)
                .map_err(|_| GgufError::Invalid {
                    what: "metadata key".into(),
                    offset: key_off,
                    reason: "not UTF-8".into(),
                })?
                .to_string();
            let ty_off = cur.pos as u64;
            let ty_id = cur.u32_with(|| format!("value type of '{key}'"))?;
            let ty = ValueType::from_id(ty_id).ok_or_else(|| GgufError::Invalid {
                what: format!("value type of '{key}'"),
                offset: ty_off,
                reason: format!("unknown type id {ty_id}"),
            })?;
            let raw = cur.value(ty, &key, 0)?;
            if index.insert(key.clone(), keys.len()).is_some() {
                return Err(GgufError::Invalid {
                    what: "metadata key".into(),
                    offset: key_off,
                    reason: format!("duplicate key '{key}'"),
                });
            }
            keys.push((key, raw));
        }

        let alignment = match index.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(&i) => {
                let v = materialize(bytes, &keys[i].1);
                let a = v.as_u64().ok_or_else(|| GgufError::Metadata {
                    key: "general.alignment".into(),
                    reason: format!("expected an unsigned integer, found {}", v.value_type().name()),
                })?;
                if a == 0 || !a.is_power_of_two() || a > MAX_ALIGNMENT {
                    return Err(GgufError::Metadata {
                        key: "general.alignment".into(),
                        reason: format!("{a} is not a power of two between 1 and {MAX_ALIGNMENT}"),
                    });
                }
                a
            }
        };

        struct Pending {
            name: String,
            dims: Vec<u64>,
            ty: GgmlType,
            rel_offset: u64,
            n_bytes: u64,
            info_offset: u64,
        }
        let mut pending = Vec::with_capacity(n_tensors.min(PREALLOC_MAX) as usize);
        let mut tensor_index = HashMap::with_capacity(n_tensors.min(PREALLOC_MAX) as usize);
        for i in 0..n_tensors {
            let info_offset = cur.pos as u64;
            let name_bytes = cur.string_with(|| format!("name of tensor {i}"))?;
            let name = std::str::from_utf8(name_bytes)
                .map_err(|_| GgufError::Invalid {
                    what: format!("name of tensor {i}"),
                    offset: info_offset,
                    reason: "not UTF-8".into(),
                })?
                .to_string();
            let nd_off = cur.pos as u64;
            let n_dims = cur.u32_with(|| format!("dimension count of tensor '{name}'"))?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(GgufError::Invalid {
                    what: format!("dimension count of tensor '{name}'"),
                    offset: nd_off,
                    reason: format!("{n_dims} is not between 1 and {MAX_DIMS}"),
                });
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            // The product of the dims with zeros counted as 1 must stay below MAX_ELEMENTS, so
            // that no partial product (rows, elements) can overflow even when a dim is 0.
            let mut bound: u64 = 1;
            for d in 0..n_dims {
                let off = cur.pos as u64;
                let v = cur.u64_with(|| format!("dimension {d} of tensor '{name}'"))?;
                bound = bound
                    .checked_mul(v.max(1))
                    .filter(|&n| n < MAX_ELEMENTS)
                    .ok_or_else(|| GgufError::Invalid {
                        what: format!("dimension {d} of tensor '{name}'"),
                        offset: off,
                        reason: format!("{v} makes the element count overflow"),
                    })?;
                dims.push(v);
            }
            let n_elements: u64 = dims.iter().product();
            let ty_off = cur.pos as u64;
            let ty_id = cur.u32_with(|| format!("type of tensor '{name}'"))?;
            let ty = GgmlType::from_id(ty_id).ok_or_else(|| GgufError::UnknownTensorType {
                tensor: name.clone(),
                id: ty_id,
                offset: ty_off,
            })?;
            let off_pos = cur.pos as u64;
            let rel_offset = cur.u64_with(|| format!("data offset of tensor '{name}'"))?;
            if dims[0] % ty.block_size() != 0 {
                return Err(GgufError::Invalid {
                    what: format!("shape of tensor '{name}'"),
                    offset: nd_off,
                    reason: format!(
                        "row length {} is not a multiple of the {} block size {}",
                        dims[0],
                        ty,
                        ty.block_size()
                    ),
                });
            }
            let n_bytes = (n_elements / ty.block_size())
                .checked_mul(ty.type_size())
                .ok_or_else(|| GgufError::Invalid {
                    what: format!("size of tensor '{name}'"),
                    offset: ty_off,
                    reason: "byte size overflows".into(),
                })?;
            if rel_offset % alignment != 0 {
                return Err(GgufError::Invalid {
                    what: format!("data offset of tensor '{name}'"),
                    offset: off_pos,
                    reason: format!("{rel_offset} is not a multiple of the alignment {alignment}"),
                });
            }
            if tensor_index.insert(name.clone(), pending.len()).is_some() {
                return Err(GgufError::Invalid {
                    what: "tensor name".into(),
                    offset: info_offset,
                    reason: format!("duplicate tensor '{name}'"),
                });
            }
            pending.push(Pending {
                name,
                dims,
                ty,
                rel_offset,
                n_bytes,
                info_offset,
            });
        }

        let header_end = cur.pos as u64;
        // header_end <= file_size and alignment <= 2^30, so this cannot overflow.
        let data_offset = header_end.div_ceil(alignment) * alignment;
        let mut tensors = Vec::with_capacity(pending.len());
        for p in pending {
            let start = data_offset.checked_add(p.rel_offset);
            let end = start.and_then(|s| s.checked_add(p.n_bytes));
            match (start, end) {
                (Some(start), Some(end)) if end <= file_size => tensors.push(TensorInfo {
                    name: p.name,
                    dims: p.dims,
                    ty: p.ty,
                    rel_offset: p.rel_offset,
                    offset: start,
                    n_bytes: p.n_bytes,
                }),
                _ => {
                    let start = data_offset.saturating_add(p.rel_offset);
                    return Err(GgufError::TensorOutOfBounds {
                        tensor: p.name,
                        info_offset: p.info_offset,
                        start,
                        end: start.saturating_add(p.n_bytes),
                        file_size,
                    });
                }
            }
        }
        // Overlap check: sort by start, then every tensor must end before the next one starts.
        // Empty tensors occupy no bytes and cannot overlap anything.
        let mut order: Vec<usize> = (0..tensors.len()).filter(|&i| tensors[i].n_bytes > 0).collect();
        order.sort_by_key(|&i| tensors[i].offset);
        for w in order.windows(2) {
            let (a, b) = (&tensors[w[0]], &tensors[w[1]]);
            // Both ends are <= file_size (checked above), so the sums cannot overflow.
            if a.offset + a.n_bytes > b.offset {
                return Err(GgufError::TensorOverlap {
                    a: a.name.clone(),
                    a_start: a.offset,
                    a_end: a.offset + a.n_bytes,
                    b: b.name.clone(),
                    b_start: b.offset,
                    b_end: b.offset + b.n_bytes,
                });
            }
        }

        Ok(Gguf {
            data,
            version,
            keys,
            index,
            tensors,
            tensor_index,
            alignment,
            data_offset,
        })
    }

    /// Total number of weights: the sum of every tensor's element count.
    pub fn n_elements(&self) -> u64 {
        // Each count is below 2^62 and the tensors fit in the file, so saturation never triggers
        // on a real file; it only keeps absurd synthetic ones from wrapping.
        self.tensors.iter().fold(0u64, |a, t| a.saturating_add(t.n_elements()))
    }

    /// Size of the whole file in bytes.
    pub fn file_size(&self) -> u64 {
        self.data.len() as u64
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// Metadata keys in file order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(k, _)| k.as_str())
    }

    /// Every metadata pair in file order.
    pub fn metadata(&self) -> impl Iterator<Item = (&str, Value<'_>)> {
        self.keys
            .iter()
            .map(|(k, raw)| (k.as_str(), materialize(&self.data, raw)))
    }

    pub fn get(&self, key: &str) -> Option<Value<'_>> {
        self.index.get(key).map(|&i| materialize(&self.data, &self.keys[i].1))
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(|v| v.as_str())
    }

    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(|v| v.as_u64())
    }

    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(|v| v.as_f64())
    }

    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.get(key).and_then(|v| v.as_bool())
    }

    pub fn get_array(&self, key: &str) -> Option<ArrayRef<'_>> {
        self.get(key).and_then(|v| v.as_array())
    }

    /// A required unsigned integer, with an error naming the key.
    pub fn require_u64(&self, key: &str) -> Result<u64> {
        match self.get(key) {
            None => Err(GgufError::Metadata {
                key: key.into(),
                reason: "missing".into(),
            }),
            Some(v) => v.as_u64().ok_or_else(|| GgufError::Metadata {
                key: key.into(),
                reason: format!("expected an unsigned integer, found {}", v.value_type().name()),
            }),
        }
    }

    /// A required string, with an error naming the key.
    pub fn require_str(&self, key: &str) -> Result<&str> {
        match self.get(key) {
            None => Err(GgufError::Metadata {
                key: key.into(),
                reason: "missing".into(),
            }),
            Some(v) => v.as_str().ok_or_else(|| GgufError::Metadata {
                key: key.into(),
                reason: format!("expected a UTF-8 string, found {}", v.value_type().name()),
            }),
        }
    }

    /// `general.architecture`, required by every model.
    pub fn architecture(&self) -> Result<&str> {
        self.require_str("general.architecture")
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// A tensor's bytes, borrowed from the map (bounds were checked at open).
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        &self.data[info.offset as usize..(info.offset + info.n_bytes) as usize]
    }

    /// Look a tensor up by name and return its info and bytes.
    pub fn tensor(&self, name: &str) -> Result<(&TensorInfo, &[u8])> {
        let info = self
            .tensor_info(name)
            .ok_or_else(|| GgufError::MissingTensor(name.into()))?;
        Ok((info, self.tensor_data(info)))
    }
}

fn materialize<'a>(data: &'a [u8], raw: &RawValue) -> Value<'a> {
    let b = &data[raw.range.clone()];
    let le2 = |b: &[u8]| [b[0], b[1]];
    let le4 = |b: &[u8]| [b[0], b[1], b[2], b[3]];
    let le8 = |b: &[u8]| [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]];
    match raw.ty {
        ValueType::U8 => Value::U8(b[0]),
        ValueType::I8 => Value::I8(b[0] as i8),
        ValueType::U16 => Value::U16(u16::from_le_bytes(le2(b))),
        ValueType::I16 => Value::I16(i16::from_le_bytes(le2(b))),
        ValueType::U32 => Value::U32(u32::from_le_bytes(le4(b))),
        ValueType::I32 => Value::I32(i32::from_le_bytes(le4(b))),
        ValueType::F32 => Value::F32(f32::from_le_bytes(le4(b))),
        ValueType::Bool => Value::Bool(b[0] != 0),
        ValueType::U64 => Value::U64(u64::from_le_bytes(le8(b))),
        ValueType::I64 => Value::I64(i64::from_le_bytes(le8(b))),
        ValueType::F64 => Value::F64(f64::from_le_bytes(le8(b))),
        ValueType::String => Value::String(b),
        ValueType::Array => {
            let (elem_type, len) = raw.elem.unwrap_or((ValueType::U8, 0));
            Value::Array(ArrayRef {
                elem_type,
                len,
                bytes: b,
            })
        }
    }
}

/// A bounds-checked little-endian reader over the file. Error descriptions are built lazily
/// (closures), so reading a 256k-entry vocabulary allocates nothing per element.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(data: &'a [u8], pos: usize) -> Self {
        Cursor { data, pos }
    }

    fn remaining(&self) -> u64 {
        (self.data.len() - self.pos) as u64
    }

    fn take_with(&mut self, n: u64, what: impl FnOnce() -> String) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                what: what(),
                offset: self.pos as u64,
                need: n,
                have: self.remaining(),
            });
        }
        let s = &self.data[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn u32_with(&mut self, what: impl FnOnce() -> String) -> Result<u32> {
        let b = self.take_with(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64_with(&mut self, what: impl FnOnce() -> String) -> Result<u64> {
        let b = self.take_with(8, what)?;
        Ok(u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        self.u32_with(|| what.to_string())
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        self.u64_with(|| what.to_string())
    }

    fn string(&mut self, what: &str) -> Result<&'a [u8]> {
        self.string_with(|| what.to_string())
    }

    /// A `u64 length + bytes` string; the length is checked against what remains.
    fn string_with(&mut self, what: impl Fn() -> String) -> Result<&'a [u8]> {
        let len_off = self.pos as u64;
        let len = self.u64_with(|| format!("length of {}", what()))?;
        if len > self.remaining() {
            return Err(GgufError::Truncated {
                what: format!("{} (length {len}, stored at byte {len_off})", what()),
                offset: self.pos as u64,
                need: len,
                have: self.remaining(),
            });
        }
        self.take_with(len, what)
    }

    /// Reject a count whose elements, at `min_size` bytes each, cannot fit in what remains.
    /// `at` is how far back the count itself was stored (for the error's byte offset).
    fn check_count(&self, count: u64, min_size: u64, what: &str, at: usize) -> Result<()> {
        if count.checked_mul(min_size).is_none_or(|n| n > self.remaining()) {
            return Err(GgufError::Invalid {
                what: what.into(),
                offset: self.pos.saturating_sub(at) as u64,
                reason: format!(
                    "{count} entries of at least {min_size} bytes cannot fit in the {} bytes that remain (file truncated or corrupt)",
                    self.remaining()
                ),
            });
        }
        Ok(())
    }

    /// Skip over one value of type `ty`, validating it, and return where it lies.
    fn value(&mut self, ty: ValueType, key: &str, depth: u32) -> Result<RawValue> {
        let start = self.pos;
        match ty {
            ValueType::String => {
                let s = self.string_with(|| format!("string value of '{key}'"))?;
                let end = self.pos;
                Ok(RawValue {
                    ty,
                    elem: None,
                    range: end - s.len()..end,
                })
            }
            ValueType::Array => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(GgufError::Invalid {
                        what: format!("array '{key}'"),
                        offset: start as u64,
                        reason: format!("arrays nested more than {MAX_ARRAY_DEPTH} deep"),
                    });
                }
                let et_off = self.pos as u64;
                let et_id = self.u32_with(|| format!("array element type of '{key}'"))?;
                let et = ValueType::from_id(et_id).ok_or_else(|| GgufError::Invalid {
                    what: format!("array element type of '{key}'"),
                    offset: et_off,
                    reason: format!("unknown type id {et_id}"),
                })?;
                let len = self.u64_with(|| format!("array length of '{key}'"))?;
                self.check_count(len, et.min_size(), &format!("array length of '{key}'"), 8)?;
                let body = self.pos;
                match et.fixed_size() {
                    Some(sz) => {
                        // len * sz <= remaining (check_count), so no overflow.
                        self.take_with(len * sz, || format!("array '{key}'"))?;
                        if et == ValueType::Bool {
                            self.check_bools(body, key)?;
                        }
                    }
                    None => {
                        for _ in 0..len {
                            self.value(et, key, depth + 1)?;
                        }
                    }
                }
                Ok(RawValue {
                    ty,
                    elem: Some((et, len)),
                    range: body..self.pos,
                })
            }
            t => {
                let sz = t.fixed_size().unwrap_or(1);
                self.take_with(sz, || format!("{} value of '{key}'", t.name()))?;
                if t == ValueType::Bool {
                    self.check_bools(start, key)?;
                }
                Ok(RawValue {
                    ty,
                    elem: None,
                    range: start..self.pos,
                })
            }
        }
    }

    /// Every byte in `from..pos` must be a valid bool (0 or 1).
    fn check_bools(&self, from: usize, key: &str) -> Result<()> {
        match self.data[from..self.pos].iter().position(|&b| b > 1) {
            None => Ok(()),
            Some(i) => Err(GgufError::Invalid {
                what: format!("bool in '{key}'"),
                offset: (from + i) as u64,
                reason: format!("byte {} is not 0 or 1", self.data[from + i]),
            }),
        }
    }
}
