//! Checkpoint formats (torch zip, torch legacy stream, safetensors), key mapping and
//! architecture detection. Files are indexed first and tensors read one at a time with
//! positioned reads, so loading never holds more than the converted weights plus one tensor.

mod detect;
pub mod hf;
mod loader;
pub(crate) mod pickle;
pub mod zip;

pub use detect::{
    coca_decoder_shapes, describe_arch, describe_text, detect_config, state_dict_shapes,
    DetectedArch,
};
pub use loader::{Shared, StrictLoader};

use candle_core::{DType, Device, Tensor};
use pickle::Value;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read checkpoint {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("checkpoint {path} is not a valid {format} file: {msg}")]
    Format {
        path: PathBuf,
        format: &'static str,
        msg: String,
    },
    #[error("checkpoint {path}: {msg}")]
    Content { path: PathBuf, msg: String },
    #[error("checkpoint {path}: missing key `{key}` (the model expects shape {expected:?})")]
    MissingKey {
        path: PathBuf,
        key: String,
        expected: Vec<usize>,
    },
    #[error("checkpoint {path}: unexpected key(s) {keys}")]
    UnexpectedKeys { path: PathBuf, keys: String },
    #[error("checkpoint {path}: shape mismatch for `{key}`: checkpoint has {found:?}, the model expects {expected:?}")]
    Shape {
        path: PathBuf,
        key: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("{0}")]
    Architecture(String),
}

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Zip,
    Legacy,
    Safetensors,
    /// A TorchScript archive (`torch.jit.save`, OpenAI's CLIP releases): the weights are read
    /// out of the pickled module tree; its code is ignored.
    TorchScript,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Zip => "zip",
            Format::Legacy => "legacy",
            Format::Safetensors => "safetensors",
            Format::TorchScript => "torchscript",
        }
    }
}

