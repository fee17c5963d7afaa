//! `prl follow`: records a verl run from the files it writes, while it writes them. Rollout and
//! validation dumps (`trainer.rollout_data_dir`, `trainer.validation_data_dir`: `{step}.jsonl`)
//! and the `file` logger's JSONL (`{"step": ..., "data": {...}}` per log call) are read from
//! where the last recorded batch left them and sent as batches of a live run. Where it is lives
//! in the log (each batch's cursor: a byte offset per file, with a hash of the file's head to
//! tell a rewritten file), so a restarted follower neither records a line twice nor skips one;
//! a batch that does not start where the log says the run is (a second follower) is refused.
//! Only whole lines are read; a dump file is sent whole once its size has held for one poll
//! (verl writes a step's file at once), so a step is never split. A dump file verl writes again
//! (it redoes the steps after the checkpoint it resumes from) is recorded again under the next
//! attempt, which supersedes the earlier rows of its steps, as a resumed prl job's do.
//! TRL's GRPO completions tables (`<output_dir>/completions/completions_<step>.parquet`) are
//! followed the same way, each file recorded whole (`prl_schema::trl`).

use crate::client::{Client, Refused};
use anyhow::{Context, Result, bail};
use prl_api::routes::live_runs::LiveRun;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What one batch carries at most, so that a long backlog goes in modest requests.
const BATCH_BYTES: u64 = 8 << 20;

pub struct Follow {
    pub name: String,
    pub tags: Vec<String>,
    pub key: Option<String>,
    pub rollouts: Option<PathBuf>,
    pub validation: Option<PathBuf>,
    pub metrics: Option<PathBuf>,
    /// TRL's `<output_dir>/completions`.
    pub trl: Option<PathBuf>,
    pub poll: Duration,
    /// Record what is there now, then stop.
    pub once: bool,
    /// Mark the run finished when stopping (without a command to watch).
    pub finish: bool,
    /// The training command to run and watch; its exit ends the run.
    pub command: Vec<String>,
}

/// What is recorded of each file (`rollouts/3.jsonl`, `validation/3.jsonl`, `metrics`,
/// `trl/...`), and the attempt batches are recorded under.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct Cursor {
    files: BTreeMap<String, Recorded>,
    /// 1, plus one for every file found rewritten.
    #[serde(default = "first_attempt")]
    attempt: u32,
}

fn first_attempt() -> u32 {
    1
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Recorded {
    /// Bytes recorded from the start of the file.
    offset: u64,
    /// SHA-256 of the file's first `min(offset, HEAD_BYTES)` bytes, as they were recorded.
    head: String,
}

/// How much of a file's start identifies it.
const HEAD_BYTES: u64 = 64 << 10;

fn head_hash(path: &Path, offset: u64) -> Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .with_context(|| format!("opening {}", path.display()))?
        .take(offset.min(HEAD_BYTES))
        .read_to_end(&mut bytes)?;
    Ok(hex::encode(sha2::Sha256::digest(&bytes)))
}

/// A file the follower reads, under the name its cursor entry has.
struct Source {
    key: String,
    path: PathBuf,
    kind: Kind,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Rollouts,
    Validation,
    Metrics,
    /// A TRL completions table, recorded whole: its cursor entry is its size.
    Trl,
}

fn sources(args: &Follow) -> Result<Vec<Source>> {
    let mut out = Vec::new();
    for (dir, kind, prefix) in [
        (&args.rollouts, Kind::Rollouts, "rollouts"),
        (&args.validation, Kind::Validation, "validation"),
        (&args.trl, Kind::Trl, "trl"),
    ] {
        let Some(dir) = dir else { continue };
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            // verl makes the directory when it first dumps.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
        };
        let mut files: Vec<(u64, String, PathBuf)> = Vec::new();
        for entry in entries {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let step = match kind {
                Kind::Trl => name
                    .strip_prefix("completions_")
                    .and_then(|n| n.strip_suffix(".parquet")),
                _ => name.strip_suffix(".jsonl"),
            };
            if let Some(step) = step {
                files.push((step.parse().unwrap_or(u64::MAX), name.to_owned(), path));
            }
        }
        files.sort();
        out.extend(files.into_iter().map(|(_, name, path)| Source {
            key: format!("{prefix}/{name}"),
            path,
            kind,
        }));
    }
    if let Some(path) = &args.metrics {
        out.push(Source {
            key: "metrics".into(),
            path: path.clone(),
            kind: Kind::Metrics,
        });
    }
    Ok(out)
}

