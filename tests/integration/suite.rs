//! The `ci` size of the demo suite: every row of the reference's main table runs through the
//! real stack, later rows start from earlier rows' checkpoints, and the comparison table comes
//! back with a row per experiment and a column pair per benchmark.

use prl_api::cli::client::Client;
use prl_api::cli::suite::Suite;
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
    let ids = suite.run(&client).await.unwrap();
    assert_eq!(ids.len(), 8);

    let table = client.results(&ids).await.unwrap();
    let methods: Vec<&str> = table.rows.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(
        methods,
        [
            "Base model",
            "Parallel-SFT-Seen",
            "Parallel-SFT-Unseen",
            "GRPO (sequential)",
            "Parallel-R1-Seen",
            "Parallel-R1-Unseen (S1)",
            "Parallel-R1-Unseen (S2)",
            "Mid-training scaffold (S2 then accuracy)",
        ]
    );
    for row in &table.rows {
        assert_eq!(row.status, "completed", "{}", row.method);
        assert_eq!(row.results.len(), 2, "{}: {:?}", row.method, row.results);
        let hard = row
            .results
            .values()
            .find(|r| r.k == 2)
            .expect("Mean@2 on hard-test");
        assert_eq!(hard.prompts, 4);
        assert!(hard.pass_at_k >= hard.mean_at_k);
        let average = row.results.values().map(|r| r.mean_at_k).sum::<f64>() / 2.0;
        assert!((row.average.unwrap() - average).abs() < 1e-12);
    }
    // The sequential baseline's rollouts never open a block.
    assert_eq!(table.rows[3].parallel_ratio, Some(0.0));
    // RL rows start from an SFT row's final checkpoint.
    for id in &ids[4..] {
        let detail = client.detail(*id).await.unwrap();
        assert!(
            detail.summary.model.starts_with("path:"),
            "{}",
            detail.summary.model
        );
    }
    let rendered = prl_api::cli::results::render(&table);
    assert_eq!(rendered.lines().count(), 2 + 8, "{rendered}");
}
