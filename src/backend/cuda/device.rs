//! Finding the driver and the libraries, and the context and stream every op runs on.
//!
//! cudarc loads `libcuda.so` and `libcublasLt.so` lazily and panics when they are absent, so every
//! entry point asks [`cuda_available`] first and turns a missing piece into an error that names
//! it and where it was looked for.

use std::sync::Arc;

use anyhow::{anyhow, Context as _, Result};
use cudarc::driver::{CudaContext, CudaStream};

/// Why this build or this machine cannot run the CUDA backend, or `Ok` when it can.
pub fn cuda_available() -> Result<(), String> {
    // SAFETY: only tries to open the shared library.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        let mut why = format!(
            "no CUDA driver (libcuda.so not found); looked for {} on the loader path (set LD_LIBRARY_PATH if it is elsewhere)",
            lib_names("cuda")
        );
        if !super::module::HAS_KERNELS {
            why.push_str("; this build also has no CUDA kernels: run scripts/install-nvcc.sh, then rebuild");
        }
        return Err(why);
    }
    if !super::module::HAS_KERNELS {
        return Err(format!(
            "this build has no CUDA kernels ({}); run scripts/install-nvcc.sh, then rebuild (cargo build)",
            super::module::KERNELS_STATUS
        ));
    }
    // SAFETY: as above.
    if !unsafe { cudarc::cublaslt::sys::is_culib_present() } {
        return Err(format!(
            "cuBLASLt not found (looked for {} on the loader path; it ships with the CUDA toolkit or the nvidia-cublas wheel)",
            lib_names("cublasLt")
        ));
    }
    cudarc::driver::result::init().map_err(|e| format!("the CUDA driver failed to initialise: {e}"))?;
    match cudarc::driver::result::device::get_count() {
        Ok(0) => Err("the CUDA driver sees no GPU".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("counting CUDA devices failed: {e}")),
    }
}

fn lib_names(lib: &str) -> String {
    let names = cudarc::get_lib_name_candidates(lib);
    names.iter().take(3).cloned().collect::<Vec<_>>().join(", ") + ", ..."
}

/// The device, its context and the one stream all work is ordered on.
pub struct Device {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub name: String,
    pub sm_count: u32,
    pub compute_capability: (i32, i32),
}

impl Device {
    pub fn new(ordinal: usize) -> Result<Self> {
        cuda_available().map_err(|e| anyhow!(e))?;
        let ctx = CudaContext::new(ordinal).with_context(|| format!("creating a CUDA context on device {ordinal}"))?;
        // One stream orders everything, and buffers are raw pointers owned by our pool, so
        // cudarc's per-buffer event tracking has nothing to do.
        // SAFETY: no CudaSlice is shared across streams.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().context("creating a CUDA stream")?;
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let sm_count = ctx
            .attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .context("reading the SM count")? as u32;
        let compute_capability = ctx.compute_capability().context("reading the compute capability")?;
        if compute_capability.0 < 8 {
            anyhow::bail!("{name} has compute capability {}.{}; the kernels need 8.0 or newer (bf16 tensor cores)", compute_capability.0, compute_capability.1);
        }
        Ok(Device { ctx, stream, name, sm_count, compute_capability })
    }

    /// Makes the context current on the calling thread (ops may come from any thread).
    pub fn bind(&self) -> Result<()> {
        self.ctx.bind_to_thread().context("binding the CUDA context")
    }

    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().context("CUDA stream synchronize (an earlier kernel may have failed)")
    }
}
