//! Rebuilds a Hugging Face `tokenizer.json` and `tokenizer_config.json` from the GGUF vocabulary
//! (`tokenizer.ggml.*`).
//!
//! Only byte-level BPE vocabularies (`tokenizer.ggml.model` = `gpt2`) are supported. The
//! pre-tokenizer is chosen by `tokenizer.ggml.pre`, the name llama.cpp gives each known
//! pre-tokenizer; see [`PreTokenizer::from_gguf`] for the names understood. A file without that key
//! gets the plain GPT-2 split, as a documented fallback; an unknown name is an error, because a
//! wrong split silently changes every token id.

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value as Json};

use super::gguf::GgufFile;

/// GGUF token types (llama.cpp `llama_token_type`).
const TOKEN_TYPE_CONTROL: i128 = 3;
const TOKEN_TYPE_USER_DEFINED: i128 = 4;

/// The pre-tokenizer families llama.cpp knows, reduced to the ones that differ here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreTokenizer {
    /// GPT-2's regex inside ByteLevel.
    Gpt2,
    /// Every digit on its own, then GPT-2's regex (SmolLM, StarCoder).
    IndividualDigits,
    /// Llama 3's regex (numbers in groups of up to three).
    Llama3,
    /// Qwen2's regex (single digits), NFC normalization.
    Qwen2,
}

const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

impl PreTokenizer {
    /// Maps `tokenizer.ggml.pre` (`None` when absent) to a pre-tokenizer.
    pub fn from_gguf(pre: Option<&str>) -> Result<PreTokenizer> {
        Ok(match pre {
            None | Some("default") | Some("gpt-2") | Some("gpt2") | Some("phi-2") => {
                PreTokenizer::Gpt2
            }
            Some("smollm") | Some("starcoder") | Some("refact") => PreTokenizer::IndividualDigits,
            Some("llama3") | Some("llama-v3") | Some("llama-bpe") | Some("falcon3")
            | Some("pixtral") => PreTokenizer::Llama3,
            Some("qwen2") | Some("deepseek-r1-qwen") | Some("megrez") => PreTokenizer::Qwen2,
            Some(other) => bail!(
                "tokenizer.ggml.pre `{other}` is not supported (known: gpt-2, phi-2, smollm, \
                 starcoder, refact, llama3, llama-v3, llama-bpe, falcon3, pixtral, qwen2, \
                 deepseek-r1-qwen, megrez)"
            ),
        })
    }

    fn byte_level(use_regex: bool) -> Json {
        json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex})
    }

    fn split(regex: &str) -> Json {
        json!({"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false})
    }

    fn pre_tokenizer_json(self) -> Json {
        match self {
            PreTokenizer::Gpt2 => Self::byte_level(true),
            PreTokenizer::IndividualDigits => json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true},
                Self::byte_level(true),
            ]}),
            PreTokenizer::Llama3 => json!({"type": "Sequence", "pretokenizers": [
                Self::split(LLAMA3_REGEX),
                Self::byte_level(false),
            ]}),
            PreTokenizer::Qwen2 => json!({"type": "Sequence", "pretokenizers": [
                Self::split(QWEN2_REGEX),
                Self::byte_level(false),
            ]}),
        }
    }

    fn normalizer_json(self) -> Json {
        match self {
            PreTokenizer::Qwen2 => json!({"type": "NFC"}),
            _ => Json::Null,
        }
    }
}

/// Both tokenizer files, as JSON values ready to be written.
#[derive(Debug)]
pub struct TokenizerFiles {
    pub tokenizer: Json,
    pub tokenizer_config: Json,
    pub pre: PreTokenizer,
    pub n_tokens: usize,
    pub bos_token_id: Option<usize>,
    pub eos_token_id: Option<usize>,
    pub pad_token_id: Option<usize>,
    /// End-of-turn token, when the file names one different from eos.
    pub eot_token_id: Option<usize>,
}

pub fn build(g: &GgufFile, model_max_length: usize) -> Result<TokenizerFiles> {
    build_inner(g, model_max_length)
        .with_context(|| format!("{}: rebuilding the tokenizer", g.path.display()))
}