/// One batch read from the files, and the cursor after it.
struct Batch {
    body: Value,
    cursor: Cursor,
    lines: usize,
    /// More waits beyond this batch's byte budget.
    more: bool,
}

/// Where to read `source` from: the recorded offset, or 0 for a file not recorded yet or
/// rewritten since (then the cursor's attempt moves on).
fn start_of(source: &Source, size: u64, cursor: &mut Cursor) -> Result<u64> {
    let Some(recorded) = cursor.files.get(&source.key) else {
        return Ok(0);
    };
    if size >= recorded.offset && head_hash(&source.path, recorded.offset)? == recorded.head {
        return Ok(recorded.offset);
    }
    eprintln!(
        "{} was written again; recording it anew as attempt {}",
        source.path.display(),
        cursor.attempt + 1
    );
    cursor.attempt += 1;
    Ok(0)
}

/// Reads what the cursor has not recorded. Unless `settle` is false (the last read), a dump
/// file whose size changed since the previous poll waits for the next one. Dump files go whole;
/// the metrics file's lines may be split across batches.
fn read_batch(
    args: &Follow,
    cursor: &Cursor,
    sizes: &mut HashMap<PathBuf, u64>,
    settle: bool,
) -> Result<Option<Batch>> {
    let mut next = cursor.clone();
    let (mut rollouts, mut validation, mut metrics) = (Vec::new(), Vec::new(), Vec::new());
    let (mut bytes, mut lines, mut more) = (0u64, 0usize, false);
    for source in sources(args)? {
        let size = match std::fs::metadata(&source.path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", source.path.display())),
        };
        let changed = sizes.insert(source.path.clone(), size) != Some(size);
        let whole_file = source.kind != Kind::Metrics;
        if settle && changed && whole_file {
            continue;
        }
        let before = next.clone();
        let from = start_of(&source, size, &mut next)?;
        if from == size {
            continue;
        }
        // The first file of a batch goes whatever its size; later ones only within the budget.
        let budget = if bytes == 0 {
            u64::MAX
        } else {
            BATCH_BYTES - bytes
        };
        let name = source
            .key
            .rsplit('/')
            .next()
            .unwrap_or(&source.key)
            .to_owned();
        let (text, end) = if source.kind == Kind::Trl {
            let rows =
                prl_schema::trl::read_completions(&source.path).map_err(anyhow::Error::msg)?;
            let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
            (text, size)
        } else {
            let text = read_whole_lines(&source.path, from, u64::MAX)?;
            let end = from + text.len() as u64;
            (text, end)
        };
        if text.is_empty() {
            // A partial last line waits for the rest of it.
            next = before;
            continue;
        }
        let (text, end) = if text.len() as u64 > budget {
            if whole_file {
                next = before;
                more = true;
                break;
            }
            // Metric lines may be split: as many whole ones as fit.
            let cut = text[..budget as usize].rfind('\n').map_or(0, |i| i + 1);
            if cut == 0 {
                next = before;
                more = true;
                break;
            }
            more = true;
            (text[..cut].to_owned(), from + cut as u64)
        } else {
            (text, end)
        };
        bytes += text.len() as u64;
        lines += text.lines().filter(|l| !l.trim().is_empty()).count();
        next.files.insert(
            source.key.clone(),
            Recorded {
                offset: end,
                head: head_hash(&source.path, end)?,
            },
        );
        match source.kind {
            Kind::Rollouts | Kind::Trl => rollouts.push(json!({"name": name, "content": text})),
            Kind::Validation => validation.push(json!({"name": name, "content": text})),
            Kind::Metrics => metrics.extend(metric_points(&source.path, from, &text)?),
        }
        if more || bytes >= BATCH_BYTES {
            more = true;
            break;
        }
    }
    if lines == 0 {
        return Ok(None);
    }
    // The batch's name is where it ends: a resend after a lost answer is recognised as recorded.
    let body_cursor = serde_json::to_value(&next).expect("a cursor is JSON");
    let name = {
        use sha2::Digest;
        hex::encode(&sha2::Sha256::digest(body_cursor.to_string().as_bytes())[..16])
    };
    Ok(Some(Batch {
        body: json!({
            "batch": name,
            "attempt": next.attempt,
            "metrics": metrics,
            "rollouts": rollouts,
            "validation": validation,
            "cursor": body_cursor,
        }),
        cursor: next,
        lines,
        more,
    }))
}

