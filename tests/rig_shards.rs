//! How the test harness splits the nested x86_64 scenarios among L1s that
//! run at once (tests/common/rig.rs): every scenario exactly once, the
//! shards' declared costs close to each other.

// Test code: a failed step should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::rig::{declared_cost, repo_root, scenario_costs, split_into_shards};

fn named(list: &[(&str, u64)]) -> Vec<(String, u64)> {
    list.iter().map(|(n, c)| (n.to_string(), *c)).collect()
}

#[test]
fn the_costliest_scenario_gets_a_shard_of_its_own_when_it_outweighs_the_rest() {
    let shards = split_into_shards(
        &named(&[("a", 50), ("b", 200), ("scale", 400), ("c", 150)]),
        2,
    );
    assert_eq!(
        shards,
        vec![
            vec!["scale".to_string()],
            vec!["a".into(), "b".into(), "c".into()]
        ]
    );
}

#[test]
fn one_shard_keeps_every_scenario_in_order() {
    let shards = split_into_shards(&named(&[("z", 1), ("a", 9), ("m", 5)]), 1);
    assert_eq!(shards, vec![vec!["z".to_string(), "a".into(), "m".into()]]);
}

#[test]
fn more_shards_than_scenarios_gives_one_scenario_per_shard() {
    let shards = split_into_shards(&named(&[("a", 1), ("b", 2)]), 4);
    assert_eq!(shards.len(), 2);
    assert!(shards.iter().all(|s| s.len() == 1));
}

#[test]
fn no_scenarios_gives_no_shards() {
    assert!(split_into_shards(&[], 2).is_empty());
}

#[test]
fn a_cost_line_is_read_and_a_missing_or_bad_one_is_none() {
    assert_eq!(
        declared_cost("#!/bin/sh\n# cellvm-cost: 173\necho"),
        Some(173)
    );
    assert_eq!(declared_cost("#!/bin/sh\necho"), None);
    assert_eq!(declared_cost("# cellvm-cost: soon\n"), None);
}

#[test]
fn every_x86_scenario_declares_its_cost() {
    let dir = repo_root().join("tests/nested/scenarios");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "sh") {
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                declared_cost(&text).is_some(),
                "{} has no `# cellvm-cost: SECS` line (its seconds in one idle run of the rig)",
                path.display()
            );
        }
    }
}

#[test]
fn the_real_scenarios_split_into_two_shards_of_close_cost_each_once() {
    let costs = scenario_costs(&repo_root().join("tests/nested/scenarios"), "all").unwrap();
    let shards = split_into_shards(&costs, 2);
    assert_eq!(shards.len(), 2);
    let mut seen: Vec<String> = shards.concat();
    seen.sort();
    let mut all: Vec<String> = costs.iter().map(|(n, _)| n.clone()).collect();
    all.sort();
    assert_eq!(seen, all, "each scenario in exactly one shard");
    let cost = |shard: &Vec<String>| -> u64 {
        shard
            .iter()
            .map(|n| costs.iter().find(|(m, _)| m == n).unwrap().1)
            .sum()
    };
    let (a, b) = (cost(&shards[0]), cost(&shards[1]));
    let largest = costs.iter().map(|(_, c)| *c).max().unwrap();
    assert!(
        a.abs_diff(b) <= largest,
        "shards of {a} s and {b} s: further apart than the costliest scenario ({largest} s)"
    );
}

#[test]
fn a_named_list_is_taken_as_given_with_unknown_costs_at_ten() {
    let costs = scenario_costs(
        &repo_root().join("tests/nested/scenarios"),
        "scale,no-such.sh",
    )
    .unwrap();
    assert_eq!(costs[0].0, "scale");
    assert!(costs[0].1 > 10);
    assert_eq!(costs[1], ("no-such".to_string(), 10));
}
