//! The `ci` size of the demo suite: every row of the reference's main table and the continued-SFT
//! control runs through the real stack from the pretrained tiny base, later rows start from
//! earlier rows' checkpoints, and the comparison table comes back with a row per experiment and a
//! column group per benchmark, each under the protocol it was sampled with. Run again, the suite
//! reuses what it ran.

use prl_cli::client::Client;
use prl_cli::suite::Suite;
use prl_integration_tests::{TOKEN, TestApp, training_turn};
use std::path::Path;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ci_suite_runs_every_row_of_the_main_table() {
    let _turn = training_turn().await;
    let app = TestApp::spawn_with(|s| s.jobs.lease_seconds = 120).await;
    let _trainer = app.start_trainer("trainer");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/suite/ci");
    let suite = Suite::read(&dir).unwrap();
    let client = Client::new(Some(app.address.clone()), Some(TOKEN.into()));
    let seeds = suite.run(&client, &[], 1).await.unwrap();
    assert_eq!(seeds.len(), 1, "one seed");
    let ids = &seeds[0];
    assert_eq!(ids.len(), 9);

    let table = client.results(ids).await.unwrap();
    let methods: Vec<&str> = table.rows.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(
        methods,
        [
            "Base model",
            "Parallel-SFT-Seen",
            "Parallel-SFT-Unseen",
            "Continued SFT (control)",
            "GRPO (sequential)",
            "Parallel-R1-Seen",
            "Parallel-R1-Unseen (S1)",
            "Parallel-R1-Unseen (S2)",
            "Mid-training scaffold (S2 then accuracy)",
        ]
    );
    assert_eq!(
        table.benchmarks,
        ["builtin:easy-test", "builtin:hard-test"],
        "one protocol per benchmark: the final evaluations', not the in-loop ones'"
    );
    for row in &table.rows {
        assert_eq!(row.status, "completed", "{}", row.method);
        assert_eq!(row.results.len(), 2, "{}: {:?}", row.method, row.results);
        for result in row.results.values() {
            assert_eq!((result.k, result.prompts), (2, 4), "{}", row.method);
            assert_eq!(result.temperature, Some(1.0));
            assert_eq!(result.max_response_tokens, Some(96));
            assert!(result.greedy.is_some() && result.mean_at_k_se.is_some());
            assert!(result.pass_at_k >= result.mean_at_k);
        }
        let average = row.results.values().map(|r| r.mean_at_k).sum::<f64>() / 2.0;
        assert!((row.average.unwrap() - average).abs() < 1e-12);
    }
    // The base and the sequential baseline never open a block.
    assert_eq!(table.rows[0].parallel_ratio, Some(0.0));
    assert_eq!(table.rows[4].parallel_ratio, Some(0.0));
    // The control and the RL rows start from an earlier row's final checkpoint (a `checkpoint:`
    // model, fetched from the store), under the seed.
    for (i, id) in ids.iter().enumerate() {
        let detail = client.detail(*id).await.unwrap();
        let from_a_row = [3, 5, 6, 7, 8].contains(&i);
        assert_eq!(
            detail.summary.model.starts_with("checkpoint:"),
            from_a_row,
            "{}",
            detail.summary.model
        );
        assert!(detail.summary.tags.contains(&"seed-1".to_owned()));
        assert_eq!(detail.spec.unwrap().seed, 1);
    }
    // Every evaluation's generations are in the log, and none counts as an RL rollout.
    let generations = app
        .count("SELECT count(*) FROM trajectories WHERE benchmark IS NOT NULL")
        .await;
    assert!(generations >= 9 * 2 * 4 * 3, "{generations}");
    let rendered = prl_cli::results::render(&table);
    assert_eq!(
        rendered.lines().filter(|l| l.starts_with('|')).count(),
        2 + 9,
        "{rendered}"
    );
    assert!(rendered.contains("hard-test: 4 prompts × 2 samples at temperature 1"));

    // Each result's samples prompt by prompt, which the findings pair across rows.
    let scores = client.prompt_scores(ids).await.unwrap();
    assert_eq!(scores.len(), 9 * 2, "a row's two benchmarks each");
    for scored in &scores {
        let row = table
            .rows
            .iter()
            .find(|r| r.experiment_id == scored.experiment_id);
        let result = &row.unwrap().results[&scored.benchmark];
        assert_eq!(scored.prompts.len(), 4, "{}", scored.benchmark);
        assert!(scored.prompts.iter().all(|p| p.samples == 2));
        let mean = scored
            .prompts
            .iter()
            .map(|p| p.correct as f64 / 2.0)
            .sum::<f64>()
            / 4.0;
        assert!((mean - result.mean_at_k).abs() < 1e-9, "{mean} {result:?}");
    }

    // Started again, the suite reuses every row it ran: nothing is submitted or trained anew.
    let submitted = app.count("SELECT count(*) FROM experiments").await;
    let again = Suite::read(&dir)
        .unwrap()
        .run(&client, &[], 1)
        .await
        .unwrap();
    assert_eq!(again, seeds);
    assert_eq!(
        app.count("SELECT count(*) FROM experiments").await,
        submitted
    );
}
