//! `atomrl convert gguf`: synthetic GGUF files written here exercise the reader, the dequantizers,
//! the name mapping, the q/k un-permutation, the tokenizer rebuild and every error path; the real
//! SmolLM2-135M-Instruct file is converted too when `scripts/fetch-smollm2.sh` has fetched it.

mod gguf_support;

use gguf_support::*;
use std::path::Path;

use atomrl::convert::gguf::{GgufFile, Value, ValueType};
use atomrl::convert::gguf_to_hf;

// ---------------------------------------------------------------------------------------------
// Tests.

#[test]
fn parses_every_metadata_type_and_alignment() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = Gguf::new();
    g.alignment = 64;
    g.kv("general.alignment", Val::U32(64))
        .kv("u8", Val::U8(200))
        .kv("i8", Val::I8(-5))
        .kv("u16", Val::U16(60000))
        .kv("i16", Val::I16(-30000))
        .kv("u32", Val::U32(4_000_000_000))
        .kv("i32", Val::I32(-2_000_000_000))
        .kv("u64", Val::U64(u64::MAX))
        .kv("i64", Val::I64(i64::MIN))
        .kv("f32", Val::F32(1.5))
        .kv("f64", Val::F64(-0.25))
        .kv("bool", Val::Bool(true))
        .kv("str", s("héllo"))
        .kv("empty", Val::Arr(4, vec![]))
        .kv(
            "nested",
            Val::Arr(
                9,
                vec![
                    Val::Arr(4, vec![Val::U32(1), Val::U32(2)]),
                    Val::Arr(4, vec![]),
                ],
            ),
        )
        .tensor("a", &[3], F32, enc_f32(&[1.0, 2.0, 3.0]))
        .tensor("b", &[2, 32], Q8_0, enc_q8_0(&grid(64, 1)));
    let path = g.write(dir.path(), "types.gguf");
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(f.alignment, 64);
    assert_eq!(f.get("u8"), Some(&Value::U8(200)));
    assert_eq!(f.get("i8"), Some(&Value::I8(-5)));
    assert_eq!(f.get("u16"), Some(&Value::U16(60000)));
    assert_eq!(f.get("i16"), Some(&Value::I16(-30000)));
    assert_eq!(f.get("u32"), Some(&Value::U32(4_000_000_000)));
    assert_eq!(f.get("i32"), Some(&Value::I32(-2_000_000_000)));
    assert_eq!(f.get("u64"), Some(&Value::U64(u64::MAX)));
    assert_eq!(f.get("i64"), Some(&Value::I64(i64::MIN)));
    assert_eq!(f.get("f32"), Some(&Value::F32(1.5)));
    assert_eq!(f.get("f64"), Some(&Value::F64(-0.25)));
    assert_eq!(f.get("bool"), Some(&Value::Bool(true)));
    assert_eq!(f.get("str"), Some(&Value::String("héllo".into())));
    assert_eq!(f.get("empty"), Some(&Value::Array(ValueType::U32, vec![])));
    assert_eq!(
        f.get("nested"),
        Some(&Value::Array(
            ValueType::Array,
            vec![
                Value::Array(ValueType::U32, vec![Value::U32(1), Value::U32(2)]),
                Value::Array(ValueType::U32, vec![]),
            ]
        ))
    );
    assert_eq!(f.usize("u32").unwrap(), 4_000_000_000);
    assert!(err_text(f.usize("i8")).contains("out of range"));
    assert!(err_text(f.usize("str")).contains("has type String, expected an integer"));
    assert!(err_text(f.usize("nope")).contains("missing metadata key `nope`"));

    let a = f.tensor("a").unwrap();
    assert_eq!(a.dims, [3]);
    assert_eq!(a.range.start % 64, 0);
    assert_eq!(f.tensor_bytes(a), enc_f32(&[1.0, 2.0, 3.0]));
    let b = f.tensor("b").unwrap();
    assert_eq!(b.dims, [32, 2]);
    assert_eq!(b.hf_shape(), [2, 32]);
    assert_eq!(b.range.start % 64, 0);
    assert_eq!(b.range.len(), 68);
}

