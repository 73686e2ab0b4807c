//! A pickle interpreter that never imports or calls anything.
//!
//! `GLOBAL` only yields a name; `REDUCE` understands the torch rebuild functions and
//! `collections.OrderedDict`, and turns every other call into an inert [`Value::Unsupported`].
//! Containers live in an arena and are referenced by index, so cloning a value is cheap (no
//! blow-up through the memo) and there is no recursive drop or cycle however the pickle nests.

use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;

use super::DType;

/// Cap on open `MARK`s, so hostile input cannot grow the mark stack without bound.
const MAX_MARKS: usize = 10_000;
/// Every opcode allocates a few dozen bytes at most, so this bounds memory (~1 GB) even for a
/// small, highly compressed data.pkl. ViT-H needs ~20k; 100k tensors would need ~3M.
const MAX_OPS: usize = 16 << 20;

#[derive(Debug, Clone)]
pub(crate) enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    /// A `module.name` from `GLOBAL`/`STACK_GLOBAL`: a name, nothing imported.
    Global(Rc<str>),
    /// A list, tuple or dict in [`Pickle::heap`].
    Obj(usize),
    Storage(Rc<Storage>),
    Tensor(Rc<TensorSpec>),
    /// Result of a call or class the interpreter does not know, described for error messages.
    Unsupported(Rc<str>),
}

#[derive(Debug)]
pub(crate) enum Obj {
    List(Vec<Value>),
    Tuple(Vec<Value>),
    /// Items in insertion order; a repeated key is resolved by the reader (the later one wins).
    Dict(Vec<(Value, Value)>),
}

/// A storage referenced by `BINPERSID ('storage', type, key, location, numel)`.
#[derive(Debug)]
pub(crate) struct Storage {
    pub dtype: DType,
    pub key: String,
}

/// `_rebuild_tensor_v2(storage, offset, size, stride, ...)`, unchecked: the reader validates it.
#[derive(Debug)]
pub(crate) struct TensorSpec {
    pub storage: Rc<Storage>,
    pub offset: Value,
    pub size: Value,
    pub stride: Value,
}

/// The unpickled object graph.
pub(crate) struct Pickle {
    pub heap: Vec<Obj>,
    pub root: Value,
}

#[derive(Debug)]
pub(crate) struct PickleError {
    pub offset: usize,
    pub message: String,
}

impl Pickle {
    pub fn obj(&self, v: &Value) -> Option<&Obj> {
        match v {
            Value::Obj(i) => self.heap.get(*i),
            _ => None,
        }
    }

    pub fn dict(&self, v: &Value) -> Option<&[(Value, Value)]> {
        match self.obj(v) {
            Some(Obj::Dict(items)) => Some(items),
            _ => None,
        }
    }

    pub fn seq(&self, v: &Value) -> Option<&[Value]> {
        match self.obj(v) {
            Some(Obj::Tuple(items) | Obj::List(items)) => Some(items),
            _ => None,
        }
    }

    /// A short description of a value for error messages (never recursive).
    pub fn describe(&self, v: &Value) -> String {
        match v {
            Value::None => "None".into(),
            Value::Bool(b) => format!("bool {b}"),
            Value::Int(i) => format!("int {i}"),
            Value::Float(x) => format!("float {x}"),
            Value::Str(s) => format!("str {:?}", truncate(s)),
            Value::Bytes(b) => format!("bytes of length {}", b.len()),
            Value::Global(g) => format!("global {g}"),
            Value::Obj(_) => match self.obj(v) {
                Some(Obj::List(l)) => format!("a list of {}", l.len()),
                Some(Obj::Tuple(t)) => format!("a tuple of {}", t.len()),
                Some(Obj::Dict(d)) => format!("a dict of {} entries", d.len()),
                None => "a dangling reference".into(),
            },
            Value::Storage(s) => format!("a bare storage '{}'", s.key),
            Value::Tensor(_) => "a tensor".into(),
            Value::Unsupported(what) => format!("an unsupported object ({what})"),
        }
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(60) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

impl fmt::Display for PickleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "byte {}: {}", self.offset, self.message)
    }
}

