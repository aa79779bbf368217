//! f32 master weights, checked on the CPU: `Bf16Sim` is the CPU backend with CUDA's storage
//! rules as the trainer sees them (compute copies rounded to bf16, `zeros_f32` /
//! `from_f32_exact` exact, master weights on), so the optimizer's master path, checkpoints of
//! the masters and exact resume are tested without a GPU. The arithmetic is the CPU's.

mod step_support;

use atomrl::backend::cpu::Cpu;
use atomrl::backend::{AdamW, Backend, CausalAttn, CrossEntropy, Gemm, LossGrads, LossRows, PagedAttn, PolicyLoss, Rope, SampleParams, Sampled};
use atomrl::model::Weights;
use atomrl::rl::trainer::Trainer;
use anyhow::Result;

use step_support::{bf16, host, run_step, step_case, trainer};

/// The CPU backend, except that the compute storage rounds to bf16 (see the module header).
struct Bf16Sim;

type T = Vec<f32>;
type I = Vec<u32>;

fn rounded(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| bf16(v)).collect()
}

fn causal<'a>(p: &CausalAttn<'a, Bf16Sim>) -> CausalAttn<'a, Cpu> {
    CausalAttn { tokens: p.tokens, n_seqs: p.n_seqs, shape: p.shape, cu_seqlens: p.cu_seqlens }
}

fn rows<'a>(r: &LossRows<'a, Bf16Sim>) -> LossRows<'a, Cpu> {
    LossRows { rows: r.rows, dim: r.dim, vocab: r.vocab, chunk: r.chunk, hidden: r.hidden, head: r.head, targets: r.targets, weights: r.weights }
}

