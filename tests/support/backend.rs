//! The backend the golden tests run on: burn's flex CPU backend, or — with the tested crate's
//! `vulkan` feature — burn's Vulkan backend, i.e. the cubecl kernels that CUDA also runs (on Mesa's
//! lavapipe when the machine has no GPU).

#[cfg(not(feature = "vulkan"))]
pub type TestBackend = burn::backend::Flex;
#[cfg(feature = "vulkan")]
pub type TestBackend = burn::backend::Vulkan;
