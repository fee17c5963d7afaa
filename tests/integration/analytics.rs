//! The analytics projection, views and endpoints, on a seeded run whose answers are known: the
//! trajectories travel the real way (a worker publishes them on NATS, the ingester writes them).

use prl_integration_tests::seeds::{EXPLORE, VERIFY, answered as answer, block, trajectory};
use prl_integration_tests::{FakeWorker, TOKEN, TestApp};
use prl_schema::jobs::WorkerEvent;
use prl_schema::spec::StageKind;
use prl_schema::trajectory::{PromptRecord, TrajectoryBatch};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use uuid::Uuid;

/// Step 1: sequential right, verification right, exploration wrong, sequential wrong.
/// Step 2: exploration then verification (right), exploration (right).
fn seeded_steps() -> Vec<TrajectoryBatch> {
    let prompts = vec![PromptRecord {
        id: "p0".into(),
        group: 0,
        text: "What is half of 10?".into(),
        tokens: Some(12),
        truth: "5".into(),
    }];
    vec![
        TrajectoryBatch {
            step: 1,
            benchmark: None,
            prompts,
            trajectories: vec![
                trajectory(0, answer("10/2 = 5.", 5), true, vec![]),
                trajectory(1, answer(VERIFY, 5), true, vec![block(20)]),
                trajectory(2, answer(EXPLORE, 6), false, vec![block(40)]),
                trajectory(3, answer("guess", 6), false, vec![]),
            ],
        },
        // As in a step split across messages: the group keeps its number, its index is local.
        TrajectoryBatch {
            step: 2,
            benchmark: None,
            prompts: vec![PromptRecord {
                id: "p1".into(),
                group: 1,
                text: "What is half of twelve?".into(),
                tokens: Some(12),
                truth: "6".into(),
            }],
            trajectories: vec![
                trajectory(
                    0,
                    answer(&format!("{EXPLORE} Again:{VERIFY}"), 5),
                    true,
                    vec![block(10), block(60)],
                ),
                trajectory(1, answer(EXPLORE, 5), true, vec![block(50)]),
            ],
        },
    ]
}

/// A run with the seeded trajectories and a long, spiky loss curve.
async fn seeded_run(app: &TestApp) -> Uuid {
    app.submit(&json!({
        "name": "analytics",
        "model": "tiny",
        "stages": [{"kind": "rl", "name": "rl", "dataset": "builtin:easy", "reward": "s1",
                    "learning_rate": 1e-5, "steps": 2}]
    }))
    .await;
    let (worker, _) = FakeWorker::take(app, StageKind::Rl, "seeder").await;
    for batch in seeded_steps() {
        worker
            .reporter
            .send(WorkerEvent::Trajectories(batch))
            .await
            .unwrap();
    }
    for step in 1..=2000u64 {
        let loss = if step == 777 { 50.0 } else { 1.0 };
        worker
            .reporter
            .send(WorkerEvent::Metrics {
                step,
                values: BTreeMap::from([("loss".to_owned(), loss), ("lr".to_owned(), 0.1)]),
            })
            .await
            .unwrap();
    }
    app.wait_for_count(
        "SELECT count(*) FROM run_metrics",
        2000,
        Duration::from_secs(60),
    )
    .await;
    app.wait_for_count(
        "SELECT count(*) FROM trajectories",
        6,
        Duration::from_secs(10),
    )
    .await;
    worker.job.run_id.0
}