#[test]
fn accepts_version_2() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = Gguf::new();
    g.version = 2;
    g.kv("x", Val::U32(7))
        .tensor("t", &[2], F32, enc_f32(&[1.0, 2.0]));
    let f = GgufFile::open(&g.write(dir.path(), "v2.gguf")).unwrap();
    assert_eq!(f.version, 2);
    assert_eq!(f.usize("x").unwrap(), 7);
}

#[test]
fn converts_tiny_llama_and_undoes_the_rotary_permutation() {
    let dir = tempfile::tempdir().unwrap();
    let (g, expected) = tiny_model("llama");
    let path = g.write(dir.path(), "tiny.gguf");
    let out = dir.path().join("hf");
    let summary = gguf_to_hf(&path, &out, &quiet).unwrap();
    assert_eq!(summary.n_tensors, expected.len());

    let weights = read_weights(&out);
    assert_eq!(weights.len(), expected.len());
    for (name, shape, values) in &expected {
        let (got_shape, got) = weights
            .get(name)
            .unwrap_or_else(|| panic!("missing {name}"));
        assert_eq!(got_shape, shape, "{name}");
        assert_eq!(got, values, "{name}");
    }

    let c = read_json(&out.join("config.json"));
    assert_eq!(c["model_type"], "llama");
    assert_eq!(c["architectures"], serde_json::json!(["LlamaForCausalLM"]));
    assert_eq!(c["hidden_size"], HIDDEN);
    assert_eq!(c["intermediate_size"], FF);
    assert_eq!(c["num_hidden_layers"], LAYERS);
    assert_eq!(c["num_attention_heads"], HEADS);
    assert_eq!(c["num_key_value_heads"], KV_HEADS);
    assert_eq!(c["head_dim"], HEAD_DIM);
    assert_eq!(c["rms_norm_eps"], 1e-5);
    assert_eq!(c["rope_theta"], 100000.0);
    assert_eq!(c["max_position_embeddings"], 256);
    assert_eq!(c["vocab_size"], tiny_vocab().tokens.len());
    assert_eq!(c["tie_word_embeddings"], false);
    assert_eq!(c["bos_token_id"], 1);
    assert_eq!(c["eos_token_id"], 2);
    assert_eq!(c["torch_dtype"], "bfloat16");
    assert_eq!(
        read_json(&out.join("generation_config.json"))["eos_token_id"],
        2
    );

    let tc = read_json(&out.join("tokenizer_config.json"));
    assert_eq!(tc["bos_token"], "<|im_start|>");
    assert_eq!(tc["eos_token"], "<|im_end|>");
    assert_eq!(tc["pad_token"], "<|endoftext|>");
    assert_eq!(tc["add_bos_token"], false);
    assert!(tc["chat_template"].as_str().unwrap().contains("messages"));

    let tok = tokenizers::Tokenizer::from_file(out.join("tokenizer.json")).unwrap();
    let vocab = tiny_vocab();
    let id = |t: &str| vocab.tokens.iter().position(|x| x == t).unwrap() as u32;
    let enc = tok.encode("<|im_start|> the 2024<tool>", true).unwrap();
    // Digits are split one by one, so the "2 0" merge never applies.
    assert_eq!(
        enc.get_ids(),
        [
            1,
            id("Ġthe"),
            id("Ġ"),
            id("2"),
            id("0"),
            id("2"),
            id("4"),
            3
        ]
    );
    let added = tok.get_added_tokens_decoder();
    assert!(added[&1].special);
    assert!(
        !added[&3].special,
        "user-defined tokens are added but not special"
    );
    for text in [
        "the cat, 2024!",
        "héllo wörld ✓ 日本語",
        "  spaces\n\tand\ttabs  ",
    ] {
        let ids = tok.encode(text, false).unwrap().get_ids().to_vec();
        assert_eq!(tok.decode(&ids, false).unwrap(), text);
    }
}

