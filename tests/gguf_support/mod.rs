//! A minimal GGUF writer and a tiny model for the `convert gguf` tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use atomrl::convert::Progress;
use half::{bf16, f16};
use serde_json::Value as Json;
// ---------------------------------------------------------------------------------------------
// A minimal GGUF writer.

#[derive(Clone)]
pub enum Val {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    Str(String),
    /// Element type tag and elements.
    Arr(u32, Vec<Val>),
}

pub fn s(v: &str) -> Val {
    Val::Str(v.to_string())
}

pub fn str_arr<S: AsRef<str>>(items: &[S]) -> Val {
    Val::Arr(8, items.iter().map(|x| s(x.as_ref())).collect())
}

impl Val {
    pub fn tag(&self) -> u32 {
        match self {
            Val::U8(_) => 0,
            Val::I8(_) => 1,
            Val::U16(_) => 2,
            Val::I16(_) => 3,
            Val::U32(_) => 4,
            Val::I32(_) => 5,
            Val::F32(_) => 6,
            Val::Bool(_) => 7,
            Val::Str(_) => 8,
            Val::Arr(..) => 9,
            Val::U64(_) => 10,
            Val::I64(_) => 11,
            Val::F64(_) => 12,
        }
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        match self {
            Val::U8(v) => out.push(*v),
            Val::I8(v) => out.push(*v as u8),
            Val::U16(v) => out.extend(v.to_le_bytes()),
            Val::I16(v) => out.extend(v.to_le_bytes()),
            Val::U32(v) => out.extend(v.to_le_bytes()),
            Val::I32(v) => out.extend(v.to_le_bytes()),
            Val::U64(v) => out.extend(v.to_le_bytes()),
            Val::I64(v) => out.extend(v.to_le_bytes()),
            Val::F32(v) => out.extend(v.to_le_bytes()),
            Val::F64(v) => out.extend(v.to_le_bytes()),
            Val::Bool(v) => out.push(*v as u8),
            Val::Str(v) => write_str(out, v),
            Val::Arr(elem, items) => {
                out.extend(elem.to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                for it in items {
                    it.write(out);
                }
            }
        }
    }
}

pub fn write_str(out: &mut Vec<u8>, v: &str) {
    out.extend((v.len() as u64).to_le_bytes());
    out.extend(v.as_bytes());
}

pub struct RawTensor {
    pub name: String,
    /// GGUF order: fastest first.
    pub dims: Vec<u64>,
    pub ty: u32,
    pub data: Vec<u8>,
}

#[derive(Default)]
pub struct Gguf {
    pub version: u32,
    pub kv: Vec<(String, Val)>,
    pub tensors: Vec<RawTensor>,
    pub alignment: u64,
}

impl Gguf {
    pub fn new() -> Gguf {
        Gguf {
            version: 3,
            alignment: 32,
            ..Default::default()
        }
    }

    pub fn kv(&mut self, key: &str, v: Val) -> &mut Self {
        self.kv.retain(|(k, _)| k != key);
        self.kv.push((key.to_string(), v));
        self
    }

    pub fn remove_kv(&mut self, key: &str) -> &mut Self {
        self.kv.retain(|(k, _)| k != key);
        self
    }

    pub fn tensor(&mut self, name: &str, hf_shape: &[usize], ty: u32, data: Vec<u8>) -> &mut Self {
        self.tensors.retain(|t| t.name != name);
        self.tensors.push(RawTensor {
            name: name.to_string(),
            dims: hf_shape.iter().rev().map(|&d| d as u64).collect(),
            ty,
            data,
        });
        self
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(self.version.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.kv.len() as u64).to_le_bytes());
        for (k, v) in &self.kv {
            write_str(&mut out, k);
            out.extend(v.tag().to_le_bytes());
            v.write(&mut out);
        }
        let align = |n: u64| n.div_ceil(self.alignment) * self.alignment;
        let mut offset = 0u64;
        let mut offsets = Vec::new();
        for t in &self.tensors {
            write_str(&mut out, &t.name);
            out.extend((t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(t.ty.to_le_bytes());
            out.extend(offset.to_le_bytes());
            offsets.push(offset);
            offset = align(offset + t.data.len() as u64);
        }
        let start = align(out.len() as u64);
        out.resize(start as usize, 0);
        for (t, off) in self.tensors.iter().zip(offsets) {
            out.resize((start + off) as usize, 0);
            out.extend(&t.data);
        }
        out
    }

    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, self.bytes()).unwrap();
        path
    }
}

