//! A restricted pickle reader: enough of the protocol to read torch state dicts, nothing that
//! could run code. Globals are checked against a whitelist and turned into plain values; any
//! other class or callable (a training script's `args` Namespace, a numpy scalar) becomes an
//! inert [`Value::Foreign`] that keeps only its name, and the caller refuses it where tensors
//! are expected. Every length is bounds-checked against the input before anything is allocated.

use std::collections::HashMap;

/// Limits that keep a hostile stream from exhausting memory or the stack.
const MAX_STACK: usize = 1 << 20;
const MAX_MEMO: usize = 1 << 22;
const MAX_DEPTH: usize = 64;
/// Values that memo GETs/PUTs and DUP may copy, in nodes, in all: torch memoises storages,
/// short tuples and containers while they are still empty, while a hostile stream can double
/// a nested list with every DUP + APPEND (found by the `checkpoint` fuzz target).
const MAX_COPIED: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    /// A whitelisted global, by its dotted name.
    Global(String),
    /// A global outside the whitelist, or what calling or building it would have made: only
    /// its dotted name is kept (its arguments and state are dropped, nothing is called).
    Foreign(String),
    /// A TorchScript module object (`__torch__.*` class) and the state its BUILD set: its
    /// attributes, submodules and tensors. Only recorded, never constructed.
    Object {
        class: String,
        state: Box<Value>,
    },
    /// `persistent_id` payload as written by torch (a tuple starting with "storage").
    PersId(Box<Value>),
    /// A tensor rebuilt by `_rebuild_tensor_v2` (storage pid, offset, size, stride).
    Tensor(TensorRef),
    /// A long byte string left where it lies (numpy mode): its offset and length in the
    /// input, not copied.
    Blob {
        offset: usize,
        len: usize,
    },
    /// Internal marker on the stack.
    Mark,
}

