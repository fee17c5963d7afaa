//! `prl follow` as a user runs it, a real process watching the files a verl run writes step by
//! step: rollout dumps (current verl's fields), validation dumps and the `file` logger's JSONL,
//! with a line written in two parts, the follower killed with SIGKILL and started again, and
//! the training command's exit ending the run.

use prl_integration_tests::{TOKEN, TestApp, workspace_binary};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::process::{Child, Command};

const PROMPTS: usize = 4;
const SAMPLES: usize = 2;

/// A rollout line as current verl dumps it (`gts`, and reward extras such as `acc` and `pred`).
fn rollout_line(step: usize, prompt: usize, sample: usize) -> String {
    let right = !(prompt + sample + step).is_multiple_of(3);
    let answer = if right { prompt + 2 } else { prompt + 3 };
    json!({
        "input": format!("What is {prompt} + 2?"),
        "output": format!("<Parallel><Path>{prompt} + 2 = {}</Path><Path>2 + {prompt} = {}</Path></Parallel><Summary>Both agree.</Summary> Final Answer: {answer}", prompt + 2, prompt + 2),
        "gts": prompt + 2,
        "score": if right { 1.0 } else { 0.0 },
        "step": step,
        "acc": right,
        "pred": answer.to_string(),
    })
    .to_string()
}

fn validation_line(step: usize, prompt: usize, source: &str) -> String {
    json!({
        "input": format!("{source}: what is {prompt} * 2?"),
        "output": format!("Final Answer: {}", prompt * 2),
        "gts": (prompt * 2).to_string(),
        "score": 1.0,
        "step": step,
        "data_source": source,
    })
    .to_string()
}

struct VerlFiles {
    rollouts: PathBuf,
    validation: PathBuf,
    metrics: PathBuf,
}

impl VerlFiles {
    fn new(root: &Path) -> Self {
        let _ = std::fs::remove_dir_all(root);
        std::fs::create_dir_all(root).unwrap();
        VerlFiles {
            rollouts: root.join("rollouts"),
            validation: root.join("validation"),
            metrics: root.join("metrics.jsonl"),
        }
    }

    /// One training step as verl writes it; the rollout file's last line comes in two parts.
    async fn write_step(&self, step: usize) {
        std::fs::create_dir_all(&self.rollouts).unwrap();
        let mut text: String = (0..PROMPTS)
            .flat_map(|p| (0..SAMPLES).map(move |s| rollout_line(step, p, s) + "\n"))
            .collect();
        let tail = text.split_off(text.len() - 20);
        let path = self.rollouts.join(format!("{step}.jsonl"));
        std::fs::write(&path, &text).unwrap();
        tokio::time::sleep(Duration::from_millis(350)).await;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(tail.as_bytes()).unwrap();
        drop(file);
        if step.is_multiple_of(3) {
            std::fs::create_dir_all(&self.validation).unwrap();
            let lines: String = ["gsm8k", "math"]
                .iter()
                .flat_map(|source| (0..3).map(move |p| validation_line(step, p, source) + "\n"))
                .collect();
            std::fs::write(self.validation.join(format!("{step}.jsonl")), lines).unwrap();
        }
        let mut metrics = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.metrics)
            .unwrap();
        // The file logger writes Python's json.dumps, NaN included.
        let loss = if step == 2 {
            "NaN".to_owned()
        } else {
            format!("{}", 1.0 / step as f64)
        };
        writeln!(
            metrics,
            "{{\"step\": {step}, \"data\": {{\"actor/loss\": {loss}, \"val-core/gsm8k/acc/mean@4\": 0.5, \"timing/step\": \"n/a\"}}}}"
        )
        .unwrap();
    }

    fn follow(&self, app: &TestApp, extra: &[&str]) -> Command {
        let mut command = Command::new(workspace_binary("prl"));
        command
            .args(["follow", "--name", "verl-gsm8k", "--poll-ms", "100"])
            .arg("--rollouts")
            .arg(&self.rollouts)
            .arg("--validation")
            .arg(&self.validation)
            .arg("--metrics")
            .arg(&self.metrics)
            .args(extra)
            .env("PRL_API_URL", &app.address)
            .env("PRL_TOKEN", TOKEN)
            .kill_on_drop(true);
        command
    }
}

