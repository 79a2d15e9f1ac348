//! A minimal, code-free pickle VM for `data.pkl` of `torch.save` archives.
//!
//! It understands the opcodes that pickled state dicts use (protocols 2-5). `GLOBAL` /
//! `STACK_GLOBAL` are resolved against the allowlist of [`super::state_dict`] at the opcode that
//! names them, and `INST`/`OBJ`/`EXT*`/`NEWOBJ_EX` are refused outright, so a hostile file never
//! reaches a callable; `REDUCE` and `BINPERSID` are evaluated symbolically by that module.
//! Values are reference-counted so memoized objects are shared as in Python.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

use super::error::IoError;
use super::state_dict::{Global, StorageRef, TensorRef, resolve_global};

pub(super) type Shared<T> = Rc<RefCell<T>>;

/// A pickled Python value, as far as state dicts need them.
#[derive(Debug, Clone)]
pub(super) enum Value {
    None,
    // Values state dicts never inspect keep no payload.
    Bool,
    Int(i64),
    Float,
    Str(Rc<str>),
    Bytes,
    Tuple(Rc<[Value]>),
    List(Shared<Vec<Value>>),
    /// Insertion-ordered items; duplicate keys are resolved (last wins) when the state dict is read.
    Dict(Shared<Vec<(Value, Value)>>),
    Global(Global),
    Layout,
    Storage(Rc<StorageRef>),
    Tensor(Rc<TensorRef>),
}

impl Value {
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool => "bool",
            Value::Int(_) => "int",
            Value::Float => "float",
            Value::Str(_) => "str",
            Value::Bytes => "bytes",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global(_) => "global",
            Value::Layout => "torch.layout",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
        }
    }
}

pub(super) struct Vm<'a> {
    pub(super) file: &'a Path,
    pub(super) data: &'a [u8],
    pub(super) pos: usize,
    /// Offset of the opcode being executed (for error messages).
    pub(super) op_pos: usize,
    pub(super) stack: Vec<Value>,
    pub(super) marks: Vec<usize>,
    pub(super) memo: HashMap<u64, Value>,
}

