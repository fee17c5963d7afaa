//! `prl follow`: records a verl run from the files it writes, while it writes them. Rollout and
//! validation dumps (`trainer.rollout_data_dir`, `trainer.validation_data_dir`: `{step}.jsonl`)
//! and the `file` logger's JSONL (`{"step": ..., "data": {...}}` per log call) are read from
//! where the last recorded batch left them and sent as batches of a live run. Where it is lives
//! in the log (each batch's cursor: a byte offset per file), so a restarted follower neither
//! records a line twice nor skips one. Only whole lines are read; a dump file is sent once its
//! size has held for one poll (verl writes a step's file at once), so a step is one batch.
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

/// Byte offsets already recorded, by file (`rollouts/3.jsonl`, `validation/3.jsonl`, `metrics`).
type Cursor = BTreeMap<String, u64>;

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
    /// More whole lines wait beyond this batch's byte budget.
    more: bool,
}

/// Reads what the cursor has not recorded. Unless `settle` is false (the last read), a dump
/// file whose size changed since the previous poll waits for the next one.
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
        let from = cursor.get(&source.key).copied().unwrap_or(0);
        if size < from {
            bail!(
                "{} is shorter ({size} bytes) than what was recorded of it ({from} bytes): was it replaced?",
                source.path.display()
            );
        }
        let changed = sizes.insert(source.path.clone(), size) != Some(size);
        if size == from || (settle && changed && source.kind != Kind::Metrics) {
            continue;
        }
        if bytes >= BATCH_BYTES {
            more = true;
            break;
        }
        if source.kind == Kind::Trl {
            let rows =
                prl_schema::trl::read_completions(&source.path).map_err(anyhow::Error::msg)?;
            let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
            bytes += text.len() as u64;
            lines += rows.len();
            next.insert(source.key.clone(), size);
            let name = source
                .key
                .rsplit('/')
                .next()
                .unwrap_or(&source.key)
                .to_owned();
            rollouts.push(json!({"name": name, "content": text}));
            continue;
        }
        let text = read_whole_lines(&source.path, from, BATCH_BYTES - bytes)?;
        if text.is_empty() {
            // A line longer than the budget, or a partial last line that waits.
            more |= bytes > 0 && size - from > BATCH_BYTES - bytes;
            continue;
        }
        bytes += text.len() as u64;
        lines += text.lines().filter(|l| !l.trim().is_empty()).count();
        next.insert(source.key.clone(), from + text.len() as u64);
        let name = source
            .key
            .rsplit('/')
            .next()
            .unwrap_or(&source.key)
            .to_owned();
        match source.kind {
            Kind::Rollouts => rollouts.push(json!({"name": name, "content": text})),
            Kind::Validation => validation.push(json!({"name": name, "content": text})),
            Kind::Metrics => metrics.extend(metric_points(&source.path, from, &text)?),
            Kind::Trl => unreachable!("TRL tables are read whole above"),
        }
    }
    if lines == 0 {
        return Ok(None);
    }
    // The batch's name is where it ends: a resend after a lost answer is recognised as recorded.
    let name = {
        use sha2::Digest;
        let text = serde_json::to_string(&next).expect("a cursor is JSON");
        hex::encode(&sha2::Sha256::digest(text.as_bytes())[..16])
    };
    Ok(Some(Batch {
        body: json!({
            "batch": name,
            "metrics": metrics,
            "rollouts": rollouts,
            "validation": validation,
            "cursor": {"files": next},
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
        if line.trim().is_empty() {
            continue;
        }
        let parsed: Value = serde_json::from_str(line)
            .or_else(|_| serde_json::from_str(&python_json(line)))
            .with_context(|| {
                format!(
                    "{} at byte {at}: not a JSON line of the file logger",
                    path.display()
                )
            })?;
        let (Some(step), Some(data)) = (parsed["step"].as_u64(), parsed["data"].as_object()) else {
            bail!(
                "{} at byte {at}: a line of the file logger has a `step` (a whole number ≥ 0) and `data`",
                path.display()
            );
        };
        let values: serde_json::Map<String, Value> = data
            .iter()
            .filter(|(_, v)| {
                v.is_number() || matches!(v.as_str(), Some("NaN" | "Infinity" | "-Infinity"))
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !values.is_empty() {
            points.push(json!({"step": step, "values": values}));
        }
    }
    Ok(points)
}

/// Python's `json.dumps` writes NaN and the infinities bare; prl reads them as named strings.
/// Outside JSON strings, those tokens are quoted.
fn python_json(line: &str) -> String {
    let mut out = String::with_capacity(line.len() + 16);
    let (mut in_string, mut escaped) = (false, false);
    let mut rest = line;
    while let Some(c) = rest.chars().next() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            rest = &rest[c.len_utf8()..];
            continue;
        }
        if let Some(token) = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|t| rest.starts_with(t))
        {
            out.push('"');
            out.push_str(token);
            out.push('"');
            rest = &rest[token.len()..];
            continue;
        }
        in_string = c == '"';
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Retries what failed for want of the API (unreachable, 5xx) with pauses up to 10 s; a refusal
/// (4xx) is final.
async fn retrying<T, F, Fut>(what: &str, mut call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut pause = Duration::from_millis(250);
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) if e.downcast_ref::<Refused>().is_some() => return Err(e),
            Err(e) => {
                eprintln!("{what}: {e:#}; trying again in {pause:?}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(10));
            }
        }
    }
}

pub async fn run(client: &Client, args: Follow) -> Result<()> {
    let key = args
        .key
        .clone()
        .unwrap_or_else(|| format!("follow:{}", args.name));
    let start = json!({"name": args.name, "tags": args.tags, "source": "verl", "key": key});
    let run: LiveRun = retrying("starting the run", || client.live_start(&start)).await?;
    let mut cursor: Cursor = run
        .cursor
        .as_ref()
        .and_then(|c| serde_json::from_value(c["files"].clone()).ok())
        .unwrap_or_default();
    println!(
        "following into experiment {} (run {}){}",
        run.experiment_id,
        run.run_id,
        if cursor.is_empty() {
            String::new()
        } else {
            format!(", resuming after {} recorded files", cursor.len())
        }
    );
    if !matches!(run.status.as_str(), "running" | "scheduled") {
        bail!(
            "experiment {} has {} already",
            run.experiment_id,
            run.status
        );
    }
    let mut child = match args.command.split_first() {
        Some((program, rest)) => Some(
            tokio::process::Command::new(program)
                .args(rest)
                .spawn()
                .with_context(|| format!("starting {program}"))?,
        ),
        None => None,
    };
    let stop = tokio_util::sync::CancellationToken::new();
    prl_bus::signals::cancel_on_signal(stop.clone());
    let mut sizes = HashMap::new();
    let mut exit = None;
    loop {
        if let Some(c) = &mut child {
            exit = c.try_wait()?;
        }
        let last = exit.is_some() || args.once || stop.is_cancelled();
        let batch = read_batch(&args, &cursor, &mut sizes, !last)?;
        let more = batch.as_ref().is_some_and(|b| b.more);
        if let Some(batch) = batch {
            let recorded: Value = retrying("recording a batch", || {
                client.live_batch(run.experiment_id, &batch.body)
            })
            .await?;
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
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(args.poll) => {}
            _ = stop.cancelled() => {}
        }
    }
    let status = match exit {
        Some(code) if code.success() => Some("finished"),
        Some(_) => Some("failed"),
        None if args.finish => Some("finished"),
        None => None,
    };
    if let Some(status) = status {
        let body = json!({ "status": status });
        retrying("finishing the run", || {
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
