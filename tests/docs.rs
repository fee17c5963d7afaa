//! The examples of docs/ run as written: each page's `sh` (or `bash`, `shell`) blocks, in order, as one bash script in
//! a fresh directory, with this build's `prl` and `prl-trainer` first on the PATH and
//! `PRL_CHECKOUT` naming the checkout (for pages that use its files). A block that
//! cannot run here is marked on the line before it with `<!-- not run by tests/docs.rs: why -->`.
//! Pages other than the quick start assume a running local stack, which the test starts first.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

const SKIP: &str = "<!-- not run by tests/docs.rs:";

/// Every page's stack listens on the default port, so the pages run one at a time.
static ONE_STACK: Mutex<()> = Mutex::new(());

struct Block {
    code: String,
    /// Why it is not run, for a marked block.
    skipped: Option<String>,
}

fn sh_blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = vec![];
    let mut current: Option<Block> = None;
    let mut previous = "";
    for line in markdown.lines() {
        let line = line.trim_end();
        match (&mut current, line) {
            (None, "```sh" | "```bash" | "```shell") => {
                let skipped = previous
                    .strip_prefix(SKIP)
                    .map(|why| why.trim_end_matches("-->").trim().to_owned());
                current = Some(Block {
                    code: String::new(),
                    skipped,
                });
            }
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(block), line) => {
                block.code.push_str(line);
                block.code.push('\n');
            }
            (None, _) => {}
        }
        if !line.is_empty() {
            previous = line;
        }
    }
    assert!(current.is_none(), "a code block is never closed");
    blocks
}

fn docs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs")
}

/// The page's blocks that run, joined; the reasons of those that do not are printed.
fn runnable(page: &str) -> String {
    let text = std::fs::read_to_string(docs_dir().join(page)).unwrap();
    let blocks = sh_blocks(&text);
    assert!(!blocks.is_empty(), "{page} has no sh blocks");
    let mut script = String::new();
    for block in blocks {
        match block.skipped {
            Some(why) => {
                assert!(!why.is_empty(), "{page}: a skipped block says why");
                println!("{page}: not run: {why}");
            }
            None => script.push_str(&block.code),
        }
    }
    script
}

/// Waits until the stack is up, failing at once if `prl up` (job %1) exits.
const START_STACK: &str = "until [ -f .prl/stack.json ] && prl list > /dev/null 2>&1; do \
                           kill -0 %1 2>/dev/null || { echo 'prl up exited' >&2; exit 1; }; \
                           sleep 1; done\n";

/// Runs `script` in a fresh directory under bash with job control (the pages use `%1` and `&`)
/// and returns stdout and stderr together; every background job is stopped at the end.
fn run_script(name: &str, script: &str) -> String {
    let _stack = ONE_STACK.lock().unwrap_or_else(|e| e.into_inner());
    let bin = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_owned();
    assert!(
        bin.join("prl").exists() && bin.join("prl-trainer").exists(),
        "build the binaries first: cargo build --bin prl --bin prl-trainer"
    );
    let dir = std::env::temp_dir().join(format!("prl-docs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // Each background job is a process group of its own (`set -m`): at the end they get SIGTERM
    // (prl up stops its servers and daemons), and SIGKILL whatever is left after 30 s.
    let script = format!(
        "set -euo pipefail\nset -m\n\
         stop() {{ groups=$(jobs -p); [ -z \"$groups\" ] && return 0; \
         for g in $groups; do kill -TERM -- -$g 2>/dev/null || true; done; \
         for _ in $(seq 30); do alive=0; for g in $groups; do \
         kill -0 -- -$g 2>/dev/null && alive=1; done; [ $alive = 0 ] && return 0; sleep 1; done; \
         for g in $groups; do kill -KILL -- -$g 2>/dev/null || true; done; }}\n\
         trap stop EXIT\n{script}"
    );
    let path = std::env::var("PATH").unwrap_or_default();
    let mut command = Command::new("timeout");
    command
        .args(["-k", "60", "1200", "bash", "-c", &script])
        .current_dir(&dir)
        .env("PATH", format!("{}:{path}", bin.display()));
    // The pages describe a fresh shell: nothing of this one's prl or database settings.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("PRL_")
            || name.starts_with("PG")
            || name.ends_with("DATABASE_URL")
            || name == "NATS_URL"
        {
            command.env_remove(&*name);
        }
    }
    command.env(
        "PRL_CHECKOUT",
        Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap(),
    );
    let output = command.output().unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let log = std::fs::read_to_string(dir.join("prl-up.log")).unwrap_or_default();
    // Kept only while a failure is investigated: it holds a database and maybe a model copy.
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        output.status.success(),
        "the examples of {name} failed ({}):\n{text}\nprl up:\n{log}",
        output.status,
    );
    println!("{text}");
    text
}