fn grads(g: Option<LossGrads<'_, Bf16Sim>>) -> Option<LossGrads<'_, Cpu>> {
    g.map(|g| LossGrads { d_hidden: g.d_hidden, d_head: g.d_head })
}

impl Backend for Bf16Sim {
    type Tensor = T;
    type Index = I;

    fn name(&self) -> &'static str {
        "bf16-sim"
    }
    fn zeros(&self, len: usize) -> Result<T> {
        Cpu.zeros(len)
    }
    fn from_f32(&self, data: &[f32]) -> Result<T> {
        Ok(rounded(data))
    }
    fn from_f32_exact(&self, data: &[f32]) -> Result<T> {
        Ok(data.to_vec())
    }
    fn needs_master_weights(&self) -> bool {
        true
    }
    /// Always into the compute type: rounding a bf16 value again changes nothing, so the other
    /// direction (a compute copy widened into a master) is exact too.
    fn cast(&self, dst: &mut T, src: &T) -> Result<()> {
        dst[..src.len()].copy_from_slice(&rounded(src));
        Ok(())
    }
    fn to_f32(&self, t: &T) -> Result<Vec<f32>> {
        Ok(t.clone())
    }
    fn index(&self, data: &[u32]) -> Result<I> {
        Cpu.index(data)
    }
    fn len(&self, t: &T) -> usize {
        t.len()
    }
    fn copy(&self, dst: &mut T, dst_off: usize, src: &T, src_off: usize, len: usize) -> Result<()> {
        Cpu.copy(dst, dst_off, src, src_off, len)
    }
    fn fill(&self, x: &mut T, value: f32) -> Result<()> {
        Cpu.fill(x, value)
    }
    fn copy_within(&self, t: &mut T, src_off: usize, dst_off: usize, len: usize) -> Result<()> {
        Cpu.copy_within(t, src_off, dst_off, len)
    }
    fn embedding(&self, out: &mut T, table: &T, ids: &I, rows: usize, dim: usize) -> Result<()> {
        Cpu.embedding(out, table, ids, rows, dim)
    }
    fn embedding_backward(&self, d_table: &mut T, d_out: &T, ids: &I, rows: usize, dim: usize) -> Result<()> {
        Cpu.embedding_backward(d_table, d_out, ids, rows, dim)
    }
    fn rms_norm(&self, out: &mut T, x: &T, weight: &T, rows: usize, dim: usize, eps: f32) -> Result<()> {
        Cpu.rms_norm(out, x, weight, rows, dim, eps)
    }
    fn rms_norm_backward(&self, dx: &mut T, d_weight: &mut T, d_out: &T, x: &T, weight: &T, rows: usize, dim: usize, eps: f32) -> Result<()> {
        Cpu.rms_norm_backward(dx, d_weight, d_out, x, weight, rows, dim, eps)
    }
    fn gemm(&self, out: &mut T, a: &T, b: &T, g: Gemm) -> Result<()> {
        Cpu.gemm(out, a, b, g)
    }
    fn add_bias(&self, x: &mut T, bias: &T, rows: usize, dim: usize) -> Result<()> {
        Cpu.add_bias(x, bias, rows, dim)
    }
    fn add_bias_backward(&self, d_bias: &mut T, dx: &T, rows: usize, dim: usize) -> Result<()> {
        Cpu.add_bias_backward(d_bias, dx, rows, dim)
    }
    fn add(&self, acc: &mut T, x: &T) -> Result<()> {
        Cpu.add(acc, x)
    }
    fn rope(&self, x: &mut T, positions: &I, r: Rope) -> Result<()> {
        Cpu.rope(x, positions, r)
    }
    fn rope_backward(&self, dx: &mut T, positions: &I, r: Rope) -> Result<()> {
        Cpu.rope_backward(dx, positions, r)
    }
    fn swiglu(&self, out: &mut T, gate: &T, up: &T) -> Result<()> {
        Cpu.swiglu(out, gate, up)
    }
    fn swiglu_backward(&self, d_gate: &mut T, d_up: &mut T, d_out: &T, gate: &T, up: &T) -> Result<()> {
        Cpu.swiglu_backward(d_gate, d_up, d_out, gate, up)
    }
    fn kv_cache_write(&self, k_cache: &mut T, v_cache: &mut T, k: &T, v: &T, slots: &I, rows: usize, kv_dim: usize) -> Result<()> {
        Cpu.kv_cache_write(k_cache, v_cache, k, v, slots, rows, kv_dim)
    }
    fn attention_paged(&self, out: &mut T, q: &T, k_cache: &T, v_cache: &T, p: &PagedAttn<Self>) -> Result<()> {
        let p = PagedAttn { tokens: p.tokens, shape: p.shape, block_size: p.block_size, max_blocks: p.max_blocks, positions: p.positions, token_seq: p.token_seq, block_tables: p.block_tables };
        Cpu.attention_paged(out, q, k_cache, v_cache, &p)
    }
    fn attention_causal(&self, out: &mut T, lse: &mut T, q: &T, k: &T, v: &T, p: &CausalAttn<Self>) -> Result<()> {
        Cpu.attention_causal(out, lse, q, k, v, &causal(p))
    }
    fn attention_causal_backward(&self, dq: &mut T, dk: &mut T, dv: &mut T, d_out: &T, q: &T, k: &T, v: &T, out: &T, lse: &T, p: &CausalAttn<Self>) -> Result<()> {
        Cpu.attention_causal_backward(dq, dk, dv, d_out, q, k, v, out, lse, &causal(p))
    }
    fn policy_loss(&self, logp: &mut T, stats: &mut T, g: Option<LossGrads<Self>>, p: &PolicyLoss<Self>) -> Result<()> {
        let p = PolicyLoss { rows: rows(&p.rows), advantages: p.advantages, old_logp: p.old_logp, ref_logp: p.ref_logp, rollout_logp: p.rollout_logp, params: p.params };
        Cpu.policy_loss(logp, stats, grads(g), &p)
    }
    fn cross_entropy(&self, logp: &mut T, stats: &mut T, g: Option<LossGrads<Self>>, p: &CrossEntropy<Self>) -> Result<()> {
        Cpu.cross_entropy(logp, stats, grads(g), &CrossEntropy { rows: rows(&p.rows), temperature: p.temperature })
    }
    fn sum_squares(&self, acc: &mut T, x: &T) -> Result<()> {
        Cpu.sum_squares(acc, x)
    }
    fn adamw(&self, param: &mut T, grad: &T, m: &mut T, v: &mut T, p: AdamW) -> Result<()> {
        Cpu.adamw(param, grad, m, v, p)
    }
    fn sample(&self, logits: &T, vocab: usize, params: &[SampleParams]) -> Result<Vec<Sampled>> {
        Cpu.sample(logits, vocab, params)
    }
}

fn masters(t: &Trainer<Bf16Sim>) -> &Weights<Vec<f32>> {
    t.opt.master.as_ref().expect("Bf16Sim keeps master weights")
}

/// Every compute copy is its master rounded to bf16, bit for bit.
fn assert_compute_is_rounded_master(name: &str, t: &Trainer<Bf16Sim>) {
    for ((w, m), info) in t.model.weights.visit().into_iter().zip(masters(t).visit()).zip(t.infos.visit()) {
        assert!(w == &rounded(m), "{name}: the compute copy of {} is not its master rounded to bf16", info.name);
    }
}

