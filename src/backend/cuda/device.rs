//! Finding the driver and the libraries, and the context and stream every op runs on.
//!
//! cudarc loads `libcuda.so` and `libcublasLt.so` lazily and panics when they are absent, so every
//! entry point asks [`cuda_available`] first and turns a missing piece into an error that names
//! it and where it was looked for.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Context as _, Result};
use cudarc::driver::{CudaContext, CudaStream};

/// Why this build or this machine cannot run the CUDA backend, or `Ok` when it can: a driver, a
/// GPU, kernels in this build, and cuBLASLt for the matrix products.
pub fn cuda_available() -> Result<(), String> {
    kernels_runnable()?;
    cublaslt_available()
}

/// cuBLASLt can be loaded: from the loader path, or from a CUDA toolkit's library folder
/// (`$CUDA_HOME/lib64`, `/usr/local/cuda/lib64`, ...) that is not on it.
pub fn cublaslt_available() -> Result<(), String> {
    // SAFETY: only tries to open the shared library.
    if unsafe { cudarc::cublaslt::sys::is_culib_present() } {
        return Ok(());
    }
    let dirs = toolkit_lib_dirs();
    if preload("cublasLt", &dirs) && unsafe { cudarc::cublaslt::sys::is_culib_present() } {
        return Ok(());
    }
    Err(format!(
        "cuBLASLt not found: looked for {} on the loader path and in {} (it ships with the CUDA toolkit; or set LD_LIBRARY_PATH)",
        lib_names("cublasLt"),
        dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
    ))
}

/// cuBLAS (the fallback for shapes cuBLASLt has no algorithm for), found like cuBLASLt.
pub(crate) fn cublas_available() -> Result<(), String> {
    // SAFETY: only tries to open the shared library.
    if unsafe { cudarc::cublas::sys::is_culib_present() } || (preload("cublas", &toolkit_lib_dirs()) && unsafe { cudarc::cublas::sys::is_culib_present() }) {
        return Ok(());
    }
    Err(format!("cuBLAS not found: looked for {} on the loader path and in the CUDA toolkit folders", lib_names("cublas")))
}

/// The kernels of this build can run here: a driver, a GPU and a non-empty module. (The GPU
/// tests use this, so that a machine without cuBLAS still checks every other op.)
pub fn kernels_runnable() -> Result<(), String> {
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
    cudarc::driver::result::init().map_err(|e| format!("the CUDA driver failed to initialise: {e}"))?;
    match cudarc::driver::result::device::get_count() {
        Ok(0) => Err("the CUDA driver sees no GPU".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("counting CUDA devices failed: {e}")),
    }
}

fn toolkit_lib_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(home) = std::env::var_os(var) {
            dirs.push(PathBuf::from(&home).join("lib64"));
            dirs.push(PathBuf::from(home).join("lib"));
        }
    }
    dirs.push(PathBuf::from("/usr/local/cuda/lib64"));
    dirs.push(PathBuf::from("/usr/local/cuda/targets/x86_64-linux/lib"));
    dirs.push(PathBuf::from("/usr/local/cuda/targets/sbsa-linux/lib"));
    dirs
}

/// Opens `lib` by full path from one of `dirs` and keeps it loaded, so that cudarc's later
/// lookup by name finds the already-loaded library (the dynamic loader matches it by soname).
fn preload(lib: &str, dirs: &[PathBuf]) -> bool {
    static KEPT: Mutex<Vec<libloading::Library>> = Mutex::new(Vec::new());
    for dir in dirs {
        for name in cudarc::get_lib_name_candidates(lib) {
            let path = dir.join(&name);
            if !path.is_file() {
                continue;
            }
            // SAFETY: loading a vendor library; its initialisers are trusted like cudarc's own load.
            if let Ok(l) = unsafe { libloading::Library::new(&path) } {
                KEPT.lock().unwrap().push(l);
                return true;
            }
        }
    }
    false
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
        kernels_runnable().map_err(|e| anyhow!(e))?;
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