/// The whole lines of `path` from byte `from`, at most `budget` bytes of them.
fn read_whole_lines(path: &Path, from: u64, budget: u64) -> Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    file.seek(SeekFrom::Start(from))?;
    let mut bytes = Vec::new();
    file.take(budget).read_to_end(&mut bytes)?;
    let end = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    bytes.truncate(end);
    String::from_utf8(bytes).with_context(|| {
        format!(
            "{} holds text that is not UTF-8 after byte {from}",
            path.display()
        )
    })
}

/// The `file` logger's lines as metric points: numbers kept, anything else left out.
fn metric_points(path: &Path, from: u64, text: &str) -> Result<Vec<Value>> {
    let mut points = Vec::new();
    let mut offset = from;
    for line in text.split_inclusive('\n') {
        let at = offset;
        offset += line.len() as u64;
        let parsed = prl_schema::dumps::metrics_line(line)
            .map_err(|why| anyhow::anyhow!("{} at byte {at}: {why}", path.display()))?;
        let Some((step, values)) = parsed.filter(|(_, values)| !values.is_empty()) else {
            continue;
        };
        let values: serde_json::Map<String, Value> = values
            .into_iter()
            .map(|(k, v)| {
                let v = match prl_schema::tracking::non_finite_name(v) {
                    Some(name) => json!(name),
                    None => json!(v),
                };
                (k, v)
            })
            .collect();
        points.push(json!({"step": step, "values": values}));
    }
    Ok(points)
}

/// Retries what failed for want of the API (unreachable, 5xx) with pauses up to 10 s, until
/// `stop`; a refusal (4xx) is final.
async fn retrying<T, F, Fut>(
    what: &str,
    stop: &tokio_util::sync::CancellationToken,
    mut call: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut pause = Duration::from_millis(250);
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) if e.downcast_ref::<Refused>().is_some() => return Err(e),
            Err(e) if stop.is_cancelled() => {
                return Err(e.context(format!("{what}: stopped while waiting for the API")));
            }
            Err(e) => {
                eprintln!("{what}: {e:#}; trying again in {pause:?}");
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.cancelled() => {}
                }
                pause = (pause * 2).min(Duration::from_secs(10));
            }
        }
    }
}

pub async fn run(client: &Client, args: Follow) -> Result<()> {
    let stop = tokio_util::sync::CancellationToken::new();
    prl_bus::signals::cancel_on_signal(stop.clone());
    let key = args
        .key
        .clone()
        .unwrap_or_else(|| format!("follow:{}", args.name));
    let start = json!({"name": args.name, "tags": args.tags, "source": "verl", "key": key});
    let run: LiveRun = retrying("starting the run", &stop, || client.live_start(&start)).await?;
    if !matches!(run.status.as_str(), "running" | "scheduled") {
        bail!(
            "experiment {} has {} already",
            run.experiment_id,
            run.status
        );
    }
    let cursor: Cursor = match &run.cursor {
        Some(c) => serde_json::from_value(c.clone()).context(
            "the run's recorded cursor is not a follower's (was it logged by another client?)",
        )?,
        None => Cursor {
            files: BTreeMap::new(),
            attempt: 1,
        },
    };
    println!(
        "following into experiment {} (run {}){}",
        run.experiment_id,
        run.run_id,
        if cursor.files.is_empty() {
            String::new()
        } else {
            format!(", resuming after {} recorded files", cursor.files.len())
        }
    );
    let mut child = match args.command.split_first() {
        Some((program, rest)) => Some(
            tokio::process::Command::new(program)
                .args(rest)
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting {program}"))?,
        ),
        None => None,
    };
    let followed = follow_until_done(client, &args, &run, cursor, &mut child, &stop).await;
    let exit = match (followed, &mut child) {
        (Ok(exit), _) => exit,
        (Err(e), Some(c)) => {
            // The training goes on without a follower; its files stay, for one started again.
            eprintln!(
                "error: {e:#}\nthe training command goes on; waiting for it to end (the run stays \
                 open: prl follow started again with the same name records the rest)"
            );
            let status = c.wait().await?;
            return Err(e.context(format!("the training command ended with {status}")));
        }
        (Err(e), None) => return Err(e),
    };
    let status = match exit {
        Some(code) if code.success() => Some("finished"),
        Some(_) => Some("failed"),
        None if args.finish => Some("finished"),
        None => None,
    };
    if let Some(status) = status {
        let body = json!({ "status": status });
        retrying("finishing the run", &stop, || {
            client.live_finish(run.experiment_id, &body)
        })
        .await?;
        println!("experiment {} {status}", run.experiment_id);
    }
    if let Some(code) = exit
        && !code.success()
    {
        // The training command's failure is this command's.
        std::process::exit(code.code().unwrap_or(1));
    }
    Ok(())
}

