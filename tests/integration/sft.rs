use prl_artifacts::ArtifactStore;
use prl_integration_tests::{S3Server, TOKEN, TestApp, training_turn};
use prl_schema::jobs::CheckpointRef;
use prl_schema::spec::{Attention, RolloutMode};
use prl_trainer::checkpoint::Checkpoints;
use prl_trainer::data::BuiltinSet;
use prl_trainer::eval::{Protocol, evaluate};
use prl_trainer::model::LoadedModel;
use prl_trainer::rollout::RolloutConfig;
use prl_trainer::sampling::Sampler;
use prl_trainer::tokenizer::PrlTokenizer;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// SFT steps on the tiny preset: the calibration measured >= 95 % valid format after 76 steps
/// and 97-100 % after 150-300, so a 90 % gate at this length can fail only if training is broken.
const STEPS: u64 = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sft_job_teaches_the_tiny_model_the_parallel_format() {
    let _turn = training_turn().await;
    // Training holds both cores; a generous lease keeps heartbeats from racing it.
    let app = TestApp::spawn_with(|s| s.jobs.lease_seconds = 120).await;
    let _trainer = app.start_trainer("trainer");
    let spec = serde_json::json!({
        "name": "cold-start sft", "model": "tiny",
        "stages": [{"kind": "sft", "name": "sft", "dataset": "builtin:easy", "attention": "unseen",
                    "learning_rate": 1e-3, "max_steps": STEPS, "batch_size": 32, "checkpoint_every": 75}]
    });
    let id = app.submit(&spec).await;
    let detail = app
        .wait_for_status(id, "completed", Duration::from_secs(20 * 60))
        .await;

    let run = &detail["runs"][0];
    assert_eq!(run["last_step"], STEPS);
    let losses: Vec<f64> = sqlx::query_scalar(
        "SELECT (e.payload->'values'->>'loss')::float8 FROM run_metrics m JOIN events e USING (position) ORDER BY m.step",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(losses.len() as u64, STEPS);
    assert!(
        losses[STEPS as usize - 1] < losses[0] / 3.0,
        "loss went from {} to {}",
        losses[0],
        losses[STEPS as usize - 1]
    );
    assert_eq!(
        app.count("SELECT count(*) FROM checkpoints").await,
        2,
        "one at step 75, one at the end"
    );

    // The recorded checkpoint is the directory in the store: its manifest has the recorded
    // hash, and lists the files with the bytes recorded.
    let checkpoint: CheckpointRef = serde_json::from_value(run["checkpoint"].clone()).unwrap();
    let store = app.checkpoints().store;
    assert!(
        checkpoint.uri.starts_with(store.url()),
        "{}",
        checkpoint.uri
    );
    let dir = checkpoint.local_dir().unwrap();
    let manifest = std::fs::read(dir.join("manifest.json")).unwrap();
    assert_eq!(hex::encode(Sha256::digest(&manifest)), checkpoint.sha256);
    prl_artifacts::verify_local(&dir, &checkpoint.sha256).unwrap();
    let files: u64 = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name() != "manifest.json")
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert_eq!(files, checkpoint.size_bytes);

    // Greedy responses to held-out prompts are in the parallel format.
    let dir = dir.as_path();
    let model = LoadedModel::load(dir, tch::Device::Cpu).unwrap();
    let (tok, added) = PrlTokenizer::load(&dir.join("tokenizer.json"), "<eos>").unwrap();
    assert_eq!(added, 0, "the checkpoint's tokenizer already has the tags");
    let held_out = BuiltinSet::parse("builtin:easy-test").unwrap().tasks();
    let protocol = Protocol {
        k: 1,
        greedy: false,
        config: RolloutConfig {
            attention: Attention::Unseen,
            mode: RolloutMode::Parallel,
            paths: 2,
            path_budget: 64,
            max_blocks: 4,
            max_new_tokens: 200,
            sampler: Sampler {
                temperature: 0.0,
                top_p: 1.0,
            },
        },
    };
    let report = tokio::task::spawn_blocking(move || {
        evaluate(
            &model,
            &tok,
            &held_out[..128],
            "builtin:easy-test",
            STEPS,
            &protocol,
            tch::Device::Cpu,
        )
        .unwrap()
        .results
        .remove(0)
    })
    .await
    .unwrap();
    println!("after {STEPS} SFT steps: {report:?}");
    assert!(
        report.format_valid_ratio >= 0.9,
        "only {:.0} % of held-out responses are well-formed",
        report.format_valid_ratio * 100.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_sft_job_resumes_on_another_host_from_the_checkpoint_in_an_s3_store() {
    let _turn = training_turn().await;
    let app = TestApp::spawn_with(|s| s.jobs.lease_seconds = 3).await;
    // Two hosts: a data directory each, one S3-compatible store between them.
    let s3 = S3Server::start(&app.data_dir.join("s3"));
    let host = |name: &str| {
        let data_dir = app.data_dir.join(name);
        std::fs::create_dir_all(&data_dir).unwrap();
        Checkpoints {
            store: ArtifactStore::open(&s3.store_url("runs"), &s3.options()).unwrap(),
            data_dir: data_dir.canonicalize().unwrap(),
        }
    };
    let doomed = app.start_trainer_with("doomed", host("host-a"));
    let spec = serde_json::json!({
        "name": "resumed sft", "model": "tiny",
        "stages": [{"kind": "sft", "name": "sft", "dataset": "builtin:easy", "learning_rate": 1e-3,
                    "max_steps": 30, "batch_size": 8, "checkpoint_every": 10}]
    });
    let id = app.submit(&spec).await;
    app.wait_for_count(
        "SELECT count(*) FROM checkpoints",
        1,
        Duration::from_secs(300),
    )
    .await;
    doomed.kill();

    let rescuer = host("host-b");
    let _rescuer = app.start_trainer_with("rescuer", rescuer.clone());
    let detail = app
        .wait_for_status(id, "completed", Duration::from_secs(600))
        .await;
    assert_eq!(detail["jobs"][0]["attempt"], 2);
    assert_eq!(detail["runs"][0]["last_step"], 30);
    // The second attempt was told to go on from the newest checkpoint the log had, in the store,
    // and its first step is the one after it.
    let resumed = app
        .second_attempt_resumed_from("s3://prl/runs/checkpoints/")
        .await;
    // Host B fetched it into its own directory, checked against the recorded hash.
    let key = resumed.uri.strip_prefix("s3://prl/runs/").unwrap();
    prl_artifacts::verify_local(&rescuer.data_dir.join(key), &resumed.sha256).unwrap();
    // Every checkpoint the run recorded is in the bucket, whichever host wrote it.
    let uris: Vec<String> = sqlx::query_scalar("SELECT uri FROM checkpoints ORDER BY step")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert!(uris.len() >= 2, "{uris:?}");
    for uri in uris {
        let key = uri.strip_prefix("s3://prl/runs/").unwrap();
        assert!(
            app.data_dir
                .join("s3/prl/runs")
                .join(key)
                .join("manifest.json")
                .exists(),
            "{uri}"
        );
    }

    // Any of them can be evaluated on demand, on any host: host B evaluates the one host A
    // wrote at step 10, fetching it from the bucket.
    let run = detail["runs"][0]["id"].as_str().unwrap();
    let body = serde_json::json!({"dataset": "builtin:easy-test", "k": 1, "step": 10,
                                  "max_prompts": 2, "max_response_tokens": 32});
    let reported = app.evaluate_on_demand(run, body).await;
    assert_eq!(reported[0]["step"], 10, "the evaluated checkpoint's step");
    assert!(
        rescuer
            .data_dir
            .join(format!(
                "checkpoints/{run}/attempt-1/step-00000010/manifest.json"
            ))
            .exists(),
        "host B holds host A's checkpoint, from the bucket"
    );
    // A checkpoint no run recorded is refused at the door, naming the field.
    let spec = serde_json::json!({
        "name": "from nowhere", "model": format!("checkpoint:{run}@7"),
        "stages": [{"kind": "eval", "name": "e", "dataset": "builtin:easy-test", "k": 1}]
    });
    let refused = app
        .post_raw("/api/v1/experiments", spec.to_string(), Some(TOKEN))
        .await;
    assert_eq!(refused.status(), 422);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["field"], "model", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_training_sft_job_saves_a_loadable_checkpoint_and_stops_it() {
    let _turn = training_turn().await;
    let app = TestApp::spawn_with(|s| s.jobs.lease_seconds = 60).await;
    let _trainer = app.start_trainer("trainer");
    let spec = serde_json::json!({
        "name": "cancelled sft", "model": "tiny",
        "stages": [{"kind": "sft", "name": "sft", "dataset": "builtin:easy", "learning_rate": 1e-3,
                    "max_steps": 1000, "batch_size": 8},
                   {"kind": "eval", "name": "never", "dataset": "builtin:easy-test", "k": 1}]
    });
    let id = app.submit(&spec).await;
    app.wait_for_count(
        "SELECT count(*) FROM run_metrics",
        3,
        Duration::from_secs(300),
    )
    .await;
    assert_eq!(app.cancel(id, None).await.status(), 200);
    app.wait_for_status(id, "cancelled", Duration::from_secs(30))
        .await;
    // The trainer saves where it stopped, and trains no further.
    app.wait_for_count(
        "SELECT count(*) FROM checkpoints",
        1,
        Duration::from_secs(60),
    )
    .await;
    let (step, uri): (i64, String) = sqlx::query_as("SELECT step, uri FROM checkpoints")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let last_metric: i64 = sqlx::query_scalar("SELECT max(step) FROM run_metrics")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(
        step >= 3 && step == last_metric,
        "checkpoint {step}, metrics up to {last_metric}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after: i64 = sqlx::query_scalar("SELECT max(step) FROM run_metrics")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(after, last_metric, "no step after the cancel");
    assert_eq!(
        app.count("SELECT count(*) FROM jobs WHERE kind = 'eval'")
            .await,
        0,
        "the next stage is never queued"
    );
    // The saved weights load.
    let dir = std::path::Path::new(uri.strip_prefix("file://").unwrap());
    LoadedModel::load(dir, tch::Device::Cpu).unwrap();
}
