//! Model parameters by Hugging Face name, generic over their storage.
//!
//! `Weights<T>` is one struct for every use: host f32 vectors while loading, backend tensors for
//! the forward pass, and the same shape again for gradients and optimizer state. `visit` walks
//! every parameter with its Hugging Face name and shape in a fixed order.

use anyhow::Result;

use super::config::ModelConfig;

#[derive(Clone, Debug)]
pub struct Layer<T> {
    pub input_norm: T,
    pub q_proj: T,
    pub k_proj: T,
    pub v_proj: T,
    pub q_bias: Option<T>,
    pub k_bias: Option<T>,
    pub v_bias: Option<T>,
    pub q_norm: Option<T>,
    pub k_norm: Option<T>,
    pub o_proj: T,
    pub post_norm: T,
    pub gate_proj: T,
    pub up_proj: T,
    pub down_proj: T,
}

#[derive(Clone, Debug)]
pub struct Weights<T> {
    pub embed: T,
    pub layers: Vec<Layer<T>>,
    pub norm: T,
    /// `None` when the output head is tied to the embedding.
    pub lm_head: Option<T>,
}

/// A parameter's Hugging Face name and shape.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamInfo {
    pub name: String,
    pub shape: Vec<usize>,
}

impl ParamInfo {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Names and shapes of every parameter of `cfg`, in `visit` order.
pub fn param_infos(cfg: &ModelConfig) -> Weights<ParamInfo> {
    let p = |name: String, shape: Vec<usize>| ParamInfo { name, shape };
    let (d, f, q, kv) = (cfg.hidden_size, cfg.intermediate_size, cfg.q_dim(), cfg.kv_dim());
    let layers = (0..cfg.num_layers)
        .map(|i| {
            let n = |s: &str| format!("model.layers.{i}.{s}");
            let bias = |s: &str, len: usize| cfg.attention_bias.then(|| p(n(s), vec![len]));
            let norm = |s: &str| cfg.qk_norm.then(|| p(n(s), vec![cfg.head_dim]));
            Layer {
                input_norm: p(n("input_layernorm.weight"), vec![d]),
                q_proj: p(n("self_attn.q_proj.weight"), vec![q, d]),
                k_proj: p(n("self_attn.k_proj.weight"), vec![kv, d]),
                v_proj: p(n("self_attn.v_proj.weight"), vec![kv, d]),
                q_bias: bias("self_attn.q_proj.bias", q),
                k_bias: bias("self_attn.k_proj.bias", kv),
                v_bias: bias("self_attn.v_proj.bias", kv),
                q_norm: norm("self_attn.q_norm.weight"),
                k_norm: norm("self_attn.k_norm.weight"),
                o_proj: p(n("self_attn.o_proj.weight"), vec![d, q]),
                post_norm: p(n("post_attention_layernorm.weight"), vec![d]),
                gate_proj: p(n("mlp.gate_proj.weight"), vec![f, d]),
                up_proj: p(n("mlp.up_proj.weight"), vec![f, d]),
                down_proj: p(n("mlp.down_proj.weight"), vec![d, f]),
            }
        })
        .collect();
    Weights {
        embed: p("model.embed_tokens.weight".into(), vec![cfg.vocab_size, d]),
        layers,
        norm: p("model.norm.weight".into(), vec![d]),
        lm_head: (!cfg.tie_word_embeddings).then(|| p("lm_head.weight".into(), vec![cfg.vocab_size, d])),
    }
}

impl<T> Layer<T> {
    fn slots(&self) -> [Option<&T>; 14] {
        [
            Some(&self.input_norm), Some(&self.q_proj), Some(&self.k_proj), Some(&self.v_proj),
            self.q_bias.as_ref(), self.k_bias.as_ref(), self.v_bias.as_ref(),
            self.q_norm.as_ref(), self.k_norm.as_ref(), Some(&self.o_proj),
            Some(&self.post_norm), Some(&self.gate_proj), Some(&self.up_proj), Some(&self.down_proj),
        ]
    }
    fn slots_mut(&mut self) -> [Option<&mut T>; 14] {
        [
            Some(&mut self.input_norm), Some(&mut self.q_proj), Some(&mut self.k_proj), Some(&mut self.v_proj),
            self.q_bias.as_mut(), self.k_bias.as_mut(), self.v_bias.as_mut(),
            self.q_norm.as_mut(), self.k_norm.as_mut(), Some(&mut self.o_proj),
            Some(&mut self.post_norm), Some(&mut self.gate_proj), Some(&mut self.up_proj), Some(&mut self.down_proj),
        ]
    }
    fn try_map<U>(&self, f: &mut impl FnMut(&T) -> Result<U>) -> Result<Layer<U>> {
        let mut opt = |x: &Option<T>| x.as_ref().map(&mut *f).transpose();
        Ok(Layer {
            q_bias: opt(&self.q_bias)?,
            k_bias: opt(&self.k_bias)?,
            v_bias: opt(&self.v_bias)?,
            q_norm: opt(&self.q_norm)?,
            k_norm: opt(&self.k_norm)?,
            input_norm: f(&self.input_norm)?,
            q_proj: f(&self.q_proj)?,
            k_proj: f(&self.k_proj)?,
            v_proj: f(&self.v_proj)?,
            o_proj: f(&self.o_proj)?,
            post_norm: f(&self.post_norm)?,
            gate_proj: f(&self.gate_proj)?,
            up_proj: f(&self.up_proj)?,
            down_proj: f(&self.down_proj)?,
        })
    }
}

impl<T> Weights<T> {
    /// Every parameter in a fixed order: embedding, layers, final norm, output head.
    pub fn visit(&self) -> Vec<&T> {
        let mut out = vec![&self.embed];
        for l in &self.layers {
            out.extend(l.slots().into_iter().flatten());
        }
        out.push(&self.norm);
        out.extend(self.lm_head.as_ref());
        out
    }

    /// Mutable twin of [`Weights::visit`], same order.
    pub fn visit_mut(&mut self) -> Vec<&mut T> {
        let mut out = vec![&mut self.embed];
        for l in &mut self.layers {
            out.extend(l.slots_mut().into_iter().flatten());
        }
        out.push(&mut self.norm);
        out.extend(self.lm_head.as_mut());
        out
    }

    /// The same structure with every parameter transformed by `f` (in `visit` order).
    pub fn try_map<U>(&self, mut f: impl FnMut(&T) -> Result<U>) -> Result<Weights<U>> {
        // Field order of construction differs from visit order for layers, so map into
        // a layer-by-layer structure, each layer in its own `try_map` (order not relied on).
        Ok(Weights {
            embed: f(&self.embed)?,
            layers: self.layers.iter().map(|l| l.try_map(&mut f)).collect::<Result<_>>()?,
            norm: f(&self.norm)?,
            lm_head: self.lm_head.as_ref().map(&mut f).transpose()?,
        })
    }

    /// Pairs each parameter with its twin in `other` (same structure), e.g. weights with grads.
    pub fn zip<'a, U>(&'a self, other: &'a Weights<U>) -> Vec<(&'a T, &'a U)> {
        self.visit().into_iter().zip(other.visit()).collect()
    }

    /// The output head: `lm_head`, or the embedding when tied.
    pub fn head(&self) -> &T {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }
}
