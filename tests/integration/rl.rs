//! A whole Parallel-R1 recipe on the tiny model, end to end through NATS and PostgreSQL: cold-start
//! SFT, RL with parallel rollouts under the S2 schedule, evaluations inside RL, and an eval stage.
//! It checks that every trajectory is recorded with its structure, that metrics and evaluations
//! arrive, and that the results are consistent. (Learning itself is tested in the trainer crate:
//! a few steps of a tiny model are too noisy to gate on.)

use prl_integration_tests::{TOKEN, TestApp, training_turn};
use prl_schema::events::Event;
use prl_schema::parallel;
use prl_schema::reward;
use prl_schema::spec::RewardSchedule;
use std::time::Duration;

const RL_STEPS: u64 = 3;
const PROMPTS: u64 = 4;
const GROUP: u64 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parallel_r1_recipe_records_every_trajectory_and_its_evaluations() {
    let _turn = training_turn().await;
    let app = TestApp::spawn_with(|s| s.jobs.lease_seconds = 120).await;
    let _trainer = app.start_trainer("trainer");
    // From the pretrained tiny base, as the paper starts from a base model: after 100 SFT steps
    // from random weights sampled responses are seldom well-formed, and whether any is depends
    // on the CPU's rounding, which left the structure checks below nothing to check.
    let spec = serde_json::json!({
        "name": "parallel-r1 unseen s2 (tiny)", "model": "tiny-base",
        "stages": [
            {"kind": "sft", "name": "cold-start", "dataset": "builtin:easy", "attention": "unseen",
             "learning_rate": 1e-3, "max_steps": 100, "batch_size": 32},
            {"kind": "rl", "name": "rl", "dataset": "builtin:hard", "attention": "unseen",
             "reward": "s2", "learning_rate": 1e-4, "steps": RL_STEPS, "prompts_per_step": PROMPTS,
             "temperature": 0.7,
             "group_size": GROUP, "mini_batch_size": (PROMPTS * GROUP / 2), "clip_high": 0.28, "kl_coef": 0.01,
             "dynamic_sampling": false, "max_response_tokens": 160, "max_path_tokens": 40,
             "checkpoint_every": 2, "eval_every": 2, "eval_dataset": "builtin:hard-test",
             "eval_max_prompts": 8, "eval_k": 2},
            {"kind": "eval", "name": "test", "dataset": "builtin:hard-test", "k": 3,
             "max_prompts": 8, "max_response_tokens": 160, "attention": "unseen"}
        ]
    });
    let id = app.submit(&spec).await;
    let detail = app
        .wait_for_status(id, "completed", Duration::from_secs(20 * 60))
        .await;
    let rl_run = detail["runs"][1]["id"].as_str().unwrap().to_owned();
    assert_eq!(detail["runs"][1]["last_step"], RL_STEPS);

    // Every trajectory of every step, once.
    let payloads: Vec<(String, serde_json::Value)> = sqlx::query_as(
        "SELECT event_type, payload FROM events WHERE stream_id = $1::uuid
         AND event_type IN ('TrajectoriesRecorded', 'MetricsReported') ORDER BY position",
    )
    .bind(&rl_run)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let mut per_step = vec![0u64; RL_STEPS as usize + 1];
    let mut evaluated = std::collections::BTreeMap::<u64, u64>::new();
    let mut metrics_steps = Vec::new();
    let mut valid_blocks = 0;
    for (event_type, payload) in payloads {
        match Event::from_parts(&event_type, payload).unwrap() {
            // The in-loop evaluations' generations, recorded beside the training samples.
            Event::TrajectoriesRecorded { batch, .. } if batch.benchmark.is_some() => {
                assert_eq!(batch.benchmark.as_deref(), Some("builtin:hard-test"));
                *evaluated.entry(batch.step).or_default() += batch.trajectories.len() as u64;
            }
            Event::TrajectoriesRecorded { batch, .. } => {
                for t in &batch.trajectories {
                    per_step[batch.step as usize] += 1;
                    let prompt = &batch.prompts[t.prompt as usize];
                    assert!(t.sample < GROUP as u32);
                    let tokens = t.tokens.expect("the trainer counts tokens");
                    assert!(tokens > 0 && tokens <= 160 + 3, "{tokens}");
                    // The recorded score is the reward function's, recomputed from the text.
                    let scored =
                        reward::score(RewardSchedule::S2, batch.step, &t.text, &prompt.truth);
                    assert_eq!(scored.reward, t.reward);
                    assert_eq!(scored.correct, t.correct);
                    assert_eq!(scored.format_valid, t.format_valid);
                    // On well-formed responses the token-level structure is the text's.
                    if t.format_valid {
                        let parsed = parallel::parse(&t.text);
                        let paths = |b: &parallel::Block| b.paths.len();
                        assert_eq!(
                            t.blocks.iter().map(|b| b.paths.len()).collect::<Vec<_>>(),
                            parsed.blocks.iter().map(paths).collect::<Vec<_>>(),
                            "{t:?}"
                        );
                        valid_blocks += t.blocks.len();
                    }
                    for block in &t.blocks {
                        assert!(block.start < block.end && block.end <= tokens);
                        assert!(block.paths.iter().sum::<u32>() < block.end - block.start);
                    }
                    // Forced tags come with every block: `<Path>`/`</Path>` per path at least.
                    let paths: u32 = t.blocks.iter().map(|b| b.paths.len() as u32).sum();
                    assert!(t.forced >= paths, "{t:?}");
                }
            }
            Event::MetricsReported { step, values, .. } => {
                for key in [
                    "reward/mean",
                    "accuracy",
                    "parallel_ratio",
                    "blocks/mean",
                    "response_length/mean",
                    "clip_ratio",
                    "policy_loss",
                    "clip_fraction",
                    "approx_kl",
                    "grad_norm",
                    "tokens_per_s",
                    "time/rollout_s",
                    "time/update_s",
                ] {
                    assert!(
                        values.get(key).is_some_and(|v| v.is_finite()),
                        "{key} at {step}"
                    );
                }
                metrics_steps.push(step);
            }
            _ => unreachable!(),
        }
    }
    assert_eq!(metrics_steps, (1..=RL_STEPS).collect::<Vec<_>>());
    println!("{valid_blocks} blocks in well-formed trajectories");
    assert!(
        valid_blocks > 0,
        "no well-formed block to check the structure on"
    );
    assert_eq!(
        &per_step[1..],
        vec![PROMPTS * GROUP; RL_STEPS as usize].as_slice()
    );
    // 8 evaluation prompts × eval_k 2 before RL, at step 2 and at the last step.
    assert_eq!(
        evaluated.into_iter().collect::<Vec<_>>(),
        [(0, 16), (2, 16), (RL_STEPS, 16)]
    );
    let indexed: i64 = sqlx::query_scalar(
        "SELECT sum(trajectories) FROM trajectory_batches WHERE run_id = $1::uuid AND benchmark IS NULL",
    )
    .bind(&rl_run)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(indexed as u64, RL_STEPS * PROMPTS * GROUP);

    // Evaluations: before RL, at step 2, at the last step, and the eval stage's.
    let evaluations: Vec<(i64, i32, f64, f64, f64)> = sqlx::query_as(
        "SELECT step, k, mean_at_k, pass_at_k, parallel_ratio FROM evaluations ORDER BY position",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let steps: Vec<(i64, i32)> = evaluations.iter().map(|e| (e.0, e.1)).collect();
    assert_eq!(steps, [(0, 2), (2, 2), (3, 2), (3, 3)]);
    for (_, _, mean, pass, parallel) in evaluations {
        assert!((0.0..=1.0).contains(&mean) && (0.0..=1.0).contains(&parallel));
        assert!(pass >= mean - 1e-12, "Pass@k is never below Mean@k");
    }
    assert_eq!(
        app.count("SELECT count(*) FROM checkpoints WHERE step = 2")
            .await,
        1,
        "the RL stage's intermediate checkpoint"
    );

    // Any checkpoint can be evaluated on demand; bad requests name what is wrong.
    let evaluations = format!("/api/v1/runs/{rl_run}/evaluations");
    let post = |body: serde_json::Value| app.post_raw(&evaluations, body.to_string(), Some(TOKEN));
    let refused = post(serde_json::json!({"dataset": "builtin:easy-test", "k": 0})).await;
    assert_eq!(refused.status(), 422);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["field"], "k", "{body}");
    let missing = post(serde_json::json!({"dataset": "builtin:easy-test", "step": 7})).await;
    assert_eq!(missing.status(), 404);
    let body = serde_json::json!({
        "dataset": "builtin:easy-test", "k": 2, "step": 2, "max_prompts": 4,
        "max_response_tokens": 64
    });
    let reported = app.evaluate_on_demand(&rl_run, body).await;
    assert_eq!(reported.len(), 1);
    assert_eq!(reported[0]["step"], 2, "the evaluated checkpoint's step");
    assert_eq!(reported[0]["k"], 2);
    assert_eq!(reported[0]["prompts"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_rl_job_resumes_and_counts_every_trajectory_once() {
    let _turn = training_turn().await;
    let app = TestApp::spawn_with(|s| s.jobs.lease_seconds = 3).await;
    let doomed = app.start_trainer("doomed");
    let (steps, per_step) = (10u64, 4i64);
    let spec = serde_json::json!({
        "name": "resumed rl", "model": "tiny",
        "stages": [{"kind": "rl", "name": "rl", "dataset": "builtin:hard", "reward": "s1",
                    "learning_rate": 1e-4, "steps": steps, "prompts_per_step": 2, "group_size": 2,
                    "mini_batch_size": 4, "dynamic_sampling": false, "max_response_tokens": 32, "max_path_tokens": 8,
                    "checkpoint_every": 4}]
    });
    let id = app.submit(&spec).await;
    // Killed after it has recorded a step past its checkpoint at step 4, which the next attempt redoes.
    app.wait_for_count(
        "SELECT count(*) FROM trajectory_batches WHERE step = 5",
        1,
        Duration::from_secs(300),
    )
    .await;
    doomed.kill();

    let _rescuer = app.start_trainer("rescuer");
    let detail = app
        .wait_for_status(id, "completed", Duration::from_secs(600))
        .await;
    assert_eq!(detail["jobs"][0]["attempt"], 2);
    let run = detail["runs"][0]["id"].as_str().unwrap().to_owned();
    let recorded: Vec<(i64, i32)> = sqlx::query_as(
        "SELECT (payload->>'step')::bigint, (payload->>'attempt')::int FROM events
         WHERE event_type = 'TrajectoriesRecorded' ORDER BY position",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let redone: Vec<i64> = recorded
        .iter()
        .filter(|(s, a)| *a == 1 && recorded.contains(&(*s, 2)))
        .map(|(s, _)| *s)
        .collect();
    println!("steps recorded by both attempts: {redone:?}");
    assert!(
        !redone.is_empty(),
        "the test must make the second attempt redo a step"
    );
    // The log keeps both attempts; the read model counts each step's trajectories once.
    let (rows, total, distinct): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), sum(trajectories)::bigint, count(DISTINCT step) FROM trajectory_batches
         WHERE run_id = $1::uuid",
    )
    .bind(&run)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((rows, distinct), (steps as i64, steps as i64));
    assert_eq!(total, steps as i64 * per_step);
}