/// Interprets `data` up to its `STOP`.
pub(crate) fn parse(data: &[u8]) -> Result<Pickle, PickleError> {
    let mut m = Machine {
        data,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        heap: Vec::new(),
    };
    let mut op_start = 0;
    m.run(&mut op_start).map_err(|message| PickleError {
        offset: op_start,
        message,
    })
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    /// Stacks saved by `MARK`, as CPython does: popping past a mark is then a plain underflow.
    marks: Vec<Vec<Value>>,
    memo: HashMap<u32, Value>,
    heap: Vec<Obj>,
}

type R<T> = Result<T, String>;

impl<'a> Machine<'a> {
    fn run(&mut self, op_start: &mut usize) -> R<Pickle> {
        for _ in 0..MAX_OPS {
            *op_start = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    // PROTO
                    let proto = self.u8()?;
                    if proto > 5 {
                        return Err(format!("pickle protocol {proto} not supported"));
                    }
                }
                0x95 => {
                    // FRAME: framing is only a buffering hint.
                    self.take(8)?;
                }
                b'.' => {
                    let root = self.pop()?;
                    return Ok(Pickle {
                        heap: std::mem::take(&mut self.heap),
                        root,
                    });
                }
                b'(' => {
                    if self.marks.len() >= MAX_MARKS {
                        return Err("nesting too deep".into());
                    }
                    let saved = std::mem::take(&mut self.stack);
                    self.marks.push(saved);
                }
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let top = self.top()?.clone();
                    self.stack.push(top);
                }
                b'}' => self.push_obj(Obj::Dict(Vec::new())),
                b']' => self.push_obj(Obj::List(Vec::new())),
                b')' => self.push_obj(Obj::Tuple(Vec::new())),
                b'd' => {
                    let items = self.pop_mark()?;
                    let pairs = pairs(items)?;
                    self.push_obj(Obj::Dict(pairs));
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push_obj(Obj::List(items));
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.push_obj(Obj::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    if self.stack.len() < n {
                        return Err("stack underflow".into());
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.push_obj(Obj::Tuple(items));
                }
                b'a' => {
                    let item = self.pop()?;
                    self.list_mut()?.push(item);
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.list_mut()?.extend(items);
                }
                b's' => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    self.dict_mut()?.push((key, value));
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let items = pairs(items)?;
                    self.dict_mut()?.extend(items);
                }
                b'q' => {
                    let i = self.u8()?;
                    self.put(u32::from(i))?;
                }
                b'r' => {
                    let i = self.u32()?;
                    self.put(i)?;
                }
                0x94 => {
                    let i = u32::try_from(self.memo.len()).map_err(|_| "memo full")?;
                    self.put(i)?;
                }
                b'h' => {
                    let i = self.u8()?;
                    self.get(u32::from(i))?;
                }
                b'j' => {
                    let i = self.u32()?;
                    self.get(i)?;
                }
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'J' => {
                    let b = self.take(4)?;
                    self.stack.push(Value::Int(
                        i32::from_le_bytes([b[0], b[1], b[2], b[3]]).into(),
                    ));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v.into()));
                }
                b'M' => {
                    let b = self.take(2)?;
                    self.stack
                        .push(Value::Int(u16::from_le_bytes([b[0], b[1]]).into()));
                }
                0x8a => {
                    let n = usize::from(self.u8()?);
                    let b = self.take(n)?;
                    self.stack.push(long(b)?);
                }
                0x8b => {
                    let n = self.len32()?;
                    let b = self.take(n)?;
                    self.stack.push(long(b)?);
                }
                b'G' => {
                    let b = self.take(8)?;
                    let mut a = [0; 8];
                    a.copy_from_slice(b);
                    self.stack.push(Value::Float(f64::from_be_bytes(a)));
                }
                b'X' => {
                    let n = self.len32()?;
                    self.push_str(n)?;
                }
                0x8c => {
                    let n = usize::from(self.u8()?);
                    self.push_str(n)?;
                }
                0x8d => {
                    let n = self.len64()?;
                    self.push_str(n)?;
                }
                // BINSTRING / SHORT_BINSTRING: Python 2 str, read as text (torch writes ASCII keys).
                b'T' => {
                    let n = self.len32()?;
                    let b = self.take(n)?;
                    self.stack
                        .push(Value::Str(String::from_utf8_lossy(b).as_ref().into()));
                }
                b'U' => {
                    let n = usize::from(self.u8()?);
                    let b = self.take(n)?;
                    self.stack
                        .push(Value::Str(String::from_utf8_lossy(b).as_ref().into()));
                }
                b'B' => {
                    let n = self.len32()?;
                    let b = self.take(n)?;
                    self.stack.push(Value::Bytes(b.into()));
                }
                b'C' => {
                    let n = usize::from(self.u8()?);
                    let b = self.take(n)?;
                    self.stack.push(Value::Bytes(b.into()));
                }
                0x8e => {
                    let n = self.len64()?;
                    let b = self.take(n)?;
                    self.stack.push(Value::Bytes(b.into()));
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.stack
                        .push(Value::Global(format!("{module}.{name}").into()));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(module), Value::Str(name)) => self
                            .stack
                            .push(Value::Global(format!("{module}.{name}").into())),
                        _ => return Err("STACK_GLOBAL needs two strings".into()),
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let storage = self.persistent_load(&pid)?;
                    self.stack.push(storage);
                }
                b'R' => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let v = self.reduce(&func, &args, 0)?;
                    self.stack.push(v);
                }
                0x81 => {
                    // NEWOBJ: cls.__new__(cls, *args); no class we know is built this way.
                    let _args = self.pop()?;
                    let cls = self.pop()?;
                    self.stack.push(unsupported(&cls, "__new__"));
                }
                0x92 => {
                    let _kwargs = self.pop()?;
                    let _args = self.pop()?;
                    let cls = self.pop()?;
                    self.stack.push(unsupported(&cls, "__new__"));
                }
                b'b' => {
                    // BUILD sets state on the object below; the state of dicts (e.g. an
                    // OrderedDict's `_metadata`) and tensors is irrelevant to the values.
                    let _state = self.pop()?;
                    self.top()?;
                }
                _ => return Err(format!("pickle opcode 0x{op:02x} not supported")),
            }
        }
        Err(format!("more than {MAX_OPS} opcodes: not a state dict"))
    }

    fn u8(&mut self) -> R<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> R<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn len32(&mut self) -> R<usize> {
        usize::try_from(self.u32()?).map_err(|_| "length too large".into())
    }

    fn len64(&mut self) -> R<usize> {
        let b = self.take(8)?;
        let mut a = [0; 8];
        a.copy_from_slice(b);
        usize::try_from(u64::from_le_bytes(a)).map_err(|_| "length too large".into())
    }

    /// The next `n` bytes; `n` is checked against what is left before anything is allocated.
    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        let data = self.data;
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= data.len())
            .ok_or_else(|| {
                format!(
                    "truncated pickle: needs {n} more bytes, {} left",
                    data.len() - self.pos
                )
            })?;
        let out = &data[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn line(&mut self) -> R<String> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("truncated pickle: unterminated GLOBAL name")?;
        let s = std::str::from_utf8(&rest[..n]).map_err(|_| "GLOBAL name is not UTF-8")?;
        self.pos += n + 1;
        Ok(s.to_owned())
    }

    fn push_str(&mut self, n: usize) -> R<()> {
        let b = self.take(n)?;
        let s = std::str::from_utf8(b).map_err(|_| "string is not valid UTF-8")?;
        self.stack.push(Value::Str(s.into()));
        Ok(())
    }

    fn push_obj(&mut self, obj: Obj) {
        self.heap.push(obj);
        self.stack.push(Value::Obj(self.heap.len() - 1));
    }

    fn pop(&mut self) -> R<Value> {
        self.stack.pop().ok_or_else(|| "stack underflow".into())
    }

    fn top(&self) -> R<&Value> {
        self.stack.last().ok_or_else(|| "stack underflow".into())
    }

    fn pop_mark(&mut self) -> R<Vec<Value>> {
        let saved = self.marks.pop().ok_or("no MARK on the stack")?;
        Ok(std::mem::replace(&mut self.stack, saved))
    }

    fn put(&mut self, i: u32) -> R<()> {
        let v = self.top()?.clone();
        self.memo.insert(i, v);
        Ok(())
    }

    fn get(&mut self, i: u32) -> R<()> {
        let v = self
            .memo
            .get(&i)
            .ok_or_else(|| format!("memo key {i} missing"))?
            .clone();
        self.stack.push(v);
        Ok(())
    }

    fn container_mut(&mut self) -> R<&mut Obj> {
        match self.stack.last() {
            Some(Value::Obj(i)) => Ok(&mut self.heap[*i]),
            Some(_) => Err("APPEND/SETITEM target is not a list or dict".into()),
            None => Err("stack underflow".into()),
        }
    }

    fn list_mut(&mut self) -> R<&mut Vec<Value>> {
        match self.container_mut()? {
            Obj::List(l) => Ok(l),
            _ => Err("APPEND target is not a list".into()),
        }
    }

    fn dict_mut(&mut self) -> R<&mut Vec<(Value, Value)>> {
        match self.container_mut()? {
            Obj::Dict(d) => Ok(d),
            _ => Err("SETITEM target is not a dict".into()),
        }
    }

    fn tuple(&self, v: &Value) -> Option<&[Value]> {
        match v {
            Value::Obj(i) => match &self.heap[*i] {
                Obj::Tuple(t) => Some(t),
                _ => None,
            },
            _ => None,
        }
    }

    fn persistent_load(&self, pid: &Value) -> R<Value> {
        let bad = || "persistent id is not ('storage', type, key, location, numel)".to_string();
        let t = self.tuple(pid).ok_or_else(bad)?;
        match t {
            [Value::Str(tag), Value::Global(ty), key, _location, _numel] if &**tag == "storage" => {
                let key = match key {
                    Value::Str(s) => s.to_string(),
                    Value::Int(i) => i.to_string(),
                    _ => return Err(bad()),
                };
                Ok(Value::Storage(Rc::new(Storage {
                    dtype: storage_dtype(ty),
                    key,
                })))
            }
            _ => Err(bad()),
        }
    }

    /// `func(*args)` for the few functions a state dict needs; anything else stays inert.
    fn reduce(&mut self, func: &Value, args: &Value, depth: u8) -> R<Value> {
        let Value::Global(name) = func else {
            return Ok(unsupported(func, "call"));
        };
        let Some(args) = self.tuple(args) else {
            return Err(format!("REDUCE of {name}: arguments are not a tuple"));
        };
        match (&**name, args) {
            ("torch._utils._rebuild_tensor_v2" | "torch._utils._rebuild_tensor", args)
                if args.len() >= 4 =>
            {
                let Value::Storage(storage) = &args[0] else {
                    return Ok(Value::Unsupported(
                        format!("{name} of a non-storage").into(),
                    ));
                };
                Ok(Value::Tensor(Rc::new(TensorSpec {
                    storage: storage.clone(),
                    offset: args[1].clone(),
                    size: args[2].clone(),
                    stride: args[3].clone(),
                })))
            }
            // A Parameter is its tensor plus flags we do not need.
            (
                "torch._utils._rebuild_parameter" | "torch._utils._rebuild_parameter_with_state",
                [tensor @ Value::Tensor(_), ..],
            ) => Ok(tensor.clone()),
            // Tensor subclasses: `_rebuild_from_type_v2(func, type, args, state)`.
            ("torch._tensor._rebuild_from_type_v2", [inner, _ty, inner_args, ..]) if depth == 0 => {
                let (inner, inner_args) = (inner.clone(), inner_args.clone());
                self.reduce(&inner, &inner_args, depth + 1)
            }
            ("collections.OrderedDict", []) => {
                self.heap.push(Obj::Dict(Vec::new()));
                Ok(Value::Obj(self.heap.len() - 1))
            }
            _ => Ok(Value::Unsupported(format!("{name}(...)").into())),
        }
    }
}

