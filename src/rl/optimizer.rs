//! AdamW over the whole parameter struct, with global gradient-norm clipping.
//!
//! The moments live in two `Weights` of the same structure as the parameters, on the backend;
//! each parameter is one [`Backend::adamw`] call (a fused kernel on CUDA). The gradient norm is
//! summed on the backend into one value, so clipping costs one read-back per step. Gradient
//! accumulation needs nothing here: the backward ops add into the gradients, and the loss
//! weights are normalised over the whole optimizer batch (see `rl::objective`).

use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};

use crate::backend::{AdamW, Backend};
use crate::model::{ParamInfo, Weights};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWConfig {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// Clip the global gradient norm to this (PyTorch's `clip_grad_norm_`); off when absent.
    pub max_grad_norm: Option<f32>,
    /// Exempt one-dimensional parameters (norms, biases) from weight decay. PyTorch's default
    /// (one parameter group) decays everything.
    pub no_decay_1d: bool,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01, max_grad_norm: Some(1.0), no_decay_1d: false }
    }
}

/// The gradient norm was NaN or infinite: the step was refused and the weights are untouched.
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
#[error("gradient norm is {norm} at step {step}: refusing to update the weights")]
pub struct NonFiniteGradient {
    pub norm: f32,
    pub step: u64,
}

/// A host tensor with its name and shape.
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// Host tensors by name: (shape, data).
pub type HostTensors = std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// What one optimizer step did.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepStats {
    pub step: u64,
    pub lr: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
    /// The factor the gradients were scaled by (1 when not clipped).
    pub clip_scale: f32,
}

/// AdamW's moments and step count.
pub struct AdamWState<B: Backend> {
    pub m: Weights<B::Tensor>,
    pub v: Weights<B::Tensor>,
    /// Steps taken so far.
    pub step: u64,
}

/// The global L2 norm of every gradient.
pub fn grad_norm<B: Backend>(be: &B, grads: &Weights<B::Tensor>) -> Result<f32> {
    let mut acc = be.zeros(1)?;
    for g in grads.visit() {
        be.sum_squares(&mut acc, g)?;
    }
    Ok(be.to_f32(&acc)?[0].sqrt())
}

impl<B: Backend> AdamWState<B> {
    pub fn new(be: &B, params: &Weights<B::Tensor>) -> Result<Self> {
        Ok(AdamWState { m: params.try_map(|p| be.zeros(be.len(p)))?, v: params.try_map(|p| be.zeros(be.len(p)))?, step: 0 })
    }

    /// One step at learning rate `lr`; `infos` (from `param_infos`) tells which parameters are
    /// one-dimensional. Refuses a non-finite gradient norm, leaving the weights untouched.
    pub fn step(&mut self, be: &B, cfg: &AdamWConfig, infos: &Weights<ParamInfo>, params: &mut Weights<B::Tensor>, grads: &Weights<B::Tensor>, lr: f32) -> Result<StepStats> {
        let norm = grad_norm(be, grads)?;
        if !norm.is_finite() {
            return Err(NonFiniteGradient { norm, step: self.step + 1 }.into());
        }
        let clip_scale = match cfg.max_grad_norm {
            Some(max) if norm > max => max / (norm + 1e-6),
            _ => 1.0,
        };
        self.step += 1;
        let infos = infos.visit();
        let (m, v) = (self.m.visit_mut(), self.v.visit_mut());
        let (p, g) = (params.visit_mut(), grads.visit());
        ensure!(infos.len() == p.len() && g.len() == p.len() && m.len() == p.len() && v.len() == p.len(), "optimizer state does not match the parameters");
        for ((((info, p), g), m), v) in infos.into_iter().zip(p).zip(g).zip(m).zip(v) {
            let decay = if cfg.no_decay_1d && info.shape.len() == 1 { 0.0 } else { cfg.weight_decay };
            let hp = AdamW { lr, beta1: cfg.beta1, beta2: cfg.beta2, eps: cfg.eps, weight_decay: decay, step: self.step, grad_scale: clip_scale };
            be.adamw(p, g, m, v, hp).with_context(|| format!("AdamW on {}", info.name))?;
        }
        Ok(StepStats { step: self.step, lr, grad_norm: norm, clip_scale })
    }

    /// The moments as host tensors named `exp_avg.<param>` and `exp_avg_sq.<param>`.
    pub fn to_host(&self, be: &B, infos: &Weights<ParamInfo>) -> Result<Vec<NamedTensor>> {
        let mut out = Vec::new();
        for (prefix, state) in [("exp_avg", &self.m), ("exp_avg_sq", &self.v)] {
            for (info, t) in infos.zip(state) {
                out.push((format!("{prefix}.{}", info.name), info.shape.clone(), be.to_f32(t)?));
            }
        }
        Ok(out)
    }

    /// Rebuilds the state from [`AdamWState::to_host`]'s tensors.
    pub fn from_host(be: &B, infos: &Weights<ParamInfo>, tensors: &HostTensors, step: u64) -> Result<Self> {
        let read = |prefix: &str| {
            infos.try_map(|info| {
                let name = format!("{prefix}.{}", info.name);
                let (shape, data) = tensors.get(&name).with_context(|| format!("optimizer state has no {name}"))?;
                ensure!(shape == &info.shape, "optimizer state {name} has shape {shape:?}, expected {:?}", info.shape);
                be.from_f32(data)
            })
        };
        Ok(AdamWState { m: read("exp_avg")?, v: read("exp_avg_sq")?, step })
    }
}
