//! Torch semantics on top of the pickle VM: the allowlist of globals a state dict may name, the
//! `BINPERSID` storage records, the symbolic `REDUCE` of `_rebuild_tensor_v2` /
//! `_rebuild_parameter` / `OrderedDict`, and the extraction of the flat `name -> tensor` dict.
//! No tensor data is touched here: a tensor is a [`TensorRef`] (storage key, dtype, shape,
//! strides, offset).

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

use super::error::IoError;
use super::pickle::{Value, Vm};
use super::tensor::DType;

/// A storage named by a `BINPERSID` record: `('storage', torch.HalfStorage, key, location, numel)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StorageRef {
    /// Record key: the bytes live in `<archive>/data/<key>`.
    pub key: String,
    pub dtype: DType,
    /// Storage length in elements (not bytes).
    pub numel: u64,
}

/// A tensor view into a storage, as `_rebuild_tensor_v2(storage, offset, size, stride, ...)` builds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TensorRef {
    pub storage: Rc<StorageRef>,
    /// Offset of element 0 in the storage, in elements.
    pub offset: u64,
    pub shape: Vec<usize>,
    /// Strides in elements.
    pub strides: Vec<usize>,
}

/// The allowlisted globals.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Global {
    OrderedDict,
    RebuildTensor,
    RebuildTensorV2,
    RebuildParameter,
    RebuildParameterWithState,
    GetLayout,
    Strided,
    Storage(DType),
}

pub(super) fn resolve_global(module: &str, name: &str) -> Option<Global> {
    Some(match (module, name) {
        ("collections", "OrderedDict") => Global::OrderedDict,
        ("torch._utils", "_rebuild_tensor") => Global::RebuildTensor,
        ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
        ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
        ("torch._utils", "_rebuild_parameter_with_state") => Global::RebuildParameterWithState,
        ("torch.serialization", "_get_layout") => Global::GetLayout,
        ("torch", "strided") => Global::Strided,
        ("torch" | "torch.cuda", storage) => {
            Global::Storage(DType::from_torch_storage_name(storage)?)
        }
        _ => return None,
    })
}

/// Parse `data.pkl` of a torch zip archive into `(key, tensor)` pairs in state-dict order.
///
/// Non-tensor entries of the top-level dict are skipped with a warning; a top level that is not a
/// dict, or a dict without any tensor, is a [`IoError::NotStateDict`].
pub(crate) fn parse_state_dict(
    file: &Path,
    data: &[u8],
) -> Result<Vec<(String, TensorRef)>, IoError> {
    let mut vm = Vm::new(file, data);
    let top = vm.run()?;
    let Value::Dict(items) = top else {
        return Err(IoError::NotStateDict {
            file: file.to_path_buf(),
            message: format!("data.pkl holds a {}, not a dict of tensors", top.kind()),
        });
    };
    let items = items.borrow();
    let mut out: Vec<(String, TensorRef)> = Vec::with_capacity(items.len());
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut skipped: Vec<String> = Vec::new();
    for (k, v) in items.iter() {
        let key = match k {
            Value::Str(s) => s.to_string(),
            other => {
                return Err(IoError::NotStateDict {
                    file: file.to_path_buf(),
                    message: format!(
                        "a key of the top-level dict is a {}, not a str",
                        other.kind()
                    ),
                });
            }
        };
        match v {
            Value::Tensor(t) => match index.get(&key) {
                Some(&i) => out[i].1 = (**t).clone(),
                None => {
                    index.insert(key.clone(), out.len());
                    out.push((key, (**t).clone()));
                }
            },
            other => {
                tracing::warn!(file = %file.display(), key = %key, kind = other.kind(), "skipping non-tensor state-dict entry");
                skipped.push(format!("`{key}` ({})", other.kind()));
            }
        }
    }
    if out.is_empty() {
        return Err(IoError::NotStateDict {
            file: file.to_path_buf(),
            message: if skipped.is_empty() {
                "the top-level dict is empty".to_string()
            } else {
                format!(
                    "the top-level dict holds no tensors, only {} (a training checkpoint wrapping the state dict?)",
                    skipped.join(", ")
                )
            },
        });
    }
    Ok(out)
}

