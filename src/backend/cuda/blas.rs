//! Matrix products on cuBLASLt: bf16 inputs, f32 accumulation, bf16 or f32 output. The Lt
//! descriptors and the chosen algorithm are cached per shape.
//!
//! When cuBLASLt's heuristic offers no algorithm for a shape (odd leading dimensions can do
//! that), the product falls back to `cublasGemmEx` with the same operands.
//!
//! Row-major `out[m,n] = A[m,k]·B[k,n]` is computed as the column-major `out^T = B^T·A^T`, so
//! cuBLAS's first operand is our `b` and its second our `a`, with no copies.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Mutex;

use anyhow::{anyhow, Context as _, Result};
use cudarc::cublaslt::{result as lt, sys};

use super::memory::{DType, DevBuf};
use crate::backend::Gemm;

const WORKSPACE_BYTES: usize = 32 << 20;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    m: usize,
    n: usize,
    k: usize,
    trans_a: bool,
    trans_b: bool,
    out_f32: bool,
}

struct Plan {
    desc: sys::cublasLtMatmulDesc_t,
    a: sys::cublasLtMatrixLayout_t,
    b: sys::cublasLtMatrixLayout_t,
    c: sys::cublasLtMatrixLayout_t,
    /// None: no Lt algorithm for this shape, use cublasGemmEx.
    algo: Option<sys::cublasLtMatmulAlgo_t>,
}

pub struct Blas {
    handle: sys::cublasLtHandle_t,
    workspace: DevBuf,
    plans: Mutex<HashMap<Key, Plan>>,
    /// Created on first use by a shape without an Lt algorithm.
    fallback: Mutex<Option<cudarc::cublas::sys::cublasHandle_t>>,
}

// SAFETY: the handles and descriptors are only used under their locks, on the one stream.
unsafe impl Send for Blas {}
unsafe impl Sync for Blas {}

fn cublas<T>(r: Result<T, cudarc::cublaslt::result::CublasError>, what: &str) -> Result<T> {
    r.map_err(|e| anyhow!("cuBLASLt {what}: {e:?}"))
}

impl Blas {
    pub fn new(workspace: DevBuf) -> Result<Self> {
        let handle = cublas(lt::create_handle(), "create handle")?;
        Ok(Blas { handle, workspace, plans: Mutex::new(HashMap::new()), fallback: Mutex::new(None) })
    }