fn build_inner(g: &GgufFile, model_max_length: usize) -> Result<TokenizerFiles> {
    let model = g.str("tokenizer.ggml.model")?;
    ensure!(
        model == "gpt2",
        "tokenizer.ggml.model `{model}` is not supported (only `gpt2`, byte-level BPE)"
    );
    let pre = PreTokenizer::from_gguf(g.opt_str("tokenizer.ggml.pre")?)?;
    let tokens = g.str_array("tokenizer.ggml.tokens")?;
    let merges = g.str_array("tokenizer.ggml.merges")?;
    let types = g.opt_int_array("tokenizer.ggml.token_type")?;
    if let Some(types) = &types {
        ensure!(
            types.len() == tokens.len(),
            "tokenizer.ggml.token_type has {} entries for {} tokens",
            types.len(),
            tokens.len()
        );
    }
    let token_id = |key: &str| -> Result<Option<usize>> {
        let id = g.opt_usize(key)?;
        if let Some(id) = id {
            ensure!(
                id < tokens.len(),
                "{key} = {id} is outside the vocabulary of {}",
                tokens.len()
            );
        }
        Ok(id)
    };
    let bos = token_id("tokenizer.ggml.bos_token_id")?;
    let eos = token_id("tokenizer.ggml.eos_token_id")?;
    let pad = token_id("tokenizer.ggml.padding_token_id")?;
    let unk = token_id("tokenizer.ggml.unknown_token_id")?;
    let eot = token_id("tokenizer.ggml.eot_token_id")?.filter(|&t| Some(t) != eos);
    let add_bos = g.opt_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(false);
    let add_eos = g.opt_bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false);
    let chat_template = g.opt_str("tokenizer.chat_template")?;

    let (vocab, merges) = vocab_and_merges(&tokens, &merges)?;
    let (added_tokens, added_tokens_decoder) = added_tokens(&tokens, types.as_deref());
    let post_processor = post_processor(&tokens, add_bos, add_eos, bos, eos)?;

    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_tokens,
        "normalizer": pre.normalizer_json(),
        "pre_tokenizer": pre.pre_tokenizer_json(),
        "post_processor": post_processor,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": false,
            "vocab": vocab,
            "merges": merges,
        },
    });

    let name = |id: Option<usize>| id.map_or(Json::Null, |i| json!(tokens[i]));
    let mut tokenizer_config = json!({
        "add_bos_token": add_bos,
        "add_eos_token": add_eos,
        "added_tokens_decoder": added_tokens_decoder,
        "bos_token": name(bos),
        "eos_token": name(eos),
        "pad_token": name(pad),
        "unk_token": name(unk),
        "clean_up_tokenization_spaces": false,
        "model_max_length": model_max_length,
        "tokenizer_class": "PreTrainedTokenizerFast",
    });
    if let Some(t) = chat_template {
        tokenizer_config["chat_template"] = json!(t);
    }

    Ok(TokenizerFiles {
        tokenizer,
        tokenizer_config,
        pre,
        n_tokens: tokens.len(),
        bos_token_id: bos,
        eos_token_id: eos,
        pad_token_id: pad,
        eot_token_id: eot,
    })
}

/// The BPE vocabulary (token → id) and merges (pairs) of `tokenizer.json`'s model.
fn vocab_and_merges(tokens: &[&str], merges: &[&str]) -> Result<(serde_json::Map<String, Json>, Vec<Json>)> {
    // A token that appears twice keeps its first id, as llama.cpp's text-to-id map does.
    let mut vocab = serde_json::Map::with_capacity(tokens.len());
    for (id, tok) in tokens.iter().enumerate() {
        vocab.entry(tok.to_string()).or_insert(json!(id));
    }

    let merges: Vec<Json> = merges
        .iter()
        .enumerate()
        .map(|(i, m)| match m.split_once(' ') {
            Some((a, b)) => Ok(json!([a, b])),
            None => bail!(
                "tokenizer.ggml.merges entry {i} `{m}` is not two tokens separated by a space"
            ),
        })
        .collect::<Result<_>>()?;

    Ok((vocab, merges))
}

/// Control tokens (special) and user-defined tokens (added, not special), as `added_tokens` of
/// `tokenizer.json` and `added_tokens_decoder` of `tokenizer_config.json`.
fn added_tokens(tokens: &[&str], types: Option<&[i128]>) -> (Vec<Json>, serde_json::Map<String, Json>) {
    let mut added_tokens = Vec::new();
    let mut added_tokens_decoder = serde_json::Map::new();
    for (id, tok) in tokens.iter().enumerate() {
        let ty = types.map_or(1, |t| t[id]);
        if ty != TOKEN_TYPE_CONTROL && ty != TOKEN_TYPE_USER_DEFINED {
            continue;
        }
        // Control tokens are special; user-defined ones are added but, as in the Hugging Face
        // tokenizers llama.cpp converts from, not special (they survive skip_special_tokens).
        let special = ty == TOKEN_TYPE_CONTROL;
        let entry = json!({
            "content": tok, "single_word": false, "lstrip": false, "rstrip": false,
            "normalized": false, "special": special,
        });
        let mut with_id = entry.clone();
        with_id["id"] = json!(id);
        added_tokens.push(with_id);
        added_tokens_decoder.insert(id.to_string(), entry);
    }

    (added_tokens, added_tokens_decoder)
}