async fn post_json(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    let response = app.post_raw(path, body.to_string(), Some(TOKEN)).await;
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn json_ok(app: &TestApp, path: &str) -> Value {
    let response = app.get(path).await;
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}

fn close(value: &Value, expected: f64) -> bool {
    value.as_f64().is_some_and(|v| (v - expected).abs() < 1e-9)
}

#[tokio::test]
async fn the_views_and_endpoints_give_the_seeded_answers() {
    let app = TestApp::spawn().await;
    let run = seeded_run(&app).await;

    // Blocks: roles read off the text, positions off the trainer's token offsets.
    let roles: Vec<(i64, String, f64)> = sqlx::query_as(
        "SELECT step, role, rel_position FROM trajectory_blocks ORDER BY step, idx, block_idx",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let expected = [
        (1, "verification", 0.2),
        (1, "exploration", 0.4),
        (2, "exploration", 0.1),
        (2, "verification", 0.6),
        (2, "exploration", 0.5),
    ];
    assert_eq!(roles.len(), expected.len());
    for ((step, role, rel), (s, r, p)) in roles.iter().zip(expected) {
        assert_eq!((*step, role.as_str()), (s, r));
        assert!((rel - p).abs() < 1e-9, "{rel} != {p}");
    }

    let series = json_ok(&app, &format!("/api/v1/analytics/strategy?runs={run}")).await;
    let series = series.as_array().unwrap();
    assert_eq!(series.len(), 2);
    let (one, two) = (&series[0], &series[1]);
    assert_eq!(one["trajectories"], 4);
    assert!(close(&one["parallel_ratio"], 0.5));
    assert!(close(&one["mean_blocks"], 0.5));
    assert!(close(&one["accuracy"], 0.5));
    assert!(close(&one["accuracy_parallel"], 0.5));
    assert!(close(&one["accuracy_sequential"], 0.5));
    assert!(close(&one["exploration_share"], 0.5));
    assert!(close(&one["rel_position_median"], 0.3));
    assert!(close(&two["parallel_ratio"], 1.0));
    assert!(close(&two["mean_blocks"], 1.5));
    assert!(two["accuracy_sequential"].is_null());
    assert!(close(&two["verification_share"], 1.0 / 3.0));
    assert!(close(&two["rel_position_q1"], 0.3));

    let compare = json_ok(&app, &format!("/api/v1/analytics/comparison?runs={run}")).await;
    let row = &compare[0];
    assert_eq!(row["trajectories"], 6);
    assert_eq!(row["experiment"], "analytics");
    assert!(close(&row["accuracy"], 4.0 / 6.0));
    assert!(close(&row["verification_share"], 2.0 / 5.0));

    // The projection is rebuilt to the same numbers from the log alone.
    let before: Vec<String> = sqlx::query_scalar(
        "SELECT row_to_json(s)::text FROM strategy_evolution s ORDER BY run_id, step",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    prl_api::projections::replay::replay(&app.pool)
        .await
        .unwrap();
    let after: Vec<String> = sqlx::query_scalar(
        "SELECT row_to_json(s)::text FROM strategy_evolution s ORDER BY run_id, step",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(before, after);
}

/// The views' numbers computed from every trajectory and block, as the views did before they
/// read the projection's per-step rows: the oracle those rows must match.
const RAW_STRATEGY: &str = "
    WITH t AS (
        SELECT run_id, step, count(*) AS trajectories, avg(reward) AS mean_reward,
               avg(correct::int)::float8 AS accuracy,
               avg((blocks > 0)::int)::float8 AS parallel_ratio,
               avg(blocks)::float8 AS mean_blocks, avg(block_share) AS mean_block_share,
               avg(correct::int) FILTER (WHERE blocks > 0)::float8 AS accuracy_parallel,
               avg(correct::int) FILTER (WHERE blocks = 0)::float8 AS accuracy_sequential,
               avg(format_valid::int)::float8 AS format_valid_ratio
        FROM trajectories WHERE benchmark IS NULL GROUP BY run_id, step
    ), b AS (
        SELECT run_id, step, count(*) AS blocks, avg(rel_position) AS rel_position_mean,
               percentile_cont(0.25) WITHIN GROUP (ORDER BY rel_position) AS rel_position_q1,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY rel_position) AS rel_position_median,
               percentile_cont(0.75) WITHIN GROUP (ORDER BY rel_position) AS rel_position_q3,
               avg((role = 'exploration')::int)::float8 AS exploration_share,
               avg((role = 'verification')::int)::float8 AS verification_share
        FROM trajectory_blocks WHERE benchmark IS NULL GROUP BY run_id, step
    )
    SELECT row_to_json(x)::text FROM (
        SELECT t.*, coalesce(b.blocks, 0) AS blocks, b.rel_position_mean, b.rel_position_q1,
               b.rel_position_median, b.rel_position_q3, b.exploration_share,
               b.verification_share
        FROM t LEFT JOIN b USING (run_id, step) ORDER BY run_id, step) x";

const RAW_COMPARISON: &str = "
    WITH t AS (
        SELECT run_id, count(DISTINCT step) AS steps, max(step) AS last_step,
               count(*) AS trajectories, avg(reward) AS mean_reward,
               avg(correct::int)::float8 AS accuracy,
               avg((blocks > 0)::int)::float8 AS parallel_ratio,
               avg(blocks)::float8 AS mean_blocks,
               avg(correct::int) FILTER (WHERE blocks > 0)::float8 AS accuracy_parallel,
               avg(correct::int) FILTER (WHERE blocks = 0)::float8 AS accuracy_sequential,
               avg(format_valid::int)::float8 AS format_valid_ratio,
               avg(response_tokens)::float8 AS mean_response_tokens
        FROM trajectories WHERE benchmark IS NULL GROUP BY run_id
    ), b AS (
        SELECT run_id, avg(rel_position) AS rel_position_mean,
               avg((role = 'exploration')::int)::float8 AS exploration_share,
               avg((role = 'verification')::int)::float8 AS verification_share
        FROM trajectory_blocks WHERE benchmark IS NULL GROUP BY run_id
    )
    SELECT row_to_json(x)::text FROM (
        SELECT t.*, b.rel_position_mean, b.exploration_share, b.verification_share
        FROM t LEFT JOIN b USING (run_id) ORDER BY run_id) x";

/// Rows as JSON objects, from a query that selects `row_to_json(...)::text`.
async fn json_rows(app: &TestApp, sql: &str) -> Vec<Value> {
    let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_all(&app.pool)
        .await
        .unwrap();
    rows.iter()
        .map(|r| serde_json::from_str(r).unwrap())
        .collect()
}

/// Every field of each `expected` row equals the view's (numbers within 1e-9).
fn assert_rows_match(view: &[Value], expected: &[Value], what: &str) {
    assert_eq!(view.len(), expected.len(), "{what}: rows");
    for (mine, theirs) in view.iter().zip(expected) {
        for (key, want) in theirs.as_object().unwrap() {
            let got = mine
                .get(key)
                .unwrap_or_else(|| panic!("{what}: the view has no column {key}"));
            let same = match (got.as_f64(), want.as_f64()) {
                (Some(a), Some(b)) => (a - b).abs() <= 1e-9,
                _ => got == want,
            };
            assert!(
                same,
                "{what}: {key} is {got} in the view, {want} from the rows"
            );
        }
    }
}

async fn assert_views_match_the_rows(app: &TestApp, when: &str) {
    let strategy = json_rows(
        app,
        "SELECT row_to_json(s)::text FROM strategy_evolution s ORDER BY run_id, step",
    )
    .await;
    assert_rows_match(&strategy, &json_rows(app, RAW_STRATEGY).await, when);
    let comparison = json_rows(
        app,
        "SELECT row_to_json(c)::text FROM run_comparison c ORDER BY run_id",
    )
    .await;
    assert_rows_match(&comparison, &json_rows(app, RAW_COMPARISON).await, when);
}

#[tokio::test]
async fn the_views_step_rows_follow_split_steps_newer_attempts_evaluations_and_replay() {
    let app = TestApp::spawn().await;
    // A worker's run: the seeded steps, step 2 split over two messages, and an evaluation's
    // generations at steps 2 and 3, which the views leave out.
    app.submit(&json!({
        "name": "steps",
        "model": "tiny",
        "stages": [{"kind": "rl", "name": "rl", "dataset": "builtin:easy", "reward": "s1",
                    "learning_rate": 1e-5, "steps": 3}]
    }))
    .await;
    let (worker, _) = FakeWorker::take(&app, StageKind::Rl, "steps").await;
    let mut more = seeded_steps().remove(0);
    more.step = 2;
    let mut evaluation = seeded_steps().remove(1);
    evaluation.benchmark = Some("held-out".into());
    // A step with an evaluation's generations only has no row in the views.
    let mut evaluation_only = evaluation.clone();
    evaluation_only.step = 3;
    for batch in seeded_steps()
        .into_iter()
        .chain([more, evaluation, evaluation_only])
    {
        worker
            .reporter
            .send(WorkerEvent::Trajectories(batch))
            .await
            .unwrap();
    }
    app.wait_for_count(
        "SELECT count(*) FROM trajectories",
        14,
        Duration::from_secs(10),
    )
    .await;

    // A live run whose step 2 is recorded again by a second attempt, with other answers, and
    // by a third with fewer.
    let (status, live) = post_json(&app, "/api/v1/live-runs", json!({"name": "attempts"})).await;
    assert_eq!(status, 201, "{live}");
    let batches = format!(
        "/api/v1/live-runs/{}/batches",
        live["experiment_id"].as_str().unwrap()
    );
    let line = |step: u64, output: &str, score: f64| {
        json!({"input": "What is half of 10?", "output": output, "score": score, "step": step,
               "gts": 5, "acc": score > 0.0})
        .to_string()
    };
    let explore = answer(EXPLORE, 5);
    let verify = answer(VERIFY, 5);
    for (attempt, lines) in [
        (
            1,
            vec![
                line(1, &explore, 1.0),
                line(2, &verify, 1.0),
                line(2, "no idea", 0.0),
            ],
        ),
        (
            2,
            vec![
                line(2, &explore, 1.0),
                line(2, &explore, 0.0),
                line(2, &verify, 1.0),
            ],
        ),
        (3, vec![line(2, "no idea", 0.0)]),
    ] {
        let content = lines.join("\n");
        let (status, recorded) = post_json(
            &app,
            &batches,
            json!({"attempt": attempt, "rollouts": [{"name": "r.jsonl", "content": content}]}),
        )
        .await;
        assert_eq!(status, 200, "{recorded}");
    }
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM trajectories WHERE run_id = '{}' AND step = 2",
            live["run_id"].as_str().unwrap()
        ))
        .await,
        1,
        "the third attempt's step 2 replaced the others'"
    );
    assert!(
        app.count("SELECT count(*) FROM trajectories WHERE benchmark IS NOT NULL")
            .await
            > 0
    );

    assert_views_match_the_rows(&app, "as ingested").await;
    prl_api::projections::replay::replay(&app.pool)
        .await
        .unwrap();
    assert_views_match_the_rows(&app, "after replay").await;
    assert_eq!(app.count("SELECT count(*) FROM strategy_steps").await, 4);
}