/// `page`'s examples against a stack started with `prl up --trainers N`.
fn run_with_stack(page: &str, trainers: usize) -> String {
    let start = format!("prl up --trainers {trainers} > prl-up.log 2>&1 &\n{START_STACK}");
    run_script(page, &format!("{start}{}", runnable(page)))
}

#[test]
fn the_quick_start_runs_command_by_command() {
    let out = run_script("quickstart.md", &runnable("quickstart.md"));
    // What the reader is told to expect: the table row and the recorded trajectories.
    assert!(out.contains("first evaluation"), "{out}");
    let trajectories = out
        .lines()
        .skip_while(|l| !l.contains("trajectories"))
        .nth(2)
        .and_then(|l| l.trim().parse::<u64>().ok());
    assert_eq!(trajectories, Some(32), "16 prompts, 2 samples each:\n{out}");
}

#[test]
fn your_own_model_is_evaluated_and_a_missing_one_refused() {
    let out = run_with_stack("own-model.md", 1);
    assert!(out.contains("model.safetensors"), "the copied directory");
    assert!(
        out.contains("models/no-such-model is not a model directory")
            && out.contains("refused, as it should be"),
        "{out}"
    );
}

#[test]
fn your_own_data_is_registered_trained_on_and_evaluated_per_source() {
    let out = run_with_stack("own-data.md", 1);
    assert!(
        out.contains("train: 4 rows") && out.contains("test: 2 rows"),
        "{out}"
    );
    assert!(
        out.contains("test#sums") && out.contains("test#differences"),
        "{out}"
    );
    assert!(
        out.contains("stages[1].dataset") && out.contains("refused, as it should be"),
        "{out}"
    );
}

#[test]
fn jobs_go_to_the_daemons_that_take_and_fit_them() {
    let out = run_with_stack("gpus-and-daemons.md", 0);
    let sft = out
        .lines()
        .find(|l| l.trim_start().starts_with("sft") && l.contains('|'))
        .unwrap_or_else(|| panic!("the jobs table: {out}"));
    assert!(sft.contains("box1-a") && sft.contains("completed"), "{sft}");
    // Both daemons outlived the page's experiment.
    assert!(out.contains("both daemons still run"), "{out}");
    // The stage that asks for zone b ran on the one daemon there.
    let lines: Vec<&str> = out.lines().collect();
    let header = lines.iter().rposition(|l| l.trim() == "worker_id");
    let zone_b = header
        .and_then(|h| lines.get(h + 2))
        .unwrap_or_else(|| panic!("the zone b job: {out}"));
    assert_eq!(zone_b.trim(), "box2", "{out}");
    assert!(out.contains("no active daemon fits"), "{out}");
}

