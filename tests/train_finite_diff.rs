//! Finite-difference checks of the backward pass: for each model family and each loss variant,
//! the analytic gradient of every parameter of the first layer, the final norm and the
//! embedding/head against central differences along a direction correlated with the gradient
//! (so the signal is large next to the f32 rounding of the loss). Also the blocked attention
//! backward on sequences longer than one block.

mod common;

use atomrl::backend::cpu::Cpu;
use atomrl::backend::{AttnShape, Backend, CausalAttn, KlEstimator, LossGrads};
use atomrl::model::{param_infos, Model, ModelConfig, Weights};
use atomrl::rl::objective::{cross_entropy, loss_weights, next_tokens, policy_loss, LossAgg, LossTotals, ObjectiveConfig, PolicyRows};

use common::{random_weights, tiny_config, TestRng};

#[derive(Clone, Debug)]
enum Loss {
    CrossEntropy,
    Policy(ObjectiveConfig),
}

struct Case {
    cfg: ModelConfig,
    tokens: Vec<u32>,
    cu: Vec<u32>,
    mask: Vec<f32>,
    advantages: Vec<f32>,
    ref_delta: Vec<f32>,
    rollout_delta: Vec<f32>,
    /// `old_logp = logp(initial weights) - old_delta`: ratios at fixed distances from the clip
    /// boundaries, so a small perturbation never crosses a kink.
    old_delta: Vec<f32>,
}

fn case(family: &str, seed: u64) -> Case {
    let cfg = tiny_config(family, 29);
    let mut rng = TestRng(seed);
    let lens = [9usize, 6, 7];
    let mut tokens = Vec::new();
    let mut cu = vec![0u32];
    let mut mask = Vec::new();
    for &len in &lens {
        tokens.extend((0..len).map(|_| rng.below(cfg.vocab_size) as u32));
        cu.push(tokens.len() as u32);
        mask.extend((0..len).map(|r| if r >= 2 && r + 1 < len { 1.0 } else { 0.0 }));
    }
    let t = tokens.len();
    let ratios = [-0.5f32, -0.1, 0.05, 0.3, 0.6];
    let old_delta = (0..t).map(|i| ratios[(i * 3 + 1) % ratios.len()]).collect();
    let ref_delta = (0..t).map(|_| 0.4 * rng.uniform()).collect();
    let rollout_delta = (0..t).map(|i| [0.3f32, -0.2, 1.2, 0.0][i % 4]).collect();
    let advantages = vec![1.3, -0.7, 0.4];
    Case { cfg, tokens, cu, mask, advantages, ref_delta, rollout_delta, old_delta }
}

fn rows_for(c: &Case, obj: &ObjectiveConfig, logp0: &[f32]) -> PolicyRows {
    let totals = LossTotals::of([(&c.mask[..], &c.cu[..])]);
    let mut advantages = vec![0.0; c.tokens.len()];
    for (s, w) in c.cu.windows(2).enumerate() {
        advantages[w[0] as usize..w[1] as usize].fill(c.advantages[s]);
    }
    PolicyRows {
        targets: next_tokens(&c.tokens, &c.cu),
        weights: loss_weights(&c.mask, &c.cu, obj.loss_agg, &totals, obj.norm_len),
        advantages,
        old_logp: Some(logp0.iter().zip(&c.old_delta).map(|(l, d)| l - d).collect()),
        ref_logp: Some(logp0.iter().zip(&c.ref_delta).map(|(l, d)| l + d).collect()),
        rollout_logp: Some(logp0.iter().zip(&c.old_delta).zip(&c.rollout_delta).map(|((l, o), r)| l - o - r).collect()),
    }
}

/// Loss at `weights`, and its gradient when `grad` is set.
fn loss_and_grad(c: &Case, loss: &Loss, weights: &Weights<Vec<f32>>, logp0: &[f32], grad: bool) -> (f64, Option<Weights<Vec<f32>>>) {
    let m = Model::from_host(&Cpu, c.cfg.clone(), weights).unwrap();
    let fwd = m.forward_train(&Cpu, &c.tokens, &c.cu, grad).unwrap();
    let (d, v) = (c.cfg.hidden_size, c.cfg.vocab_size);
    let mut grads = m.zero_grads(&Cpu).unwrap();
    let mut dh = vec![0.0; fwd.hidden.len()];
    let lg = grad.then(|| LossGrads { d_hidden: &mut dh, d_head: grads.head_mut() });
    let value = match loss {
        Loss::CrossEntropy => {
            let n: f32 = c.mask.iter().sum();
            let w: Vec<f32> = c.mask.iter().map(|m| m / n).collect();
            cross_entropy(&Cpu, &fwd.hidden, m.weights.head(), d, v, &next_tokens(&c.tokens, &c.cu), &w, 4, lg).unwrap().1.metrics().loss
        }
        Loss::Policy(obj) => policy_loss(&Cpu, &fwd.hidden, m.weights.head(), d, v, &rows_for(c, obj, logp0), obj, lg).unwrap().1.metrics().loss,
    };
    if !grad {
        return (value as f64, None);
    }
    m.backward(&Cpu, &fwd, &dh, &mut grads).unwrap();
    (value as f64, Some(grads))
}