async fn wait_for(app: &TestApp, sql: &str, at_least: i64) {
    app.wait_for_count(sql, at_least, Duration::from_secs(60))
        .await;
}

fn kill9(child: &Child) {
    let pid = child.id().expect("running") as i32;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
}

#[tokio::test]
async fn a_verl_run_is_followed_through_a_kill_and_a_restart_each_line_once() {
    let app = TestApp::spawn().await;
    let files = VerlFiles::new(&std::env::temp_dir().join(format!("prl-follow-{}", app.namespace)));
    let mut follower = files.follow(&app, &[]).spawn().unwrap();
    for step in 1..=3 {
        files.write_step(step).await;
    }
    let per_step = (PROMPTS * SAMPLES) as i64;
    wait_for(&app, "SELECT count(*) FROM trajectories", 3 * per_step).await;
    kill9(&follower);
    let _ = follower.wait().await;
    // Written while no follower runs.
    files.write_step(4).await;
    let mut follower = files.follow(&app, &[]).spawn().unwrap();
    for step in 5..=6 {
        files.write_step(step).await;
    }
    wait_for(&app, "SELECT count(*) FROM trajectories", 6 * per_step).await;
    wait_for(&app, "SELECT count(*) FROM evaluations", 4).await;
    wait_for(&app, "SELECT count(*) FROM run_metrics", 6).await;
    // verl resumed from step 4's checkpoint writes step 5 again, every answer right this time:
    // recorded again under attempt 2, it replaces the first one's rows.
    let redone: String = (0..PROMPTS)
        .flat_map(|p| (0..SAMPLES).map(move |s| rollout_line(5, p, s) + "\n"))
        .map(|line| line.replace("\"acc\":false", "\"acc\":true"))
        .collect();
    std::fs::write(files.rollouts.join("5.jsonl"), redone).unwrap();
    wait_for(
        &app,
        "SELECT count(*) FROM trajectories WHERE step = 5 AND attempt = 2",
        per_step,
    )
    .await;
    // Stopped, the run stays open; `--once --finish` records what is left and closes it.
    let pid = follower.id().unwrap() as i32;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    assert!(follower.wait().await.unwrap().success());
    let closed = files
        .follow(&app, &["--once", "--finish"])
        .output()
        .await
        .unwrap();
    assert!(
        closed.status.success(),
        "{}",
        String::from_utf8_lossy(&closed.stderr)
    );

    let experiment: uuid::Uuid = sqlx::query_scalar("SELECT experiment_id FROM tracked_runs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let detail = app.experiment(experiment).await;
    assert_eq!(detail["status"], "completed");
    assert_eq!(detail["tracked"]["source"], "verl");
    // Every line once: no step twice, none skipped, the line written in two parts whole.
    let per_step_counts: Vec<(i64, i64)> =
        sqlx::query_as("SELECT step, count(*) FROM trajectories GROUP BY step ORDER BY step")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        per_step_counts,
        (1..=6).map(|s| (s, per_step)).collect::<Vec<_>>()
    );
    assert_eq!(
        app.count("SELECT count(*) FROM trajectories WHERE step = 5 AND correct")
            .await,
        per_step,
        "step 5 as written again"
    );
    let (truths, answers): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE truth <> ''), count(*) FILTER (WHERE answer IS NOT NULL)
         FROM trajectories",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((truths, answers), (6 * per_step, 6 * per_step));
    assert_eq!(
        app.count("SELECT count(*) FROM trajectory_blocks WHERE paths = 2")
            .await,
        6 * per_step
    );
    let benchmarks: Vec<(i64, String)> =
        sqlx::query_as("SELECT step, benchmark FROM evaluations ORDER BY step, benchmark")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        benchmarks,
        [(3, "gsm8k"), (3, "math"), (6, "gsm8k"), (6, "math")]
            .map(|(s, b)| (s, b.to_owned()))
            .to_vec()
    );
    assert_eq!(app.count("SELECT count(*) FROM run_metrics").await, 6);
    let loss: Vec<Option<f64>> = sqlx::query_scalar(
        "SELECT (e.payload->'values'->>'actor/loss')::float8 FROM run_metrics m
         JOIN events e ON e.position = m.position ORDER BY m.step",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert!(
        loss[1].unwrap().is_nan(),
        "the NaN the logger wrote: {loss:?}"
    );
    assert_eq!(loss[3], Some(0.25));
}

