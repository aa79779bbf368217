//! The backward pass, written per layer against the backend's backward ops (no autograd).
//!
//! Given `dL/d hidden` (the gradient at the final norm's output, which the loss ops produce),
//! it walks the layers in reverse, recomputing a layer's activations from its input where the
//! forward kept only that, and accumulates every parameter's gradient into a `Weights` of the
//! same structure as the model (a tied head's gradient lands in `embed`). Cheap intermediates
//! (the normed inputs of the projections, the SwiGLU output) are recomputed rather than saved.

use anyhow::Result;

use crate::backend::{Backend, CausalAttn, Gemm, Rope};

use super::config::ModelConfig;
use super::forward::{LayerActs, Model, PackedBatch, SavedLayer, TrainForward};
use super::weights::{Layer, Weights};

/// `dW[n,k] += dy[rows,n]ᵀ · x[rows,k]`: a linear layer's weight gradient.
fn weight_grad(rows: usize, n: usize, k: usize) -> Gemm {
    Gemm { m: n, n: k, k: rows, trans_a: true, trans_b: false, accumulate: true }
}

/// `dx[rows,k] (+)= dy[rows,n] · W[n,k]`: a linear layer's input gradient.
fn input_grad(rows: usize, n: usize, k: usize, accumulate: bool) -> Gemm {
    Gemm { m: rows, n: k, k: n, trans_a: false, trans_b: false, accumulate }
}

/// Gradient buffers reused across layers.
struct Scratch<B: Backend> {
    h: B::Tensor,
    dh: B::Tensor,
    act: B::Tensor,
    d_act: B::Tensor,
    d_gate: B::Tensor,
    d_up: B::Tensor,
    d_attn: B::Tensor,
    dq: B::Tensor,
    dk: B::Tensor,
    dv: B::Tensor,
}

impl<B: Backend> Scratch<B> {
    fn new(be: &B, c: &ModelConfig, t: usize) -> Result<Self> {
        let (d, f, qd, kvd) = (c.hidden_size, c.intermediate_size, c.q_dim(), c.kv_dim());
        Ok(Scratch {
            h: be.zeros(t * d)?,
            dh: be.zeros(t * d)?,
            act: be.zeros(t * f)?,
            d_act: be.zeros(t * f)?,
            d_gate: be.zeros(t * f)?,
            d_up: be.zeros(t * f)?,
            d_attn: be.zeros(t * qd)?,
            dq: be.zeros(t * qd)?,
            dk: be.zeros(t * kvd)?,
            dv: be.zeros(t * kvd)?,
        })
    }
}

impl<B: Backend> Model<B> {
    /// Zero gradients shaped like the parameters, stored as f32 ([`Backend::zeros_f32`]): the
    /// backward ops accumulate into them over micro-batches.
    pub fn zero_grads(&self, be: &B) -> Result<Weights<B::Tensor>> {
        self.weights.try_map(|w| be.zeros_f32(be.len(w)))
    }

    /// Backpropagates `d_hidden` (`[tokens, hidden]`, the gradient of the final norm's output)
    /// through a forward that saved its activations, accumulating into `grads`.
    pub fn backward(&self, be: &B, fwd: &TrainForward<B>, d_hidden: &B::Tensor, grads: &mut Weights<B::Tensor>) -> Result<()> {
        let c = &self.config;
        anyhow::ensure!(fwd.layers.len() == c.num_layers, "the forward pass kept no activations (run it with `save`)");
        let (t, d) = (fwd.batch.tokens, c.hidden_size);
        let mut dx = be.zeros(t * d)?;
        be.rms_norm_backward(&mut dx, &mut grads.norm, d_hidden, &fwd.x_final, &self.weights.norm, t, d, c.rms_norm_eps)?;
        let mut s = Scratch::new(be, c, t)?;
        for idx in (0..c.num_layers).rev() {
            let recomputed;
            let acts = match &fwd.layers[idx] {
                SavedLayer::Acts(a) => a,
                SavedLayer::Input(x_in) => {
                    recomputed = self.recompute_layer(be, idx, x_in, &fwd.batch)?;
                    &recomputed
                }
            };
            self.layer_backward(be, idx, acts, &fwd.batch, &mut dx, &mut s, &mut grads.layers[idx])?;
        }
        be.embedding_backward(&mut grads.embed, &dx, &fwd.batch.ids, t, d)
    }

    /// One layer in reverse: `dx` enters as the gradient of the layer's output and leaves as the
    /// gradient of its input.
    #[allow(clippy::too_many_arguments)]
    fn layer_backward(&self, be: &B, idx: usize, a: &LayerActs<B>, batch: &PackedBatch<B>, dx: &mut B::Tensor, s: &mut Scratch<B>, g: &mut Layer<B::Tensor>) -> Result<()> {
        let c = &self.config;
        let l = &self.weights.layers[idx];
        let t = batch.tokens;
        let (d, qd, kvd, f, eps) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size, c.rms_norm_eps);