#[test]
fn converts_tiny_qwen2_with_biases_and_tied_embeddings() {
    let dir = tempfile::tempdir().unwrap();
    let (g, expected) = tiny_model("qwen2");
    let path = g.write(dir.path(), "tiny.gguf");
    let out = dir.path().join("hf");
    gguf_to_hf(&path, &out, &quiet).unwrap();
    let weights = read_weights(&out);
    assert_eq!(weights.len(), expected.len());
    assert!(!weights.contains_key("lm_head.weight"));
    for (name, shape, values) in &expected {
        let (got_shape, got) = &weights[name];
        assert_eq!((got_shape, got), (shape, values), "{name}");
    }
    let c = read_json(&out.join("config.json"));
    assert_eq!(c["model_type"], "qwen2");
    assert_eq!(c["tie_word_embeddings"], true);
    let tok = tokenizers::Tokenizer::from_file(out.join("tokenizer.json")).unwrap();
    // add_bos_token is set: the template processor prepends bos.
    assert_eq!(
        tok.encode("he", true).unwrap().get_ids(),
        [
            1,
            tiny_vocab().tokens.iter().position(|t| t == "he").unwrap() as u32
        ]
    );
}

#[test]
fn every_truncation_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = Gguf::new();
    g.kv("name", s("x"))
        .kv("arr", Val::Arr(5, vec![Val::I32(1), Val::I32(2)]))
        .kv("flag", Val::Bool(false))
        .tensor("t", &[32], Q4_0, enc_q4_0(&grid(32, 0)));
    let bytes = g.bytes();
    let path = dir.path().join("cut.gguf");
    for len in 0..bytes.len() {
        std::fs::write(&path, &bytes[..len]).unwrap();
        let err = err_text(GgufFile::open(&path));
        assert!(err.contains("cut.gguf"), "prefix {len}: {err}");
        assert!(
            err.contains("truncated") || err.contains("end of file") || err.contains("cannot fit"),
            "prefix {len}: {err}"
        );
    }
    std::fs::write(&path, &bytes).unwrap();
    GgufFile::open(&path).unwrap();
}

#[test]
fn bad_magic_and_version_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = Gguf::new();
    g.kv("x", Val::U8(1));
    let mut bytes = g.bytes();
    bytes[..4].copy_from_slice(b"GGML");
    let path = dir.path().join("magic.gguf");
    std::fs::write(&path, &bytes).unwrap();
    let err = err_text(GgufFile::open(&path));
    assert!(
        err.contains("bad magic") && err.contains("magic.gguf"),
        "{err}"
    );

    g.version = 7;
    let err = err_text(GgufFile::open(&g.write(dir.path(), "v7.gguf")));
    assert!(err.contains("unsupported GGUF version 7"), "{err}");
}

#[test]
fn corrupted_counts_and_offsets_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    // An array claiming 2^60 elements must fail before allocating anything.
    let mut g = Gguf::new();
    g.kv("arr", Val::Arr(4, vec![Val::U32(1)]));
    let mut bytes = g.bytes();
    let len_at = 24 + 8 + 3 + 4 + 4; // header, key, value type, element type
    assert_eq!(&bytes[len_at..len_at + 8], &1u64.to_le_bytes());
    bytes[len_at..len_at + 8].copy_from_slice(&(1u64 << 60).to_le_bytes());
    let path = dir.path().join("huge.gguf");
    std::fs::write(&path, &bytes).unwrap();
    let err = err_text(GgufFile::open(&path));
    assert!(err.contains("`arr`") && err.contains("cannot fit"), "{err}");

    // A tensor whose data offset points past the end of the file.
    let mut g = Gguf::new();
    g.tensor("w", &[4], F32, enc_f32(&[1.0; 4]));
    let mut bytes = g.bytes();
    let off_at = 24 + 8 + 1 + 4 + 8 + 4;
    assert_eq!(&bytes[off_at..off_at + 8], &[0; 8]);
    bytes[off_at..off_at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let err = err_text(GgufFile::open(&path));
    assert!(
        err.contains("tensor `w`") && err.contains("past the end"),
        "{err}"
    );

    // A row length that is not a whole number of blocks.
    let mut g = Gguf::new();
    g.tensor("q", &[16], Q8_0, vec![0; 34]);
    let err = err_text(GgufFile::open(&g.write(dir.path(), "ragged.gguf")));
    assert!(
        err.contains("tensor `q`") && err.contains("block size"),
        "{err}"
    );

    // An unknown type id.
    let mut g = Gguf::new();
    g.tensor("u", &[4], 99, vec![0; 4]);
    let err = err_text(GgufFile::open(&g.write(dir.path(), "unknown.gguf")));
    assert!(
        err.contains("`u`") && err.contains("unknown ggml type id 99"),
        "{err}"
    );
}

