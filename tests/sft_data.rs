//! SFT examples: the assistant mask from rendering prefixes of the chat template, on a tiny
//! word-level template (several assistant turns, a tool turn between them) and on SmolLM2's
//! template when it is set up; refusals for templates the mask cannot be exact for, and for
//! test-split tasks.

mod sft_support;

use atomrl::sft::{from_task, tokenize};
use atomrl::skills::load_tasks;
use atomrl::tokenizer::Tokenizer;

use sft_support::{model_dir, msg, TEMPLATE};

#[test]
fn only_assistant_turns_are_marked() {
    let tmp = tempfile::tempdir().unwrap();
    let tok = Tokenizer::from_dir(&model_dir(tmp.path(), TEMPLATE, false)).unwrap();
    let messages = vec![
        msg("system", "you help"),
        msg("user", "list files"),
        msg("assistant", "ls"),
        msg("tool", "file.py"),
        msg("assistant", "one file.py"),
        msg("user", "more"),
    ];
    let t = tokenize(&tok, &messages).unwrap();
    let words: Vec<String> = t.tokens.iter().map(|&id| tok.decode(&[id]).unwrap()).collect();
    let marked: Vec<&str> = words.iter().zip(&t.assistant).filter(|(_, a)| **a).map(|(w, _)| w.as_str()).collect();
    // Content and the end-of-turn marker of each assistant turn; never the role header, the
    // tool output or the user turns.
    assert_eq!(marked, ["ls", "<eot>", "one", "file.py", "<eot>"], "{words:?}");
    assert_eq!(t.tokens.len(), words.len());
    // Row r predicts token r+1.
    let rows = t.row_mask();
    for r in 0..t.tokens.len() {
        assert_eq!(rows[r] == 1.0, r + 1 < t.tokens.len() && t.assistant[r + 1]);
    }
}

#[test]
fn a_template_that_rewrites_earlier_turns_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let template = "{% for m in messages %}{{ m.role }} : {{ m.content }} {% if loop.last %}<eot>{% endif %} {% endfor %}{% if add_generation_prompt %}assistant : {% endif %}";
    let tok = Tokenizer::from_dir(&model_dir(tmp.path(), template, false)).unwrap();
    let err = tokenize(&tok, &[msg("user", "count"), msg("assistant", "one"), msg("user", "more"), msg("assistant", "two")]).unwrap_err();
    assert!(format!("{err:#}").contains("message 1"), "{err:#}");
}

#[test]
fn test_split_tasks_are_refused() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let (test, _) = load_tasks(&root.join("data/corpus/test.jsonl"), atomrl::skills::BadLine::Skip).unwrap();
    let err = from_task(&test[0]).unwrap_err();
    assert!(format!("{err}").contains("test split"), "{err}");
    let (train, _) = load_tasks(&root.join("data/corpus/train.jsonl"), atomrl::skills::BadLine::Skip).unwrap();
    let ex = from_task(&train[0]).unwrap();
    assert_eq!(ex.messages.last().unwrap().role, "assistant");
    assert_eq!(ex.messages.last().unwrap().content, atomrl::skills::gold_completion(&train[0]));
}

/// On SmolLM2's template (ByteLevel BPE), the marked tokens decode to exactly the answers and
/// their `<|im_end|>` markers. Runs when `.cache/smollm2/hf` is present.
#[test]
fn smollm2_mask_decodes_to_the_answers() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/smollm2/hf");
    if !dir.join("tokenizer.json").exists() {
        eprintln!("skipped: no {}", dir.display());
        return;
    }
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let messages = vec![
        msg("user", "Which file?"),
        msg("assistant", "toolz/itertoolz.py\n  indented"),
        msg("tool", "ok"),
        msg("assistant", " leading space and ```python\nx = 1\n```"),
    ];
    let t = tokenize(&tok, &messages).unwrap();
    // Decode each maximal run of marked tokens.
    let mut runs = Vec::new();
    let mut cur = Vec::new();
    for (id, a) in t.tokens.iter().zip(&t.assistant) {
        if *a {
            cur.push(*id);
        } else if !cur.is_empty() {
            runs.push(tok.decode(&std::mem::take(&mut cur)).unwrap());
        }
    }
    if !cur.is_empty() {
        runs.push(tok.decode(&cur).unwrap());
    }
    assert_eq!(runs, ["toolz/itertoolz.py\n  indented<|im_end|>\n", " leading space and ```python\nx = 1\n```<|im_end|>\n"]);
}
