//! The evaluation protocol on a file like the reference's eval set: a verl parquet mixing
//! benchmarks by `data_source`, one of them repeating each prompt (as the reference repeats AIME
//! prompts 16 times). Each source is its own result, a repeated prompt counts as more samples of
//! one prompt, the sampling settings are recorded, and every generation comes back as a trajectory
//! of its benchmark.

use prl_integration_tests::{VerlFixtureRow, write_verl_parquet};
use prl_schema::spec::{Attention, RolloutMode};
use prl_trainer::data;
use prl_trainer::eval::{Protocol, evaluate};
use prl_trainer::model::LoadedModel;
use prl_trainer::presets::tiny_base_dir;
use prl_trainer::rollout::RolloutConfig;
use prl_trainer::sampling::Sampler;
use prl_trainer::tokenizer::{EOS, PrlTokenizer};
use std::collections::BTreeMap;

#[test]
fn a_mixed_eval_file_is_reported_per_source_with_repeats_as_samples() {
    let dir = std::env::temp_dir().join(format!("prl-eval-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("eval.parquet");
    let row = |question, truth, source| VerlFixtureRow {
        chat: vec![("user", question)],
        ground_truth: Some(truth),
        answer: None,
        data_source: Some(source),
    };
    let aime = [
        ("Mia has 3 apples and finds 4 more. How many now?", "7"),
        ("Leo has 10 coins and gives away 4. How many now?", "6"),
    ];
    let math = [
        ("Ava has 2 books and finds 2 more. How many now?", "4"),
        ("Tom has 9 cards and finds 1 more. How many now?", "10"),
        ("Zoe has 5 shells and gives away 1. How many now?", "4"),
    ];
    let mut rows = Vec::new();
    for _ in 0..3 {
        rows.extend(aime.iter().map(|(q, t)| row(q, t, "aime")));
    }
    rows.extend(math.iter().map(|(q, t)| row(q, t, "math")));
    write_verl_parquet(&path, &rows);

    let reference = format!("verl:{}", path.display());
    let tasks = data::tasks(&reference, None, &Default::default()).unwrap();
    assert_eq!(tasks.len(), 9);
    let base = tiny_base_dir().unwrap();
    let model = LoadedModel::load(&base, tch::Device::Cpu).unwrap();
    let (tok, _) = PrlTokenizer::load(&base.join("tokenizer.json"), EOS).unwrap();
    let protocol = Protocol {
        k: 2,
        greedy: true,
        config: RolloutConfig {
            attention: Attention::Unseen,
            mode: RolloutMode::Parallel,
            paths: 2,
            path_budget: 32,
            max_blocks: 2,
            max_new_tokens: 48,
            sampler: Sampler {
                temperature: 1.0,
                top_p: 1.0,
            },
        },
    };
    tch::manual_seed(1);
    let evaluation = evaluate(
        &model,
        &tok,
        &tasks,
        &reference,
        7,
        &protocol,
        tch::Device::Cpu,
    )
    .unwrap();
    let _ = std::fs::remove_dir_all(&dir);

    let results: BTreeMap<&str, _> = evaluation
        .results
        .iter()
        .map(|r| (r.benchmark.rsplit('#').next().unwrap(), r))
        .collect();
    assert_eq!(
        results.keys().copied().collect::<Vec<_>>(),
        ["aime", "math"]
    );
    // Three copies of each AIME prompt, two samples each: six samples of two prompts.
    assert_eq!((results["aime"].k, results["aime"].prompts), (6, 2));
    assert_eq!((results["math"].k, results["math"].prompts), (2, 3));
    for r in results.values() {
        assert_eq!(r.step, 7);
        assert!(r.benchmark.starts_with(&reference) && r.benchmark.contains('#'));
        let sampling = r.sampling.as_ref().expect("the settings are recorded");
        assert_eq!(
            (
                sampling.temperature,
                sampling.top_p,
                sampling.max_response_tokens
            ),
            (1.0, 1.0, 48)
        );
        assert!(r.mean_at_k_se.is_some() && r.greedy.is_some());
        assert!(r.pass_at_k >= r.mean_at_k);
    }
    // Every generation is recorded under its benchmark, the greedy pass apart; the numbers are
    // those of the recorded generations.
    let mut recorded: BTreeMap<String, Vec<bool>> = BTreeMap::new();
    for batch in &evaluation.generations {
        assert_eq!(batch.step, 7);
        let label = batch
            .benchmark
            .clone()
            .expect("an evaluation's batch names its benchmark");
        let samples = recorded.entry(label).or_default();
        samples.extend(batch.trajectories.iter().map(|t| t.correct));
    }
    let count = |suffix: &str| {
        recorded
            .iter()
            .find(|(label, _)| label.ends_with(suffix))
            .map(|(_, v)| v.len())
            .unwrap_or(0)
    };
    assert_eq!(count("#aime"), 12);
    assert_eq!(count("#math"), 6);
    assert_eq!(count("#aime (greedy)"), 2);
    assert_eq!(count("#math (greedy)"), 3);
    let right = |suffix: &str| {
        let v = recorded
            .iter()
            .find(|(l, _)| l.ends_with(suffix))
            .unwrap()
            .1;
        v.iter().filter(|c| **c).count() as f64 / v.len() as f64
    };
    // Equal samples per prompt: Mean@k is the share of right samples.
    assert!((results["aime"].mean_at_k - right("#aime")).abs() < 1e-12);
    assert!((results["math"].greedy.unwrap() - right("#math (greedy)")).abs() < 1e-12);
}
