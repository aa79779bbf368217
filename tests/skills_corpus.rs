//! Every instance of the built-in corpus: its gold answer scores 1 and a wrong answer scores 0.
//! By default a sample (a few instances per skill and split); the whole corpus with
//! ATOMRL_FULL_CORPUS=1.

mod skills_support;

use atomrl::skills::{gold_completion, GraderConfig, Skill, Task, Verdict};
use skills_support::*;

/// Answers that must score 0, cheapest first.
fn wrong_answers(task: &Task, thorough: bool) -> Vec<String> {
    let mut out = vec![String::new()];
    if !thorough {
        return out;
    }
    out.push(match task.skill {
        Skill::Localize => "some/other_module.py\n".into(),
        Skill::Edit => {
            // A no-op edit: the bug stays, the tests keep failing.
            let line = task
                .context
                .as_ref()
                .and_then(|c| c.snippets.first())
                .and_then(|s| {
                    s.text
                        .lines()
                        .find(|l| !l.trim().is_empty())
                        .map(str::to_string)
                })
                .unwrap_or_default();
            format!(
                "{}\n<<<<<<< SEARCH\n{line}\n=======\n{line}\n>>>>>>> REPLACE\n",
                task.gold_files()[0]
            )
        }
        Skill::Testgen => "```python\ndef test_nothing():\n    assert True\n```\n".into(),
        Skill::Reproduce => "```python\nprint('all good')\n```\n".into(),
        Skill::Review => match task.review.as_ref().unwrap().label {
            Verdict::Correct => "VERDICT: incorrect".into(),
            Verdict::Incorrect => "VERDICT: correct".into(),
        },
    });
    out
}

fn check(tasks: &[Task], thorough: bool) {
    let Some(grader) = grader_for("corpus", tasks, GraderConfig::default()) else {
        return;
    };
    grader.prepare(tasks).expect("sources unpack");
    let mut items: Vec<(&Task, String, f32)> = Vec::new();
    for t in tasks {
        items.push((t, gold_completion(t), 1.0));
        for w in wrong_answers(t, thorough) {
            items.push((t, w, 0.0));
        }
    }
    let refs: Vec<(&Task, &str)> = items.iter().map(|(t, c, _)| (*t, c.as_str())).collect();
    let start = std::time::Instant::now();
    let grades = grader.grade_batch(&refs);
    let mut failures = Vec::new();
    for ((t, c, want), g) in items.iter().zip(&grades) {
        if g.reward != *want {
            failures.push(format!(
                "{} ({}): want {want}, got {} [{}: {}] for {:?}",
                t.instance_id,
                t.skill,
                g.reward,
                g.reason,
                g.detail,
                &c[..c.len().min(200)]
            ));
        }
    }
    eprintln!(
        "graded {} completions of {} instances in {:.1}s",
        items.len(),
        tasks.len(),
        start.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} wrong grades:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn corpus_sample_gold_scores_one_and_wrong_scores_zero() {
    let all = corpus();
    check(&sample(&all, 1), true);
}

#[test]
fn corpus_full_gold_scores_one_and_wrong_scores_zero() {
    if std::env::var("ATOMRL_FULL_CORPUS").as_deref() != Ok("1") {
        eprintln!("SKIPPED corpus_full: set ATOMRL_FULL_CORPUS=1 to grade the whole corpus");
        return;
    }
    check(&corpus(), false);
}

#[test]
fn corpus_has_every_skill_from_at_least_four_packages_split_by_package() {
    let all = corpus();
    let mut packages =
        std::collections::BTreeMap::<String, std::collections::BTreeSet<String>>::new();
    for t in &all {
        packages
            .entry(t.repo.clone())
            .or_default()
            .insert(t.split.clone().unwrap_or_default());
    }
    assert!(packages.len() >= 4, "packages: {packages:?}");
    assert!(
        packages.values().all(|s| s.len() == 1),
        "a package in both splits: {packages:?}"
    );
    for skill in Skill::ALL {
        assert!(
            all.iter().filter(|t| t.skill == skill).count() >= 20,
            "{skill}"
        );
    }
    assert!(all.iter().any(|t| t.tier == atomrl::skills::Tier::Easy));
    let reviews: Vec<Verdict> = all
        .iter()
        .filter_map(|t| t.review.as_ref().map(|r| r.label))
        .collect();
    let correct = reviews.iter().filter(|v| **v == Verdict::Correct).count();
    assert!(
        correct * 4 >= reviews.len() && correct * 4 <= reviews.len() * 3,
        "{correct} of {} correct",
        reviews.len()
    );
}

#[test]
fn prompts_state_the_answer_format_and_stay_compact() {
    for t in &corpus() {
        let msgs = atomrl::skills::prompt(t);
        assert_eq!(msgs[0].role, "system");
        let text: String = msgs.iter().map(|m| m.content.as_str()).collect();
        let marker = match t.skill {
            Skill::Localize => "one path per line",
            Skill::Edit => "<<<<<<< SEARCH",
            Skill::Testgen | Skill::Reproduce => "```python",
            Skill::Review => "VERDICT: correct",
        };
        assert!(text.contains(marker), "{}", t.instance_id);
        // ~3.5 characters per token: stay well inside a 2048-token context.
        assert!(text.len() < 6000, "{}: {} chars", t.instance_id, text.len());
    }
}