impl<'a> Vm<'a> {
    /// A VM over `data` (the bytes of `data.pkl` of `file`).
    pub(super) fn new(file: &'a Path, data: &'a [u8]) -> Vm<'a> {
        Vm {
            file,
            data,
            pos: 0,
            op_pos: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
        }
    }

    pub(super) fn err(&self, message: impl Into<String>) -> IoError {
        IoError::Pickle {
            file: self.file.to_path_buf(),
            offset: self.op_pos,
            message: message.into(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], IoError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        match end {
            Some(end) => {
                let s = &self.data[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(self.err(format!(
                "pickle ends inside an operand ({n} bytes needed); data.pkl is truncated"
            ))),
        }
    }

    fn u8(&mut self) -> Result<u8, IoError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, IoError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, IoError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, IoError> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes([
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
        ]))
    }

    /// A length operand, checked against the remaining input before anything is allocated.
    fn len_operand(&mut self, n: u64) -> Result<usize, IoError> {
        let rest = (self.data.len() - self.pos) as u64;
        if n > rest {
            return Err(self.err(format!("operand of {n} bytes exceeds the {rest} bytes left; data.pkl is truncated or corrupt")));
        }
        Ok(n as usize)
    }

    fn line(&mut self) -> Result<&'a str, IoError> {
        let rest = &self.data[self.pos..];
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            return Err(self.err("unterminated text operand"));
        };
        self.pos += nl + 1;
        std::str::from_utf8(&rest[..nl]).map_err(|_| self.err("text operand is not UTF-8"))
    }

    fn pop(&mut self) -> Result<Value, IoError> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.err("stack underflow"));
        }
        self.stack.pop().ok_or_else(|| self.err("stack underflow"))
    }

    fn top(&self) -> Result<&Value, IoError> {
        self.stack.last().ok_or_else(|| self.err("stack underflow"))
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>, IoError> {
        let m = self
            .marks
            .pop()
            .ok_or_else(|| self.err("no MARK on the stack"))?;
        Ok(self.stack.split_off(m))
    }

    fn memo_put(&mut self, idx: u64) -> Result<(), IoError> {
        let v = self.top()?.clone();
        self.memo.insert(idx, v);
        Ok(())
    }

    fn memo_get(&mut self, idx: u64) -> Result<(), IoError> {
        let v = self
            .memo
            .get(&idx)
            .cloned()
            .ok_or_else(|| self.err(format!("memo entry {idx} is not defined")))?;
        self.stack.push(v);
        Ok(())
    }

    fn global(&mut self, module: &str, name: &str) -> Result<(), IoError> {
        match resolve_global(module, name) {
            Some(g) => {
                self.stack.push(Value::Global(g));
                Ok(())
            }
            None => Err(IoError::ForbiddenGlobal {
                file: self.file.to_path_buf(),
                offset: self.op_pos,
                module: module.to_string(),
                name: name.to_string(),
            }),
        }
    }

    fn set_items(&mut self, dict: &Value, flat: Vec<Value>) -> Result<(), IoError> {
        let Value::Dict(d) = dict else {
            return Err(self.err(format!("SETITEM(S) on a {}", dict.kind())));
        };
        if !flat.len().is_multiple_of(2) {
            return Err(self.err("SETITEMS with an odd number of items"));
        }
        let mut d = d.borrow_mut();
        let mut it = flat.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            d.push((k, v));
        }
        Ok(())
    }

    fn append(&mut self, list: &Value, items: Vec<Value>) -> Result<(), IoError> {
        match list {
            Value::List(l) => {
                l.borrow_mut().extend(items);
                Ok(())
            }
            other => Err(self.err(format!("APPEND(S) on a {}", other.kind()))),
        }
    }

    pub(super) fn run(&mut self) -> Result<Value, IoError> {
        loop {
            self.op_pos = self.pos;
            let op = self
                .u8()
                .map_err(|_| self.err("pickle ends without STOP; data.pkl is truncated"))?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return Err(self.err(format!("unsupported pickle protocol {proto}")));
                    }
                }
                0x95 => {
                    self.u64()?; // FRAME: length hint only
                }
                b'.' => return self.pop(),
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.stack.push(v);
                }
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool),
                0x89 => self.stack.push(Value::Bool),
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v as i64));
                }
                b'M' => {
                    let v = self.u16()?;
                    self.stack.push(Value::Int(v as i64));
                }
                b'J' => {
                    let v = self.u32()? as i32;
                    self.stack.push(Value::Int(v as i64));
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a {
                        self.u8()? as u64
                    } else {
                        self.u32()? as u64
                    };
                    let n = self.len_operand(n)?;
                    if n > 8 {
                        return Err(
                            self.err(format!("integer of {n} bytes does not fit in 64 bits"))
                        );
                    }
                    let b = self.take(n)?;
                    let mut v: i64 = 0;
                    for (i, &byte) in b.iter().enumerate() {
                        v |= (byte as i64) << (8 * i);
                    }
                    // Sign-extend the little-endian two's-complement value.
                    if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                        v |= -1i64 << (8 * n);
                    }
                    self.stack.push(Value::Int(v));
                }
                b'I' => {
                    let l = self.line()?;
                    let v = match l {
                        "00" | "01" => Value::Bool,
                        _ => Value::Int(
                            l.parse()
                                .map_err(|_| self.err(format!("bad INT operand `{l}`")))?,
                        ),
                    };
                    self.stack.push(v);
                }
                b'G' => {
                    self.take(8)?;
                    self.stack.push(Value::Float);
                }
                b'X' | 0x8c | 0x8d => {
                    let n = match op {
                        b'X' => self.u32()? as u64,
                        0x8c => self.u8()? as u64,
                        _ => self.u64()?,
                    };
                    let n = self.len_operand(n)?;
                    let b = self.take(n)?;
                    let s = std::str::from_utf8(b)
                        .map_err(|_| self.err("string operand is not UTF-8"))?;
                    self.stack.push(Value::Str(Rc::from(s)));
                }
                b'T' | b'U' => {
                    // Python-2 `str`: bytes; torch keys are ASCII, so keep valid UTF-8 as text.
                    let n = if op == b'T' {
                        self.u32()? as u64
                    } else {
                        self.u8()? as u64
                    };
                    let n = self.len_operand(n)?;
                    let b = self.take(n)?;
                    let v = match std::str::from_utf8(b) {
                        Ok(s) => Value::Str(Rc::from(s)),
                        Err(_) => Value::Bytes,
                    };
                    self.stack.push(v);
                }
                b'B' | b'C' | 0x8e | 0x96 => {
                    let n = match op {
                        b'B' => self.u32()? as u64,
                        b'C' => self.u8()? as u64,
                        _ => self.u64()?,
                    };
                    let n = self.len_operand(n)?;
                    self.take(n)?;
                    self.stack.push(Value::Bytes);
                }
                b')' => self.stack.push(Value::Tuple(Rc::from(Vec::new()))),
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let floor = self.marks.last().copied().unwrap_or(0);
                    if self.stack.len() < floor + n {
                        return Err(self.err("stack underflow"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(Rc::from(items)));
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(Rc::from(items)));
                }
                b']' => self
                    .stack
                    .push(Value::List(Rc::new(RefCell::new(Vec::new())))),
                b'l' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::List(Rc::new(RefCell::new(items))));
                }
                0x8f => self
                    .stack
                    .push(Value::List(Rc::new(RefCell::new(Vec::new())))),
                0x91 => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::List(Rc::new(RefCell::new(items))));
                }
                b'a' => {
                    let v = self.pop()?;
                    let list = self.top()?.clone();
                    self.append(&list, vec![v])?;
                }
                b'e' | 0x90 => {
                    let items = self.pop_mark()?;
                    let list = self.top()?.clone();
                    self.append(&list, items)?;
                }
                b'}' => self
                    .stack
                    .push(Value::Dict(Rc::new(RefCell::new(Vec::new())))),
                b'd' => {
                    let items = self.pop_mark()?;
                    let dict = Value::Dict(Rc::new(RefCell::new(Vec::new())));
                    self.set_items(&dict, items)?;
                    self.stack.push(dict);
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    let dict = self.top()?.clone();
                    self.set_items(&dict, vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let dict = self.top()?.clone();
                    self.set_items(&dict, items)?;
                }
                b'q' => {
                    let i = self.u8()? as u64;
                    self.memo_put(i)?;
                }
                b'r' => {
                    let i = self.u32()? as u64;
                    self.memo_put(i)?;
                }
                0x94 => {
                    let i = self.memo.len() as u64;
                    self.memo_put(i)?;
                }
                b'p' => {
                    let l = self.line()?;
                    let i = l
                        .parse()
                        .map_err(|_| self.err(format!("bad PUT operand `{l}`")))?;
                    self.memo_put(i)?;
                }
                b'h' => {
                    let i = self.u8()? as u64;
                    self.memo_get(i)?;
                }
                b'j' => {
                    let i = self.u32()? as u64;
                    self.memo_get(i)?;
                }
                b'g' => {
                    let l = self.line()?;
                    let i = l
                        .parse()
                        .map_err(|_| self.err(format!("bad GET operand `{l}`")))?;
                    self.memo_get(i)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.global(module, name)?;
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => self.global(&m, &n)?,
                        _ => return Err(self.err("STACK_GLOBAL operands are not strings")),
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let storage = self.persistent_load(pid)?;
                    self.stack.push(storage);
                }
                b'R' => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let v = self.call(func, args)?;
                    self.stack.push(v);
                }
                0x81 => {
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    match (&cls, &args) {
                        (Value::Global(Global::OrderedDict), Value::Tuple(a)) if a.is_empty() => {
                            self.stack
                                .push(Value::Dict(Rc::new(RefCell::new(Vec::new()))))
                        }
                        _ => {
                            return Err(self.err(format!(
                                "NEWOBJ of a {} is not allowed in a state dict",
                                cls.kind()
                            )));
                        }
                    }
                }
                b'b' => {
                    let state = self.pop()?;
                    match (self.top()?, &state) {
                        // OrderedDict attributes (`_metadata` of `module.state_dict()`): not items.
                        (Value::Dict(_), Value::Dict(_) | Value::None) => {}
                        // `_rebuild_parameter_with_state`-style tensor attributes are irrelevant here.
                        (Value::Tensor(_), _) => {}
                        (obj, _) => {
                            return Err(self.err(format!(
                                "BUILD on a {} is not allowed in a state dict",
                                obj.kind()
                            )));
                        }
                    }
                }
                b'P' => return Err(self.err("text PERSID is not used by torch.save; refusing")),
                b'i' | b'o' | 0x82..=0x84 | 0x92 => {
                    return Err(self.err(format!(
                        "opcode 0x{op:02x} instantiates arbitrary Python objects; a state dict must never run code"
                    )));
                }
                _ => return Err(self.err(format!(
                    "unsupported pickle opcode 0x{op:02x}; data.pkl is corrupt or not a state dict"
                ))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(bytes: &[u8]) -> Result<Value, IoError> {
        Vm::new(Path::new("t.pkl"), bytes).run()
    }

    #[test]
    fn memo_shares_mutable_objects_like_python() {
        // l = []; d = {"k": l}; then l.append(7) through the memo: d["k"] sees the append.
        let v = eval(b"\x80\x02}q\x00X\x01\x00\x00\x00k]q\x01sh\x01K\x07a0.").unwrap();
        let Value::Dict(d) = v else {
            panic!("not a dict")
        };
        let d = d.borrow();
        let Value::List(l) = &d[0].1 else {
            panic!("not a list")
        };
        assert!(matches!(l.borrow()[..], [Value::Int(7)]));
    }

    #[test]
    fn ints_decode_like_cpython() {
        assert!(matches!(eval(b"\x8a\x01\xff.").unwrap(), Value::Int(-1)));
        assert!(matches!(
            eval(b"\x8a\x02\x00\x80.").unwrap(),
            Value::Int(-32768)
        ));
        assert!(matches!(
            eval(b"J\xff\xff\xff\xff.").unwrap(),
            Value::Int(-1)
        ));
        assert!(matches!(eval(b"\x8a\x00.").unwrap(), Value::Int(0)));
        assert!(eval(b"\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01.").is_err());
    }

    #[test]
    fn stack_discipline_is_checked() {
        // POP below a MARK, SETITEM on an int, TUPLE without a MARK, no STOP.
        for bad in [&b"(0."[..], b"K\x01K\x02K\x03s.", b"K\x01t.", b"K\x01"] {
            assert!(eval(bad).is_err(), "{bad:?} accepted");
        }
    }
}
