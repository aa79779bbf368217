//! The objective's peak memory grows with the chunk, not with tokens × vocab: a counting
//! allocator records the largest live heap during the op (alone in this test binary).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use atomrl::backend::cpu::Cpu;
use atomrl::backend::{Backend, KlEstimator, LossGrads, LossRows, PolicyLoss, PolicyLossParams, LOSS_STATS};

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = System.alloc(l);
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Ordering::SeqCst) + l.size();
            PEAK.fetch_max(now, Ordering::SeqCst);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(l);
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Ordering::SeqCst) + l.size();
            PEAK.fetch_max(now, Ordering::SeqCst);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l);
        LIVE.fetch_sub(l.size(), Ordering::SeqCst);
    }
}

#[global_allocator]
static A: Counting = Counting;

#[test]
fn objective_memory_grows_with_the_chunk_not_the_logits() {
    let (rows, dim, vocab) = (1024usize, 16usize, 32768usize);
    let hidden: Vec<f32> = (0..rows * dim).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.01).collect();
    let head: Vec<f32> = (0..vocab * dim).map(|i| ((i * 13 % 97) as f32 - 48.0) * 0.01).collect();
    let targets = Cpu.index(&(0..rows).map(|r| (r * 7919 % vocab) as u32).collect::<Vec<_>>()).unwrap();
    let weights = vec![1.0 / rows as f32; rows];
    let (adv, old) = (vec![1.0f32; rows], vec![-10.0f32; rows]);
    let params = PolicyLossParams { temperature: 1.0, clip_low: 0.2, clip_high: 0.2, dual_clip: None, kl_coef: 0.0, kl_estimator: KlEstimator::K3, tis_cap: None };
    let mut logp = vec![0.0; rows];
    let mut stats = vec![0.0; LOSS_STATS];
    let mut dh = vec![0.0; rows * dim];
    let mut dw = vec![0.0; vocab * dim];
    let full_logits = rows * vocab * 4;
    let mut peaks = Vec::new();
    // The first call allocates gemm's per-thread packing buffers, which then stay: warm up.
    for (measure, chunk) in [(false, 32usize), (false, 128), (true, 32), (true, 128)] {
        let p = PolicyLoss {
            rows: LossRows { rows, dim, vocab, chunk, hidden: &hidden, head: &head, targets: &targets, weights: &weights },
            advantages: &adv,
            old_logp: Some(&old),
            ref_logp: None,
            rollout_logp: None,
            params,
        };
        let before = LIVE.load(Ordering::SeqCst);
        PEAK.store(before, Ordering::SeqCst);
        Cpu.policy_loss(&mut logp, &mut stats, Some(LossGrads { d_hidden: &mut dh, d_head: &mut dw }), &p).unwrap();
        let extra = PEAK.load(Ordering::SeqCst) - before;
        if !measure {
            continue;
        }
        let chunk_logits = chunk * vocab * 4;
        // One chunk of logits plus small per-chunk and per-row buffers (gemm's packing scratch
        // is bounded by its cache blocking).
        assert!(extra < chunk_logits + (8 << 20), "chunk {chunk}: {extra} bytes beyond the inputs (chunk logits {chunk_logits})");
        assert!(extra < full_logits / 4, "chunk {chunk}: {extra} bytes vs {full_logits} for whole logits");
        peaks.push(extra);
    }
    // Four times the chunk: the extra memory grows by about the extra logits.
    let grown = peaks[1] as f64 - peaks[0] as f64;
    let expected = (128 - 32) as f64 * vocab as f64 * 4.0;
    assert!((grown - expected).abs() < 0.25 * expected, "peak grew by {grown} bytes for {expected} bytes more logits");
}
