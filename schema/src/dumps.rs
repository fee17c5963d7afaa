//! Runs of the reference code (Parallel-R1 on verl), read from its dumps so that they are
//! analysed like native runs:
//!
//! - rollout dumps: a folder of `{step}.jsonl`, one line per rollout with `input`, `output`
//!   (special tokens kept), `score`, `step`, `acc` and `pred`;
//! - validation dumps: the same lines for the validation set at a step, which become evaluation
//!   results (one per benchmark, named by the line's `data_source` when it has one).
//!
//! Reading is all or nothing: the first bad line stops it with the file and line named.

use crate::analysis::analyze;
use crate::estimators::estimate;
use crate::reward::extract_answer;
use crate::trajectory::{EvaluationResult, PromptRecord, Trajectory, TrajectoryBatch};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};

/// One file of a dump: its name (the step, unless lines say it) and its text.
#[derive(Clone, Debug, Deserialize, serde::Serialize, utoipa::ToSchema)]
pub struct DumpFile {
    pub name: String,
    pub content: String,
}

/// What is wrong, and where: the file, and the line (from 1) when a line is at fault.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{file}{}: {message}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
pub struct DumpError {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Flag {
    Bool(bool),
    Number(f64),
}

impl Flag {
    fn is_true(&self) -> bool {
        match self {
            Flag::Bool(b) => *b,
            Flag::Number(n) => *n > 0.0,
        }
    }
}

#[derive(Deserialize)]
struct Line {
    input: String,
    output: String,
    score: f64,
    step: Option<u64>,
    acc: Option<Flag>,
    pred: Option<String>,
    data_source: Option<String>,
    /// The ground truth, when the dump kept it (verl's `reward_model.ground_truth`; current
    /// verl writes it as `gts`).
    #[serde(default, alias = "gts", deserialize_with = "text_of_any")]
    ground_truth: Option<String>,
}

impl Line {
    /// The first text field holding a NUL, which PostgreSQL cannot store.
    fn field_with_nul(&self) -> Option<&'static str> {
        let optional = |s: &Option<String>| s.as_deref().unwrap_or_default().contains('\0');
        [
            ("input", self.input.contains('\0')),
            ("output", self.output.contains('\0')),
            ("pred", optional(&self.pred)),
            ("data_source", optional(&self.data_source)),
            ("ground_truth", optional(&self.ground_truth)),
        ]
        .into_iter()
        .find_map(|(field, nul)| nul.then_some(field))
    }
}

/// A JSON string as it is, any other value (a number, a list) as its JSON text.
fn text_of_any<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(other) => Some(other.to_string()),
    })
}

/// One rollout, read and checked.
struct Rollout {
    step: u64,
    line: Line,
}

/// Trajectories in one event at most, so that a large step still makes modest events.
pub const TRAJECTORIES_PER_BATCH: usize = 1000;

fn read(files: &[DumpFile]) -> Result<Vec<Rollout>, DumpError> {
    let mut rollouts = Vec::new();
    for file in files {
        let stem = file.name.rsplit('/').next().unwrap_or(&file.name);
        let stem_step = stem
            .strip_suffix(".jsonl")
            .unwrap_or(stem)
            .parse::<u64>()
            .ok();
        let err = |line: Option<usize>, message: String| DumpError {
            file: file.name.clone(),
            line,
            message,
        };
        let mut lines = 0;
        for (i, text) in file.content.lines().enumerate() {
            if text.trim().is_empty() {
                continue;
            }
            let line: Line =
                serde_json::from_str(text).map_err(|e| err(Some(i + 1), e.to_string()))?;
            if !line.score.is_finite() {
                return Err(err(Some(i + 1), "`score` must be a finite number".into()));
            }
            if let Some(field) = line.field_with_nul() {
                return Err(err(
                    Some(i + 1),
                    format!("`{field}` holds a NUL character (U+0000), which cannot be stored"),
                ));
            }
            let step = line.step.or(stem_step).ok_or_else(|| {
                err(
                    Some(i + 1),
                    "no `step`, and the file is not named {step}.jsonl".into(),
                )
            })?;
            rollouts.push(Rollout { step, line });
            lines += 1;
        }
        if lines == 0 {
            return Err(err(None, "the file has no rollouts".into()));
        }
    }
    Ok(rollouts)
}

/// A prompt's id: a hash of its text, so the same prompt has the same id in every step.
fn prompt_id(input: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(input.as_bytes())[..8])
}

fn correct(line: &Line) -> bool {
    line.acc
        .as_ref()
        .map(Flag::is_true)
        .unwrap_or(line.score > 0.0)
}

