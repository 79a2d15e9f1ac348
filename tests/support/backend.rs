//! The backend the golden tests run on: burn's flex CPU backend; with the tested crate's `cuda`
//! feature burn's CUDA backend; with its `vulkan` feature burn's Vulkan backend, i.e. the cubecl
//! kernels that CUDA also runs (on Mesa's lavapipe when the machine has no GPU).

#[cfg(not(any(feature = "cuda", feature = "vulkan")))]
pub type TestBackend = burn::backend::Flex;
#[cfg(feature = "cuda")]
pub type TestBackend = burn::backend::Cuda;
#[cfg(all(feature = "vulkan", not(feature = "cuda")))]
pub type TestBackend = burn::backend::Vulkan;
