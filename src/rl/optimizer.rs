//! AdamW over the whole parameter struct, with global gradient-norm clipping.
//!
//! The moments live in two `Weights` of the same structure as the parameters, on the backend,
//! in f32 ([`Backend::zeros_f32`]); each parameter is one [`Backend::adamw`] call (a fused
//! kernel on CUDA). The gradient norm is summed on the backend into one value, so clipping costs
//! one read-back per step. Gradient accumulation needs nothing here: the backward ops add into
//! the gradients, and the loss weights are normalised over the whole optimizer batch (see
//! `rl::objective`).
//!
//! Master weights: where the compute copy of the parameters rounds (bf16 on CUDA, see
//! [`Backend::needs_master_weights`]), AdamW would lose every update smaller than half a bf16
//! spacing. There the state holds an f32 master copy of each parameter: AdamW updates the master
//! and [`Backend::cast`] refreshes the compute copy from it. On the CPU the parameters are f32
//! and are updated in place: no master, no copy. Checkpoints save the masters (see
//! `Trainer::host_weights`).

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

/// AdamW's moments, the master weights where the backend needs them, and the step count.
pub struct AdamWState<B: Backend> {
    pub m: Weights<B::Tensor>,
    pub v: Weights<B::Tensor>,
    /// f32 master copies of the parameters when [`Backend::needs_master_weights`], else `None`
    /// (the parameters are their own masters). The compute copies follow them after each step;
    /// writing the compute copies directly is undone by the next step.
    pub master: Option<Weights<B::Tensor>>,
    /// Steps taken so far.
    pub step: u64,
}

/// The global L2 norm of every gradient.
pub fn grad_norm<B: Backend>(be: &B, grads: &Weights<B::Tensor>) -> Result<f32> {
    let mut acc = be.zeros_f32(1)?;
    for g in grads.visit() {
        be.sum_squares(&mut acc, g)?;
    }
    Ok(be.to_f32(&acc)?[0].sqrt())
}

/// The f32 master copies of `params` when the backend needs them (else `None`): `host`'s values
/// exactly when given (the f32 weights the compute copies were made from), otherwise the compute
/// copies widened to f32.
pub fn master_weights<B: Backend>(be: &B, params: &Weights<B::Tensor>, host: Option<&Weights<Vec<f32>>>) -> Result<Option<Weights<B::Tensor>>> {
    if !be.needs_master_weights() {
        return Ok(None);
    }
    let master = match host {
        Some(h) => {
            ensure!(h.visit().iter().map(|x| x.len()).eq(params.visit().iter().map(|p| be.len(p))), "master weights do not match the parameters");
            h.try_map(|x| be.from_f32_exact(x))?
        }
        None => params.try_map(|p| {
            let mut t = be.zeros_f32(be.len(p))?;
            be.cast(&mut t, p)?;
            Ok(t)
        })?,
    };
    Ok(Some(master))
}

impl<B: Backend> AdamWState<B> {
    /// Zero moments for `params`, and their masters (see [`master_weights`]).
    pub fn new(be: &B, params: &Weights<B::Tensor>, host: Option<&Weights<Vec<f32>>>) -> Result<Self> {
        let zeros = |p: &B::Tensor| be.zeros_f32(be.len(p));
        Ok(AdamWState { m: params.try_map(zeros)?, v: params.try_map(zeros)?, master: master_weights(be, params, host)?, step: 0 })
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
        let n = p.len();
        let masters: Vec<Option<&mut B::Tensor>> = match self.master.as_mut() {
            Some(w) => w.visit_mut().into_iter().map(Some).collect(),
            None => (0..n).map(|_| None).collect(),
        };
        ensure!(infos.len() == n && g.len() == n && m.len() == n && v.len() == n && masters.len() == n, "optimizer state does not match the parameters");
        for (((((info, p), g), m), v), master) in infos.into_iter().zip(p).zip(g).zip(m).zip(v).zip(masters) {
            let decay = if cfg.no_decay_1d && info.shape.len() == 1 { 0.0 } else { cfg.weight_decay };
            let hp = AdamW { lr, beta1: cfg.beta1, beta2: cfg.beta2, eps: cfg.eps, weight_decay: decay, step: self.step, grad_scale: clip_scale };
            let updated = match master {
                Some(master) => be.adamw(master, g, m, v, hp).and_then(|()| be.cast(p, master)),
                None => be.adamw(p, g, m, v, hp),
            };
            updated.with_context(|| format!("AdamW on {}", info.name))?;
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

    /// Rebuilds the state from [`AdamWState::to_host`]'s tensors, with the masters of `params`
    /// from `weights` (the checkpoint's f32 weights, see [`master_weights`]).
    pub fn from_host(be: &B, infos: &Weights<ParamInfo>, tensors: &HostTensors, step: u64, params: &Weights<B::Tensor>, weights: &Weights<Vec<f32>>) -> Result<Self> {
        let read = |prefix: &str| {
            infos.try_map(|info| {
                let name = format!("{prefix}.{}", info.name);
                let (shape, data) = tensors.get(&name).with_context(|| format!("optimizer state has no {name}"))?;
                ensure!(shape == &info.shape, "optimizer state {name} has shape {shape:?}, expected {:?}", info.shape);
                be.from_f32_exact(data)
            })
        };
        Ok(AdamWState { m: read("exp_avg")?, v: read("exp_avg_sq")?, master: master_weights(be, params, Some(weights))?, step })
    }
}