/// Rollout dumps as trajectory batches, step by step; samples of one prompt form its group.
pub fn rollout_batches(files: &[DumpFile]) -> Result<Vec<TrajectoryBatch>, DumpError> {
    let mut by_step: BTreeMap<u64, Vec<Line>> = BTreeMap::new();
    for r in read(files)? {
        by_step.entry(r.step).or_default().push(r.line);
    }
    let mut batches = Vec::new();
    for (step, lines) in by_step {
        let mut prompts: Vec<PromptRecord> = Vec::new();
        let mut groups: HashMap<String, (u32, u32)> = HashMap::new();
        let mut trajectories = Vec::with_capacity(lines.len());
        for line in lines {
            let next_group = groups.len() as u32;
            let (group, samples) = groups.entry(line.input.clone()).or_insert_with(|| {
                prompts.push(PromptRecord {
                    id: prompt_id(&line.input),
                    group: next_group,
                    text: line.input.clone(),
                    tokens: None,
                    truth: line.ground_truth.clone().unwrap_or_default(),
                });
                (next_group, 0)
            });
            let correct = correct(&line);
            let analysis = analyze(&line.output);
            trajectories.push(Trajectory {
                prompt: *group,
                sample: *samples,
                tokens: None,
                forced: 0,
                clipped: false,
                reward: line.score,
                accuracy: if correct { 1.0 } else { -1.0 },
                correct,
                answer: line.pred.clone().or_else(|| extract_answer(&line.output)),
                format_valid: analysis.parsed.is_valid(),
                blocks: vec![],
                text: line.output,
            });
            *samples += 1;
        }
        // Whole groups per batch, like the trainer's messages.
        let mut part = TrajectoryBatch {
            step,
            benchmark: None,
            prompts: prompts.clone(),
            trajectories: vec![],
        };
        trajectories.sort_by_key(|t| t.prompt);
        for t in trajectories {
            let group_starts = part
                .trajectories
                .last()
                .is_none_or(|l| l.prompt != t.prompt);
            if group_starts && part.trajectories.len() >= TRAJECTORIES_PER_BATCH {
                batches.push(std::mem::replace(
                    &mut part,
                    TrajectoryBatch {
                        step,
                        benchmark: None,
                        prompts: prompts.clone(),
                        trajectories: vec![],
                    },
                ));
            }
            part.trajectories.push(t);
        }
        batches.push(part);
    }
    Ok(batches)
}

/// Validation dumps as evaluation results: per step and benchmark, Mean@k and Pass@k with k the
/// fewest samples any prompt has, and the parallel and format-valid ratios.
pub fn validation_results(
    files: &[DumpFile],
    default_benchmark: &str,
) -> Result<Vec<EvaluationResult>, DumpError> {
    type Key = (u64, String);
    let mut problems: BTreeMap<Key, Vec<(String, bool, bool, bool)>> = BTreeMap::new();
    for r in read(files)? {
        let benchmark = r
            .line
            .data_source
            .clone()
            .unwrap_or_else(|| default_benchmark.to_owned());
        let parsed = crate::parallel::parse(&r.line.output);
        problems.entry((r.step, benchmark)).or_default().push((
            r.line.input.clone(),
            correct(&r.line),
            !parsed.blocks.is_empty(),
            parsed.is_valid() && extract_answer(&r.line.output).is_some(),
        ));
    }
    let mut results = Vec::new();
    for ((step, benchmark), rows) in problems {
        let mut per_prompt: HashMap<&str, (usize, usize)> = HashMap::new();
        for (input, correct, _, _) in &rows {
            let e = per_prompt.entry(input).or_default();
            e.0 += 1;
            e.1 += *correct as usize;
        }
        let counts: Vec<(usize, usize)> = per_prompt.into_values().collect();
        let k = counts.iter().map(|c| c.0).min().unwrap_or(1);
        let estimate = estimate(&counts, k);
        let share = |f: fn(&(String, bool, bool, bool)) -> bool| {
            rows.iter().filter(|r| f(r)).count() as f64 / rows.len() as f64
        };
        results.push(EvaluationResult {
            step,
            benchmark,
            k: k as u32,
            prompts: counts.len() as u32,
            mean_at_k: estimate.mean_at_k,
            pass_at_k: estimate.pass_at_k,
            mean_at_k_se: Some(estimate.mean_at_k_se),
            pass_at_k_se: Some(estimate.pass_at_k_se),
            greedy: None,
            sampling: None,
            parallel_ratio: share(|r| r.2),
            format_valid_ratio: share(|r| r.3),
            mean_response_tokens: None,
        });
    }
    Ok(results)
}

/// Metric values by name.
pub type MetricValues = BTreeMap<String, f64>;