// ggml type tags.
pub const F32: u32 = 0;
pub const F16: u32 = 1;
pub const Q4_0: u32 = 2;
pub const Q4_1: u32 = 3;
pub const Q8_0: u32 = 8;
pub const IQ4_NL: u32 = 20;
pub const BF16: u32 = 30;

/// Encoders for values already on the quantization grid, so that decoding is exact.
pub fn enc_f32(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn enc_f16(v: &[f32]) -> Vec<u8> {
    v.iter()
        .flat_map(|&x| f16::from_f32(x).to_le_bytes())
        .collect()
}

pub fn enc_bf16(v: &[f32]) -> Vec<u8> {
    v.iter()
        .flat_map(|&x| bf16::from_f32(x).to_le_bytes())
        .collect()
}

pub const D: f32 = 0.5;
pub const M: f32 = -2.0;

pub fn enc_q8_0(v: &[f32]) -> Vec<u8> {
    v.chunks(32)
        .flat_map(|b| {
            let mut out = f16::from_f32(D).to_le_bytes().to_vec();
            out.extend(b.iter().map(|&x| (x / D) as i8 as u8));
            out
        })
        .collect()
}

pub fn enc_q4_0(v: &[f32]) -> Vec<u8> {
    v.chunks(32)
        .flat_map(|b| {
            let q = |x: f32| (x / D + 8.0) as u8;
            let mut out = f16::from_f32(D).to_le_bytes().to_vec();
            out.extend((0..16).map(|j| q(b[j]) | (q(b[j + 16]) << 4)));
            out
        })
        .collect()
}

pub fn enc_q4_1(v: &[f32]) -> Vec<u8> {
    v.chunks(32)
        .flat_map(|b| {
            let q = |x: f32| ((x - M) / D) as u8;
            let mut out = f16::from_f32(D).to_le_bytes().to_vec();
            out.extend(f16::from_f32(M).to_le_bytes());
            out.extend((0..16).map(|j| q(b[j]) | (q(b[j + 16]) << 4)));
            out
        })
        .collect()
}

/// Deterministic values on every grid used above: multiples of 0.5 in [-2, 3.5].
pub fn grid(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7 + seed * 13 + 3) % 12) as f32 * D + M)
        .collect()
}

