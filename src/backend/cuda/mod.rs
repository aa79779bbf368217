//! The CUDA backend: the op set of [`Backend`](super::Backend) on hand-written kernels
//! (`kernels/*.cu`, one kernel per op under the op's name) and cuBLASLt for matrix products.
//!
//! - `device`: finding the driver, the context and the stream.
//! - `memory`: the caching pool, [`CudaTensor`] (bf16 or f32) and [`CudaIndex`] (u32).
//! - `module`: the embedded fatbin, the generated `Kernel` enum and params structs, launches.
//! - `blas`: cuBLASLt with cached descriptors.
//! - `ops`: the `Backend` implementation, one function per op.
//! - `backward`: the backward ops and the optimizer (f32 or bf16 tensors), called from `ops`.
//! - `loss`: the chunked policy-gradient and cross-entropy losses, called from `ops`.
//!
//! Tensors the trait's `zeros` and `from_f32` create are bf16, the storage type of activations
//! and weights as the kernels read them; `zeros_f32`, `from_f32_exact` and
//! [`CudaBackend::from_f32_as`] make f32 ones (logits, log-sum-exp, gradients, optimizer state,
//! master weights). An op that reads a tensor of the wrong type returns an error naming it.

mod backward;
mod blas;
mod device;
mod loss;
mod memory;
pub mod module;
mod ops;

use std::sync::Arc;

use anyhow::{bail, Result};

pub use device::{cublaslt_available, cuda_available, kernels_runnable};
pub use memory::{CudaIndex, CudaTensor, DType};

/// One GPU: its context and stream, the kernel module, cuBLASLt and the memory pool.
pub struct CudaBackend {
    dev: device::Device,
    module: module::Module,
    /// None when cuBLASLt is missing: every op but `gemm` still works.
    blas: Option<blas::Blas>,
    pool: Arc<memory::Pool>,
}

impl CudaBackend {
    /// Opens device `ordinal`. Fails with the reason when there is no driver, no GPU, or this
    /// build has no kernels. Without cuBLASLt it opens, and `gemm` reports what is missing.
    pub fn new(ordinal: usize) -> Result<Self> {
        let dev = device::Device::new(ordinal)?;
        dev.bind()?;
        let module = module::Module::load(&dev.ctx)?;
        let pool = Arc::new(memory::Pool::default());
        let blas = match device::cublaslt_available() {
            Ok(()) => Some(blas::Blas::new(pool.alloc(32 << 20)?)?),
            Err(_) => None,
        };
        Ok(CudaBackend { dev, module, blas, pool })
    }

    /// The GPU's name, e.g. "NVIDIA H100 80GB HBM3".
    pub fn device_name(&self) -> &str {
        &self.dev.name
    }

    pub fn sm_count(&self) -> u32 {
        self.dev.sm_count
    }

    /// (major, minor), e.g. (9, 0) for an H100.
    pub fn compute_capability(&self) -> (i32, i32) {
        self.dev.compute_capability
    }

    /// Device memory the backend holds (in use, or cached by its pool for reuse).
    pub fn pool_bytes(&self) -> usize {
        self.pool.held_bytes()
    }

    /// Waits for all queued work; also where an asynchronous kernel fault surfaces.
    pub fn synchronize(&self) -> Result<()> {
        self.dev.synchronize()
    }

    /// Uploads `data` stored as `dtype` (rounded to nearest even for bf16).
    pub fn from_f32_as(&self, data: &[f32], dtype: DType) -> Result<CudaTensor> {
        self.dev.bind()?;
        let t = self.alloc(data.len(), dtype)?;
        match dtype {
            DType::F32 => self.upload(t.ptr(), data)?,
            DType::Bf16 => {
                let host: Vec<half::bf16> = data.iter().map(|&x| half::bf16::from_f32(x)).collect();
                self.upload(t.ptr(), &host)?
            }
        }
        Ok(t)
    }

    fn alloc(&self, len: usize, dtype: DType) -> Result<CudaTensor> {
        let buf = self.pool.alloc(len * dtype.size())?;
        Ok(CudaTensor { buf, len, dtype })
    }

    fn alloc_zeroed(&self, len: usize, dtype: DType) -> Result<CudaTensor> {
        self.dev.bind()?;
        let t = self.alloc(len, dtype)?;
        // SAFETY: t owns len * size bytes.
        unsafe { cudarc::driver::result::memset_d8_async(t.ptr(), 0, len * dtype.size(), self.dev.stream.cu_stream()) }?;
        Ok(t)
    }

    /// Sets every element of `x` to `value` (rounded to bf16 for a bf16 tensor).
    pub(super) fn fill_impl(&self, x: &mut CudaTensor, value: f32) -> Result<()> {
        if x.len == 0 {
            return Ok(());
        }
        self.dev.bind()?;
        let stream = self.dev.stream.cu_stream();
        use cudarc::driver::sys::{cuMemsetD16Async, cuMemsetD32Async};
        // SAFETY: x owns len elements of its dtype.
        unsafe {
            match x.dtype {
                DType::F32 => cuMemsetD32Async(x.ptr(), value.to_bits(), x.len, stream),
                DType::Bf16 => cuMemsetD16Async(x.ptr(), half::bf16::from_f32(value).to_bits(), x.len, stream),
            }
        }
        .result()?;
        Ok(())
    }

    fn upload<T>(&self, dst: u64, data: &[T]) -> Result<()> {
        // SAFETY: dst holds at least size_of_val(data) bytes; the stream is synchronised before
        // `data` may be dropped.
        unsafe { cudarc::driver::result::memcpy_htod_async(dst, data, self.dev.stream.cu_stream()) }?;
        self.dev.synchronize()
    }

    fn download<T: Default + Clone>(&self, src: u64, len: usize) -> Result<Vec<T>> {
        let mut host = vec![T::default(); len];
        // SAFETY: src holds len elements of T; synchronised before returning.
        unsafe { cudarc::driver::result::memcpy_dtoh_async(&mut host, src, self.dev.stream.cu_stream()) }?;
        self.dev.synchronize()?;
        Ok(host)
    }
}

fn want_bf16(t: &CudaTensor, what: &str) -> Result<u64> {
    if t.dtype != DType::Bf16 {
        bail!("{what}: expected a bf16 tensor, got {:?}", t.dtype);
    }
    Ok(t.ptr())
}

fn want_len(t: &CudaTensor, len: usize, what: &str) -> Result<()> {
    if t.len < len {
        bail!("{what}: tensor has {} elements, the op needs {len}", t.len);
    }
    Ok(())
}