/// The strategy and comparison answers the API keeps are served while their rows stand and
/// read again after each change: a new step, a newer attempt of a step, a renamed run (the
/// comparison only), a replay, an edit by hand. Rows changed by hand behind their versions
/// (triggers off) show which answer is served: the kept one, unless the request says
/// `Cache-Control: no-cache`.
#[tokio::test]
async fn kept_answers_are_served_until_their_rows_change() {
    let app = TestApp::spawn().await;
    let (status, live) = post_json(&app, "/api/v1/live-runs", json!({"name": "kept"})).await;
    assert_eq!(status, 201, "{live}");
    let (experiment, run) = (
        live["experiment_id"].as_str().unwrap(),
        live["run_id"].as_str().unwrap(),
    );
    let strategy = format!("/api/v1/analytics/strategy?runs={run}");
    let paths = [
        strategy.clone(),
        format!("/api/v1/analytics/comparison?runs={run}"),
        format!("/api/v1/analytics/comparison?experiments={experiment}"),
    ];
    let record = async |attempt: u32, step: u64, output: &str, score: f64| {
        let line = json!({"input": "What is half of 10?", "output": output, "score": score,
                          "step": step, "gts": 5, "acc": score > 0.0});
        let (status, recorded) = post_json(
            &app,
            &format!("/api/v1/live-runs/{experiment}/batches"),
            json!({"attempt": attempt, "rollouts": [{"name": "r.jsonl", "content": line.to_string()}]}),
        )
        .await;
        assert_eq!(status, 200, "{recorded}");
    };
    let fresh = async |path: &str| -> Value {
        let response = app
            .http
            .get(app.url(path))
            .header("Cache-Control", "no-cache")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        response.json().await.unwrap()
    };
    let answers = async || {
        let mut all = Vec::new();
        for path in &paths {
            all.push((json_ok(&app, path).await, fresh(path).await));
        }
        all
    };
    // With triggers off (a replica's role), so that the run's version stays as it was.
    let by_hand = async || {
        let mut tx = app.pool.begin().await.unwrap();
        sqlx::query("SET LOCAL session_replication_role = replica")
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query(
            "UPDATE strategy_steps SET reward_sum = reward_sum + 1 WHERE run_id = $1::uuid",
        )
        .bind(run)
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
    };

    record(1, 1, &answer(EXPLORE, 5), 1.0).await;
    let first = answers().await;
    for ((kept, read), path) in first.iter().zip(&paths) {
        assert_eq!(kept, read, "{path}");
        assert_eq!(kept.as_array().unwrap().len(), 1, "{path}: {kept}");
    }
    by_hand().await;
    for ((kept, read), (before, _)) in answers().await.iter().zip(&first) {
        assert_eq!(kept, before, "the kept answer is served");
        assert_ne!(read, before, "no-cache reads the rows");
    }

    // Each change reads the answers again, rows changed by hand before it included.
    record(1, 2, &answer(VERIFY, 5), 1.0).await;
    for ((kept, read), path) in answers().await.iter().zip(&paths) {
        assert_eq!(kept, read, "after a new step: {path}");
    }
    assert_eq!(json_ok(&app, &strategy).await.as_array().unwrap().len(), 2);
    by_hand().await;
    record(2, 2, "no idea", 0.0).await;
    let newer = answers().await;
    for ((kept, read), path) in newer.iter().zip(&paths) {
        assert_eq!(kept, read, "after a newer attempt: {path}");
    }
    assert!(close(&newer[0].0[1]["accuracy"], 0.0), "{}", newer[0].0);

    // A rename shows in the comparison; the strategy series does not show it and stays kept.
    by_hand().await;
    let (status, renamed) = post_json(
        &app,
        "/mlflow/api/2.0/mlflow/runs/update",
        json!({"run_id": experiment, "run_name": "renamed"}),
    )
    .await;
    assert_eq!(status, 200, "{renamed}");
    let after_rename = answers().await;
    assert_eq!(after_rename[0].0, newer[0].0, "the strategy answer is kept");
    for (kept, read) in &after_rename[1..] {
        assert_eq!(kept, read);
        assert_eq!(kept[0]["experiment"], "renamed", "{kept}");
    }

    // A replay rebuilds the rows from the log, undoing the changes by hand.
    prl_api::projections::replay::replay(&app.pool)
        .await
        .unwrap();
    let replayed = answers().await;
    for ((kept, read), path) in replayed.iter().zip(&paths) {
        assert_eq!(kept, read, "after replay: {path}");
    }
    let step_one = &replayed[0].0[0];
    assert!(
        close(&step_one["mean_reward"], 1.0),
        "as recorded: {step_one}"
    );

    // An edit by hand with the triggers on gives the run a new version.
    sqlx::query("UPDATE strategy_steps SET reward_sum = reward_sum + 1 WHERE run_id = $1::uuid")
        .bind(run)
        .execute(&app.pool)
        .await
        .unwrap();
    for ((kept, read), (before, _)) in answers().await.iter().zip(&replayed) {
        assert_eq!(kept, read, "after an edit by hand");
        assert_ne!(kept, before);
    }
}

