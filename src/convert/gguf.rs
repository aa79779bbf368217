//! GGUF reader: header, metadata, tensor infos and the memory-mapped tensor data.
//!
//! Accepts versions 2 and 3 in little-endian byte order. Every length, count and offset read from
//! the file is checked against the file size before it is used, so a truncated or corrupted file
//! yields an error naming the file and the field, never a panic or an oversized allocation.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use memmap2::Mmap;

use super::dequant::GgmlType;

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;

/// One metadata value. Arrays keep their element type so an empty array is still typed.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(ValueType, Vec<Value>),
}

/// The on-disk type tags of metadata values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    fn from_tag(tag: u32) -> Option<ValueType> {
        use ValueType::*;
        Some(match tag {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// The fewest bytes one value of this type occupies (strings: their length prefix).
    fn min_size(self) -> u64 {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | String => 8,
            Array => 12,
        }
    }
}

impl Value {
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F32(_) => ValueType::F32,
            Value::F64(_) => ValueType::F64,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Array(..) => ValueType::Array,
        }
    }

    /// Any integer value, if it is one.
    pub fn as_i128(&self) -> Option<i128> {
        Some(match *self {
            Value::U8(v) => v.into(),
            Value::I8(v) => v.into(),
            Value::U16(v) => v.into(),
            Value::I16(v) => v.into(),
            Value::U32(v) => v.into(),
            Value::I32(v) => v.into(),
            Value::U64(v) => v.into(),
            Value::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// Any numeric value as f64 (integers included). An f32 becomes the f64 nearest its shortest
    /// decimal form, so a stored `1e-5f32` reads as `1e-5` rather than `9.999999747378752e-6`.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.to_string().parse().unwrap_or(v.into())),
            Value::F64(v) => Some(v),
            _ => self.as_i128().map(|v| v as f64),
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Where one tensor lives in the file and how it is stored.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions as GGUF lists them: fastest-varying first (`dims[0]` is the row length).
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Byte range in the file (absolute), already bounds-checked.
    pub range: Range<usize>,
}

impl TensorInfo {
    pub fn n_elements(&self) -> usize {
        // Checked when the file was opened.
        self.dims.iter().product::<u64>() as usize
    }

    /// The shape in row-major (Hugging Face / PyTorch) order: GGUF's dims reversed.
    pub fn hf_shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// An open GGUF file.
pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub alignment: u64,
    /// Metadata in file order.
    pub metadata: Vec<(String, Value)>,
    index: HashMap<String, usize>,
    pub tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    mmap: Mmap,
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<GgufFile> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let len = file
            .metadata()
            .with_context(|| format!("reading the size of {}", path.display()))?
            .len();
        if len < 4 {
            bail!(
                "{}: file is truncated ({len} bytes), not a GGUF file",
                path.display()
            );
        }
        // SAFETY: the map is read-only and lives as long as `GgufFile`; like every reader of a
        // mapped file we rely on nobody truncating the file while it is open.
        let mmap = unsafe { Mmap::map(&file) }
            .with_context(|| format!("memory-mapping {}", path.display()))?;
        Self::parse(path.to_path_buf(), mmap)
            .with_context(|| format!("reading GGUF file {}", path.display()))
    }

    fn parse(path: PathBuf, mmap: Mmap) -> Result<GgufFile> {
        let mut r = Reader { buf: &mmap, pos: 0 };
        let magic = r.bytes(4, "magic")?;
        if magic != MAGIC {
            bail!("bad magic {magic:02x?}: not a GGUF file (expected \"GGUF\")");
        }
        let version = r.u32("version")?;
        if version == 1 {
            bail!("GGUF version 1 is not supported (only 2 and 3)");
        }
        if !(2..=3).contains(&version) {
            bail!(
                "unsupported GGUF version {version} (only 2 and 3; a big-endian file also \
                 lands here)"
            );
        }
        let n_tensors = r.u64("tensor count")?;
        let n_kv = r.u64("metadata count")?;

        // Each entry takes at least 12 bytes (key length + type), each tensor info 24.
        r.check_count(n_kv, 12, "metadata count")?;
        let (metadata, index) = r.metadata(n_kv)?;
        let alignment = match index.get("general.alignment").map(|&i| &metadata[i].1) {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_i128() {
                Some(a) if a > 0 && a <= 1 << 30 && (a as u64).is_power_of_two() => a as u64,
                _ => bail!("metadata key `general.alignment` = {v:?} is not a power of two"),
            },
        };
        r.check_count(n_tensors, 24, "tensor count")?;
        let raw = (0..n_tensors).map(|i| r.tensor_info(i)).collect::<Result<Vec<_>>>()?;
        let data_start = (r.pos as u64).next_multiple_of(alignment);
        let (tensors, names) = place_tensors(raw, data_start, mmap.len() as u64)?;
        Ok(GgufFile {
            path,
            version,
            alignment,
            metadata,
            index,
            tensors,
            tensor_index: names,
            mmap,
        })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.metadata[i].1)
    }

    fn require(&self, key: &str) -> Result<&Value> {
        self.get(key)
            .ok_or_else(|| anyhow!("{}: missing metadata key `{key}`", self.path.display()))
    }

    fn type_error(&self, key: &str, v: &Value, expected: &str) -> anyhow::Error {
        anyhow!(
            "{}: metadata key `{key}` has type {}, expected {expected}",
            self.path.display(),
            v.value_type()
        )
    }

    /// A required non-negative integer that fits `usize`.
    pub fn usize(&self, key: &str) -> Result<usize> {
        let v = self.require(key)?;
        let i = v
            .as_i128()
            .ok_or_else(|| self.type_error(key, v, "an integer"))?;
        usize::try_from(i).map_err(|_| {
            anyhow!(
                "{}: metadata key `{key}` = {i} is out of range",
                self.path.display()
            )
        })
    }

    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        self.get(key).map(|_| self.usize(key)).transpose()
    }

    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        self.get(key)
            .map(|v| {
                v.as_f64()
                    .ok_or_else(|| self.type_error(key, v, "a number"))
            })
            .transpose()
    }

    pub fn f64(&self, key: &str) -> Result<f64> {
        let v = self.require(key)?;
        v.as_f64()
            .ok_or_else(|| self.type_error(key, v, "a number"))
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.type_error(key, v, "a bool")),
        }
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.type_error(key, v, "a string")),
        }
    }

    pub fn str(&self, key: &str) -> Result<&str> {
        self.opt_str(key)?
            .ok_or_else(|| anyhow!("{}: missing metadata key `{key}`", self.path.display()))
    }

    /// A required array of strings.
    pub fn str_array(&self, key: &str) -> Result<Vec<&str>> {
        match self.require(key)? {
            // Elements always have the declared type, so the filter keeps them all.
            Value::Array(ValueType::String, items) => Ok(items
                .iter()
                .filter_map(|v| match v {
                    Value::String(s) => Some(s.as_str()),
                    _ => None,
                })
                .collect()),
            v => Err(self.type_error(key, v, "an array of strings")),
        }
    }

    /// An optional array of integers.
    pub fn opt_int_array(&self, key: &str) -> Result<Option<Vec<i128>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(_, items)) if items.iter().all(|v| v.as_i128().is_some()) => {
                Ok(Some(items.iter().filter_map(Value::as_i128).collect()))
            }
            Some(v) => Err(self.type_error(key, v, "an array of integers")),
        }
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The raw stored bytes of a tensor (range checked when the file was opened).
    pub fn tensor_bytes(&self, t: &TensorInfo) -> &[u8] {
        &self.mmap[t.range.clone()]
    }
}