impl Value {
    /// The values directly inside a container (a dict's keys and values in turn); None for
    /// a leaf.
    pub fn children(&self) -> Option<impl Iterator<Item = &Value>> {
        let (items, pairs, one): (&[Value], &[(Value, Value)], Option<&Value>) = match self {
            Value::Tuple(x) | Value::List(x) => (x, &[], None),
            Value::Dict(x) => (&[], x, None),
            Value::PersId(b) => (&[], &[], Some(b)),
            Value::Object { state, .. } => (&[], &[], Some(state)),
            _ => return None,
        };
        Some(
            items
                .iter()
                .chain(pairs.iter().flat_map(|(k, v)| [k, v]))
                .chain(one),
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TensorRef {
    pub storage: StorageRef,
    pub offset: usize,
    pub size: Vec<usize>,
    pub stride: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StorageRef {
    /// e.g. "FloatStorage"
    pub kind: String,
    pub key: String,
    /// Legacy view storages: (offset in elements into the root storage).
    pub view_offset: usize,
}

const ALLOWED_GLOBALS: &[&str] = &[
    "collections.OrderedDict",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_parameter",
    "torch.FloatStorage",
    "torch.HalfStorage",
    "torch.BFloat16Storage",
    "torch.DoubleStorage",
    "torch.LongStorage",
    "torch.IntStorage",
    "torch.ShortStorage",
    "torch.CharStorage",
    "torch.ByteStorage",
    "torch.BoolStorage",
    // TorchScript's typed containers for module attributes: plain data.
    "torch.jit._pickle.build_intlist",
    "torch.jit._pickle.build_doublelist",
    "torch.jit._pickle.build_boollist",
    "torch.jit._pickle.build_tensorlist",
    "torch.jit._pickle.restore_type_tag",
];

/// Why a pickle was refused or could not be read (one line, naming the opcode or global).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PickleError(pub String);

impl From<PickleError> for String {
    fn from(e: PickleError) -> String {
        e.0
    }
}

/// Runs the restricted machine over one pickle: the value and the bytes it used.
pub fn parse(data: &[u8]) -> Result<(Value, usize), PickleError> {
    Machine::new(data).run().map_err(PickleError)
}

/// [`parse`] for pickled numpy arrays (the CIFAR batches torchvision downloads): numpy's
/// `_reconstruct` and `dtype` become inert records, `Object { class: "numpy.ndarray" }` whose
/// state is BUILD's `(version, shape, dtype, fortran, data)` and `Object { class:
/// "numpy.dtype" }` whose state is its arguments (`("u1", ...)`); byte strings of 4 KiB or more
/// stay in the input as [`Value::Blob`]s. Nothing is called.
pub fn parse_numpy(data: &[u8]) -> Result<(Value, usize), PickleError> {
    let mut m = Machine::new(data);
    m.numpy = true;
    m.run().map_err(PickleError)
}

/// numpy's array-rebuilding globals (numpy 1 and 2 module paths).
const NUMPY_GLOBALS: &[&str] = &[
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
    "numpy.ndarray",
    "numpy.dtype",
];

/// Byte strings at least this long stay in the input in numpy mode.
const BLOB_MIN: usize = 4096;

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    memo: HashMap<u32, Value>,
    /// Nodes still allowed to be copied (see [`MAX_COPIED`]).
    copy_budget: usize,
    /// numpy records and blobs ([`parse_numpy`]).
    numpy: bool,
}

/// A copy of `v` for the memo or DUP, charged to `budget` (nodes left to copy).
fn copy_within(budget: &mut usize, v: &Value) -> Result<Value, String> {
    let n = nodes(v, *budget);
    if n > *budget {
        return Err(format!(
            "pickle copies more than {MAX_COPIED} values through its memo or DUP"
        ));
    }
    *budget -= n;
    Ok(v.clone())
}

/// Nodes in a value, counting up to `limit` (then `limit + 1`).
fn nodes(v: &Value, limit: usize) -> usize {
    let mut n = 1;
    for c in v.children().into_iter().flatten() {
        if n > limit {
            break;
        }
        n += nodes(c, limit - n);
    }
    n.min(limit + 1)
}

fn depth(v: &Value) -> usize {
    v.children()
        .map_or(0, |c| 1 + c.map(depth).max().unwrap_or(0))
}

impl<'a> Machine<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            pos: 0,
            stack: Vec::new(),
            memo: HashMap::new(),
            copy_budget: MAX_COPIED,
            numpy: false,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| format!("pickle truncated: needs {n} bytes at offset {}", self.pos))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn line(&mut self) -> Result<&'a str, String> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("pickle truncated in a text line")?;
        let s = std::str::from_utf8(&rest[..n]).map_err(|_| "pickle text line is not UTF-8")?;
        self.pos += n + 1;
        Ok(s)
    }
    fn pop(&mut self) -> Result<Value, String> {
        self.stack
            .pop()
            .ok_or_else(|| "pickle stack underflow".to_string())
    }
    fn push(&mut self, v: Value) -> Result<(), String> {
        if self.stack.len() >= MAX_STACK {
            return Err("pickle stack too deep".into());
        }
        if depth(&v) > MAX_DEPTH {
            return Err("pickle nesting too deep".into());
        }
        self.stack.push(v);
        Ok(())
    }
    fn pop_mark(&mut self) -> Result<Vec<Value>, String> {
        let idx = self
            .stack
            .iter()
            .rposition(|v| matches!(v, Value::Mark))
            .ok_or("pickle MARK missing")?;
        let items = self.stack.split_off(idx + 1);
        self.stack.pop();
        Ok(items)
    }
    fn top_mut(&mut self) -> Result<&mut Value, String> {
        self.stack
            .last_mut()
            .ok_or_else(|| "pickle stack underflow".to_string())
    }
    fn memo_put(&mut self, idx: u32) -> Result<(), String> {
        if self.memo.len() >= MAX_MEMO {
            return Err("pickle memo too large".into());
        }
        let top = self.stack.last().ok_or("pickle stack underflow")?;
        let v = copy_within(&mut self.copy_budget, top)?;
        self.memo.insert(idx, v);
        Ok(())
    }
    fn memo_get(&mut self, idx: u32) -> Result<(), String> {
        let v = self
            .memo
            .get(&idx)
            .ok_or_else(|| format!("pickle memo {idx} missing"))?;
        let v = copy_within(&mut self.copy_budget, v)?;
        self.push(v)
    }
    fn global(&mut self, module: &str, name: &str) -> Result<(), String> {
        let full = format!("{module}.{name}");
        // TorchScript archives name their module classes `__torch__.<path>`: those become
        // inert records (NEWOBJ + BUILD below); anything else outside the whitelist is an
        // inert name that the state-dict reader refuses where it expects tensors.
        let torchscript_class = module == "__torch__" || module.starts_with("__torch__.");
        let numpy = self.numpy && NUMPY_GLOBALS.contains(&full.as_str());
        if !ALLOWED_GLOBALS.contains(&full.as_str()) && !torchscript_class && !numpy {
            return self.push(Value::Foreign(full));
        }
        self.push(Value::Global(full))
    }