/// From weights both storage types hold exactly, one step with master weights is the f32 step:
/// the same loss and gradient norm, and masters equal to the f32 trainer's weights.
fn first_step_matches_f32(name: &str, ce: bool) {
    let case = step_case(name);
    let mut reference = trainer(&Cpu, &case);
    let mut sim = trainer(&Bf16Sim, &case);
    assert!(reference.opt.master.is_none(), "the CPU backend must not keep master weights");
    for (m, h) in masters(&sim).visit().into_iter().zip(case.host.visit()) {
        assert!(m == h, "{name}: masters are not the loaded weights");
    }
    let (a, b) = (run_step(&Cpu, &mut reference, &case, ce), run_step(&Bf16Sim, &mut sim, &case, ce));
    assert_eq!(a, b, "{name}: step reports differ");
    for (((x, y), h), info) in reference.model.weights.visit().into_iter().zip(masters(&sim).visit()).zip(case.host.visit()).zip(sim.infos.visit()) {
        assert!(x == y, "{name}: master of {} differs from the f32 update", info.name);
        assert!(x != h, "{name}: {} did not move", info.name);
    }
    assert_compute_is_rounded_master(name, &sim);
    // The checkpointed weights are the masters.
    assert!(sim.host_weights(&Bf16Sim).unwrap().visit() == masters(&sim).visit());
}

#[test]
fn grpo_step_with_master_weights_is_the_f32_step() {
    for name in ["tiny-llama", "tiny-qwen2", "tiny-qwen3"] {
        first_step_matches_f32(name, false);
    }
}

#[test]
fn sft_step_with_master_weights_is_the_f32_step() {
    first_step_matches_f32("tiny-qwen3", true);
}

/// Updates far below half a bf16 spacing accumulate in the masters while the compute copies
/// stay put: what updating bf16 weights directly would lose.
#[test]
fn small_updates_accumulate_in_the_masters() {
    let mut case = step_case("tiny-llama");
    case.train.schedule.lr = 1e-7;
    case.train.optimizer.weight_decay = 0.0;
    let mut sim = trainer(&Bf16Sim, &case);
    for _ in 0..3 {
        run_step(&Bf16Sim, &mut sim, &case, false);
        assert_compute_is_rounded_master("tiny-llama", &sim);
    }
    let (mut moved, mut total) = (0usize, 0usize);
    for (m, h) in masters(&sim).visit().into_iter().zip(case.host.visit()) {
        for (a, b) in m.iter().zip(h) {
            total += 1;
            moved += usize::from(a != b);
            // three steps of at most lr each (Adam's step is about lr·sign(g)), each rounded to f32
            let bound = 3e-7 + 3.0 * f32::EPSILON * b.abs().max(a.abs());
            assert!((a - b).abs() <= bound, "a master moved by {} in three steps of lr 1e-7", (a - b).abs());
        }
    }
    assert!(moved * 2 > total, "only {moved} of {total} master values moved");
    // A bf16 spacing is 2^-8 to 2^-7 of the value: a compute copy changes only where a master
    // crossed a rounding boundary, which 3e-7 rarely reaches (tiny weights aside).
    let unchanged = sim.model.weights.visit().into_iter().zip(case.host.visit()).map(|(w, h)| w.iter().zip(h).filter(|(a, b)| a == b).count()).sum::<usize>();
    eprintln!("{moved} of {total} masters moved, {unchanged} compute values unchanged");
    assert!(unchanged * 10 >= total * 9, "only {unchanged} of {total} compute values unchanged");
}

/// A checkpoint holds the masters in f32, and resuming restores masters, compute copies and
/// moments exactly: the next step is the one an uninterrupted run takes.
#[test]
fn checkpoints_save_masters_and_resume_exactly() {
    let case = step_case("tiny-qwen2");
    let run_dir = tempfile::tempdir().unwrap();
    let mut full = trainer(&Bf16Sim, &case);
    run_step(&Bf16Sim, &mut full, &case, false);
    full.save(&Bf16Sim, run_dir.path()).unwrap();
    let (mut resumed, rejected) = Trainer::resume(&Bf16Sim, run_dir.path()).unwrap().expect("a checkpoint");
    assert!(rejected.is_empty(), "{rejected:?}");
    let same = |a: &Weights<Vec<f32>>, b: &Weights<Vec<f32>>| a.visit() == b.visit();
    assert!(same(masters(&full), masters(&resumed)), "masters differ after resuming");
    assert!(same(&full.model.weights, &resumed.model.weights), "compute copies differ after resuming");
    assert!(same(&full.opt.m, &resumed.opt.m) && same(&full.opt.v, &resumed.opt.v), "moments differ after resuming");
    // The saved model is f32: loading it gives the masters, not their bf16 compute copies.
    let saved = atomrl::model::checkpoint::load_weights(&run_dir.path().join("step_1"), &case.config).unwrap();
    assert!(same(&saved, masters(&full)));
    assert!(!same(&saved, &full.model.weights), "the checkpoint holds the rounded compute copies");

    let (a, b) = (run_step(&Bf16Sim, &mut full, &case, false), run_step(&Bf16Sim, &mut resumed, &case, false));
    assert_eq!(a, b, "the step after resuming differs");
    assert!(same(masters(&full), masters(&resumed)));
    assert!(same(&host(&Bf16Sim, &full.model.weights), &host(&Bf16Sim, &resumed.model.weights)));
}
