//! Device memory: a caching pool of raw allocations, and the tensor and index types built on it.
//!
//! Sizes are rounded to classes (powers of two up to 1 MiB, then multiples of 2 MiB) and freed
//! buffers go back to a free list of their class. All work runs on one stream, so a buffer
//! dropped while a kernel still uses it is only handed out again to work queued after that
//! kernel: stream order makes the reuse safe without events. Activations and the KV cache come
//! from the same pool.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, Result};
use cudarc::driver::{result, sys::CUdeviceptr};

#[derive(Default)]
pub struct Pool {
    free: Mutex<HashMap<usize, Vec<CUdeviceptr>>>,
    /// Bytes held from the driver: in use plus cached.
    held: AtomicUsize,
}

fn size_class(bytes: usize) -> usize {
    const MIB: usize = 1 << 20;
    let bytes = bytes.max(256);
    if bytes <= MIB {
        bytes.next_power_of_two()
    } else {
        bytes.div_ceil(2 * MIB) * 2 * MIB
    }
}

impl Pool {
    pub fn alloc(self: &Arc<Self>, bytes: usize) -> Result<DevBuf> {
        let class = size_class(bytes);
        if let Some(ptr) = self.free.lock().unwrap().get_mut(&class).and_then(|v| v.pop()) {
            return Ok(DevBuf { ptr, bytes: class, pool: self.clone() });
        }
        // SAFETY: a plain allocation; the context is current (callers bind it).
        let ptr = match unsafe { result::malloc_sync(class) } {
            Ok(p) => p,
            Err(_) => {
                self.release_cached();
                unsafe { result::malloc_sync(class) }.with_context(|| format!("allocating {class} bytes of GPU memory"))?
            }
        };
        self.held.fetch_add(class, Ordering::Relaxed);
        Ok(DevBuf { ptr, bytes: class, pool: self.clone() })
    }

    /// Bytes held from the driver, in use or cached for reuse: the pool's high-water mark
    /// unless `release_cached` ran since.
    pub fn held_bytes(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Frees every cached buffer (after an allocation failure, or to shrink).
    pub fn release_cached(&self) {
        let mut free = self.free.lock().unwrap();
        for (class, ptrs) in free.drain() {
            for p in ptrs {
                self.held.fetch_sub(class, Ordering::Relaxed);
                // SAFETY: p came from malloc_sync and is in no live DevBuf.
                let _ = unsafe { result::free_sync(p) };
            }
        }
    }
}

/// A device allocation that returns to its pool on drop.
pub struct DevBuf {
    ptr: CUdeviceptr,
    bytes: usize,
    pool: Arc<Pool>,
}

impl DevBuf {
    pub fn ptr(&self) -> u64 {
        self.ptr
    }
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for DevBuf {
    fn drop(&mut self) {
        self.pool.free.lock().unwrap().entry(self.bytes).or_default().push(self.ptr);
    }
}

/// Element type of a [`CudaTensor`]: bf16 for activations and weights as the kernels read them,
/// f32 for master weights, optimizer state, logits and log-sum-exp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    Bf16,
    F32,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::Bf16 => 2,
            DType::F32 => 4,
        }
    }
}

pub struct CudaTensor {
    pub(crate) buf: DevBuf,
    pub(crate) len: usize,
    pub(crate) dtype: DType,
}

impl CudaTensor {
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn ptr(&self) -> u64 {
        self.buf.ptr()
    }
}

/// u32 values on the device: token ids, positions, block tables, offsets.
pub struct CudaIndex {
    pub(crate) buf: DevBuf,
    pub(crate) len: usize,
}

impl CudaIndex {
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn ptr(&self) -> u64 {
        self.buf.ptr()
    }
}