/// Byte-level post-processing, wrapped in a template that adds bos/eos where the GGUF asks for
/// them.
fn post_processor(tokens: &[&str], add_bos: bool, add_eos: bool, bos: Option<usize>, eos: Option<usize>) -> Result<Json> {
    let byte_level_post = json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true});
    Ok(if add_bos || add_eos {
        let (bos_tok, eos_tok) = (bos.map(|i| tokens[i]), eos.map(|i| tokens[i]));
        ensure!(
            !add_bos || bos_tok.is_some(),
            "add_bos_token is set but there is no bos_token_id"
        );
        ensure!(
            !add_eos || eos_tok.is_some(),
            "add_eos_token is set but there is no eos_token_id"
        );
        let special =
            |tok: &str, type_id: u32| json!({"SpecialToken": {"id": tok, "type_id": type_id}});
        let seq = |s: &str, type_id: u32| json!({"Sequence": {"id": s, "type_id": type_id}});
        let mut single = Vec::new();
        let mut pair = Vec::new();
        let mut special_tokens = serde_json::Map::new();
        for (which, type_id) in [("A", 0), ("B", 1)] {
            let items = if which == "A" { &mut single } else { &mut pair };
            if let (true, Some(t)) = (add_bos, bos_tok) {
                items.push(special(t, type_id));
            }
            items.push(seq(which, type_id));
            if let (true, Some(t)) = (add_eos, eos_tok) {
                items.push(special(t, type_id));
            }
        }
        let pair: Vec<Json> = single.iter().cloned().chain(pair).collect();
        for (flag, id) in [(add_bos, bos), (add_eos, eos)] {
            if let (true, Some(id)) = (flag, id) {
                special_tokens.insert(
                    tokens[id].to_string(),
                    json!({"id": tokens[id], "ids": [id], "tokens": [tokens[id]]}),
                );
            }
        }
        json!({"type": "Sequence", "processors": [
            byte_level_post,
            {"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": special_tokens},
        ]})
    } else {
        byte_level_post
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::pre_tokenizers::PreTokenizerWrapper;
    use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer as _};

    fn split(pre: PreTokenizer, text: &str) -> Vec<String> {
        let p: PreTokenizerWrapper = serde_json::from_value(pre.pre_tokenizer_json()).unwrap();
        let mut s = PreTokenizedString::from(text);
        p.pre_tokenize(&mut s).unwrap();
        s.get_splits(OffsetReferential::Original, OffsetType::Byte)
            .into_iter()
            .map(|(piece, _, _)| piece.to_string())
            .collect()
    }

    #[test]
    fn known_names_map_to_families() {
        assert_eq!(
            PreTokenizer::from_gguf(Some("smollm")).unwrap(),
            PreTokenizer::IndividualDigits
        );
        assert_eq!(
            PreTokenizer::from_gguf(Some("llama-bpe")).unwrap(),
            PreTokenizer::Llama3
        );
        assert_eq!(
            PreTokenizer::from_gguf(Some("qwen2")).unwrap(),
            PreTokenizer::Qwen2
        );
        assert_eq!(PreTokenizer::from_gguf(None).unwrap(), PreTokenizer::Gpt2);
        assert!(PreTokenizer::from_gguf(Some("tekken")).is_err());
    }

    #[test]
    fn pre_tokenizers_split_numbers_as_their_models_do() {
        let text = "year 12345 ok";
        assert_eq!(split(PreTokenizer::Gpt2, text), ["year", "Ġ12345", "Ġok"]);
        assert_eq!(
            split(PreTokenizer::IndividualDigits, text),
            ["year", "Ġ", "1", "2", "3", "4", "5", "Ġok"]
        );
        assert_eq!(
            split(PreTokenizer::Llama3, text),
            ["year", "Ġ", "123", "45", "Ġok"]
        );
        assert_eq!(
            split(PreTokenizer::Qwen2, text),
            ["year", "Ġ", "1", "2", "3", "4", "5", "Ġok"]
        );
    }
}