    fn set_items(&mut self, items: Vec<Value>) -> Result<(), String> {
        if !items.len().is_multiple_of(2) {
            return Err("pickle SETITEMS with an odd number of items".into());
        }
        let target = self.top_mut()?;
        let Value::Dict(d) = target else {
            return Err("pickle SETITEM on a non-dict".into());
        };
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            if let Some(slot) = d.iter_mut().find(|(kk, _)| *kk == k) {
                slot.1 = v;
            } else {
                d.push((k, v));
            }
        }
        Ok(())
    }

    fn reduce(&mut self, func: Value, args: Value) -> Result<Value, String> {
        if let Value::Foreign(name) = func {
            return Ok(Value::Foreign(name));
        }
        let Value::Global(name) = func else {
            return Err("pickle REDUCE on a non-callable".into());
        };
        // A TorchScript archive stores an enum member as its class applied to the member's
        // value (timm's `Format('NCHW')`): an inert record, as its module objects are.
        if name.starts_with("__torch__.") {
            return Ok(Value::Object {
                class: name,
                state: Box::new(args),
            });
        }
        let Value::Tuple(args) = args else {
            return Err("pickle REDUCE arguments are not a tuple".into());
        };
        match name.as_str() {
            "collections.OrderedDict" => Ok(Value::Dict(Vec::new())),
            "torch._utils._rebuild_parameter" => args
                .into_iter()
                .next()
                .ok_or_else(|| "_rebuild_parameter without data".to_string()),
            "torch._utils._rebuild_tensor_v2" => {
                if args.len() < 4 {
                    return Err("_rebuild_tensor_v2 with too few arguments".into());
                }
                let storage = storage_ref(&args[0])?;
                let offset = as_usize(&args[1])?;
                let size = usize_tuple(&args[2])?;
                let stride = usize_tuple(&args[3])?;
                if size.len() != stride.len() {
                    return Err("tensor size and stride lengths differ".into());
                }
                Ok(Value::Tensor(TensorRef {
                    storage,
                    offset,
                    size,
                    stride,
                }))
            }
            "torch.jit._pickle.build_intlist"
            | "torch.jit._pickle.build_doublelist"
            | "torch.jit._pickle.build_boollist"
            | "torch.jit._pickle.build_tensorlist"
            | "torch.jit._pickle.restore_type_tag" => args
                .into_iter()
                .next()
                .ok_or_else(|| format!("`{name}` without its argument")),
            "numpy.core.multiarray._reconstruct" | "numpy._core.multiarray._reconstruct" => {
                Ok(Value::Object {
                    class: "numpy.ndarray".into(),
                    state: Box::new(Value::None),
                })
            }
            "numpy.dtype" => Ok(Value::Object {
                class: "numpy.dtype".into(),
                state: Box::new(Value::Tuple(args)),
            }),
            other => Err(format!("pickle calls `{other}`, which is not allowed")),
        }
    }

    /// A byte string's value: copied, or in numpy mode a long one left in place.
    fn bytes_at(&mut self, n: usize) -> Result<Value, String> {
        let offset = self.pos;
        let s = self.take(n)?;
        if self.numpy && n >= BLOB_MIN {
            return Ok(Value::Blob { offset, len: n });
        }
        Ok(Value::Bytes(s.to_vec()))
    }

    fn run(mut self) -> Result<(Value, usize), String> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    let p = self.u8()?;
                    if p > 5 {
                        return Err(format!("unsupported pickle protocol {p}"));
                    }
                }
                0x95 => {
                    self.u64()?; // FRAME: length is advisory
                }
                b'.' => {
                    let v = self.pop()?;
                    return Ok((v, self.pos));
                }
                b'(' => self.push(Value::Mark)?,
                b'}' => self.push(Value::Dict(Vec::new()))?,
                b']' => self.push(Value::List(Vec::new()))?,
                b')' => self.push(Value::Tuple(Vec::new()))?,
                b'N' => self.push(Value::None)?,
                0x88 => self.push(Value::Bool(true))?,
                0x89 => self.push(Value::Bool(false))?,
                b'J' => {
                    let v = i32::from_le_bytes(self.take(4)?.try_into().unwrap());
                    self.push(Value::Int(v as i64))?
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(v as i64))?
                }
                b'M' => {
                    let v = self.u16()?;
                    self.push(Value::Int(v as i64))?
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    self.push(long_value(b))?
                }
                0x8b => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?;
                    self.push(long_value(b))?
                }
                b'I' => {
                    let l = self.line()?;
                    let v = match l {
                        "01" => Value::Bool(true),
                        "00" => Value::Bool(false),
                        _ => Value::Int(l.parse().map_err(|_| format!("bad INT `{l}`"))?),
                    };
                    self.push(v)?
                }
                b'L' => {
                    let l = self.line()?.trim_end_matches('L');
                    self.push(Value::Int(
                        l.parse().map_err(|_| format!("bad LONG `{l}`"))?,
                    ))?
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.take(8)?.try_into().unwrap());
                    self.push(Value::Float(v))?
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let s = self.take(n)?;
                    self.push(Value::Str(String::from_utf8_lossy(s).into_owned()))?
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let s = self.take(n)?;
                    self.push(Value::Str(String::from_utf8_lossy(s).into_owned()))?
                }
                0x8d => {
                    let n = usize::try_from(self.u64()?).map_err(|_| "length overflow")?;
                    let s = self.take(n)?;
                    self.push(Value::Str(String::from_utf8_lossy(s).into_owned()))?
                }
                b'T' => {
                    let n = self.u32()? as usize;
                    let v = self.bytes_at(n)?;
                    self.push(v)?
                }
                b'U' => {
                    let n = self.u8()? as usize;
                    let s = self.take(n)?;
                    self.push(Value::Bytes(s.to_vec()))?
                }
                b'B' => {
                    let n = self.u32()? as usize;
                    let v = self.bytes_at(n)?;
                    self.push(v)?
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    let s = self.take(n)?;
                    self.push(Value::Bytes(s.to_vec()))?
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.global(module, name)?
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => self.global(&m, &n)?,
                        _ => return Err("STACK_GLOBAL with non-string names".into()),
                    }
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Value::Tuple(items))?
                }
                0x85 => {
                    let a = self.pop()?;
                    self.push(Value::Tuple(vec![a]))?
                }
                0x86 => {
                    let b = self.pop()?;
                    let a = self.pop()?;
                    self.push(Value::Tuple(vec![a, b]))?
                }
                0x87 => {
                    let c = self.pop()?;
                    let b = self.pop()?;
                    let a = self.pop()?;
                    self.push(Value::Tuple(vec![a, b, c]))?
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push(Value::List(items))?
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    self.push(Value::Dict(Vec::new()))?;
                    self.set_items(items)?
                }
                b'a' => {
                    let v = self.pop()?;
                    match self.top_mut()? {
                        Value::List(l) => l.push(v),
                        _ => return Err("pickle APPEND on a non-list".into()),
                    }
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    match self.top_mut()? {
                        Value::List(l) => l.extend(items),
                        _ => return Err("pickle APPENDS on a non-list".into()),
                    }
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![k, v])?
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?
                }
                b'q' => {
                    let i = self.u8()? as u32;
                    self.memo_put(i)?
                }
                b'r' => {
                    let i = self.u32()?;
                    self.memo_put(i)?
                }
                b'p' => {
                    let l = self.line()?;
                    let i = l.parse().map_err(|_| format!("bad PUT `{l}`"))?;
                    self.memo_put(i)?
                }
                0x94 => {
                    let i = self.memo.len() as u32;
                    self.memo_put(i)?
                }
                b'h' => {
                    let i = self.u8()? as u32;
                    self.memo_get(i)?
                }
                b'j' => {
                    let i = self.u32()?;
                    self.memo_get(i)?
                }
                b'g' => {
                    let l = self.line()?;
                    let i = l.parse().map_err(|_| format!("bad GET `{l}`"))?;
                    self.memo_get(i)?
                }
                b'Q' => {
                    let pid = self.pop()?;
                    self.push(Value::PersId(Box::new(pid)))?
                }
                b'R' => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let v = self.reduce(func, args)?;
                    self.push(v)?
                }
                0x81 => {
                    // NEWOBJ: a TorchScript module record, or the whitelisted callables.
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let v = match cls {
                        Value::Global(c) if c.starts_with("__torch__.") => Value::Object {
                            class: c,
                            state: Box::new(Value::None),
                        },
                        cls => self.reduce(cls, args)?,
                    };
                    self.push(v)?
                }
                b'b' => {
                    // BUILD: a module record keeps its state; other objects' state (e.g. an
                    // OrderedDict's `_metadata`) is not needed.
                    let st = self.pop()?;
                    if let Value::Object { class, state } = self.top_mut()? {
                        if class == "numpy.dtype" {
                            continue;
                        }
                        if depth(&st) >= MAX_DEPTH {
                            return Err("pickle nests too deeply".into());
                        }
                        **state = st;
                    }
                }
                b'0' => {
                    self.pop()?;
                }
                b'2' => {
                    let top = self.stack.last().ok_or("pickle stack underflow")?;
                    let v = copy_within(&mut self.copy_budget, top)?;
                    self.push(v)?
                }
                b'1' => {
                    self.pop_mark()?;
                }
                other => {
                    return Err(format!(
                        "unsupported pickle opcode 0x{other:02x} at offset {}",
                        self.pos - 1
                    ))
                }
            }
        }
    }
}