/// Bytes a tensor of these dims and type occupies, with every overflow and the block-size rule
/// checked.
fn tensor_nbytes(dims: &[u64], ty: GgmlType) -> Result<u64> {
    let mut n: u64 = 1;
    for &d in dims {
        n = n
            .checked_mul(d)
            .ok_or_else(|| anyhow!("dimensions {dims:?} overflow"))?;
    }
    if n > isize::MAX as u64 / 4 {
        bail!("dimensions {dims:?} are too large");
    }
    let (block, block_bytes) = ty.block();
    let row = dims.first().copied().unwrap_or(1);
    if row % block as u64 != 0 {
        bail!("row length {row} is not a multiple of the {ty} block size {block}");
    }
    Ok(n / block as u64 * block_bytes as u64)
}

/// A bounds-checked little-endian cursor over the file bytes.
/// A tensor info as read, before its data range is checked against the file.
struct RawTensor {
    name: String,
    dims: Vec<u64>,
    ggml_type: GgmlType,
    offset: u64,
}

/// Each tensor's byte range in a file of `file_len` bytes whose data section starts at
/// `data_start`; a range past the end (a truncated file) or a name given twice is refused.
fn place_tensors(raw: Vec<RawTensor>, data_start: u64, file_len: u64) -> Result<(Vec<TensorInfo>, HashMap<String, usize>)> {
    let mut tensors = Vec::with_capacity(raw.len());
    let mut names = HashMap::with_capacity(raw.len());
    for t in raw {
        let nbytes = tensor_nbytes(&t.dims, t.ggml_type).with_context(|| format!("tensor `{}`", t.name))?;
        let start = data_start.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(nbytes));
        let (start, end) = match (start, end) {
            (Some(s), Some(e)) if e <= file_len => (s, e),
            _ => bail!(
                "tensor `{}`: data at offset {} + {nbytes} bytes runs past the end of the file ({file_len} bytes, data section starts at {data_start}): truncated file?",
                t.name,
                t.offset
            ),
        };
        if names.insert(t.name.clone(), tensors.len()).is_some() {
            bail!("duplicate tensor name `{}`", t.name);
        }
        tensors.push(TensorInfo { name: t.name, dims: t.dims, ggml_type: t.ggml_type, range: start as usize..end as usize });
    }
    Ok((tensors, names))
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        let remaining = (self.buf.len() - self.pos) as u64;
        if n > remaining {
            bail!(
                "unexpected end of file reading {what}: need {n} bytes at offset {}, the file \
                 has {} (truncated file?)",
                self.pos,
                self.buf.len()
            );
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let b = self.bytes(N as u64, what)?;
        Ok(b.try_into().expect("bytes returned exactly N bytes"))
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Rejects a count whose smallest possible encoding would not fit in the rest of the file,
    /// before anything is allocated for it.
    /// `n` metadata entries, in file order, and an index by key; a key given twice is refused.
    fn metadata(&mut self, n: u64) -> Result<(Vec<(String, Value)>, HashMap<String, usize>)> {
        let mut metadata = Vec::with_capacity(n as usize);
        let mut index = HashMap::with_capacity(n as usize);
        for i in 0..n {
            let key = self.string(&format!("key of metadata entry {i}"))?;
            let value = self.value(&key).with_context(|| format!("metadata key `{key}`"))?;
            if index.insert(key.clone(), metadata.len()).is_some() {
                bail!("duplicate metadata key `{key}`");
            }
            metadata.push((key, value));
        }
        Ok((metadata, index))
    }

    /// The `i`-th tensor info: name, dimensions, type and offset into the data section.
    fn tensor_info(&mut self, i: u64) -> Result<RawTensor> {
        let name = self.string(&format!("name of tensor {i}"))?;
        (|| -> Result<RawTensor> {
            let n_dims = self.u32("number of dimensions")?;
            if n_dims > 8 {
                bail!("{n_dims} dimensions (at most 8 are allowed)");
            }
            let dims = (0..n_dims).map(|d| self.u64(&format!("dimension {d}"))).collect::<Result<Vec<_>>>()?;
            let tag = self.u32("type")?;
            let ggml_type = GgmlType::from_tag(tag).ok_or_else(|| anyhow!("unknown ggml type id {tag}"))?;
            let offset = self.u64("data offset")?;
            Ok(RawTensor { name: name.clone(), dims, ggml_type, offset })
        })()
        .with_context(|| format!("tensor info of `{name}`"))
    }

    fn check_count(&self, count: u64, min_size: u64, what: &str) -> Result<()> {
        let remaining = (self.buf.len() - self.pos) as u64;
        if count.saturating_mul(min_size) > remaining {
            bail!(
                "{what} {count} cannot fit in the remaining {remaining} bytes of the file \
                 (truncated or corrupted file?)"
            );
        }
        Ok(())
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.u64(what)?;
        let b = self.bytes(len, what)?;
        String::from_utf8(b.to_vec()).map_err(|e| anyhow!("{what} is not valid UTF-8: {e}"))
    }

    fn value(&mut self, key: &str) -> Result<Value> {
        let tag = self.u32("value type")?;
        let ty = ValueType::from_tag(tag).ok_or_else(|| anyhow!("unknown value type {tag}"))?;
        self.typed_value(ty, key, 0)
    }

    fn typed_value(&mut self, ty: ValueType, key: &str, depth: usize) -> Result<Value> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>(key)?[0]),
            ValueType::I8 => Value::I8(self.array::<1>(key)?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(key)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(key)?)),
            ValueType::U32 => Value::U32(u32::from_le_bytes(self.array(key)?)),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(key)?)),
            ValueType::U64 => Value::U64(u64::from_le_bytes(self.array(key)?)),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(key)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(key)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(key)?)),
            ValueType::Bool => match self.array::<1>(key)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => bail!("invalid bool byte {b}"),
            },
            ValueType::String => Value::String(self.string("string value")?),
            ValueType::Array => {
                if depth >= 4 {
                    bail!("arrays nested more than 4 deep");
                }
                let tag = self.u32("array element type")?;
                let elem = ValueType::from_tag(tag)
                    .ok_or_else(|| anyhow!("unknown array element type {tag}"))?;
                let n = self.u64("array length")?;
                self.check_count(n, elem.min_size(), "array length")?;
                let mut items = Vec::with_capacity(n as usize);
                for i in 0..n {
                    items.push(
                        self.typed_value(elem, key, depth + 1)
                            .with_context(|| format!("array element {i}"))?,
                    );
                }
                Value::Array(elem, items)
            }
        })
    }
}
