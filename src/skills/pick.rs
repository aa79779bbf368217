//! Choosing a small held-out set: a few tasks of each skill, spread over the repositories.

use std::collections::{BTreeMap, HashMap};

use super::{Skill, Task};

/// Up to `per_skill` items of each skill (all when 0), taken in turn from each repository of
/// that skill (in order of first appearance, each repository's items in file order), so a small
/// evaluation set is not all from the first repository of the file. Returned in file order.
pub fn pick_per_skill<T>(items: &[T], per_skill: usize, task: impl Fn(&T) -> &Task) -> Vec<&T> {
    if per_skill == 0 {
        return items.iter().collect();
    }
    // skill -> repositories in order of appearance -> item indices in file order
    let mut queues: BTreeMap<Skill, Vec<Vec<usize>>> = BTreeMap::new();
    let mut repo_slot: HashMap<(Skill, &str), usize> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        let t = task(item);
        let repos = queues.entry(t.skill).or_default();
        let slot = *repo_slot.entry((t.skill, t.repo.as_str())).or_insert_with(|| {
            repos.push(Vec::new());
            repos.len() - 1
        });
        repos[slot].push(i);
    }
    let mut chosen = Vec::new();
    for repos in queues.values() {
        let mut taken = 0;
        'rounds: for round in 0.. {
            let mut any = false;
            for queue in repos {
                if let Some(&i) = queue.get(round) {
                    any = true;
                    chosen.push(i);
                    taken += 1;
                    if taken == per_skill {
                        break 'rounds;
                    }
                }
            }
            if !any {
                break;
            }
        }
    }
    chosen.sort_unstable();
    chosen.into_iter().map(|i| &items[i]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(skill: Skill, repo: &str, id: &str) -> Task {
        let mut t: Task = serde_json::from_value(serde_json::json!({
            "instance_id": id, "repo": repo, "base_commit": "", "patch": "", "problem_statement": "",
        }))
        .unwrap();
        t.skill = skill;
        t
    }

    #[test]
    fn takes_each_repository_in_turn_per_skill() {
        let tasks = vec![
            task(Skill::Localize, "a", "a1"),
            task(Skill::Localize, "a", "a2"),
            task(Skill::Localize, "a", "a3"),
            task(Skill::Review, "a", "r1"),
            task(Skill::Localize, "b", "b1"),
            task(Skill::Localize, "b", "b2"),
        ];
        let ids = |n| pick_per_skill(&tasks, n, |t| t).iter().map(|t| t.instance_id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(3), ["a1", "a2", "r1", "b1"]);
        assert_eq!(ids(1), ["a1", "r1"]);
        assert_eq!(ids(10).len(), 6);
        assert_eq!(ids(0).len(), 6);
    }
}