fn long_value(b: &[u8]) -> Value {
    if b.is_empty() {
        return Value::Int(0);
    }
    if b.len() <= 8 {
        let neg = b[b.len() - 1] & 0x80 != 0;
        let mut buf = if neg { [0xffu8; 8] } else { [0u8; 8] };
        buf[..b.len()].copy_from_slice(b);
        Value::Int(i64::from_le_bytes(buf))
    } else {
        // Too large for i64 (torch's legacy magic number is one): keep the bytes.
        Value::Bytes(b.to_vec())
    }
}

fn as_usize(v: &Value) -> Result<usize, String> {
    match v {
        Value::Int(i) if *i >= 0 => Ok(*i as usize),
        _ => Err(format!("expected a non-negative integer, found {v:?}")),
    }
}

fn usize_tuple(v: &Value) -> Result<Vec<usize>, String> {
    match v {
        Value::Tuple(xs) | Value::List(xs) => xs.iter().map(as_usize).collect(),
        _ => Err("expected a tuple of integers".into()),
    }
}

/// Interpret torch's `persistent_id` tuple: zip archives write
/// `('storage', type, key, location, numel)`, the legacy stream
/// `('storage', type, root_key, location, numel, view_metadata)`.
fn storage_ref(v: &Value) -> Result<StorageRef, String> {
    let Value::PersId(pid) = v else {
        return Err("tensor storage is not a persistent id".into());
    };
    let Value::Tuple(items) = pid.as_ref() else {
        return Err("persistent id is not a tuple".into());
    };
    if items.len() < 5 || items[0] != Value::Str("storage".into()) {
        return Err("persistent id is not a torch storage".into());
    }
    let kind = match &items[1] {
        Value::Global(g) => g.trim_start_matches("torch.").to_string(),
        other => return Err(format!("storage type is not a global: {other:?}")),
    };
    let key = match &items[2] {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        _ => return Err("storage key is not a string".into()),
    };
    let mut view_offset = 0;
    if let Some(Value::Tuple(view)) = items.get(5) {
        if view.len() >= 2 {
            view_offset = as_usize(&view[1])?;
        }
    }
    Ok(StorageRef {
        kind,
        key,
        view_offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each DUP + APPEND (or memo GET + APPEND + PUT) doubles a nested list: 40 rounds would
    /// be 2^40 values. The copies are budgeted, so both end in an error at once.
    #[test]
    fn doubling_through_dup_or_memo_is_refused() {
        let mut dup = b"\x80\x02]".to_vec();
        let mut memo = b"\x80\x02]q\x00".to_vec();
        for _ in 0..40 {
            dup.extend_from_slice(b"2a");
            memo.extend_from_slice(b"h\x00aq\x00");
        }
        for data in [dup, memo] {
            let e = parse(&data).unwrap_err().0;
            assert!(e.contains("copies more than"), "{e}");
        }
        // A few rounds stay well inside the budget.
        let ok = b"\x80\x02]2a2a2a.";
        let (v, _) = parse(ok).unwrap();
        assert_eq!(nodes(&v, usize::MAX - 1), 8);
    }

    #[test]
    fn unknown_globals_stay_inert_names() {
        // protocol 2: GLOBAL 'os system', STOP
        let (v, _) = parse(b"\x80\x02cos\nsystem\n.").unwrap();
        assert_eq!(v, Value::Foreign("os.system".into()));
        // {'a': os.system('id')}: REDUCE makes the same inert name, nothing runs.
        let data = b"\x80\x02}q\x00X\x01\x00\x00\x00acos\nsystem\nX\x02\x00\x00\x00id\x85Rs.";
        let (v, _) = parse(data).unwrap();
        let want = Value::Dict(vec![(
            Value::Str("a".into()),
            Value::Foreign("os.system".into()),
        )]);
        assert_eq!(v, want);
        // argparse.Namespace() with BUILD state (NEWOBJ, BUILD): the name, the state dropped.
        let data = b"\x80\x02cargparse\nNamespace\n)\x81}X\x02\x00\x00\x00lrG?\xb9\x99\x99\x99\x99\x99\x9asb.";
        let (v, _) = parse(data).unwrap();
        assert_eq!(v, Value::Foreign("argparse.Namespace".into()));
    }

    #[test]
    fn torchscript_enum_members_are_inert_records() {
        // {'output_fmt': Format('NCHW')} as torch.jit.save writes a timm module's enum field:
        // GLOBAL '__torch__.timm.layers.format Format', BINUNICODE 'NCHW', REDUCE.
        let data = b"\x80\x02}X\x0a\x00\x00\x00output_fmtc__torch__.timm.layers.format\nFormat\nX\x04\x00\x00\x00NCHWRs.";
        let (v, _) = parse(data).unwrap();
        let want = Value::Object {
            class: "__torch__.timm.layers.format.Format".into(),
            state: Box::new(Value::Str("NCHW".into())),
        };
        assert_eq!(
            v,
            Value::Dict(vec![(Value::Str("output_fmt".into()), want)])
        );
        // Outside TorchScript's classes a non-tuple argument stays an error.
        let data = b"\x80\x02ccollections\nOrderedDict\nX\x01\x00\x00\x00aR.";
        assert!(parse(data).unwrap_err().0.contains("not a tuple"));
    }

    #[test]
    fn truncated_stream_is_an_error() {
        let data = b"\x80\x02X\xff\x00\x00\x00ab";
        assert!(parse(data).unwrap_err().0.contains("truncated"));
    }

    #[test]
    fn reads_a_small_dict() {
        // {'epoch': 3}
        let data = b"\x80\x02}q\x00X\x05\x00\x00\x00epochq\x01K\x03s.";
        let (v, _) = parse(data).unwrap();
        assert_eq!(
            v,
            Value::Dict(vec![(Value::Str("epoch".into()), Value::Int(3))])
        );
    }

    #[test]
    fn numpy_arrays_are_records_only_where_asked_for() {
        // _reconstruct(ndarray, (0,), b'b') then BUILD (1, (2,), dtype('u1'), False, data):
        // the torch reader keeps an inert name; numpy mode keeps the shape, dtype and bytes.
        let mut p = b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R(K\x01K\x02\x85cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89T".to_vec();
        let at = p.len() + 4;
        p.extend((BLOB_MIN as u32).to_le_bytes());
        p.extend(vec![7u8; BLOB_MIN]);
        p.extend(b"tb.");
        assert_eq!(
            parse(&p).unwrap().0,
            Value::Foreign("numpy.core.multiarray._reconstruct".into())
        );
        let Value::Object { class, state } = parse_numpy(&p).unwrap().0 else {
            panic!("not a record")
        };
        assert_eq!(class, "numpy.ndarray");
        let Value::Tuple(st) = *state else {
            panic!("no state")
        };
        assert_eq!(st[1], Value::Tuple(vec![Value::Int(2)]));
        assert_eq!(
            st[4],
            Value::Blob {
                offset: at,
                len: BLOB_MIN
            }
        );
        let Value::Object { class, state } = &st[2] else {
            panic!("no dtype")
        };
        assert_eq!(
            (class.as_str(), &**state),
            (
                "numpy.dtype",
                &Value::Tuple(vec![
                    Value::Bytes(b"u1".to_vec()),
                    Value::Int(0),
                    Value::Int(1)
                ])
            )
        );
        // Other callables stay inert names in numpy mode too.
        assert_eq!(
            parse_numpy(b"cos\nsystem\nU\x02id\x85R.").unwrap().0,
            Value::Foreign("os.system".into())
        );
    }
}