#[test]
fn unsupported_tensor_type_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (mut g, _) = tiny_model("llama");
    g.tensor(
        "blk.1.ffn_up.weight",
        &[FF, HIDDEN],
        IQ4_NL,
        vec![0; FF * 18],
    );
    let path = g.write(dir.path(), "iq4.gguf");
    let out = dir.path().join("hf");
    let err = err_text(gguf_to_hf(&path, &out, &quiet));
    assert!(
        err.contains("blk.1.ffn_up.weight") && err.contains("IQ4_NL"),
        "{err}"
    );
    assert!(
        !out.join("model.safetensors").exists(),
        "nothing is written on a validation error"
    );
}

#[test]
fn missing_metadata_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    for key in [
        "llama.block_count",
        "llama.attention.head_count",
        "tokenizer.ggml.tokens",
        "general.architecture",
    ] {
        let (mut g, _) = tiny_model("llama");
        g.remove_kv(key);
        let path = g.write(dir.path(), "missing.gguf");
        let err = err_text(gguf_to_hf(&path, &dir.path().join("hf"), &quiet));
        assert!(
            err.contains(&format!("missing metadata key `{key}`")),
            "{err}"
        );
        assert!(err.contains("missing.gguf"), "{err}");
    }
}

#[test]
fn missing_or_misshapen_tensors_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (mut g, _) = tiny_model("llama");
    g.tensors.retain(|t| t.name != "blk.1.attn_v.weight");
    let err = err_text(gguf_to_hf(
        &g.write(dir.path(), "a.gguf"),
        &dir.path().join("hf"),
        &quiet,
    ));
    assert!(
        err.contains("missing tensor `blk.1.attn_v.weight`"),
        "{err}"
    );

    let (mut g, _) = tiny_model("llama");
    g.tensor(
        "blk.0.ffn_norm.weight",
        &[HIDDEN + 1],
        F32,
        enc_f32(&[0.0; HIDDEN + 1]),
    );
    let err = err_text(gguf_to_hf(
        &g.write(dir.path(), "b.gguf"),
        &dir.path().join("hf"),
        &quiet,
    ));
    assert!(
        err.contains("blk.0.ffn_norm.weight") && err.contains("shape"),
        "{err}"
    );

    let (mut g, _) = tiny_model("llama");
    g.tensor(
        "blk.5.ffn_norm.weight",
        &[HIDDEN],
        F32,
        enc_f32(&[0.0; HIDDEN]),
    );
    let err = err_text(gguf_to_hf(
        &g.write(dir.path(), "c.gguf"),
        &dir.path().join("hf"),
        &quiet,
    ));
    assert!(
        err.contains("blk.5.ffn_norm.weight") && err.contains("no Hugging Face counterpart"),
        "{err}"
    );
}