/// llama.cpp's q/k permutation written out independently of the crate:
/// `w.reshape(n_head, 2, hd/2, cols).swapaxes(1, 2)`, i.e. stored row `h*hd + 2*j + i` holds
/// Hugging Face row `h*hd + i*hd/2 + j`.
pub fn llama_cpp_permute(w: &[f32], rows: usize, n_head: usize) -> Vec<f32> {
    let cols = w.len() / rows;
    let hd = rows / n_head;
    let mut out = vec![0.0; w.len()];
    for h in 0..n_head {
        for i in 0..2 {
            for j in 0..hd / 2 {
                let src = h * hd + i * hd / 2 + j;
                let dst = h * hd + 2 * j + i;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// A tiny model.

pub const HIDDEN: usize = 32;
pub const HEADS: usize = 2;
pub const KV_HEADS: usize = 1;
pub const HEAD_DIM: usize = 16;
pub const FF: usize = 64;
pub const LAYERS: usize = 2;

/// GPT-2's byte-to-character table.
pub fn byte_chars() -> Vec<char> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut chars = vec!['\0'; 256];
    for &b in &printable {
        chars[b as usize] = char::from_u32(b).unwrap();
    }
    let mut n = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            chars[b as usize] = char::from_u32(256 + n).unwrap();
            n += 1;
        }
    }
    printable.clear();
    chars
}

pub struct Vocab {
    pub tokens: Vec<String>,
    pub types: Vec<i32>,
    pub merges: Vec<String>,
}

pub fn tiny_vocab() -> Vocab {
    let mut tokens: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool>"]
        .map(String::from)
        .to_vec();
    let mut types = vec![3, 3, 3, 4];
    for c in byte_chars() {
        tokens.push(c.to_string());
        types.push(1);
    }
    let merges: Vec<String> = ["h e", "Ġ t", "Ġt he", "2 0"].map(String::from).to_vec();
    for m in &merges {
        tokens.push(m.replace(' ', ""));
        types.push(1);
    }
    Vocab {
        tokens,
        types,
        merges,
    }
}

/// Every tensor's Hugging Face name and values, as the converted file must contain them.
pub type Expected = Vec<(String, Vec<usize>, Vec<f32>)>;

/// A tiny llama (or qwen2) GGUF: every supported storage type appears at least once, q/k are stored
/// permuted for llama.
pub fn tiny_model(arch: &str) -> (Gguf, Expected) {
    let vocab = tiny_vocab();
    let n_vocab = vocab.tokens.len();
    let llama = arch == "llama";
    let mut g = Gguf::new();
    let k = |s: &str| format!("{arch}.{s}");
    g.kv("general.architecture", s(arch))
        .kv("general.name", s("tiny"))
        .kv(&k("block_count"), Val::U32(LAYERS as u32))
        .kv(&k("context_length"), Val::U32(256))
        .kv(&k("embedding_length"), Val::U32(HIDDEN as u32))
        .kv(&k("feed_forward_length"), Val::U32(FF as u32))
        .kv(&k("attention.head_count"), Val::U32(HEADS as u32))
        .kv(&k("attention.head_count_kv"), Val::U32(KV_HEADS as u32))
        .kv(&k("rope.freq_base"), Val::F32(100000.0))
        .kv(&k("rope.dimension_count"), Val::U32(HEAD_DIM as u32))
        .kv(&k("attention.layer_norm_rms_epsilon"), Val::F32(1e-5))
        .kv("tokenizer.ggml.model", s("gpt2"))
        .kv(
            "tokenizer.ggml.pre",
            s(if llama { "smollm" } else { "qwen2" }),
        )
        .kv("tokenizer.ggml.tokens", str_arr(&vocab.tokens))
        .kv(
            "tokenizer.ggml.token_type",
            Val::Arr(5, vocab.types.iter().map(|&t| Val::I32(t)).collect()),
        )
        .kv("tokenizer.ggml.merges", str_arr(&vocab.merges))
        .kv("tokenizer.ggml.bos_token_id", Val::U32(1))
        .kv("tokenizer.ggml.eos_token_id", Val::U32(2))
        .kv("tokenizer.ggml.padding_token_id", Val::U32(0))
        .kv("tokenizer.ggml.add_bos_token", Val::Bool(!llama))
        .kv(
            "tokenizer.chat_template",
            s("{% for m in messages %}{{ m['content'] }}{% endfor %}"),
        );

    let mut expected = Vec::new();
    let mut seed = 0;
    let mut add =
        |g: &mut Gguf, gguf: &str, hf: &str, shape: &[usize], ty: u32, permute: Option<usize>| {
            seed += 1;
            let values = grid(shape.iter().product(), seed);
            let stored = match permute {
                Some(n_head) if llama => llama_cpp_permute(&values, shape[0], n_head),
                _ => values.clone(),
            };
            let data = match ty {
                F32 => enc_f32(&stored),
                F16 => enc_f16(&stored),
                BF16 => enc_bf16(&stored),
                Q8_0 => enc_q8_0(&stored),
                Q4_0 => enc_q4_0(&stored),
                Q4_1 => enc_q4_1(&stored),
                _ => unreachable!(),
            };
            g.tensor(gguf, shape, ty, data);
            expected.push((hf.to_string(), shape.to_vec(), values));
        };
    add(
        &mut g,
        "token_embd.weight",
        "model.embed_tokens.weight",
        &[n_vocab, HIDDEN],
        Q8_0,
        None,
    );
    for i in 0..LAYERS {
        let b = |s: &str| format!("blk.{i}.{s}");
        let m = |s: &str| format!("model.layers.{i}.{s}");
        let (q, kv) = (HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM);
        add(
            &mut g,
            &b("attn_norm.weight"),
            &m("input_layernorm.weight"),
            &[HIDDEN],
            F32,
            None,
        );
        add(
            &mut g,
            &b("attn_q.weight"),
            &m("self_attn.q_proj.weight"),
            &[q, HIDDEN],
            Q4_0,
            Some(HEADS),
        );
        add(
            &mut g,
            &b("attn_k.weight"),
            &m("self_attn.k_proj.weight"),
            &[kv, HIDDEN],
            Q4_1,
            Some(KV_HEADS),
        );
        add(
            &mut g,
            &b("attn_v.weight"),
            &m("self_attn.v_proj.weight"),
            &[kv, HIDDEN],
            F16,
            None,
        );
        add(
            &mut g,
            &b("attn_output.weight"),
            &m("self_attn.o_proj.weight"),
            &[HIDDEN, q],
            Q8_0,
            None,
        );
        if !llama {
            add(
                &mut g,
                &b("attn_q.bias"),
                &m("self_attn.q_proj.bias"),
                &[q],
                F32,
                Some(HEADS),
            );
            add(
                &mut g,
                &b("attn_k.bias"),
                &m("self_attn.k_proj.bias"),
                &[kv],
                F32,
                Some(KV_HEADS),
            );
            add(
                &mut g,
                &b("attn_v.bias"),
                &m("self_attn.v_proj.bias"),
                &[kv],
                F32,
                None,
            );
        }
        add(
            &mut g,
            &b("ffn_norm.weight"),
            &m("post_attention_layernorm.weight"),
            &[HIDDEN],
            F32,
            None,
        );
        add(
            &mut g,
            &b("ffn_gate.weight"),
            &m("mlp.gate_proj.weight"),
            &[FF, HIDDEN],
            Q4_0,
            None,
        );
        add(
            &mut g,
            &b("ffn_up.weight"),
            &m("mlp.up_proj.weight"),
            &[FF, HIDDEN],
            Q4_1,
            None,
        );
        add(
            &mut g,
            &b("ffn_down.weight"),
            &m("mlp.down_proj.weight"),
            &[HIDDEN, FF],
            BF16,
            None,
        );
    }
    add(
        &mut g,
        "output_norm.weight",
        "model.norm.weight",
        &[HIDDEN],
        F32,
        None,
    );
    if llama {
        add(
            &mut g,
            "output.weight",
            "lm_head.weight",
            &[n_vocab, HIDDEN],
            F16,
            None,
        );
    }
    (g, expected)
}

pub fn quiet(_: Progress<'_>) {}

pub fn read_json(path: &Path) -> Json {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every tensor of `model.safetensors` as (shape, f32 values).
pub fn read_weights(dir: &Path) -> HashMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), safetensors::Dtype::BF16, "{name}");
            let values = view
                .data()
                .chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect();
            (name, (view.shape().to_vec(), values))
        })
        .collect()
}

pub fn err_text(r: anyhow::Result<impl std::fmt::Debug>) -> String {
    format!("{:#}", r.expect_err("expected an error"))
}