    /// `out (+)= a·b` as described by [`Gemm`]; `a`, `b` bf16 device pointers, `out` of `out_dtype`.
    pub fn gemm(&self, stream: sys::cudaStream_t, out: u64, out_dtype: DType, a: u64, b: u64, g: Gemm) -> Result<()> {
        let key = Key { m: g.m, n: g.n, k: g.k, trans_a: g.trans_a, trans_b: g.trans_b, out_f32: out_dtype == DType::F32 };
        let mut plans = self.plans.lock().unwrap();
        let plan = match plans.entry(key) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(self.plan(key).with_context(|| format!("planning gemm m={} n={} k={} trans_a={} trans_b={}", g.m, g.n, g.k, g.trans_a, g.trans_b))?),
        };
        let alpha = 1.0f32;
        let beta = if g.accumulate { 1.0f32 } else { 0.0 };
        let Some(algo) = plan.algo.as_ref() else {
            drop(plans);
            return self.gemm_ex(stream, out, out_dtype, a, b, g, alpha, beta);
        };
        // SAFETY: the layouts describe the buffers the caller checked; the workspace is ours.
        unsafe {
            sys::cublasLtMatmul(
                self.handle,
                plan.desc,
                &alpha as *const f32 as *const c_void,
                b as *const c_void,
                plan.a,
                a as *const c_void,
                plan.b,
                &beta as *const f32 as *const c_void,
                out as *const c_void,
                plan.c,
                out as *mut c_void,
                plan.c,
                algo,
                self.workspace.ptr() as *mut c_void,
                WORKSPACE_BYTES.min(self.workspace.bytes()),
                stream,
            )
            .result()
            .map_err(|e| anyhow!("cuBLASLt matmul m={} n={} k={}: {e:?}", g.m, g.n, g.k))
        }
    }

    /// The same product through cublasGemmEx (column-major, operands swapped as above).
    #[allow(clippy::too_many_arguments)]
    fn gemm_ex(&self, stream: sys::cudaStream_t, out: u64, out_dtype: DType, a: u64, b: u64, g: Gemm, alpha: f32, beta: f32) -> Result<()> {
        use cudarc::cublas::{result as cb, sys as cs};
        let mut fallback = self.fallback.lock().unwrap();
        let handle = match *fallback {
            Some(h) => h,
            None => {
                super::device::cublas_available().map_err(|e| anyhow!("gemm m={} n={} k={} needs the cuBLAS fallback: {e}", g.m, g.n, g.k))?;
                let h = cb::create_handle().map_err(|e| anyhow!("cuBLAS create handle: {e:?}"))?;
                *fallback = Some(h);
                h
            }
        };
        let op = |t: bool| if t { cs::cublasOperation_t::CUBLAS_OP_T } else { cs::cublasOperation_t::CUBLAS_OP_N };
        let (m, n, k) = (g.m as i32, g.n as i32, g.k as i32);
        let ldb = if g.trans_b { k } else { n };
        let lda = if g.trans_a { m } else { k };
        let out_type = if out_dtype == DType::F32 { cs::cudaDataType::CUDA_R_32F } else { cs::cudaDataType::CUDA_R_16BF };
        // SAFETY: as for the Lt path; the handle is used under its lock.
        unsafe {
            cb::set_stream(handle, stream as _).map_err(|e| anyhow!("cuBLAS set stream: {e:?}"))?;
            cb::gemm_ex(
                handle,
                op(g.trans_b),
                op(g.trans_a),
                n,
                m,
                k,
                &alpha as *const f32 as *const c_void,
                b as *const c_void,
                cs::cudaDataType::CUDA_R_16BF,
                ldb,
                a as *const c_void,
                cs::cudaDataType::CUDA_R_16BF,
                lda,
                &beta as *const f32 as *const c_void,
                out as *mut c_void,
                out_type,
                n,
                cs::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cs::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
            .map_err(|e| anyhow!("cublasGemmEx m={} n={} k={}: {e:?}", g.m, g.n, g.k))
        }
    }

    fn plan(&self, key: Key) -> Result<Plan> {
        let (m, n, k) = (key.m as u64, key.n as u64, key.k as u64);
        let bf16 = sys::cudaDataType::CUDA_R_16BF;
        let out_type = if key.out_f32 { sys::cudaDataType::CUDA_R_32F } else { bf16 };
        let desc = cublas(lt::create_matmul_desc(sys::cublasComputeType_t::CUBLAS_COMPUTE_32F, sys::cudaDataType::CUDA_R_32F), "matmul desc")?;
        // cublasOperation_t: CUBLAS_OP_N = 0, CUBLAS_OP_T = 1.
        let op = |t: bool| -> i32 { if t { 1 } else { 0 } };
        // First cuBLAS operand: our b. Stored row-major [n,k] (trans_b) = column-major k×n, ld k;
        // or [k,n] = column-major n×k, ld n.
        let (op_a, a) = if key.trans_b { (op(true), (k, n, k)) } else { (op(false), (n, k, n)) };
        // Second: our a. Stored [m,k] = column-major k×m, ld k; or [k,m] (trans_a) = m×k, ld m.
        let (op_b, b) = if key.trans_a { (op(true), (m, k, m)) } else { (op(false), (k, m, k)) };
        unsafe {
            cublas(lt::set_matmul_desc_attribute(desc, sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA, &op_a as *const _ as *const c_void, std::mem::size_of_val(&op_a)), "transa")?;
            cublas(lt::set_matmul_desc_attribute(desc, sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSB, &op_b as *const _ as *const c_void, std::mem::size_of_val(&op_b)), "transb")?;
        }
        let la = cublas(lt::create_matrix_layout(bf16, a.0, a.1, a.2 as i64), "layout")?;
        let lb = cublas(lt::create_matrix_layout(bf16, b.0, b.1, b.2 as i64), "layout")?;
        let lc = cublas(lt::create_matrix_layout(out_type, n, m, n as i64), "layout")?;
        let pref = cublas(lt::create_matmul_pref(), "preference")?;
        let ws = WORKSPACE_BYTES.min(self.workspace.bytes()) as u64;
        let heuristic = unsafe {
            cublas(lt::set_matmul_pref_attribute(pref, sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws as *const u64 as *const c_void, 8), "workspace size")?;
            let h = lt::get_matmul_algo_heuristic(self.handle, desc, la, lb, lc, lc, pref);
            let _ = lt::destroy_matmul_pref(pref);
            h.ok()
        };
        Ok(Plan { desc, a: la, b: lb, c: lc, algo: heuristic.map(|h| h.algo) })
    }
}

impl Drop for Blas {
    fn drop(&mut self) {
        // SAFETY: nothing uses the descriptors or the handle after this.
        unsafe {
            for (_, p) in self.plans.lock().unwrap().drain() {
                let _ = lt::destroy_matrix_layout(p.a);
                let _ = lt::destroy_matrix_layout(p.b);
                let _ = lt::destroy_matrix_layout(p.c);
                let _ = lt::destroy_matmul_desc(p.desc);
            }
            let _ = lt::destroy_handle(self.handle);
            if let Some(h) = *self.fallback.lock().unwrap() {
                let _ = cudarc::cublas::result::destroy_handle(h);
            }
        }
    }
}
