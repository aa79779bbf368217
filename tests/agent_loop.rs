//! The agent loop with a scripted policy: every skill solved through tool calls in a real
//! sandboxed workspace and graded 1 by the skill's grader; malformed calls answered with an
//! error observation; the loss mask covering exactly the policy's tokens across turns.
//! Needs the SmolLM2 tokenizer (its chat template renders the turns) and the grader's sandbox;
//! each test says why it is skipped when they are missing.

mod skills_support;

use std::path::PathBuf;

use atomrl::agent::{agent_messages, observation_text, run_episodes_with, AgentConfig, AgentRequest, EpisodeEnd, Scripted};
use atomrl::rl::step::loss_rows;
use atomrl::rl::tasks::messages_ids;
use atomrl::rollout::{Completion, FinishReason, SamplingConfig};
use atomrl::skills::patch::{parse_search_replace, FileEdit};
use atomrl::skills::{gold_completion, GraderConfig, Skill, Task};
use atomrl::tokenizer::Tokenizer;
use serde_json::json;
use skills_support::*;

fn tokenizer() -> Option<Tokenizer> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/smollm2/hf");
    if !dir.join("tokenizer.json").exists() {
        eprintln!("SKIPPED: {} not found (run scripts/fetch-smollm2.sh)", dir.display());
        return None;
    }
    Some(Tokenizer::from_dir(&dir).unwrap())
}

fn call(name: &str, arguments: serde_json::Value) -> String {
    format!("<tool_call>{}</tool_call>", json!({"name": name, "arguments": arguments}))
}

/// Look around, make one malformed call, then answer: with the gold answer through `submit`, or
/// for code editing with `edit` calls that apply the gold patch and an empty `submit`.
fn script(task: &Task) -> Vec<String> {
    let mut turns = vec![
        call("list", json!({})),
        "<tool_call>{\"name\": \"look\", \"arguments\": {}}</tool_call>".to_string(),
        call("search", json!({"pattern": "def "})),
        call("run", json!({"command": "python -c 'print(6 * 7)'"})),
    ];
    if task.skill == Skill::Edit {
        let edits = parse_search_replace(&gold_completion(task), None).expect("the gold edit parses");
        for e in edits {
            let FileEdit::Replace { path, search, replace } = e else { panic!("search/replace expected") };
            turns.push(call("view", json!({"path": path})));
            turns.push(call("edit", json!({"path": path, "search": search, "replace": replace})));
        }
        turns.push(call("submit", json!({})));
    } else {
        turns.push(call("submit", json!({"answer": gold_completion(task)})));
    }
    turns
}

fn tasks_with_env() -> Vec<Task> {
    let all = corpus();
    Skill::ALL.iter().map(|&s| all.iter().find(|t| t.skill == s && t.env.is_some()).cloned().expect("a task with a repository")).collect()
}

#[test]
fn a_scripted_agent_solves_every_skill_through_the_tools() {
    let Some(tok) = tokenizer() else { return };
    let tasks = tasks_with_env();
    let Some(grader) = grader_for("agent loop", &tasks, GraderConfig::default()) else { return };
    let requests: Vec<AgentRequest> = tasks
        .iter()
        .map(|t| {
            let messages = agent_messages(t);
            AgentRequest { task: t, prompt_ids: messages_ids(&tok, &messages).unwrap(), messages }
        })
        .collect();
    // With tools on worker threads (overlapping decoding) and on the decoding thread.
    for workers in [2, 0] {
        let cfg = AgentConfig { max_turns: 12, max_trajectory_tokens: 60_000, tool_workers: workers, ..AgentConfig::default() };
        let mut policy = Scripted::new(tasks.iter().map(script).collect());
        let trajectories = run_episodes_with(&mut policy, &tok, &grader, &requests, &cfg, &SamplingConfig::default()).unwrap();
        for (t, traj) in tasks.iter().zip(&trajectories) {
            let name = t.skill.name();
            assert_eq!(traj.end, EpisodeEnd::Submitted, "{name}: {:?}", traj.error);
            assert_eq!(traj.turns, script(t).len(), "{name}");
            assert_eq!(traj.malformed, 1, "{name}");
            assert_eq!(traj.tool_calls["list"], 1, "{name}");
            let grade = grader.grade(t, &traj.answer);
            assert_eq!(grade.reward, 1.0, "{name} ({workers} workers): {} {}\nanswer:\n{}", grade.reason, grade.detail, traj.answer);
            let observations: Vec<u32> = traj.tokens.iter().zip(&traj.policy).filter(|(_, p)| !**p).map(|(t, _)| *t).collect();
            let seen = tok.decode(&observations).unwrap();
            assert!(seen.contains("malformed tool call") && seen.contains("unknown tool"), "{name}: {seen}");
            assert!(seen.contains("42"), "{name}: the run tool's output is shown: {seen}");
        }
    }
}

