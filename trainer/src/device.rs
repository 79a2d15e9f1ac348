//! Run-time backend choice from the experiment's `device` key: `cpu` is burn's flex backend,
//! `cuda`/`cuda:N` burn-cuda (only in a build with `--features cuda`), `vulkan` burn's wgpu backend
//! on Vulkan (only in a build with `--features vulkan`). A GPU request on a machine without a
//! usable driver/GPU ends in a clear error instead of a panic.

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
        Device::Vulkan => vulkan::dispatch(job),
    }
}

/// Runs one small op on `device`; a GPU runtime panics (in a device thread and then in the
/// caller) when the driver library or the device is missing. `Err(true)`: it panicked;
/// `Err(false)`: it computed a wrong result.
#[cfg(any(feature = "cuda", feature = "vulkan"))]
fn probe<B: burn::tensor::backend::Backend>(device: &B::Device) -> Result<(), bool> {
    use burn::tensor::Tensor;
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    // The device is only read; a panic leaves nothing half-updated behind.
    let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let t = Tensor::<B, 1>::ones([4], device);
        t.sum()
            .into_data()
            .to_vec::<f32>()
            .map(|v| v.first().copied() == Some(4.0))
            .unwrap_or(false)
    }));
    std::panic::set_hook(previous);
    match ok {
        Ok(true) => Ok(()),
        Ok(false) => Err(false),
        Err(_) => Err(true),
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use super::*;
    use burn::backend::Cuda;
    use burn::backend::cuda::CudaDevice;

    pub fn probe(index: usize) -> Result<(), TrainError> {
        super::probe::<Cuda>(&CudaDevice { index }).map_err(|panicked| {
            TrainError::Device(if panicked {
                format!(
                    "device = \"cuda:{index}\" but no usable CUDA GPU was found (libcuda.so.1 could not be loaded or device {index} does not exist); install the NVIDIA driver, check `nvidia-smi`, or set device = \"cpu\""
                )
            } else {
                format!("cuda:{index} computed a wrong result in a self-test; check the driver")
            })
        })
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

#[cfg(feature = "vulkan")]
mod vulkan {
    use super::*;
    use burn::backend::Vulkan;
    use burn::backend::wgpu::WgpuDevice;

    pub fn dispatch<W: WithBackend>(job: W) -> Result<W::Output, TrainError> {
        // The best adapter wgpu finds: a discrete GPU first, Mesa's lavapipe on a CPU-only host.
        let device = WgpuDevice::DefaultDevice;
        super::probe::<Vulkan>(&device).map_err(|panicked| {
            TrainError::Device(if panicked {
                "device = \"vulkan\" but no Vulkan adapter was found; install the GPU's Vulkan driver (check `vulkaninfo --summary`; on a machine without a GPU, Mesa's lavapipe: `apt install mesa-vulkan-drivers`) or set device = \"cpu\"".to_string()
            } else {
                "vulkan computed a wrong result in a self-test; check the driver".to_string()
            })
        })?;
        Ok(job.run::<Autodiff<Vulkan>>(device))
    }
}

#[cfg(not(feature = "vulkan"))]
mod vulkan {
    use super::*;

    pub fn dispatch<W: WithBackend>(_job: W) -> Result<W::Output, TrainError> {
        Err(TrainError::Device(
            "device = \"vulkan\" but this glm-tune was built without Vulkan support; rebuild with `cargo build --release --features vulkan` or set device = \"cpu\"".to_string(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Noop;
    impl WithBackend for Noop {
        type Output = ();
        fn run<B: TrainBackend>(self, _device: B::Device) {}
    }

    #[test]
    fn cpu_runs_the_job() {
        assert!(dispatch(Device::Cpu, Noop).is_ok());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_names_the_rebuild() {
        let err = dispatch(Device::Cuda(1), Noop).unwrap_err().to_string();
        assert!(
            err.contains("cuda:1") && err.contains("--features cuda"),
            "{err}"
        );
    }

    #[cfg(not(feature = "vulkan"))]
    #[test]
    fn vulkan_without_the_feature_names_the_rebuild() {
        let err = dispatch(Device::Vulkan, Noop).unwrap_err().to_string();
        assert!(
            err.contains("\"vulkan\"") && err.contains("--features vulkan"),
            "{err}"
        );
    }
}