fn check(family: &str, loss: Loss) {
    let c = case(family, 5);
    let w0 = random_weights(&c.cfg, 3);
    // Log-probs at the initial weights (temperature of the objective) to anchor old/ref/rollout.
    let logp0 = {
        let m = Model::from_host(&Cpu, c.cfg.clone(), &w0).unwrap();
        let fwd = m.forward_train(&Cpu, &c.tokens, &c.cu, false).unwrap();
        let obj = match &loss {
            Loss::Policy(o) => o.clone(),
            Loss::CrossEntropy => ObjectiveConfig::default(),
        };
        let rows = PolicyRows { targets: next_tokens(&c.tokens, &c.cu), weights: c.mask.clone(), advantages: vec![0.0; c.tokens.len()], ..PolicyRows::default() };
        policy_loss(&Cpu, &fwd.hidden, m.weights.head(), c.cfg.hidden_size, c.cfg.vocab_size, &rows, &obj, None).unwrap().0
    };
    if let Loss::Policy(obj) = &loss {
        // The variant's branches are exercised: both clips, and the dual clip / importance cap.
        let m = Model::from_host(&Cpu, c.cfg.clone(), &w0).unwrap();
        let fwd = m.forward_train(&Cpu, &c.tokens, &c.cu, false).unwrap();
        let metrics = policy_loss(&Cpu, &fwd.hidden, m.weights.head(), c.cfg.hidden_size, c.cfg.vocab_size, &rows_for(&c, obj, &logp0), obj, None).unwrap().1.metrics();
        assert!(metrics.clip_frac_low > 0.0 && metrics.clip_frac_high > 0.0, "{metrics:?}");
        if obj.dual_clip.is_some() {
            assert!(metrics.dual_clip_frac > 0.0 && metrics.tis_capped_frac > 0.0 && metrics.mismatch_kl > 0.0, "{metrics:?}");
        } else {
            assert!(metrics.kl_mean != 0.0, "{metrics:?}");
        }
    }
    let (_, grads) = loss_and_grad(&c, &loss, &w0, &logp0, true);
    let grads = grads.unwrap();
    let infos = param_infos(&c.cfg);
    let mut rng = TestRng(99);
    for (i, (info, g)) in infos.zip(&grads).into_iter().enumerate() {
        if info.name.contains("layers.1.") {
            continue;
        }
        // A direction mostly along the gradient's sign pattern, with a random part.
        let u: Vec<f32> = g.iter().map(|x| x.signum() * (0.5 + 0.5 * rng.uniform().abs()) + 0.3 * rng.uniform()).collect();
        let analytic: f64 = g.iter().zip(&u).map(|(a, b)| *a as f64 * *b as f64).sum();
        // Steps that change the loss by about 1e-3: large enough next to f32 rounding, small
        // enough that curvature does not matter.
        let h = (1e-3 / analytic.abs()).clamp(1e-4, 1e-2) as f32;
        let eval = |sign: f32| {
            let mut w = w0.clone();
            let p = w.visit_mut().into_iter().nth(i).unwrap();
            p.iter_mut().zip(&u).for_each(|(p, u)| *p += sign * h * u);
            loss_and_grad(&c, &loss, &w, &logp0, false).0
        };
        let numeric = (eval(1.0) - eval(-1.0)) / (2.0 * h as f64);
        let tol = 2e-2 * analytic.abs().max(numeric.abs()) + 2e-4;
        assert!((numeric - analytic).abs() <= tol, "{family} {loss:?}: {} analytic {analytic:.6} numeric {numeric:.6}", info.name);
    }
}

fn policy(f: impl FnOnce(&mut ObjectiveConfig)) -> Loss {
    let mut o = ObjectiveConfig { temperature: 0.7, clip_low: 0.2, clip_high: 0.28, kl_coef: 0.1, ..ObjectiveConfig::default() };
    f(&mut o);
    Loss::Policy(o)
}

fn all_variants(family: &str) {
    check(family, Loss::CrossEntropy);
    check(family, policy(|_| {}));
    check(family, policy(|o| o.kl_estimator = KlEstimator::K1));
    check(family, policy(|o| o.kl_estimator = KlEstimator::K2));
    check(family, policy(|o| o.loss_agg = LossAgg::SeqMeanTokenMean));
    check(family, policy(|o| {
        o.loss_agg = LossAgg::SeqMeanTokenSumNorm;
        o.norm_len = Some(8);
    }));
    check(family, policy(|o| {
        o.dual_clip = Some(1.5);
        o.tis_cap = Some(1.5);
        o.kl_coef = 0.0;
    }));
}

#[test]
fn llama_gradients_match_finite_differences() {
    all_variants("llama");
}

#[test]
fn qwen2_gradients_match_finite_differences() {
    all_variants("qwen2");
}

#[test]
fn qwen3_gradients_match_finite_differences() {
    all_variants("qwen3");
}