#[test]
fn the_loss_mask_covers_exactly_the_policy_tokens_across_turns() {
    let Some(tok) = tokenizer() else { return };
    let tasks = tasks_with_env();
    let task = tasks.iter().find(|t| t.skill == Skill::Localize).unwrap();
    let Some(grader) = grader_for("agent mask", std::slice::from_ref(task), GraderConfig::default()) else { return };
    let messages = agent_messages(task);
    let prompt = messages_ids(&tok, &messages).unwrap();
    let turns = vec!["<tool_call>{\"name\": \"nope\"}</tool_call>".to_string(), call("submit", json!({"answer": "a.py"}))];
    let requests = vec![AgentRequest { task, messages: messages.clone(), prompt_ids: prompt.clone() }];
    let mut policy = Scripted::new(vec![turns.clone()]);
    let traj = run_episodes_with(&mut policy, &tok, &grader, &requests, &AgentConfig::default(), &SamplingConfig::default()).unwrap().remove(0);

    // By hand: turn 1, the error observation as the template renders a tool message, turn 2.
    let error = "error: malformed tool call: unknown tool \"nope\". Expected <tool_call>{\"name\": TOOL, \"arguments\": {...}}</tool_call> with TOOL one of view, search, list, run, edit, submit";
    let (t1, t2) = (tok.encode(&turns[0]).unwrap(), tok.encode(&turns[1]).unwrap());
    let obs = tok.encode(&observation_text(&tok, &messages, error, None).unwrap()).unwrap();
    let tokens: Vec<u32> = t1.iter().chain(&obs).chain(&t2).copied().collect();
    let policy: Vec<bool> = t1.iter().map(|_| true).chain(obs.iter().map(|_| false)).chain(t2.iter().map(|_| true)).collect();
    assert_eq!(traj.prompt_ids, prompt);
    assert_eq!(tok.decode(&traj.tokens).unwrap(), tok.decode(&tokens).unwrap());
    assert_eq!(traj.tokens, tokens);
    assert_eq!(traj.policy, policy);
    assert_eq!((traj.answer.as_str(), traj.end, traj.malformed), ("a.py", EpisodeEnd::Submitted, 1));

    // The loss rows: row r predicts token r+1, so exactly the rows before each policy token.
    let c = Completion { id: 0, prompt_ids: prompt.clone(), completion_ids: traj.tokens.clone(), completion_logprobs: traj.logprobs.clone(), finish_reason: FinishReason::Stop };
    let mask: Vec<f32> = traj.policy.iter().map(|&p| p as u8 as f32).collect();
    let (rows, _) = loss_rows(&c, &mask, false);
    assert_eq!(rows.len(), prompt.len() + tokens.len());
    for (r, &w) in rows.iter().enumerate() {
        let predicts_policy_token = r + 1 >= prompt.len() && r + 1 - prompt.len() < tokens.len() && policy[r + 1 - prompt.len()];
        assert_eq!(w, if predicts_policy_token { 1.0 } else { 0.0 }, "row {r}");
    }
    assert!(loss_rows(&c, &mask, true).0.iter().all(|&w| w == 0.0), "a masked trajectory trains on nothing");
}

/// The warm start's gold agent transcripts: real observations from the tools, and an answer the
/// skill's grader scores 1 (for code editing, the diff the `edit` calls made).
#[test]
fn gold_agent_transcripts_score_one_for_every_skill() {
    let tasks: Vec<Task> = tasks_with_env().into_iter().map(|mut t| {
        t.split = Some("train".into());
        t
    }).collect();
    let Some(grader) = grader_for("agent transcripts", &tasks, GraderConfig::default()) else { return };
    for t in &tasks {
        let (messages, answer) = atomrl::agent::gold_transcript(&grader, t, &Default::default()).unwrap();
        let roles: Vec<&str> = messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(&roles[..2], ["system", "user"]);
        for pair in roles[2..].chunks(2) {
            assert!(pair == ["assistant", "tool"] || pair == ["assistant"], "{roles:?}");
        }
        let last = &messages.last().unwrap().content;
        assert!(last.starts_with("<tool_call>{\"name\": \"submit\""), "{last}");
        let grade = grader.grade(t, &answer);
        assert_eq!(grade.reward, 1.0, "{}: {} {}", t.skill.name(), grade.reason, grade.detail);
    }
}