#[test]
fn an_mlflow_client_logs_a_run_that_prl_lists_and_queries() {
    let out = run_with_stack("mlflow.md", 0);
    let row = out
        .lines()
        .find(|l| l.contains("lr-1e-5") && l.contains('|'))
        .unwrap_or_else(|| panic!("the query's row: {out}"));
    assert!(
        row.contains("1e-05") && row.contains("0.01") && row.contains("notes.txt"),
        "{row}"
    );
    let listed = out
        .lines()
        .find(|l| l.contains("lr-1e-5") && l.contains("completed"))
        .unwrap_or_else(|| panic!("prl list's line: {out}"));
    assert!(listed.contains("mlflow:gsm8k sweep"), "{listed}");
}

#[test]
fn a_custom_loop_logs_through_the_python_client() {
    let out = run_with_stack("python-client.md", 0);
    let listed = out
        .lines()
        .find(|l| l.contains("my-grpo"))
        .unwrap_or_else(|| panic!("prl list's line: {out}"));
    assert!(listed.contains("completed"), "{listed}");
    // The first steps of the strategy view: one trajectory each, all correct.
    let rows: Vec<Vec<String>> = out
        .lines()
        .filter(|l| l.contains('|') && l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .map(|l| l.split('|').map(|c| c.trim().to_owned()).collect())
        .collect();
    assert_eq!(rows.len(), 3, "{out}");
    for row in rows {
        assert_eq!((row[1].as_str(), row[2].as_str()), ("1", "1"), "{out}");
    }
}

#[test]
fn a_verl_runs_files_are_followed_into_trajectories_evaluations_and_metrics() {
    let out = run_with_stack("verl.md", 0);
    assert!(
        out.contains("experiment") && out.contains("finished"),
        "{out}"
    );
    let rows: Vec<Vec<String>> = out
        .lines()
        .filter(|l| l.contains('|') && l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .map(|l| l.split('|').map(|c| c.trim().to_owned()).collect())
        .collect();
    assert_eq!(rows.len(), 2, "{out}");
    for row in &rows {
        assert_eq!((row[1].as_str(), row[2].as_str()), ("3", "1"), "{out}");
    }
}

#[test]
fn a_trl_completions_table_becomes_trajectories() {
    let out = run_with_stack("trl.md", 0);
    let row: Vec<String> = out
        .lines()
        .find(|l| l.contains('|') && l.trim_start().starts_with("10"))
        .unwrap_or_else(|| panic!("the strategy row: {out}"))
        .split('|')
        .map(|c| c.trim().to_owned())
        .collect();
    assert_eq!(row[1..], ["6", "0.5", "1"], "{out}");
}

#[test]
fn operations_a_replica_a_backup_restored_and_replayed() {
    // The page's stack holds the quick start's evaluation: its blocks but the last (which stops
    // the stack).
    let quickstart = runnable("quickstart.md");
    let holding = quickstart
        .trim_end()
        .rsplit_once('\n')
        .map(|(before, last)| {
            assert!(last.starts_with("kill %1"), "{last}");
            before
        })
        .unwrap();
    let out = run_script(
        "operations.md",
        &format!("{holding}\n{}", runnable("operations.md")),
    );
    let replayed = out
        .lines()
        .find_map(|l| l.strip_prefix("rebuilt the projections from "))
        .and_then(|l| l.split(' ').next()?.parse::<u64>().ok());
    assert!(replayed.is_some_and(|n| n > 0), "{out}");
    // The restored copy's table, after the replay: the quick start's row and its average.
    let restored = out
        .lines()
        .skip_while(|l| !l.contains("rebuilt the projections"))
        .filter(|l| l.contains("first evaluation"))
        .count();
    assert_eq!(restored, 2, "{out}");
    assert!(out.contains("no parked messages"), "{out}");
}

#[test]
fn every_page_with_examples_is_run_here() {
    let source =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs.rs")).unwrap();
    let mut dirs = vec![docs_dir()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let name = path
                .strip_prefix(docs_dir())
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let has_examples = sh_blocks(&text).iter().any(|b| b.skipped.is_none());
            assert!(
                !has_examples || source.contains(&format!("\"{name}\"")),
                "docs/{name} has sh examples that no test here runs"
            );
        }
    }
}