/// Records batches until the watched command exits (its status), or, without one, until
/// stopped or, with `--once`, at once (`None`). A stop signal is passed on to the command,
/// whose end is still waited for and recorded.
async fn follow_until_done(
    client: &Client,
    args: &Follow,
    run: &LiveRun,
    mut cursor: Cursor,
    child: &mut Option<tokio::process::Child>,
    stop: &tokio_util::sync::CancellationToken,
) -> Result<Option<std::process::ExitStatus>> {
    let mut after = run.cursor.clone().unwrap_or_else(|| json!({}));
    let mut sizes = HashMap::new();
    let mut exit = None;
    let mut passed_on = false;
    loop {
        if let Some(c) = child.as_mut() {
            exit = c.try_wait()?;
            if stop.is_cancelled() && exit.is_none() && !passed_on {
                if let Some(pid) = c.id() {
                    // SAFETY: kill(2) on our own child's pid.
                    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
                }
                passed_on = true;
            }
        }
        let last = exit.is_some() || args.once || (child.is_none() && stop.is_cancelled());
        let batch = read_batch(args, &cursor, &mut sizes, !last)?;
        let more = batch.as_ref().is_some_and(|b| b.more);
        if let Some(mut batch) = batch {
            batch.body["after"] = after.clone();
            let recorded: Value = retrying("recording a batch", stop, || {
                client.live_batch(run.experiment_id, &batch.body)
            })
            .await?;
            after = batch.body["cursor"].clone();
            cursor = batch.cursor;
            println!(
                "recorded {} lines: {} metric steps, {} trajectories, {} evaluations{}",
                batch.lines,
                recorded["metric_steps"],
                recorded["trajectories"],
                recorded["evaluations"],
                if recorded["already_recorded"] == true {
                    " (already recorded)"
                } else {
                    ""
                }
            );
        }
        if more {
            continue;
        }
        if last {
            return Ok(exit);
        }
        tokio::select! {
            _ = tokio::time::sleep(args.poll) => {}
            _ = stop.cancelled(), if !passed_on => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_lines_are_read() {
        let dir = std::env::temp_dir().join(format!("prl-follow-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.jsonl");
        std::fs::write(&path, "{\"step\": 1, \"data\": {}}\n{\"step\": 2, \"da").unwrap();
        let text = read_whole_lines(&path, 0, 1 << 20).unwrap();
        assert_eq!(text, "{\"step\": 1, \"data\": {}}\n");
        assert_eq!(
            read_whole_lines(&path, text.len() as u64, 1 << 20).unwrap(),
            ""
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_file_loggers_lines_become_metric_points() {
        let text = "{\"step\": 3, \"data\": {\"loss\": 0.5, \"val/mean@4\": 0.25, \"note\": \"x\"}}\n\
                    {\"step\": 4, \"data\": {\"loss\": NaN, \"grad\": -Infinity, \"NaN\": Infinity}}\n";
        let points = metric_points(Path::new("m"), 0, text).unwrap();
        assert_eq!(
            points[0],
            json!({"step": 3, "values": {"loss": 0.5, "val/mean@4": 0.25}})
        );
        assert_eq!(
            points[1],
            json!({"step": 4, "values": {"loss": "NaN", "grad": "-Infinity", "NaN": "Infinity"}})
        );
        let bad = metric_points(Path::new("m"), 10, "{\"data\": {}}\n").unwrap_err();
        assert!(bad.to_string().contains("m at byte 10"), "{bad}");
    }
}
