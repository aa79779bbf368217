//! The paged KV cache: fixed-size blocks of key/value rows shared by all sequences, handed out
//! from a free list so that finished sequences return their blocks to new ones.

use std::collections::HashMap;

use anyhow::{bail, Result};

use crate::backend::Backend;

use super::config::ModelConfig;

/// Identifies a sequence in the cache (the rollout engine's slot or request id).
pub type SeqId = u64;

struct SeqBlocks {
    blocks: Vec<u32>,
    len: usize,
}

pub struct KvCache<B: Backend> {
    /// Per layer: keys and values, `[num_blocks * block_size, kv_dim]` each.
    pub layers: Vec<(B::Tensor, B::Tensor)>,
    pub block_size: usize,
    pub num_blocks: usize,
    free: Vec<u32>,
    seqs: HashMap<SeqId, SeqBlocks>,
}

impl<B: Backend> KvCache<B> {
    /// A cache able to hold `capacity_tokens` tokens in total across sequences.
    pub fn new(be: &B, cfg: &ModelConfig, capacity_tokens: usize, block_size: usize) -> Result<Self> {
        let num_blocks = capacity_tokens.div_ceil(block_size).max(1);
        let rows = num_blocks * block_size;
        let layers = (0..cfg.num_layers)
            .map(|_| Ok((be.zeros(rows * cfg.kv_dim())?, be.zeros(rows * cfg.kv_dim())?)))
            .collect::<Result<_>>()?;
        Ok(KvCache { layers, block_size, num_blocks, free: (0..num_blocks as u32).rev().collect(), seqs: HashMap::new() })
    }

    /// Tokens already cached for `seq` (0 for a new sequence).
    pub fn len(&self, seq: SeqId) -> usize {
        self.seqs.get(&seq).map_or(0, |s| s.len)
    }

    pub fn free_blocks(&self) -> usize {
        self.free.len()
    }

    /// Whether `extra` more tokens for `seq` fit in the free blocks.
    pub fn can_grow(&self, seq: SeqId, extra: usize) -> bool {
        let (have, len) = self.seqs.get(&seq).map_or((0, 0), |s| (s.blocks.len(), s.len));
        (len + extra).div_ceil(self.block_size).saturating_sub(have) <= self.free.len()
    }

    /// Reserves room for `extra` more tokens of `seq`; returns the cache rows (slots) they go to.
    pub fn append(&mut self, seq: SeqId, extra: usize) -> Result<Vec<u32>> {
        if !self.can_grow(seq, extra) {
            bail!("KV cache is full ({} blocks of {} tokens)", self.num_blocks, self.block_size);
        }
        let bs = self.block_size;
        let entry = self.seqs.entry(seq).or_insert(SeqBlocks { blocks: Vec::new(), len: 0 });
        while entry.blocks.len() * bs < entry.len + extra {
            entry.blocks.push(self.free.pop().expect("checked by can_grow"));
        }
        let slots = (entry.len..entry.len + extra).map(|p| entry.blocks[p / bs] * bs as u32 + (p % bs) as u32).collect();
        entry.len += extra;
        Ok(slots)
    }

    /// The block table of `seq`, padded with zeros to `width` entries.
    pub fn block_table(&self, seq: SeqId, width: usize) -> Vec<u32> {
        let mut t = self.seqs.get(&seq).map_or_else(Vec::new, |s| s.blocks.clone());
        t.resize(width, 0);
        t
    }

    pub fn blocks_of(&self, seq: SeqId) -> usize {
        self.seqs.get(&seq).map_or(0, |s| s.blocks.len())
    }

    /// Starts `dst` as a copy of everything cached for `src` (a shared prompt), so the prompt is
    /// computed once per group of samples.
    pub fn fork(&mut self, be: &B, src: SeqId, dst: SeqId) -> Result<()> {
        let len = self.len(src);
        if self.seqs.contains_key(&dst) {
            bail!("sequence {dst} is already in the cache");
        }
        let dst_slots = self.append(dst, len)?;
        let src_blocks = self.seqs[&src].blocks.clone();
        let dst_blocks = self.seqs[&dst].blocks.clone();
        debug_assert_eq!(dst_slots.len(), len);
        let row = self.layers.first().map_or(0, |(k, _)| be.len(k) / (self.num_blocks * self.block_size));
        let block_len = self.block_size * row;
        for (k, v) in &mut self.layers {
            for (&s, &d) in src_blocks.iter().zip(&dst_blocks) {
                be.copy_within(k, s as usize * block_len, d as usize * block_len, block_len)?;
                be.copy_within(v, s as usize * block_len, d as usize * block_len, block_len)?;
            }
        }
        Ok(())
    }

    /// Forgets `seq` and returns its blocks to the free list.
    pub fn release(&mut self, seq: SeqId) {
        if let Some(s) = self.seqs.remove(&seq) {
            self.free.extend(s.blocks);
        }
    }
}