fn unsupported(callee: &Value, what: &str) -> Value {
    match callee {
        Value::Global(name) => Value::Unsupported(format!("{name}.{what}").into()),
        _ => Value::Unsupported(format!("{what} of a non-global").into()),
    }
}

fn pairs(items: Vec<Value>) -> R<Vec<(Value, Value)>> {
    if !items.len().is_multiple_of(2) {
        return Err("odd number of items for a dict".into());
    }
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

/// LONG1/LONG4: little-endian two's complement; anything wider than i64 is rejected.
fn long(b: &[u8]) -> R<Value> {
    if b.len() > 8 {
        let sign = if b[7] & 0x80 != 0 { 0xff } else { 0 };
        if b[8..].iter().any(|&x| x != sign) {
            return Err("integer does not fit in 64 bits".into());
        }
    }
    let mut a = if b.last().is_some_and(|&x| x & 0x80 != 0) {
        [0xff; 8]
    } else {
        [0; 8]
    };
    let n = b.len().min(8);
    a[..n].copy_from_slice(&b[..n]);
    Ok(Value::Int(i64::from_le_bytes(a)))
}

/// Storage classes (`torch.FloatStorage`) and dtypes (`torch.float32`) to element types.
fn storage_dtype(name: &str) -> DType {
    let short = name.strip_prefix("torch.").unwrap_or(name);
    match short {
        "FloatStorage" | "float32" | "float" => DType::F32,
        "HalfStorage" | "float16" | "half" => DType::F16,
        "BFloat16Storage" | "bfloat16" => DType::BF16,
        "DoubleStorage" | "float64" | "double" => DType::F64,
        "LongStorage" => DType::Other("int64".into()),
        "IntStorage" => DType::Other("int32".into()),
        "ShortStorage" => DType::Other("int16".into()),
        "CharStorage" => DType::Other("int8".into()),
        "ByteStorage" => DType::Other("uint8".into()),
        "BoolStorage" => DType::Other("bool".into()),
        _ => DType::Other(name.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(data: &[u8]) -> String {
        match parse(data) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn parses_a_small_dict() {
        // {'a': 1, 'b': [None, 2.5]} in protocol 2.
        let mut p = b"\x80\x02}q\x00(X\x01\x00\x00\x00aK\x01X\x01\x00\x00\x00b]q\x01(NG".to_vec();
        p.extend_from_slice(&2.5f64.to_be_bytes());
        p.extend_from_slice(b"eu.");
        let pk = parse(&p).unwrap();
        let d = pk.dict(&pk.root).unwrap();
        assert_eq!(d.len(), 2);
        assert!(matches!(&d[0].1, Value::Int(1)));
        let l = pk.seq(&d[1].1).unwrap();
        assert!(matches!(l[1], Value::Float(x) if x == 2.5));
    }

    #[test]
    fn rejects_hostile_input() {
        assert!(err(b"0").contains("stack underflow"));
        assert!(err(b"h\x05").contains("memo key 5 missing"));
        assert!(err(b"X\xff\xff\xff\x7fab").contains("truncated pickle"));
        assert!(err(b"\x8d\xff\xff\xff\xff\xff\xff\xff\xff").contains("truncated pickle"));
        assert!(err(b"\xff").contains("pickle opcode 0xff not supported"));
        assert!(err(&[b'('; MAX_MARKS + 1]).contains("nesting too deep"));
        assert!(err(b"(N1N0.").contains("stack underflow"));
        assert!(err(b"K\x01K\x02a").contains("not a list"));
        assert!(err(b"").contains("truncated"));
    }

    #[test]
    fn globals_are_inert() {
        let pk = parse(b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00ls\x85R.").unwrap();
        assert!(matches!(&pk.root, Value::Unsupported(s) if s.contains("os.system")));
    }

    #[test]
    fn long_values() {
        assert!(matches!(long(&[0xff]).unwrap(), Value::Int(-1)));
        assert!(matches!(long(&[]).unwrap(), Value::Int(0)));
        assert!(matches!(long(&[0, 1]).unwrap(), Value::Int(256)));
        assert!(long(&[0, 0, 0, 0, 0, 0, 0, 0, 1]).is_err());
        assert!(matches!(long(&[0xff; 9]).unwrap(), Value::Int(-1)));
    }
}
