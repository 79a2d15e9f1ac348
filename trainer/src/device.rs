//! Run-time backend choice from the experiment's `device` key: `cpu` is burn's flex backend,
//! `cuda`/`cuda:N` burn-cuda (only in a build with `--features cuda`). A CUDA request on a machine
//! without a usable driver/GPU ends in a clear error instead of a panic.

use burn::backend::{Autodiff, Flex};

use crate::config::Device;
use crate::error::TrainError;
use crate::step::TrainBackend;

/// Code to run on whichever backend the experiment selects.
pub trait WithBackend {
    type Output;
    /// Run on backend `B` with `device`.
    fn run<B: TrainBackend>(self, device: B::Device) -> Self::Output;
}

/// The CPU backend of training runs.
pub type CpuBackend = Autodiff<Flex>;

/// Run `job` on the backend of `device`.
pub fn dispatch<W: WithBackend>(device: Device, job: W) -> Result<W::Output, TrainError> {
    match device {
        Device::Cpu => Ok(job.run::<CpuBackend>(Default::default())),
        Device::Cuda(index) => cuda::dispatch(index, job),
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use super::*;
    use burn::backend::Cuda;
    use burn::backend::cuda::CudaDevice;
    use burn::prelude::*;

    /// Probe the device with one small op; the CUDA runtime panics (in a device thread and then
    /// in the caller) when the driver library or the GPU is missing.
    pub fn probe(index: usize) -> Result<(), TrainError> {
        let device = CudaDevice { index };
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let ok = std::panic::catch_unwind(|| {
            let t = Tensor::<Cuda, 1>::ones([4], &device);
            t.sum()
                .into_data()
                .to_vec::<f32>()
                .map(|v| v.first().copied() == Some(4.0))
                .unwrap_or(false)
        });
        std::panic::set_hook(previous);
        match ok {
            Ok(true) => Ok(()),
            Ok(false) => Err(TrainError::Device(format!(
                "cuda:{index} computed a wrong result in a self-test; check the driver"
            ))),
            Err(_) => Err(TrainError::Device(format!(
                "device = \"cuda:{index}\" but no usable CUDA GPU was found (libcuda.so.1 could not be loaded or device {index} does not exist); install the NVIDIA driver, check `nvidia-smi`, or set device = \"cpu\""
            ))),
        }
    }

    pub fn dispatch<W: WithBackend>(index: usize, job: W) -> Result<W::Output, TrainError> {
        probe(index)?;
        Ok(job.run::<Autodiff<Cuda>>(CudaDevice { index }))
    }
}

#[cfg(not(feature = "cuda"))]
mod cuda {
    use super::*;

    pub fn dispatch<W: WithBackend>(index: usize, _job: W) -> Result<W::Output, TrainError> {
        Err(TrainError::Device(format!(
            "device = \"cuda:{index}\" but this glm-tune was built without CUDA support; rebuild with `cargo build --release --features cuda` (no CUDA toolkit needed at build time) or set device = \"cpu\""
        )))
    }
}