/// One line of verl's `file` logger (`{"step": n, "data": {...}}`, with Python's bare `NaN` and
/// infinities): its step and its numeric values, anything else left out; None for a blank line.
pub fn metrics_line(line: &str) -> Result<Option<(u64, MetricValues)>, String> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    let parsed: serde_json::Value = serde_json::from_str(line)
        .or_else(|_| serde_json::from_str(&python_json(line)))
        .map_err(|_| "not a JSON line of the file logger".to_owned())?;
    let (Some(step), Some(data)) = (parsed["step"].as_u64(), parsed["data"].as_object()) else {
        return Err(
            "a line of the file logger has a `step` (a whole number ≥ 0) and `data`".to_owned(),
        );
    };
    let values = data
        .iter()
        .filter_map(|(k, v)| {
            let v = match v.as_str() {
                Some("NaN") => f64::NAN,
                Some("Infinity") => f64::INFINITY,
                Some("-Infinity") => f64::NEG_INFINITY,
                Some(_) => return None,
                None => v.as_f64()?,
            };
            Some((k.clone(), v))
        })
        .collect();
    Ok(Some((step, values)))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, lines: &[serde_json::Value]) -> DumpFile {
        DumpFile {
            name: name.into(),
            content: lines
                .iter()
                .map(|l| l.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }

    const PAR: &str =
        "<Parallel><Path>1+1=2</Path><Path>2</Path></Parallel><Summary>2</Summary> Final Answer: 2";

    #[test]
    fn rollouts_group_by_prompt_and_keep_scores() {
        let files = [file(
            "3.jsonl",
            &[
                serde_json::json!({"input": "q1", "output": PAR, "score": 1.0, "acc": true, "pred": "2"}),
                serde_json::json!({"input": "q2", "output": "Final Answer: 5", "score": -1.0, "acc": 0.0}),
                serde_json::json!({"input": "q1", "output": "Final Answer: 3", "score": -1.0, "acc": false}),
            ],
        )];
        let batches = rollout_batches(&files).unwrap();
        assert_eq!(batches.len(), 1);
        let b = &batches[0];
        assert_eq!(b.step, 3);
        assert_eq!(b.prompts.len(), 2);
        assert_eq!(b.prompts[0].id, prompt_id("q1"));
        let samples: Vec<(u32, u32, bool)> = b
            .trajectories
            .iter()
            .map(|t| (t.prompt, t.sample, t.correct))
            .collect();
        assert_eq!(samples, [(0, 0, true), (0, 1, false), (1, 0, false)]);
        assert_eq!(b.trajectories[1].answer.as_deref(), Some("3"));
    }

    #[test]
    fn bad_lines_are_named_by_file_and_line() {
        let good = serde_json::json!({"input": "q", "output": "o", "score": 1.0, "step": 1});
        let files = [
            file("1.jsonl", std::slice::from_ref(&good)),
            DumpFile {
                name: "2.jsonl".into(),
                content: format!("{good}\n\n{{\"input\": \"q\", \"score\": 1}}"),
            },
        ];
        let err = rollout_batches(&files).err().unwrap();
        assert_eq!((err.file.as_str(), err.line), ("2.jsonl", Some(3)));
        assert!(err.to_string().contains("missing field `output`"), "{err}");

        let unnamed = [file(
            "latest.jsonl",
            &[serde_json::json!({"input": "q", "output": "o", "score": 1.0})],
        )];
        let err = rollout_batches(&unnamed).err().unwrap();
        assert!(
            err.to_string()
                .starts_with("latest.jsonl line 1: no `step`"),
            "{err}"
        );
        let empty = [DumpFile {
            name: "4.jsonl".into(),
            content: "\n".into(),
        }];
        assert_eq!(rollout_batches(&empty).err().unwrap().line, None);
    }

    #[test]
    fn validation_dumps_give_estimate_per_benchmark() {
        let line = |input: &str, acc: bool, source: &str| {
            serde_json::json!({"input": input, "output": if acc { PAR } else { "Final Answer: 9" },
                               "score": if acc { 1.0 } else { 0.0 }, "acc": acc, "data_source": source})
        };
        let files = [file(
            "40.jsonl",
            &[
                line("a", true, "aime"),
                line("a", false, "aime"),
                line("b", false, "aime"),
                line("b", false, "aime"),
                line("c", true, "amc"),
            ],
        )];
        let results = validation_results(&files, "val").unwrap();
        assert_eq!(results.len(), 2);
        let aime = &results[0];
        assert_eq!(
            (aime.benchmark.as_str(), aime.step, aime.k, aime.prompts),
            ("aime", 40, 2, 2)
        );
        assert!((aime.mean_at_k - 0.25).abs() < 1e-12);
        assert!((aime.pass_at_k - 0.5).abs() < 1e-12);
        assert!((aime.parallel_ratio - 0.25).abs() < 1e-12);
        assert!((aime.format_valid_ratio - 1.0).abs() < 1e-12);
        assert_eq!(results[1].benchmark, "amc");
    }
}