/// Metadata key under which the MLP activation a checkpoint states is recorded (`quickgelu`,
/// `gelu` or `gelu_tanh`): read off a TorchScript archive's class names, or a transformers
/// folder's `config.json`.
pub const STORED_ACTIVATION: &str = "stored_activation";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StoredDType {
    F32,
    F16,
    BF16,
    F64,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl StoredDType {
    pub fn size(self) -> usize {
        match self {
            Self::F64 | Self::I64 => 8,
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::BF16 | Self::I16 => 2,
            Self::I8 | Self::U8 | Self::Bool => 1,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::BF16 => "bf16",
            Self::F64 => "f64",
            Self::I64 => "i64",
            Self::I32 => "i32",
            Self::I16 => "i16",
            Self::I8 => "i8",
            Self::U8 => "u8",
            Self::Bool => "bool",
        }
    }
    fn from_storage(kind: &str) -> Option<Self> {
        Some(match kind {
            "FloatStorage" => Self::F32,
            "HalfStorage" => Self::F16,
            "BFloat16Storage" => Self::BF16,
            "DoubleStorage" => Self::F64,
            "LongStorage" => Self::I64,
            "IntStorage" => Self::I32,
            "ShortStorage" => Self::I16,
            "CharStorage" => Self::I8,
            "ByteStorage" => Self::U8,
            "BoolStorage" => Self::Bool,
            _ => return None,
        })
    }
    fn from_safetensors(s: &str) -> Option<Self> {
        Some(match s {
            "F32" => Self::F32,
            "F16" => Self::F16,
            "BF16" => Self::BF16,
            "F64" => Self::F64,
            "I64" => Self::I64,
            "I32" => Self::I32,
            "I16" => Self::I16,
            "I8" => Self::I8,
            "U8" => Self::U8,
            "BOOL" => Self::Bool,
            _ => return None,
        })
    }
    fn is_float(self) -> bool {
        matches!(self, Self::F32 | Self::F16 | Self::BF16 | Self::F64)
    }
}

/// Where one tensor's elements live in the file.
#[derive(Debug, Clone)]
pub struct TensorEntry {
    pub dtype: StoredDType,
    pub shape: Vec<usize>,
    strides: Vec<usize>,
    /// File offset of the storage's first byte (its length is checked when indexed).
    storage_start: u64,
    /// Offset of the tensor's first element within the storage, in elements.
    elem_offset: usize,
    /// When not empty, the tensor is these stacked along the first dimension (a layout whose
    /// q, k and v are separate tensors, read as one `in_proj`); the fields above are unused.
    parts: Vec<TensorEntry>,
    /// The file holding it: 0 the checkpoint's own, `i` its `i`-th extra shard.
    shard: usize,
}

impl TensorEntry {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// `parts` (the same trailing shape) as one tensor stacked along the first dimension.
    fn stacked(parts: Vec<TensorEntry>) -> Self {
        let mut shape = parts[0].shape.clone();
        shape[0] = parts.iter().map(|p| p.shape[0]).sum();
        Self {
            dtype: parts[0].dtype,
            strides: contiguous_strides(&shape),
            shape,
            storage_start: 0,
            elem_offset: 0,
            parts,
            shard: 0,
        }
    }
}

/// Keys present in released checkpoints that zero-shot evaluation does not use.
pub fn is_unused_key(key: &str) -> bool {
    key.ends_with("num_batches_tracked")
        || key == "logit_scale"
        // SigLIP's sigmoid bias: a shift of every score, which no ranking depends on.
        || key == "logit_bias"
        || key.ends_with("attn_mask")
        || key == "visual.proj_pre"
        || key == "visual.attnpool.proj_pre"
        || key.starts_with("visual.attnpool.ln_pre.")
        // CoCa's captioning decoder: not used to embed.
        || key.starts_with("text_decoder.")
        // timm's rotary tables (EVA02, PE): buffers it computes, left out of its state dicts
        // but saved in TorchScript archives; ours are computed too.
        || key.split_once(".rope.").is_some_and(|(_, b)| {
            matches!(b, "bands" | "pos_embed" | "pos_embed_sin" | "pos_embed_cos")
        })
        // timm's relative-position coordinates and index (`RelPosMlp`), likewise.
        || key.split_once(".rel_pos.").is_some_and(|(_, b)| {
            matches!(b, "rel_coords_log" | "relative_position_index")
        })
}

pub struct Checkpoint {
    pub path: PathBuf,
    pub format: Format,
    pub entries: BTreeMap<String, TensorEntry>,
    pub epoch: Option<i64>,
    /// safetensors `__metadata__` (architecture and config written by `convert`).
    pub metadata: HashMap<String, String>,
    /// The key layout the file was written in, where it is not the one loaded
    /// (`hf::LAYOUT`: renamed into OpenAI's at open).
    pub layout: Option<&'static str>,
    file: File,
    file_len: u64,
    /// The other files of a sharded checkpoint (path, file, length), after `file`.
    shards: Vec<(PathBuf, File, u64)>,
}

/// Limits on the parts that are read whole into memory.
const MAX_PICKLE: u64 = 1 << 30;
const MAX_HEADER: u64 = 100 << 20;

/// The container a file's first bytes announce. A safetensors file starts with its header's
/// length (u64, little-endian) and then the header's `{`; that is checked before the pickle
/// guess, since a length such as 0x1_0580 also starts with a pickle PROTO opcode (0x80, <= 5).
fn sniff(head: &[u8], file_len: u64) -> Option<Format> {
    if head.starts_with(b"PK\x03\x04") {
        return Some(Format::Zip);
    }
    if head.len() >= 9 && head[8] == b'{' {
        let n = u64::from_le_bytes(head[..8].try_into().unwrap());
        if n < file_len && n <= MAX_HEADER {
            return Some(Format::Safetensors);
        }
    }
    if head.len() >= 2 && head[0] == 0x80 && head[1] <= 5 {
        return Some(Format::Legacy);
    }
    None
}

/// Up to `head.len()` bytes from the file's start (fewer only at its end).
fn read_head(file: &File, head: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < head.len() {
        match std::os::unix::fs::FileExt::read_at(file, &mut head[n..], n as u64)? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// The key a file holding one bare tensor (`torch.save(tensor)`) gives it.
pub const BARE_TENSOR: &str = "tensor";

impl Checkpoint {
    /// Opens a checkpoint file, or a transformers model folder (its weights file or shards,
    /// with `config.json` beside them).
    pub fn open(path: &Path) -> Result<Self> {
        let content = |msg| Error::Content {
            path: path.into(),
            msg,
        };
        let mut ck = if path.is_dir() {
            match hf::weights_in(path).map_err(content)? {
                hf::Weights::One(file) => Self::open_file(&file)?,
                hf::Weights::Sharded(index) => Self::open_shards(&index)?,
            }
        } else {
            Self::open_file(path)?
        };
        if hf::is_layout(&ck.entries) {
            let at = ck.path.clone();
            hf::adopt(&mut ck).map_err(|msg| Error::Content {
                path: at,
                msg: format!("transformers CLIP layout: {msg}"),
            })?;
        }
        Ok(ck)
    }

    /// The shards a transformers `*.index.json` lists, as one checkpoint (each key in the
    /// shard the index names; a key in two shards is an error).
    fn open_shards(index: &Path) -> Result<Self> {
        let content = |msg: String| Error::Content {
            path: index.into(),
            msg,
        };
        let text = std::fs::read_to_string(index).map_err(|source| Error::Io {
            path: index.into(),
            source,
        })?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| content(format!("not valid JSON: {e}")))?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| content("has no `weight_map` object".into()))?;
        let mut files = std::collections::BTreeSet::new();
        for (key, f) in map {
            let f = f
                .as_str()
                .filter(|f| !f.is_empty() && !f.contains(['/', '\\']) && *f != "..")
                .ok_or_else(|| content(format!("`{key}` is not mapped to a file name")))?;
            files.insert(f);
        }
        let dir = index.parent().unwrap_or(Path::new("."));
        let mut names = files.into_iter();
        let first = names
            .next()
            .ok_or_else(|| content("lists no weights".into()))?;
        let mut ck = Self::open_file(&dir.join(first))?;
        for name in names {
            let other = Self::open_file(&dir.join(name))?;
            let shard = ck.shards.len() + 1;
            for (key, mut e) in other.entries {
                e.shard = shard;
                if ck.entries.insert(key.clone(), e).is_some() {
                    return Err(content(format!("`{key}` is in two shards")));
                }
            }
            ck.shards.push((other.path, other.file, other.file_len));
        }
        let missing: Vec<&String> = map
            .keys()
            .filter(|k| {
                !ck.entries
                    .contains_key(k.strip_prefix("module.").unwrap_or(k))
            })
            .take(3)
            .collect();
        if !missing.is_empty() {
            return Err(content(format!(
                "lists {missing:?}, which no shard holds (an incomplete download?)"
            )));
        }
        Ok(ck)
    }

    /// One checkpoint file, indexed.
    fn open_file(path: &Path) -> Result<Self> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if meta.is_dir() {
            return Err(Error::Content {
                path: path.into(),
                msg: "is a directory, not a file".into(),
            });
        }
        let file_len = meta.len();
        let mut head = [0u8; 9];
        let n = read_head(&file, &mut head).map_err(io)?;
        let mut ckpt = Checkpoint {
            path: path.to_path_buf(),
            format: Format::Zip,
            entries: BTreeMap::new(),
            epoch: None,
            metadata: HashMap::new(),
            layout: None,
            file,
            file_len,
            shards: Vec::new(),
        };
        let Some(format) = sniff(&head[..n], file_len) else {
            return Err(Error::Content {
                path: path.into(),
                msg: "unknown format: expected a torch .pth/.pth.tar (zip or legacy) or a .safetensors file"
                    .into(),
            });
        };
        ckpt.format = format;
        match format {
            // A zip may turn out to be a TorchScript archive (index_zip says so).
            Format::Zip | Format::TorchScript => ckpt
                .index_zip()
                .map_err(|msg| ckpt.format_err("torch zip", msg))?,
            Format::Safetensors => ckpt
                .index_safetensors()
                .map_err(|msg| ckpt.format_err("safetensors", msg))?,
            Format::Legacy => ckpt
                .index_legacy()
                .map_err(|msg| ckpt.format_err("torch legacy", msg))?,
        }
        if ckpt.entries.is_empty() {
            return Err(Error::Content {
                path: path.into(),
                msg: "holds no tensors".into(),
            });
        }
        Ok(ckpt)
    }

    fn format_err(&self, format: &'static str, msg: String) -> Error {
        Error::Format {
            path: self.path.clone(),
            format,
            msg,
        }
    }

    fn index_zip(&mut self) -> std::result::Result<(), String> {
        let members = zip::members(&self.file, self.file_len)?;
        let pkl = members
            .iter()
            .find(|m| m.name == "data.pkl" || m.name.ends_with("/data.pkl"))
            .ok_or("no data.pkl member: not a torch checkpoint")?;
        let prefix = &pkl.name[..pkl.name.len() - "data.pkl".len()];
        let bytes = zip::read_member(&self.file, pkl, self.file_len, MAX_PICKLE)?;
        let (root, _) = pickle::parse(&bytes)?;
        let by_name: HashMap<&str, &zip::Member> =
            members.iter().map(|m| (m.name.as_str(), m)).collect();
        let tensors = self.state_dict(root)?;
        for (key, t) in tensors {
            let dtype = StoredDType::from_storage(&t.storage.kind).ok_or_else(|| {
                format!("`{key}` has unsupported storage type {}", t.storage.kind)
            })?;
            let member_name = format!("{prefix}data/{}", t.storage.key);
            let m = by_name.get(member_name.as_str()).ok_or_else(|| {
                format!(
                    "storage `{}` of `{key}` is missing from the archive",
                    t.storage.key
                )
            })?;
            if m.method != 0 {
                return Err(format!(
                    "storage of `{key}` is compressed; torch never writes that"
                ));
            }
            self.add_entry(key, dtype, t, m.data_start, m.size)?;
        }
        Ok(())
    }

    fn index_legacy(&mut self) -> std::result::Result<(), String> {
        // The stream is: magic, protocol version, sys info, the object, storage keys, then each
        // storage as (u64 element count, raw data) in key order.
        // The pickles are small next to the storages: read a prefix, growing it only if needed.
        let mut head_len = self.file_len.min(4 << 20);
        loop {
            match self.parse_legacy(head_len as usize) {
                Err(e) if e.contains("truncated") && head_len < self.file_len.min(MAX_PICKLE) => {
                    head_len = (head_len * 4).min(self.file_len.min(MAX_PICKLE));
                }
                other => return other,
            }
        }
    }

    fn parse_legacy(&mut self, head_len: usize) -> std::result::Result<(), String> {
        let buf = zip::read_at(&self.file, 0, head_len, self.file_len)?;
        let mut pos = 0usize;
        let mut next = |buf: &[u8], what: &str| -> std::result::Result<Value, String> {
            let (v, used) = pickle::parse(&buf[pos..]).map_err(|e| format!("{what}: {e}"))?;
            pos += used;
            Ok(v)
        };
        let magic = next(&buf, "magic number")?;
        let expected = [0x6cu8, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
        if magic != Value::Bytes(expected.to_vec()) {
            return Err("wrong magic number: not a torch checkpoint".into());
        }
        let _protocol = next(&buf, "protocol version")?;
        let _sys = next(&buf, "system info")?;
        let root = next(&buf, "state")?;
        let keys = match next(&buf, "storage keys")? {
            Value::List(k) => k,
            _ => return Err("storage key list is not a list".into()),
        };
        // Element sizes of every storage the pickle references, to step over the ones no
        // model tensor uses (an optimizer's state saved next to the weights).
        let mut kinds: HashMap<String, StoredDType> = HashMap::new();
        storage_kinds(&root, &mut kinds);
        let tensors = self.state_dict(root)?;
        for (key, t) in &tensors {
            if !kinds.contains_key(&t.storage.key) {
                return Err(format!(
                    "`{key}` has unsupported storage type {}",
                    t.storage.kind
                ));
            }
        }
        let mut offset = pos as u64;
        let mut places: HashMap<String, (u64, u64)> = HashMap::new();
        for k in keys {
            let k = match k {
                Value::Str(s) => s,
                Value::Int(i) => i.to_string(),
                _ => return Err("storage key is not a string".into()),
            };
            let hdr = zip::read_at(&self.file, offset, 8, self.file_len)
                .map_err(|e| format!("storage `{k}`: {e}"))?;
            let numel = u64::from_le_bytes(hdr.try_into().unwrap());
            let esize = kinds
                .get(&k)
                .map(|d| d.size())
                .ok_or_else(|| format!("storage `{k}` is not referenced by any tensor"))?;
            let len = numel
                .checked_mul(esize as u64)
                .ok_or("storage size overflow")?;
            let start = offset + 8;
            if start.checked_add(len).is_none_or(|e| e > self.file_len) {
                return Err(format!(
                    "storage `{k}` runs past the end of the file (truncated?)"
                ));
            }
            places.insert(k, (start, len));
            offset = start + len;
        }
        for (key, t) in tensors {
            let dtype = kinds[&t.storage.key];
            let &(start, len) = places
                .get(&t.storage.key)
                .ok_or_else(|| format!("storage `{}` of `{key}` is missing", t.storage.key))?;
            let view = (t.storage.view_offset * dtype.size()) as u64;
            if view > len {
                return Err(format!("storage view of `{key}` is out of range"));
            }
            self.add_entry(key, dtype, t, start + view, len - view)?;
        }
        Ok(())
    }

    fn index_safetensors(&mut self) -> std::result::Result<(), String> {
        let hdr = zip::read_at(&self.file, 0, 8, self.file_len)?;
        let n = u64::from_le_bytes(hdr.try_into().unwrap());
        let json = zip::read_at(&self.file, 8, n as usize, self.file_len)?;
        let v: serde_json::Value =
            serde_json::from_slice(&json).map_err(|e| format!("bad header: {e}"))?;
        let obj = v.as_object().ok_or("header is not a JSON object")?;
        let data_start = 8 + n;
        for (name, info) in obj {
            if name == "__metadata__" {
                if let Some(m) = info.as_object() {
                    for (k, v) in m {
                        if let Some(s) = v.as_str() {
                            self.metadata.insert(k.clone(), s.to_string());
                        }
                    }
                }
                continue;
            }
            let dtype = info["dtype"]
                .as_str()
                .and_then(StoredDType::from_safetensors)
                .ok_or_else(|| format!("`{name}` has an unsupported dtype"))?;
            let shape: Vec<usize> = info["shape"]
                .as_array()
                .ok_or_else(|| format!("`{name}` has no shape"))?
                .iter()
                .map(|x| {
                    x.as_u64()
                        .map(|x| x as usize)
                        .ok_or_else(|| format!("`{name}`: bad shape"))
                })
                .collect::<std::result::Result<_, _>>()?;
            let offs = info["data_offsets"]
                .as_array()
                .ok_or_else(|| format!("`{name}` has no data_offsets"))?;
            let (b, e) = match (
                offs.first().and_then(|x| x.as_u64()),
                offs.get(1).and_then(|x| x.as_u64()),
            ) {
                (Some(b), Some(e)) if b <= e => (b, e),
                _ => return Err(format!("`{name}`: bad data_offsets")),
            };
            let strides = contiguous_strides(&shape);
            let t = pickle::TensorRef {
                storage: pickle::StorageRef {
                    kind: String::new(),
                    key: String::new(),
                    view_offset: 0,
                },
                offset: 0,
                size: shape,
                stride: strides,
            };
            if data_start
                .checked_add(e)
                .is_none_or(|end| end > self.file_len)
            {
                return Err(format!(
                    "`{name}` runs past the end of the file (truncated?)"
                ));
            }
            self.add_entry(name.clone(), dtype, t, data_start + b, e - b)?;
        }
        Ok(())
    }

    /// Finds the state dict in the unpickled root and returns its tensors by key.
    fn state_dict(
        &mut self,
        root: Value,
    ) -> std::result::Result<Vec<(String, pickle::TensorRef)>, String> {
        if let Value::Object { .. } = root {
            self.format = Format::TorchScript;
            let mut out = Vec::new();
            let mut acts = std::collections::BTreeSet::new();
            flatten_module(&root, "", &mut out, &mut acts);
            if out.is_empty() {
                return Err("TorchScript archive holds no tensors".into());
            }
            // One activation class across the MLPs decides; mixed or none: no hint.
            if acts.len() == 1 {
                let a = acts.into_iter().next().unwrap_or_default();
                self.metadata.insert(STORED_ACTIVATION.into(), a);
            }
            return Ok(out);
        }
        // `torch.save(tensor)`: one tensor (CLIP_benchmark's `--save_clf` classifier).
        if let Value::Tensor(t) = root {
            return Ok(vec![(BARE_TENSOR.to_string(), t)]);
        }
        if let Value::Foreign(class) = &root {
            return Err(format!(
                "refusing pickle global `{class}`: the file is a pickled `{class}`, not a torch state dict (save `model.state_dict()`)"
            ));
        }
        let Value::Dict(items) = root else {
            return Err("top-level object is not a dict".into());
        };
        let mut sd = None;
        let mut plain = Vec::new();
        for (k, v) in items {
            let Value::Str(k) = k else { continue };
            match (k.as_str(), v) {
                ("state_dict", Value::Dict(d)) => sd = Some(d),
                ("epoch", Value::Int(e)) => self.epoch = Some(e),
                (_, Value::Tensor(t)) => plain.push((k, t)),
                _ => {}
            }
        }
        // Other entries (an optimizer, a script's `args`) may hold anything inert; the state
        // dict holds tensors.
        let items: Vec<(String, pickle::TensorRef)> = match sd {
            Some(d) => {
                let mut items = Vec::with_capacity(d.len());
                for (k, v) in d {
                    match (k, v) {
                        (Value::Str(k), Value::Tensor(t)) => items.push((k, t)),
                        (Value::Str(k), Value::Foreign(class)) => {
                            return Err(format!(
                                "refusing pickle global `{class}`: state_dict entry `{k}` is a pickled `{class}`, not a tensor"
                            ))
                        }
                        _ => {}
                    }
                }
                items
            }
            None => plain,
        };
        if items.is_empty() {
            return Err("no `state_dict` with tensors found".into());
        }
        Ok(items)
    }

    fn add_entry(
        &mut self,
        key: String,
        dtype: StoredDType,
        t: pickle::TensorRef,
        storage_start: u64,
        storage_len: u64,
    ) -> std::result::Result<(), String> {
        let key = key
            .strip_prefix("module.")
            .map(str::to_string)
            .unwrap_or(key);
        let numel = t
            .size
            .iter()
            .try_fold(1usize, |a, &b| a.checked_mul(b))
            .ok_or("tensor size overflow")?;
        if numel > 0 {
            let last = t
                .size
                .iter()
                .zip(&t.stride)
                .try_fold(t.offset, |acc, (&s, &st)| {
                    (s - 1).checked_mul(st).and_then(|x| x.checked_add(acc))
                })
                .ok_or("tensor extent overflow")?;
            let need = (last as u64 + 1) * dtype.size() as u64;
            if need > storage_len {
                return Err(format!(
                    "`{key}` needs {need} bytes of storage but only {storage_len} are present (truncated?)"
                ));
            }
        }
        if self.entries.contains_key(&key) {
            return Err(format!("duplicate key `{key}`"));
        }
        self.entries.insert(
            key,
            TensorEntry {
                dtype,
                shape: t.size,
                strides: t.stride,
                storage_start,
                elem_offset: t.offset,
                parts: Vec::new(),
                shard: 0,
            },
        );
        Ok(())
    }

    /// The container's name, and the key layout where it was renamed at open
    /// (`safetensors, transformers CLIPModel layout`).
    pub fn format_label(&self) -> String {
        match self.layout {
            Some(l) => format!("{}, {l} layout", self.format.name()),
            None => self.format.name().to_string(),
        }
    }

    pub fn shape(&self, key: &str) -> Option<&[usize]> {
        self.entries.get(key).map(|e| e.shape.as_slice())
    }

    pub fn param_count(&self) -> usize {
        self.entries
            .iter()
            .filter(|(_, e)| e.dtype.is_float())
            .map(|(_, e)| e.numel())
            .sum()
    }

    pub fn stored_dtypes(&self) -> Vec<&'static str> {
        let mut d: Vec<_> = self.entries.values().map(|e| e.dtype).collect();
        d.sort();
        d.dedup();
        d.into_iter().map(StoredDType::name).collect()
    }

    pub fn unused_keys(&self) -> Vec<&str> {
        self.entries
            .keys()
            .filter(|k| is_unused_key(k))
            .map(String::as_str)
            .collect()
    }

    /// Reads a tensor's values converted to f32 (integer tensors too).
    pub fn read_f32(&self, key: &str) -> Result<Vec<f32>> {
        let e = self.entries.get(key).ok_or_else(|| Error::Content {
            path: self.path.clone(),
            msg: format!("no tensor `{key}`"),
        })?;
        self.read_entry(key, e)
    }

    fn read_entry(&self, key: &str, e: &TensorEntry) -> Result<Vec<f32>> {
        if !e.parts.is_empty() {
            let mut out = Vec::with_capacity(e.numel());
            for p in &e.parts {
                out.extend(self.read_entry(key, p)?);
            }
            return Ok(out);
        }
        let numel = e.numel();
        let es = e.dtype.size();
        let contiguous = e.strides == contiguous_strides(&e.shape);
        let (first, count) = if contiguous {
            (e.elem_offset, numel)
        } else {
            let last = e
                .shape
                .iter()
                .zip(&e.strides)
                .map(|(&s, &st)| (s.max(1) - 1) * st)
                .sum::<usize>();
            (e.elem_offset, if numel == 0 { 0 } else { last + 1 })
        };
        let start = e.storage_start + (first * es) as u64;
        let (path, file, len) = match e.shard {
            0 => (&self.path, &self.file, self.file_len),
            i => {
                let (p, f, l) = &self.shards[i - 1];
                (p, f, *l)
            }
        };
        let bytes = zip::read_at(file, start, count * es, len).map_err(|msg| Error::Content {
            path: path.clone(),
            msg: format!("`{key}`: {msg}"),
        })?;
        let vals = decode_f32(&bytes, e.dtype);
        if contiguous {
            return Ok(vals);
        }
        let mut out = Vec::with_capacity(numel);
        let mut idx = vec![0usize; e.shape.len()];
        for _ in 0..numel {
            let off: usize = idx.iter().zip(&e.strides).map(|(i, s)| i * s).sum();
            out.push(vals[off]);
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                if idx[d] < e.shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        Ok(out)
    }

    pub fn tensor(&self, key: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        let shape = self.entries[key].shape.clone();
        let vals = self.read_f32(key)?;
        let wrap = |e: candle_core::Error| Error::Content {
            path: self.path.clone(),
            msg: format!("`{key}`: {e}"),
        };
        Tensor::from_vec(vals, shape, device)
            .and_then(|t| t.to_dtype(dtype))
            .map_err(wrap)
    }

    /// Reads the raw bytes of a tensor as stored (for `convert` at the stored dtype).
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.entries.keys()
    }

    /// The bytes of its files (all shards).
    pub fn file_len(&self) -> u64 {
        self.file_len + self.shards.iter().map(|s| s.2).sum::<u64>()
    }
}

fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

fn decode_f32(b: &[u8], dt: StoredDType) -> Vec<f32> {
    match dt {
        StoredDType::F32 => b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        StoredDType::F16 => b
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        StoredDType::BF16 => b
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        StoredDType::F64 => b
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        StoredDType::I64 => b
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        StoredDType::I32 => b
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        StoredDType::I16 => b
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        StoredDType::I8 => b.iter().map(|&x| x as i8 as f32).collect(),
        StoredDType::U8 | StoredDType::Bool => b.iter().map(|&x| x as f32).collect(),
    }
}

/// The stored element type of every tensor's storage anywhere in `v`, by storage key
/// (storages of types we do not read are left out).
fn storage_kinds(v: &Value, out: &mut HashMap<String, StoredDType>) {
    if let Value::Tensor(t) = v {
        if let Some(d) = StoredDType::from_storage(&t.storage.kind) {
            out.insert(t.storage.key.clone(), d);
        }
    }
    for c in v.children().into_iter().flatten() {
        storage_kinds(c, out);
    }
}

/// The tensors of a TorchScript module record, keyed as `state_dict()` names them (attribute
/// paths joined by dots); the activation modules' classes (`...QuickGELU` / `...GELU`) are
/// collected in `acts`.
fn flatten_module(
    v: &Value,
    prefix: &str,
    out: &mut Vec<(String, pickle::TensorRef)>,
    acts: &mut std::collections::BTreeSet<String>,
) {
    let Value::Object { class, state } = v else {
        return;
    };
    let last = class.rsplit('.').next().unwrap_or_default();
    match last {
        "QuickGELU" => {
            acts.insert("quickgelu".into());
        }
        "GELU" => {
            acts.insert("gelu".into());
        }
        _ => {}
    }
    let Value::Dict(items) = &**state else {
        return;
    };
    for (k, child) in items {
        let Value::Str(k) = k else { continue };
        let key = format!("{prefix}{k}");
        match child {
            Value::Tensor(t) => out.push((key, t.clone())),
            Value::Object { .. } => flatten_module(child, &format!("{key}."), out, acts),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rotary tables a TorchScript archive of an EVA02 or PE model saves are left unused;
    /// the learned positions beside them are not.
    #[test]
    fn rotary_buffers_are_unused_and_positions_are_not() {
        for k in ["visual.trunk.rope.bands", "visual.trunk.rope.pos_embed"] {
            assert!(is_unused_key(k), "{k}");
        }
        for k in [
            "visual.trunk.pos_embed",
            "visual.trunk.rope.scale",
            "rope.bands",
        ] {
            assert!(!is_unused_key(k), "{k}");
        }
    }

    /// `torch.save(tensor)` as `util::write_torch_tensor` writes it reads back as one tensor.
    #[test]
    fn a_saved_bare_tensor_reads_back() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("clf.pt");
        let data: Vec<f32> = (0..12).map(|i| i as f32 * 0.25 - 1.0).collect();
        crate::util::write_torch_tensor(&p, &data, &[3, 4]).unwrap();
        let c = Checkpoint::open(&p).unwrap();
        assert_eq!(c.keys().collect::<Vec<_>>(), vec![BARE_TENSOR]);
        assert_eq!(c.shape(BARE_TENSOR), Some(&[3usize, 4][..]));
        assert_eq!(c.read_f32(BARE_TENSOR).unwrap(), data);
    }

    fn safetensors_head(header_len: u64) -> Vec<u8> {
        let mut h = header_len.to_le_bytes().to_vec();
        h.push(b'{');
        h
    }

    #[test]
    fn sniff_tells_the_containers_apart() {
        assert_eq!(sniff(b"PK\x03\x04\x14\0\0\0\0", 100), Some(Format::Zip));
        // A legacy torch stream: PROTO 2, then the magic number as a LONG1.
        let legacy = [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9];
        assert_eq!(sniff(&legacy, 1000), Some(Format::Legacy));
        assert_eq!(
            sniff(&safetensors_head(40), 1000),
            Some(Format::Safetensors)
        );
        // A header length larger than the file is not safetensors.
        assert_eq!(sniff(&safetensors_head(4000), 1000), None);
        assert_eq!(sniff(b"hello wor", 1000), None);
        assert_eq!(sniff(b"", 0), None);
    }

    #[test]
    fn a_safetensors_length_that_looks_like_a_pickle_is_safetensors() {
        // 0x1_0580: the first two bytes read as pickle PROTO 5 (a full-size ViT-L-14-336px
        // checkpoint written by `dev random-checkpoint` had this header length).
        for len in [0x80, 0x180, 0x580, 0x1_0580, 0x2_0280] {
            let head = safetensors_head(len);
            assert_eq!(head[0], 0x80);
            assert_eq!(sniff(&head, 1 << 30), Some(Format::Safetensors), "{len:#x}");
        }
    }
}