#[tokio::test]
async fn trajectory_search_filters_pages_and_names_bad_parameters() {
    let app = TestApp::spawn().await;
    let run = seeded_run(&app).await;
    let search = |query: String| {
        let app = &app;
        async move { json_ok(app, &format!("/api/v1/trajectories?runs={run}&{query}")).await }
    };
    let count = |page: &Value| page["items"].as_array().unwrap().len();

    assert_eq!(count(&search("".into()).await), 6);
    assert_eq!(count(&search("correct=false".into()).await), 2);
    assert_eq!(count(&search("parallel=true".into()).await), 4);
    assert_eq!(count(&search("role=verification".into()).await), 2);
    assert_eq!(count(&search("step_min=2".into()).await), 2);
    assert_eq!(count(&search("reward_max=0".into()).await), 2);
    assert_eq!(count(&search("q=guess".into()).await), 1);
    // Words match whole, in any case, all of them; a query of no words matches nothing.
    assert_eq!(count(&search("q=GUESS".into()).await), 1);
    assert_eq!(count(&search("q=checked".into()).await), 2);
    assert_eq!(count(&search("q=checked%20again".into()).await), 1);
    assert_eq!(count(&search("q=check".into()).await), 0);
    assert_eq!(count(&search("q=%25_%5C".into()).await), 0);
    assert_eq!(
        count(&search("parallel=false&correct=true".into()).await),
        1
    );
    let later = search("step_min=2".into()).await;
    assert_eq!(later["items"][0]["prompt"], "What is half of twelve?");
    assert_eq!(later["items"][0]["prompt_id"], "p1");

    // Pages of two cover everything once, in order.
    let mut seen = vec![];
    let mut after = String::new();
    loop {
        let page = search(format!("limit=2{after}")).await;
        for item in page["items"].as_array().unwrap() {
            seen.push(item["id"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(next) => after = format!("&after={next}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 6);
    let mut unique = seen.clone();
    unique.dedup();
    assert_eq!(unique, seen);

    // A trajectory comes with its parsed structure and its prompt.
    let page = search("role=verification&step_max=1".into()).await;
    let item = &page["items"][0];
    assert_eq!(item["prompt"], "What is half of 10?");
    assert_eq!(item["response"], answer(VERIFY, 5));
    assert_eq!(item["blocks"][0]["role"], "verification");
    assert_eq!(item["blocks"][0]["path_chars"].as_array().unwrap().len(), 2);
    assert_eq!(item["format_issues"].as_array().unwrap().len(), 0);

    for (query, parameter) in [
        ("correct=maybe", "correct"),
        ("role=guessing", "role"),
        ("reward_min=high", "reward_min"),
        ("step_min=-1", "step_min"),
        ("limit=0", "limit"),
        ("after=nonsense", "after"),
        ("colour=red", "colour"),
    ] {
        let response = app
            .get(&format!("/api/v1/trajectories?runs={run}&{query}"))
            .await;
        assert_eq!(response.status(), 400, "{query}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["parameter"], parameter, "{query}: {body}");
    }
    let response = app.get("/api/v1/trajectories?runs=not-a-run").await;
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn a_text_search_pages_in_log_order_and_finds_rows_written_without_word_filters() {
    let app = TestApp::spawn().await;
    let run = seeded_run(&app).await;
    let ids = |page: &Value| -> Vec<String> {
        (page["items"].as_array().unwrap().iter())
            .map(|i| i["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let pages = |query: &'static str| {
        let app = &app;
        async move {
            let (mut seen, mut after) = (vec![], String::new());
            loop {
                let page = json_ok(
                    app,
                    &format!("/api/v1/trajectories?runs={run}&{query}&limit=1{after}"),
                )
                .await;
                seen.extend(ids(&page));
                match page["next"].as_str() {
                    Some(next) => after = format!("&after={next}"),
                    None => break seen,
                }
            }
        }
    };
    let all = ids(&json_ok(&app, &format!("/api/v1/trajectories?runs={run}")).await);
    // Every seeded answer ends with "Final Answer"; pages of one walk them all in log order.
    assert_eq!(pages("q=final%20answer").await, all);
    let checked = pages("q=checked").await;
    assert_eq!(checked.len(), 2);
    // The steps' bounds apply to the batches walked: step 2 holds one of the two.
    let later = pages("q=checked&step_min=2").await;
    assert_eq!(later.len(), 1);
    assert!(checked.contains(&later[0]));
    assert!(pages("q=unheard").await.is_empty());

    // Rows written before word filters existed have none, and are still found.
    sqlx::query("UPDATE trajectories SET words = NULL")
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE trajectory_batches SET words = NULL")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(pages("q=checked").await, checked);
    assert_eq!(pages("q=final%20answer").await, all);
    prl_api::projections::replay::replay(&app.pool)
        .await
        .unwrap();
    for table in ["trajectories", "trajectory_batches"] {
        let unfiltered = format!("SELECT count(*) FROM {table} WHERE words IS NULL");
        assert_eq!(
            app.count(&unfiltered).await,
            0,
            "replay writes the filters of {table}"
        );
    }
    assert_eq!(pages("q=checked").await, checked);
}

/// The word filters' claim (`prl_schema::word_filter`): every piece of every lexeme that
/// PostgreSQL's `to_tsvector('simple', text)` makes of a text is among the text's words, so a
/// filter never rules out a text that matches. Texts are drawn from the characters the parser
/// treats specially (numbers, hyphens, e-mails, URLs, paths, tags, entities, case, non-ASCII).
#[tokio::test]
async fn trajectory_search_words_match_postgres() {
    use prl_schema::word_filter::{filter, may_contain, query_numbers, word_hashes};
    let app = TestApp::spawn().await;
    // Pieces a text is drawn from, apart from whitespace, separated by spaces.
    const PIECES: &str = "a Route 57 3.14 -2 +7 1e5 v1.2.3 x_y foo-bar - . @ / : < > & ; # ' \" \
        http:// www. example.com a@b.co /usr/bin <b> </b> &amp; café İstanbul \u{212A}elvin ÀB 日本 \
        ß Ⅻ ٣ ½ \u{301} _ ~ = $ % ? abc123 12ab a1b2 0x1F ab-12 12-ab foo.bar e5 E-5 1,000 %20 \
        file.txt C:\\ .. -- mailto: ftp:// ?q=1 #frag 127.0.0.1 :8080 x.y.z v2 2nd ⅼ Ａ";
    let pieces: Vec<&str> = PIECES.split_whitespace().chain([" ", "\t", "\n"]).collect();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let texts: Vec<String> = (0..20_000)
        .map(|_| {
            (0..1 + next(12))
                .map(|_| pieces[next(pieces.len())])
                .collect()
        })
        .collect();
    let lexemes: Vec<(i64, String)> = sqlx::query_as(
        "SELECT i, w FROM unnest($1::text[]) WITH ORDINALITY AS u(t, i),
                unnest(tsvector_to_array(to_tsvector('simple', t))) AS w",
    )
    .bind(&texts)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert!(lexemes.len() > 3000, "{} lexemes", lexemes.len());
    for (i, lexeme) in lexemes {
        let text = &texts[i as usize - 1];
        let Some(words) = word_hashes(text) else {
            continue;
        };
        if let Some(query) = query_numbers(&[&lexeme]) {
            assert!(
                may_contain(&filter(&words, 0), 0, &query),
                "{text:?}: its lexeme {lexeme:?} is ruled out"
            );
        }
    }

    // SQL's test of a filter (`words_may_contain`) is Rust's, for words a text has and has not.
    let (mut filters, mut places, mut queries, mut expected) = (vec![], vec![], vec![], vec![]);
    for (i, text) in texts.iter().take(2000).enumerate() {
        let Some(words) = word_hashes(text) else {
            continue;
        };
        // Places past 2^16, as a long log's are: both sides keep the low 16 bits as the salt.
        let place = i as i64 * 7919;
        let f = filter(&words, place);
        let query = query_numbers(&[pieces[next(pieces.len())], pieces[next(pieces.len())]]);
        let Some(query) = query else { continue };
        expected.push(may_contain(&f, place, &query));
        filters.push(f);
        places.push(place);
        queries.push(serde_json::to_string(&query).unwrap());
    }
    // A batch of 20,000 distinct words has a filter of 2^18 bits, larger than the salt's 2^16,
    // at a place past 2^32, as a long log's: the salt's bits then count, and unmasked places
    // would overflow.
    let many: String = (0..20_000).map(|i| format!("w{} ", i * 7)).collect();
    let words = word_hashes(&many).unwrap();
    let place = 10_000_000_019;
    for word in ["w700", "w701", "w1400 w2100", "w1400 w2101"] {
        let query = query_numbers(&[word]).unwrap();
        expected.push(may_contain(&filter(&words, place), place, &query));
        filters.push(filter(&words, place));
        places.push(place);
        queries.push(serde_json::to_string(&query).unwrap());
    }
    let tested: Vec<bool> = sqlx::query_scalar(
        "SELECT words_may_contain(f, p, translate(q, '[]', '{}')::int8[])
         FROM unnest($1::bytea[], $2::int8[], $3::text[]) WITH ORDINALITY AS u(f, p, q, i)
         ORDER BY i",
    )
    .bind(&filters)
    .bind(&places)
    .bind(&queries)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(tested.len(), expected.len());
    let disagree = (tested.iter().zip(&expected)).position(|(sql, rust)| sql != rust);
    assert_eq!(disagree, None, "SQL and Rust disagree on this filter");
    let passed = expected.iter().filter(|&&p| p).count();
    assert!(
        passed > 100 && passed < expected.len() - 100,
        "{passed} of {}",
        expected.len()
    );
}

#[tokio::test]
async fn a_search_over_several_runs_pages_through_their_rows_in_log_order() {
    let app = TestApp::spawn().await;
    let mut runs = vec![];
    for name in ["first", "second"] {
        app.submit(&json!({
            "name": name,
            "model": "tiny",
            "stages": [{"kind": "rl", "name": "rl", "dataset": "builtin:easy", "reward": "s1",
                        "learning_rate": 1e-5, "steps": 2}]
        }))
        .await;
        runs.push(FakeWorker::take(&app, StageKind::Rl, name).await.0);
    }
    // The runs' steps alternate, so that their rows interleave in the log.
    let steps = seeded_steps();
    let per_run: usize = steps.iter().map(|b| b.trajectories.len()).sum();
    for batch in steps {
        for worker in &runs {
            let sent = WorkerEvent::Trajectories(batch.clone());
            worker.reporter.send(sent).await.unwrap();
        }
    }
    let total = 2 * per_run as i64;
    app.wait_for_count(
        "SELECT count(*) FROM trajectories",
        total,
        Duration::from_secs(30),
    )
    .await;
    let logged: Vec<String> = sqlx::query_scalar(
        "SELECT position || ':' || idx FROM trajectories ORDER BY position, idx",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();

    // One run named twice, pages smaller than a run's rows: every row once, in log order.
    let (a, b) = (runs[0].job.run_id.0, runs[1].job.run_id.0);
    let (mut seen, mut after) = (vec![], String::new());
    loop {
        let page = json_ok(
            &app,
            &format!("/api/v1/trajectories?runs={a},{b},{a}&limit=4{after}"),
        )
        .await;
        for item in page["items"].as_array().unwrap() {
            seen.push(item["id"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(next) => after = format!("&after={next}"),
            None => break,
        }
    }
    assert_eq!(seen, logged);

    // Filters apply within each run: a run's later step, after a cursor inside the other run.
    let later = json_ok(
        &app,
        &format!(
            "/api/v1/trajectories?runs={a},{b}&step_min=2&after={}",
            logged[0]
        ),
    )
    .await;
    let items = later["items"].as_array().unwrap();
    assert_eq!(items.len(), 4, "{later}");
    assert!(items.iter().all(|i| i["step"] == 2));
}

#[tokio::test]
async fn metric_series_are_downsampled_keeping_spikes() {
    let app = TestApp::spawn().await;
    let run = seeded_run(&app).await;
    let points = json_ok(
        &app,
        &format!("/api/v1/runs/{run}/metrics?names=loss&buckets=100"),
    )
    .await;
    let points = points.as_array().unwrap();
    assert_eq!(points.len(), 100);
    assert!(points.iter().all(|p| p["name"] == "loss"));
    let total: i64 = points.iter().map(|p| p["count"].as_i64().unwrap()).sum();
    assert_eq!(total, 2000);
    let spike: Vec<&Value> = points.iter().filter(|p| close(&p["max"], 50.0)).collect();
    assert_eq!(spike.len(), 1);
    assert!(spike[0]["first_step"].as_i64().unwrap() <= 777);
    assert!(spike[0]["last_step"].as_i64().unwrap() >= 777);
    assert!(close(&spike[0]["last"], 1.0));

    let both = json_ok(&app, &format!("/api/v1/runs/{run}/metrics?buckets=10")).await;
    assert_eq!(both.as_array().unwrap().len(), 20);
    let response = app
        .get(&format!("/api/v1/runs/{run}/metrics?buckets=lots"))
        .await;
    assert_eq!(response.status(), 400);
    let missing = app
        .get(&format!("/api/v1/runs/{}/metrics", Uuid::new_v4()))
        .await;
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn prl_psql_reads_the_views_as_the_analyst_and_cannot_write() {
    let app = TestApp::spawn().await;
    seeded_run(&app).await;
    // The test servers ask for passwords, as the local stack's do.
    let password = "analyst-password-of-this-test";
    prl_cli::psql::set_analyst_password(&app.database_url, password)
        .await
        .unwrap();
    let run = |sql: &str| {
        prl_cli::psql::command(
            &app.database_url,
            Some(password),
            &["-XAtq".into(), "-c".into(), sql.into()],
        )
        .unwrap()
        .output()
        .expect("psql runs")
    };
    let read = run("SELECT current_user, count(*) FROM strategy_evolution");
    assert!(read.status.success(), "{read:?}");
    assert_eq!(
        String::from_utf8_lossy(&read.stdout).trim(),
        "prl_analyst|2"
    );
    for write in [
        "DELETE FROM trajectories",
        "INSERT INTO dead_letters VALUES (gen_random_uuid(), 's', 'r', 1, 1, now())",
        "SET ROLE NONE; SET default_transaction_read_only = off; DELETE FROM trajectories",
    ] {
        let refused = run(write);
        assert!(!refused.status.success(), "{write} was allowed");
    }
    assert_eq!(app.count("SELECT count(*) FROM trajectories").await, 6);

    // The texts are kept in the log only; `response` reads each row's from its event.
    let texts = run("SELECT t.response FROM trajectories t ORDER BY position, idx");
    assert!(texts.status.success(), "{texts:?}");
    let expected: Vec<String> = seeded_steps()
        .iter()
        .flat_map(|b| b.trajectories.iter().map(|t| t.text.clone()))
        .collect();
    let read = String::from_utf8_lossy(&texts.stdout);
    assert_eq!(
        read.trim_end_matches('\n').split('\n').collect::<Vec<_>>(),
        expected
    );

    // Nor can the analyst stall the service: no advisory locks (appends serialise on one), no
    // transaction id (one held open would stop the relay and the feeds), and its statements and
    // idle transactions end.
    for lock in [
        "SELECT pg_advisory_lock(1)",
        "SELECT pg_try_advisory_xact_lock(1)",
        "SELECT pg_advisory_lock_shared(1, 2)",
        "SELECT txid_current()",
        "SELECT pg_current_xact_id()",
        "CREATE TEMP TABLE held (x int)",
    ] {
        let refused = run(lock);
        assert!(!refused.status.success(), "{lock} was allowed");
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("permission denied"),
            "{refused:?}"
        );
    }
    let limits = run("SHOW statement_timeout; SHOW idle_in_transaction_session_timeout");
    assert_eq!(String::from_utf8_lossy(&limits.stdout).trim(), "5min\n1min");
    // The service itself still takes the log's lock: an append goes through.
    let _ = app
        .submit(&prl_integration_tests::quick_spec("after the revoke"))
        .await;
}

/// A primary and a hot standby streaming from it, owned by a thread that lives as long as the
/// test binary (the servers die with the thread that started them). Returns their admin URLs.
fn primary_and_replica() -> (String, String) {
    use prl_local_stack::PrivatePostgres;
    // Beside the test binary's own servers, so that a later run removes it.
    let dir = std::env::temp_dir()
        .join(format!("prl-test-stack-{}", std::process::id()))
        .join(format!("replica-{}", Uuid::new_v4().simple()));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let primary = PrivatePostgres::start(&dir.join("primary")).expect("starting the primary");
        let replica = PrivatePostgres::start_replica(&primary, &dir.join("replica"))
            .expect("starting the replica");
        tx.send((primary.url("postgres"), replica.url("postgres")))
            .unwrap();
        let _servers = (primary, replica);
        loop {
            std::thread::park();
        }
    });
    rx.recv().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_reads_go_to_the_read_replica_and_prl_psql_too() {
    // The shared servers first: starting them clears the directory the replica's go into.
    let nats_url = prl_integration_tests::servers().nats_url.clone();
    let (primary, replica) = primary_and_replica();
    let servers = prl_integration_tests::Servers {
        admin_database_url: primary.clone(),
        nats_url,
    };
    let port = |url: &str| url::Url::parse(url).unwrap().port().unwrap();
    let to_replica = |url: &str| {
        url.replace(
            &format!(":{}/", port(&primary)),
            &format!(":{}/", port(&replica)),
        )
    };
    let app = TestApp::spawn_on(&servers, |s| {
        use secrecy::ExposeSecret;
        s.database.analytics_url = Some(to_replica(s.database.url.expose_secret()).into());
    })
    .await;
    let replica_db = to_replica(&app.database_url);
    app.submit(&json!({
        "name": "on a replica", "model": "tiny",
        "stages": [{"kind": "rl", "name": "rl", "dataset": "builtin:easy", "reward": "s1",
                    "learning_rate": 1e-5, "steps": 3}]
    }))
    .await;
    let (worker, _) = FakeWorker::take(&app, StageKind::Rl, "seeder").await;
    let run = worker.job.run_id.0;
    let mut steps = seeded_steps();
    let mut third = steps[1].clone();
    third.step = 3;
    for batch in steps.drain(..) {
        worker
            .reporter
            .send(WorkerEvent::Trajectories(batch))
            .await
            .unwrap();
    }
    let strategy = || async {
        let path = format!("/api/v1/analytics/strategy?runs={run}");
        json_ok(&app, &path).await.as_array().unwrap().len()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while strategy().await < 2 {
        assert!(std::time::Instant::now() < deadline, "the replica lags");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // With the replica's replay paused, what the primary records is not what analytics reads.
    let mut standby = <sqlx::PgConnection as sqlx::Connection>::connect(&replica_db)
        .await
        .unwrap();
    let in_recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
        .fetch_one(&mut standby)
        .await
        .unwrap();
    assert!(in_recovery, "the analytics database is a standby");
    sqlx::query("SELECT pg_wal_replay_pause()")
        .execute(&mut standby)
        .await
        .unwrap();
    worker
        .reporter
        .send(WorkerEvent::Trajectories(third))
        .await
        .unwrap();
    app.wait_for_count(
        "SELECT count(*) FROM trajectories",
        8,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(strategy().await, 2, "read from the paused replica");
    sqlx::query("SELECT pg_wal_replay_resume()")
        .execute(&mut standby)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while strategy().await < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the replica did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // prl psql goes to PRL_ANALYTICS_DATABASE_URL, as the analyst (whose password the primary
    // set and the replica replayed).
    let password = "analyst-password-of-the-replica-test";
    prl_cli::psql::set_analyst_password(&app.database_url, password)
        .await
        .unwrap();
    let sql = "SELECT pg_is_in_recovery(), current_user, count(*) FROM strategy_evolution";
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let out = std::process::Command::new(prl_integration_tests::workspace_binary("prl"))
            .args(["psql", "--", "-XAtc", sql])
            .env("PRL_ANALYTICS_DATABASE_URL", &replica_db)
            .env("DATABASE_URL", &app.database_url)
            .env("PGPASSWORD", password)
            .env("PRL_HOME", std::env::temp_dir().join("prl-test-no-stack"))
            .output()
            .unwrap();
        // Until the replica has replayed the new password, the login is refused.
        if out.status.success() {
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                "t|prl_analyst|3"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{out:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