impl Vm<'_> {
    pub(super) fn persistent_load(&self, pid: Value) -> Result<Value, IoError> {
        let Value::Tuple(t) = &pid else {
            return Err(self.err(format!(
                "persistent id is a {}, expected a ('storage', ...) tuple",
                pid.kind()
            )));
        };
        match &t[..] {
            [Value::Str(tag), Value::Global(Global::Storage(dtype)), Value::Str(key), Value::Str(_location), Value::Int(numel)]
                if &**tag == "storage" && *numel >= 0 =>
            {
                Ok(Value::Storage(Rc::new(StorageRef { key: key.to_string(), dtype: *dtype, numel: *numel as u64 })))
            }
            _ => Err(self.err(
                "persistent id is not ('storage', torch.<Type>Storage, key, location, numel); unsupported storage type or corrupt data.pkl",
            )),
        }
    }

    fn int_tuple(&self, v: &Value, what: &str) -> Result<Vec<usize>, IoError> {
        let Value::Tuple(t) = v else {
            return Err(self.err(format!(
                "tensor {what} is a {}, expected a tuple of ints",
                v.kind()
            )));
        };
        t.iter()
            .map(|x| match x {
                Value::Int(i) if *i >= 0 => Ok(*i as usize),
                _ => Err(self.err(format!("tensor {what} holds a negative or non-int entry"))),
            })
            .collect()
    }

    pub(super) fn call(&self, func: Value, args: Value) -> Result<Value, IoError> {
        let Value::Tuple(a) = &args else {
            return Err(self.err(format!(
                "REDUCE arguments are a {}, expected a tuple",
                args.kind()
            )));
        };
        let Value::Global(g) = func else {
            return Err(self.err(format!(
                "REDUCE on a {}, which is not callable here",
                func.kind()
            )));
        };
        match g {
            Global::OrderedDict => match &a[..] {
                [] => Ok(Value::Dict(Rc::new(RefCell::new(Vec::new())))),
                [Value::List(items)] => {
                    let mut pairs = Vec::new();
                    for it in items.borrow().iter() {
                        match it {
                            Value::Tuple(kv) if kv.len() == 2 => {
                                pairs.push((kv[0].clone(), kv[1].clone()))
                            }
                            _ => {
                                return Err(
                                    self.err("OrderedDict(...) argument is not a list of pairs")
                                );
                            }
                        }
                    }
                    Ok(Value::Dict(Rc::new(RefCell::new(pairs))))
                }
                _ => Err(self.err("unsupported OrderedDict(...) arguments")),
            },
            Global::RebuildTensor | Global::RebuildTensorV2 => {
                if a.len() < 4 {
                    return Err(self.err(format!(
                        "_rebuild_tensor with {} arguments (at least 4 expected)",
                        a.len()
                    )));
                }
                let Value::Storage(storage) = &a[0] else {
                    return Err(self.err(format!(
                        "_rebuild_tensor storage argument is a {}",
                        a[0].kind()
                    )));
                };
                let Value::Int(offset) = a[1] else {
                    return Err(self.err("_rebuild_tensor storage offset is not an int"));
                };
                if offset < 0 {
                    return Err(self.err("negative storage offset"));
                }
                let shape = self.int_tuple(&a[2], "size")?;
                let strides = self.int_tuple(&a[3], "stride")?;
                if shape.len() != strides.len() {
                    return Err(self.err(format!(
                        "size has {} dims but stride has {}",
                        shape.len(),
                        strides.len()
                    )));
                }
                if let Some(Value::Dict(hooks)) = a.get(5)
                    && !hooks.borrow().is_empty()
                {
                    return Err(self.err("tensor carries backward hooks; not a plain state dict"));
                }
                Ok(Value::Tensor(Rc::new(TensorRef {
                    storage: storage.clone(),
                    offset: offset as u64,
                    shape,
                    strides,
                })))
            }
            Global::RebuildParameter | Global::RebuildParameterWithState => match a.first() {
                Some(Value::Tensor(t)) => Ok(Value::Tensor(t.clone())),
                _ => Err(self.err("_rebuild_parameter without a tensor argument")),
            },
            Global::GetLayout => Ok(Value::Layout),
            Global::Strided | Global::Storage(_) => {
                Err(self.err("a torch layout/storage class is called; not a state dict"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn run(bytes: &[u8]) -> Result<Vec<(String, TensorRef)>, IoError> {
        parse_state_dict(&PathBuf::from("t.bin"), bytes)
    }

    /// The pickle the reference Trainer wrote for the golden prefix checkpoint (f32 [4, 384]).
    const GOLDEN_PREFIX_PKL: &[u8] = b"\x80\x02}q\x00X+\x00\x00\x00transformer.prefix_encoder.embedding.weightq\x01ctorch._utils\n_rebuild_tensor_v2\nq\x02((X\x07\x00\x00\x00storageq\x03ctorch\nFloatStorage\nq\x04X\x01\x00\x00\x000q\x05X\x03\x00\x00\x00cpuq\x06M\x00\x06tq\x07QK\x00K\x04M\x80\x01\x86q\x08M\x80\x01K\x01\x86q\t\x89ccollections\nOrderedDict\nq\n)Rq\x0btq\x0cRq\rs.";

    #[test]
    fn parses_a_torch_state_dict() {
        let t = run(GOLDEN_PREFIX_PKL).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].0, "transformer.prefix_encoder.embedding.weight");
        let r = &t[0].1;
        assert_eq!(
            (r.storage.key.as_str(), r.storage.dtype, r.storage.numel),
            ("0", DType::F32, 1536)
        );
        assert_eq!(
            (r.offset, r.shape.clone(), r.strides.clone()),
            (0, vec![4, 384], vec![384, 1])
        );
    }

    #[test]
    fn refuses_code_globals() {
        for (module, name) in [
            ("os", "system"),
            ("posix", "system"),
            ("builtins", "eval"),
            ("__builtin__", "exec"),
        ] {
            let mut p = b"\x80\x02c".to_vec();
            p.extend_from_slice(format!("{module}\n{name}\n").as_bytes());
            p.extend_from_slice(b"X\x02\x00\x00\x00idq\x00\x85R.");
            match run(&p) {
                Err(IoError::ForbiddenGlobal {
                    module: m,
                    name: n,
                    offset,
                    ..
                }) => {
                    assert_eq!((m.as_str(), n.as_str(), offset), (module, name, 2));
                }
                other => panic!("{module}.{name}: expected ForbiddenGlobal, got {other:?}"),
            }
        }
        // STACK_GLOBAL goes through the same allowlist.
        let p = b"\x80\x04\x8c\x02os\x8c\x06system\x93.";
        assert!(matches!(run(p), Err(IoError::ForbiddenGlobal { .. })));
        // Object-instantiating opcodes are refused outright.
        let e = run(b"\x80\x02(iposix\nsystem\n.").unwrap_err().to_string();
        assert!(e.contains("must never run code"), "{e}");
    }

    #[test]
    fn rejects_malformed_input_without_panicking() {
        // Truncated everywhere: every prefix of a valid pickle is an error, never a panic.
        for n in 0..GOLDEN_PREFIX_PKL.len() - 1 {
            assert!(run(&GOLDEN_PREFIX_PKL[..n]).is_err(), "prefix {n} accepted");
        }
        // A huge length operand does not allocate.
        assert!(run(b"\x80\x02X\xff\xff\xff\x7f").is_err());
        // Not a dict.
        assert!(matches!(
            run(b"\x80\x02K\x01."),
            Err(IoError::NotStateDict { .. })
        ));
        // Unknown memo entry.
        assert!(run(b"\x80\x02h\x05.").is_err());
    }

    #[test]
    fn non_tensor_entries_are_named() {
        // {'a': 2**40} is not a tensor -> NotStateDict listing the skipped key; LONG1 decodes.
        let p = b"\x80\x02}X\x01\x00\x00\x00a\x8a\x06\x00\x00\x00\x00\x00\x01s.";
        let e = run(p).unwrap_err().to_string();
        assert!(e.contains("`a` (int)"), "{e}");
    }
}
