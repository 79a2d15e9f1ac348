//! Checkpoint file I/O without burn: raw bytes + dtype + shape.
//!
//! # Reading
//! - [`CheckpointDir::open`]`(dir)` indexes a Hugging Face model directory, preferring
//!   `model.safetensors` > `model.safetensors.index.json` > `pytorch_model.bin` >
//!   `pytorch_model.bin.index.json` (as `transformers` does); [`CheckpointDir::open_format`] picks
//!   one explicitly and [`CheckpointDir::available_formats`] lists what is there. Index files
//!   (`{"metadata": .., "weight_map": {name: shard}}`) are honoured; `metadata.total_size` is ignored
//!   (stale in the real ChatGLM-6B index).
//! - [`CheckpointDir::tensors`] → [`TensorInfo`] `{name, dtype, shape, file}` shard by shard in
//!   file order; [`CheckpointDir::read`]`(name)` → [`RawTensor`];
//!   [`CheckpointDir::read_checked`]`(name, dtypes, shape)` and [`CheckpointDir::read_f32`] fail with
//!   the file and tensor named; [`CheckpointDir::stream`] yields `(info, tensor)` one at a time so a
//!   loader can convert/quantize and drop each tensor before the next is read.
//! - Single files: [`TensorFile::open`] (format sniffed), [`TorchFile`], [`SafetensorsFile`].
//!
//! Only the byte range of the requested tensor is read (seek + read): opening parses the zip
//! directory and `data.pkl`, or the safetensors JSON header, nothing else.
//!
//! `torch.save` files are read by a small pickle VM that executes no code: only torch's
//! tensor-rebuild globals (`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`,
//! `torch._utils._rebuild_parameter`, `torch.*Storage`, `torch.serialization._get_layout`,
//! `torch.strided`) are accepted; any other global (`os.system`, `builtins.eval`, ...) is an
//! [`IoError::ForbiddenGlobal`]. Strided views and tensors sharing one storage are supported;
//! legacy pre-1.6 (non-zip) torch files are an [`IoError::LegacyTorch`] with the conversion recipe.
//!
//! # Writing
//! - [`write_safetensors`]`(path, tensors, metadata)`.
//! - [`write_torch_state_dict`]`(path, tensors)`: a `torch.save`-identical zip (protocol-2 pickle of a
//!   `dict`, as the reference Trainer writes `checkpoint-N/pytorch_model.bin`; archive folder = file
//!   stem, STORED records aligned to 64 bytes); [`write_torch_state_dict_with`] with
//!   [`TorchContainer::OrderedDict`] writes what `torch.save(model.state_dict())` writes.
//!
//! Both writers write to a temporary sibling and rename it into place.
//!
//! # Errors
//! Every [`IoError`] names the file and, where one is involved, the tensor. [`RawTensor`]
//! conversions return a context-free [`ConvertError`]; [`IoError::Convert`] adds the names.

mod checkpoint;
mod error;
mod pickle;
mod safetensors_io;
mod state_dict;
mod tensor;
mod torch_read;
mod torch_write;

pub use checkpoint::{CheckpointDir, CheckpointFormat, TensorFile};
pub use error::IoError;
pub use safetensors_io::{SafetensorsFile, write_safetensors};
pub use tensor::{ConvertError, DType, RawTensor, TensorInfo};
pub use torch_read::TorchFile;
pub use torch_write::{TorchContainer, write_torch_state_dict, write_torch_state_dict_with};
