//! The embedded kernel module: the fatbin build.rs compiled, the generated `Kernel` enum and
//! params structs, and typed launches.

use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use cudarc::driver::{CudaFunction, CudaModule, CudaStream, LaunchConfig, PushKernelArg};

include!(concat!(env!("OUT_DIR"), "/kernels.rs"));

/// SASS for sm_80 and sm_90 and PTX for compute_80; empty when the build found no nvcc.
static FATBIN: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/kernels.fatbin"));

/// Whether this build embeds compiled kernels.
pub const HAS_KERNELS: bool = cfg!(atomrl_kernels);
/// How the kernels were built, or why they were not.
pub const KERNELS_STATUS: &str = env!("ATOMRL_KERNELS_STATUS");

pub struct Module {
    _module: Arc<CudaModule>,
    functions: Vec<CudaFunction>,
}

impl Module {
    pub fn load(ctx: &Arc<cudarc::driver::CudaContext>) -> Result<Self> {
        if FATBIN.is_empty() {
            bail!("this build has no CUDA kernels ({KERNELS_STATUS}); run scripts/install-nvcc.sh, then rebuild");
        }
        let module = ctx
            .load_module(cudarc::nvrtc::Ptx::from_binary(FATBIN.to_vec()))
            .context("loading the embedded kernel module (fatbin: sm_80, sm_90, compute_80 PTX)")?;
        let functions = Kernel::ALL
            .iter()
            .map(|k| module.load_function(k.name()).with_context(|| format!("kernel {} ({}) missing from the module", k.name(), k.file())))
            .collect::<Result<Vec<_>>>()?;
        Ok(Module { _module: module, functions })
    }

    /// Launches `kernel` with its params struct as the only argument.
    pub fn launch<P: KernelParams + cudarc::driver::DeviceRepr>(&self, stream: &CudaStream, kernel: Kernel, cfg: LaunchConfig, params: &P) -> Result<()> {
        if kernel.params() != P::NAME {
            bail!("kernel {} takes {}, not {}", kernel.name(), kernel.params(), P::NAME);
        }
        let func = &self.functions[kernel as usize]; // ALL lists the variants in declaration order
        let mut args = stream.launch_builder(func);
        args.arg(params);
        // SAFETY: the params struct matches the kernel's (checked above and by the layout asserts);
        // the pointers in it are live device buffers sized by the caller.
        unsafe { args.launch(cfg) }.with_context(|| format!("launching {} ({})", kernel.name(), kernel.file()))?;
        Ok(())
    }
}

/// `blocks` blocks of `threads` threads, no dynamic shared memory.
pub fn grid(blocks: (u32, u32, u32), threads: u32) -> LaunchConfig {
    LaunchConfig { grid_dim: blocks, block_dim: (threads, 1, 1), shared_mem_bytes: 0 }
}

/// A grid-stride launch over `n` elements.
pub fn elementwise(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(256).clamp(1, 65535 * 8) as u32;
    grid((blocks, 1, 1), 256)
}