#[tokio::test]
async fn the_training_commands_exit_ends_the_run_and_is_the_followers() {
    let app = TestApp::spawn().await;
    let files = VerlFiles::new(&std::env::temp_dir().join(format!("prl-follow-{}", app.namespace)));
    std::fs::create_dir_all(&files.rollouts).unwrap();
    // The "training": two steps of rollouts, then a crash.
    let script = format!(
        "sleep 0.3; printf '%s\\n' '{}' > {r}/1.jsonl; sleep 0.3; printf '%s\\n' '{}' > {r}/2.jsonl; sleep 0.3; exit 3",
        rollout_line(1, 0, 0),
        rollout_line(2, 1, 0),
        r = files.rollouts.display()
    );
    let out = files
        .follow(&app, &["--", "sh", "-c", &script])
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("failed"), "{stdout}");
    assert_eq!(app.count("SELECT count(*) FROM trajectories").await, 2);
    let experiment: uuid::Uuid = sqlx::query_scalar("SELECT experiment_id FROM tracked_runs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(app.experiment(experiment).await["status"], "failed");
    // Nothing to follow is a mistake said at once.
    let bare = Command::new(workspace_binary("prl"))
        .args(["follow", "--name", "x"])
        .env("PRL_API_URL", &app.address)
        .output()
        .await
        .unwrap();
    assert!(!bare.status.success());
    assert!(String::from_utf8_lossy(&bare.stderr).contains("--rollouts"));
}

#[tokio::test]
async fn trl_completion_tables_become_trajectories() {
    let app = TestApp::spawn().await;
    let root = std::env::temp_dir().join(format!("prl-trl-{}", app.namespace));
    let _ = std::fs::remove_dir_all(&root);
    // TRL's table format, written with the pandas call TRL uses (the pinned MLflow venv has
    // pandas and pyarrow).
    let python = prl_integration_tests::python_of("mlflow");
    let written = std::process::Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/python/trl_completions.py"
        ))
        .arg(&root)
        .output()
        .unwrap();
    assert!(
        written.status.success(),
        "{}",
        String::from_utf8_lossy(&written.stderr)
    );

    let out = Command::new(workspace_binary("prl"))
        .args([
            "follow", "--name", "trl-grpo", "--once", "--finish", "--trl",
        ])
        .arg(root.join("completions"))
        .env("PRL_API_URL", &app.address)
        .env("PRL_TOKEN", TOKEN)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let per_step: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT step, count(*), count(*) FILTER (WHERE correct) FROM trajectories
         GROUP BY step ORDER BY step",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(per_step, vec![(5, 4, 2), (10, 4, 2)]);
    // The score is the sum of the reward columns; the conversational prompt is its user message.
    let rewards: Vec<f64> =
        sqlx::query_scalar("SELECT DISTINCT reward FROM trajectories ORDER BY 1")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(rewards, vec![0.5, 1.5]);
    assert_eq!(
        app.count(
            "SELECT count(*) FROM events, jsonb_array_elements(payload->'prompts') p
             WHERE event_type = 'TrajectoriesRecorded' AND (payload->>'step')::int = 10
               AND p->>'text' LIKE 'What is %'"
        )
        .await,
        2
    );
    assert_eq!(
        app.count("SELECT count(*) FROM trajectory_blocks WHERE paths = 2")
            .await,
        8
    );
}