#[test]
fn unknown_pre_tokenizer_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (mut g, _) = tiny_model("llama");
    g.kv("tokenizer.ggml.pre", s("mystery"));
    let err = err_text(gguf_to_hf(
        &g.write(dir.path(), "pre.gguf"),
        &dir.path().join("hf"),
        &quiet,
    ));
    assert!(err.contains("tokenizer.ggml.pre `mystery`"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// The real model, when fetched.

#[test]
fn converts_smollm2_when_present() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = root.join(".cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !path.exists() {
        eprintln!(
            "skipped: {} is absent (run scripts/fetch-smollm2.sh)",
            path.display()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("hf");
    let summary = gguf_to_hf(&path, &out, &quiet).unwrap();
    assert_eq!(summary.n_tensors, 272);

    let c = read_json(&out.join("config.json"));
    assert_eq!(c["model_type"], "llama");
    assert_eq!(c["hidden_size"], 576);
    assert_eq!(c["intermediate_size"], 1536);
    assert_eq!(c["num_hidden_layers"], 30);
    assert_eq!(c["num_attention_heads"], 9);
    assert_eq!(c["num_key_value_heads"], 3);
    assert_eq!(c["head_dim"], 64);
    assert_eq!(c["vocab_size"], 49152);
    assert_eq!(c["max_position_embeddings"], 8192);
    assert_eq!(c["rope_theta"], 100000.0);
    assert_eq!(c["rms_norm_eps"], 1e-5);
    assert_eq!(c["tie_word_embeddings"], true);
    assert_eq!(c["bos_token_id"], 1);
    assert_eq!(c["eos_token_id"], 2);

    let weights = read_weights(&out);
    assert_eq!(weights.len(), 272);
    assert_eq!(weights["model.embed_tokens.weight"].0, [49152, 576]);
    assert_eq!(weights["model.norm.weight"].0, [576]);
    assert!(!weights.contains_key("lm_head.weight"));
    for i in 0..30 {
        let shape = |s: &str| weights[&format!("model.layers.{i}.{s}")].0.clone();
        assert_eq!(shape("input_layernorm.weight"), [576]);
        assert_eq!(shape("post_attention_layernorm.weight"), [576]);
        assert_eq!(shape("self_attn.q_proj.weight"), [576, 576]);
        assert_eq!(shape("self_attn.k_proj.weight"), [192, 576]);
        assert_eq!(shape("self_attn.v_proj.weight"), [192, 576]);
        assert_eq!(shape("self_attn.o_proj.weight"), [576, 576]);
        assert_eq!(shape("mlp.gate_proj.weight"), [1536, 576]);
        assert_eq!(shape("mlp.up_proj.weight"), [1536, 576]);
        assert_eq!(shape("mlp.down_proj.weight"), [576, 1536]);
    }
    for (name, (_, values)) in &weights {
        assert!(
            values.iter().all(|v| v.is_finite()),
            "{name} has non-finite values"
        );
    }

    let tc = read_json(&out.join("tokenizer_config.json"));
    assert_eq!(tc["bos_token"], "<|im_start|>");
    assert_eq!(tc["eos_token"], "<|im_end|>");
    assert!(tc["chat_template"]
        .as_str()
        .unwrap()
        .contains("<|im_start|>"));

    let tok = tokenizers::Tokenizer::from_file(out.join("tokenizer.json")).unwrap();
    assert_eq!(tok.get_vocab_size(true), 49152);
    let prompt =
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";
    let enc = tok.encode(prompt, false).unwrap();
    let ids = enc.get_ids();
    assert_eq!(ids[0], 1, "{:?}", enc.get_tokens());
    assert_eq!(ids.iter().filter(|&&i| i == 1).count(), 2);
    assert_eq!(ids.iter().filter(|&&i| i == 2).count(), 1);
    assert_eq!(tok.decode(ids, false).unwrap(), prompt);
    let digits = tok.encode("2024", false).unwrap();
    assert_eq!(digits.get_tokens(), ["2", "0", "2", "4"]);
    for text in [
        "Hello, world!",
        "The year 2024 had 366 days.",
        "héllo wörld ✓ 日本語 🦀",
        "def f(x):\n    return x ** 2\n",
    ] {
        let ids = tok.encode(text, false).unwrap().get_ids().to_vec();
        assert_eq!(tok.decode(&ids, false).unwrap(), text);
    }
}