        // MLP: x_out = x_mid + down(swiglu(gate(h), up(h))), h = rms_norm(x_mid).
        be.rms_norm(&mut s.h, &a.x_mid, &l.post_norm, t, d, eps)?;
        be.swiglu(&mut s.act, &a.gate, &a.up)?;
        be.gemm(&mut g.down_proj, dx, &s.act, weight_grad(t, d, f))?;
        be.gemm(&mut s.d_act, dx, &l.down_proj, input_grad(t, d, f, false))?;
        be.swiglu_backward(&mut s.d_gate, &mut s.d_up, &s.d_act, &a.gate, &a.up)?;
        be.gemm(&mut g.gate_proj, &s.d_gate, &s.h, weight_grad(t, f, d))?;
        be.gemm(&mut g.up_proj, &s.d_up, &s.h, weight_grad(t, f, d))?;
        be.gemm(&mut s.dh, &s.d_gate, &l.gate_proj, input_grad(t, f, d, false))?;
        be.gemm(&mut s.dh, &s.d_up, &l.up_proj, input_grad(t, f, d, true))?;
        be.rms_norm_backward(dx, &mut g.post_norm, &s.dh, &a.x_mid, &l.post_norm, t, d, eps)?;

        // Attention: x_mid = x_in + o(attention(rope(norm(q)), rope(norm(k)), v)).
        be.gemm(&mut g.o_proj, dx, &a.attn, weight_grad(t, d, qd))?;
        be.gemm(&mut s.d_attn, dx, &l.o_proj, input_grad(t, d, qd, false))?;
        let meta = CausalAttn { tokens: t, n_seqs: batch.n_seqs, shape: c.attn_shape(), cu_seqlens: &batch.cu_seqlens };
        be.attention_causal_backward(&mut s.dq, &mut s.dk, &mut s.dv, &s.d_attn, &a.q, &a.k, &a.v, &a.attn, &a.lse, &meta)?;
        be.rope_backward(&mut s.dq, &batch.positions, Rope { rows: t, n_heads: c.num_heads, head_dim: c.head_dim, theta: c.rope_theta })?;
        be.rope_backward(&mut s.dk, &batch.positions, Rope { rows: t, n_heads: c.num_kv_heads, head_dim: c.head_dim, theta: c.rope_theta })?;
        if let (Some(qn), Some(kn), Some(q_pre), Some(k_pre), Some(gq), Some(gk)) = (&l.q_norm, &l.k_norm, &a.q_pre, &a.k_pre, g.q_norm.as_mut(), g.k_norm.as_mut()) {
            let mut dq_pre = be.zeros(t * qd)?;
            let mut dk_pre = be.zeros(t * kvd)?;
            be.rms_norm_backward(&mut dq_pre, gq, &s.dq, q_pre, qn, t * c.num_heads, c.head_dim, eps)?;
            be.rms_norm_backward(&mut dk_pre, gk, &s.dk, k_pre, kn, t * c.num_kv_heads, c.head_dim, eps)?;
            s.dq = dq_pre;
            s.dk = dk_pre;
        }
        if let (Some(gq), Some(gk), Some(gv)) = (g.q_bias.as_mut(), g.k_bias.as_mut(), g.v_bias.as_mut()) {
            be.add_bias_backward(gq, &s.dq, t, qd)?;
            be.add_bias_backward(gk, &s.dk, t, kvd)?;
            be.add_bias_backward(gv, &s.dv, t, kvd)?;
        }
        be.rms_norm(&mut s.h, &a.x_in, &l.input_norm, t, d, eps)?;
        be.gemm(&mut g.q_proj, &s.dq, &s.h, weight_grad(t, qd, d))?;
        be.gemm(&mut g.k_proj, &s.dk, &s.h, weight_grad(t, kvd, d))?;
        be.gemm(&mut g.v_proj, &s.dv, &s.h, weight_grad(t, kvd, d))?;
        be.gemm(&mut s.dh, &s.dq, &l.q_proj, input_grad(t, qd, d, false))?;
        be.gemm(&mut s.dh, &s.dk, &l.k_proj, input_grad(t, kvd, d, true))?;
        be.gemm(&mut s.dh, &s.dv, &l.v_proj, input_grad(t, kvd, d, true))?;
        be.rms_norm_backward(dx, &mut g.input_norm, &s.dh, &a.x_in, &l.input_norm, t, d, eps)
    }
}