/// `L = sum(out ∘ R)` through the blocked attention backward, on sequences longer than one
/// query block, against central differences of q, k and v.
#[test]
fn attention_backward_matches_finite_differences() {
    let shape = AttnShape { n_heads: 4, n_kv_heads: 2, head_dim: 8, scale: 1.0 / 8f32.sqrt() };
    let lens = [150usize, 1, 70];
    let t: usize = lens.iter().sum();
    let mut cu = vec![0u32];
    for l in lens {
        cu.push(cu.last().unwrap() + l as u32);
    }
    let cu = Cpu.index(&cu).unwrap();
    let p = CausalAttn { tokens: t, n_seqs: lens.len(), shape, cu_seqlens: &cu };
    let mut rng = TestRng(17);
    let mut rand = |n: usize| (0..n).map(|_| rng.uniform()).collect::<Vec<f32>>();
    let (q, k, v, r) = (rand(t * shape.q_dim()), rand(t * shape.kv_dim()), rand(t * shape.kv_dim()), rand(t * shape.q_dim()));
    let forward = |q: &Vec<f32>, k: &Vec<f32>, v: &Vec<f32>| {
        let (mut out, mut lse) = (vec![0.0; t * shape.q_dim()], vec![0.0; t * shape.n_heads]);
        Cpu.attention_causal(&mut out, &mut lse, q, k, v, &p).unwrap();
        (out, lse)
    };
    let (out, lse) = forward(&q, &k, &v);
    let (mut dq, mut dk, mut dv) = (vec![0.0; q.len()], vec![0.0; k.len()], vec![0.0; v.len()]);
    Cpu.attention_causal_backward(&mut dq, &mut dk, &mut dv, &r, &q, &k, &v, &out, &lse, &p).unwrap();
    let loss = |q: &Vec<f32>, k: &Vec<f32>, v: &Vec<f32>| forward(q, k, v).0.iter().zip(&r).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>();
    let h = 1e-2f32;
    for (which, g) in [(0, &dq), (1, &dk), (2, &dv)] {
        let u: Vec<f32> = g.iter().map(|x| x.signum()).collect();
        let analytic: f64 = g.iter().zip(&u).map(|(a, b)| (*a * *b) as f64).sum();
        let eval = |s: f32| {
            let (mut q2, mut k2, mut v2) = (q.clone(), k.clone(), v.clone());
            let x = [&mut q2, &mut k2, &mut v2].into_iter().nth(which).unwrap();
            x.iter_mut().zip(&u).for_each(|(x, u)| *x += s * h * u);
            loss(&q2, &k2, &v2)
        };
        let numeric = (eval(1.0) - eval(-1.0)) / (2.0 * h as f64);
        assert!((numeric - analytic).abs() <= 1e-2 * analytic.abs() + 1e-3, "d{} analytic {analytic} numeric {numeric}", ["q", "k", "v"][which]);
    }
}

/// The blocked causal attention forward against a plain f64 softmax per (token, head), on
/// sequences longer than one block.
#[test]
fn blocked_attention_matches_naive_reference() {
    let shape = AttnShape { n_heads: 6, n_kv_heads: 2, head_dim: 8, scale: 0.3 };
    let lens = [130usize, 1, 65];
    let t: usize = lens.iter().sum();
    let mut cu = vec![0u32];
    for l in lens {
        cu.push(cu.last().unwrap() + l as u32);
    }
    let cu_idx = Cpu.index(&cu).unwrap();
    let p = CausalAttn { tokens: t, n_seqs: lens.len(), shape, cu_seqlens: &cu_idx };
    let mut rng = TestRng(23);
    let mut rand = |n: usize| (0..n).map(|_| 2.0 * rng.uniform()).collect::<Vec<f32>>();
    let (q, k, v) = (rand(t * shape.q_dim()), rand(t * shape.kv_dim()), rand(t * shape.kv_dim()));
    let (mut out, mut lse) = (vec![0.0; t * shape.q_dim()], vec![0.0; t * shape.n_heads]);
    Cpu.attention_causal(&mut out, &mut lse, &q, &k, &v, &p).unwrap();
    let (hd, qd, kvd) = (shape.head_dim, shape.q_dim(), shape.kv_dim());
    for s in 0..lens.len() {
        let (a, b) = (cu[s] as usize, cu[s + 1] as usize);
        for i in a..b {
            for h in 0..shape.n_heads {
                let kh = h / shape.group();
                let scores: Vec<f64> = (a..=i).map(|j| (0..hd).map(|d| q[i * qd + h * hd + d] as f64 * k[j * kvd + kh * hd + d] as f64).sum::<f64>() * shape.scale as f64).collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = scores.iter().map(|x| (x - max).exp()).sum();
                assert!((lse[i * shape.n_heads + h] as f64 - (max + sum.ln())).abs() < 1e-4);
                for d in 0..hd {
                    let want: f64 = (a..=i).zip(&scores).map(|(j, x)| (x - max).exp() / sum * v[j * kvd + kh * hd + d] as f64).sum();
                    let got = out[i * qd + h * hd + d] as f64;
                    assert!((got - want).abs() < 1e-5, "token {i} head {h}: {got} vs {want}");
                }
            }
        }
    }
}
