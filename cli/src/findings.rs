//! The Parallel-R1 paper's findings, judged on a suite's results as read through the API, each with
//! its numbers and a verdict per seed. A finding counts as reproduced only if it holds under every
//! seed; one that does not is printed as not reproduced, with the numbers that say why.
//!
//! Scores are a row's average Mean@k over the benchmarks (the paper's Avg); "beats" means by more
//! than two standard errors of the difference. Rows of a suite are evaluated on the same prompts,
//! so that error is the paired one, over per-prompt differences (see `compare`).

use prl_api::routes::analytics::StrategyPoint;
use prl_api::routes::results::{BenchmarkResult, PromptScore, ResultRow};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

/// What a suite row stands for in the paper's table, which says what the findings compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Base,
    /// Cold-start SFT on parallel-format solutions.
    Sft,
    /// SFT continued from an SFT row with the RL rows' compute.
    Control,
    /// RL from the base without the parallel format.
    Grpo,
    /// RL with parallel rollouts from an SFT row (directly or through another such row).
    ParallelR1,
    /// A Parallel-R1 row with the S1 schedule, compared with the S2 one.
    ParallelR1S1,
    ParallelR1S2,
}

impl Role {
    fn is_parallel_r1(self) -> bool {
        matches!(
            self,
            Role::ParallelR1 | Role::ParallelR1S1 | Role::ParallelR1S2
        )
    }
}

/// One row of one seed's run of a suite.
pub struct RowOutcome {
    pub name: String,
    pub role: Option<Role>,
    /// The row this one started from, by index.
    pub start: Option<usize>,
    pub result: ResultRow,
    /// Per benchmark, the sampled responses behind its result, prompt by prompt.
    pub prompts: BTreeMap<String, Vec<PromptScore>>,
    /// The strategy series of its RL stages, step by step.
    pub strategy: Vec<StrategyPoint>,
}

pub struct SeedOutcome {
    pub seed: u64,
    pub rows: Vec<RowOutcome>,
}

pub struct Finding {
    pub title: &'static str,
    /// Per seed: whether it held, and the numbers.
    pub seeds: Vec<(u64, bool, String)>,
    /// Measured only: no verdict is asked of it.
    pub measured_only: bool,
}

impl Finding {
    pub fn reproduced(&self) -> bool {
        !self.seeds.is_empty() && self.seeds.iter().all(|(_, held, _)| *held)
    }
}

/// What a comparison of two rows measures.
#[derive(Clone, Copy)]
enum Measure {
    /// Mean@k, the finding's score.
    MeanAtK,
    /// The share of sampled responses that open a parallel block.
    ParallelRatio,
}

impl Measure {
    /// A row's value on one benchmark and its standard error on its own. The parallel ratio's
    /// treats each prompt as one draw: its samples share the prompt, so they are not independent.
    fn of(self, r: &BenchmarkResult) -> (f64, f64) {
        match self {
            Measure::MeanAtK => (r.mean_at_k, r.mean_at_k_se.unwrap_or(0.0)),
            Measure::ParallelRatio => {
                let p = r.parallel_ratio;
                (p, (p * (1.0 - p) / r.prompts.max(1) as f64).sqrt())
            }
        }
    }

    fn of_prompt(self, p: &PromptScore) -> f64 {
        let hits = match self {
            Measure::MeanAtK => p.correct,
            Measure::ParallelRatio => p.parallel,
        };
        hits as f64 / p.samples.max(1) as f64
    }
}

/// A row's measure averaged over its benchmarks (the paper's Avg), and the standard error of that
/// average.
fn level(row: &RowOutcome, measure: Measure) -> Option<(f64, f64)> {
    let results: Vec<(f64, f64)> = row.result.results.values().map(|r| measure.of(r)).collect();
    average(&results)
}

/// The mean of values with standard errors, and the standard error of that mean.
fn average(values: &[(f64, f64)]) -> Option<(f64, f64)> {
    if values.is_empty() {
        return None;
    }
    let n = values.len() as f64;
    let mean = values.iter().map(|r| r.0).sum::<f64>() / n;
    let var: f64 = values.iter().map(|r| r.1.powi(2)).sum();
    Some((mean, var.sqrt() / n))
}

/// One row's measure against another's: the difference of their averages and its standard error.
struct Comparison {
    difference: f64,
    se: f64,
    /// The error is that of per-prompt differences.
    paired: bool,
}

impl Comparison {
    fn wins(&self) -> bool {
        self.difference > 2.0 * self.se
    }
}

impl std::fmt::Display for Comparison {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let paired = if self.paired { "paired " } else { "" };
        write!(
            f,
            "{:+.1}, {paired}SE {:.1}",
            self.difference * 100.0,
            self.se * 100.0
        )
    }
}

/// `a` against `b`. Where both rows sampled the same prompts of every benchmark, the standard
/// error is that of the per-prompt differences: a prompt's difficulty is shared by both rows and
/// cancels, as in any paired comparison. Otherwise the rows' own errors combine as if independent.
fn compare(a: &RowOutcome, b: &RowOutcome, measure: Measure) -> Option<Comparison> {
    let paired: Option<Vec<(f64, f64)>> = a
        .result
        .results
        .iter()
        .map(|(column, x)| {
            let y = b.result.results.get(column)?;
            paired_difference(
                a.prompts.get(&x.benchmark)?,
                b.prompts.get(&y.benchmark)?,
                measure,
            )
        })
        .collect();
    match paired.filter(|p| !p.is_empty() && p.len() == b.result.results.len()) {
        Some(per_benchmark) => {
            let (difference, se) = average(&per_benchmark)?;
            Some(Comparison {
                difference,
                se,
                paired: true,
            })
        }
        None => {
            let (x, y) = (level(a, measure)?, level(b, measure)?);
            Some(Comparison {
                difference: x.0 - y.0,
                se: (x.1.powi(2) + y.1.powi(2)).sqrt(),
                paired: false,
            })
        }
    }
}

/// The mean per-prompt difference over the prompts both sampled, and its standard error; None
/// when they share fewer than two prompts.
fn paired_difference(a: &[PromptScore], b: &[PromptScore], measure: Measure) -> Option<(f64, f64)> {
    let b: HashMap<&str, &PromptScore> = b.iter().map(|p| (p.prompt_id.as_str(), p)).collect();
    let d: Vec<f64> = a
        .iter()
        .filter_map(|p| {
            let q = b.get(p.prompt_id.as_str())?;
            Some(measure.of_prompt(p) - measure.of_prompt(q))
        })
        .collect();
    if d.len() < 2 {
        return None;
    }
    let n = d.len() as f64;
    let mean = d.iter().sum::<f64>() / n;
    let var = d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    Some((mean, (var / n).sqrt()))
}

fn pct(x: f64) -> String {
    format!("{:.1}", x * 100.0)
}

/// The SFT row a row descends from (itself for an SFT row).
fn sft_start(rows: &[RowOutcome], mut i: usize) -> Option<usize> {
    for _ in 0..rows.len() {
        if rows[i].role == Some(Role::Sft) {
            return Some(i);
        }
        i = rows[i].start?;
    }
    None
}

pub fn judge(seeds: &[SeedOutcome]) -> Vec<Finding> {
    let mut findings = vec![
        Finding {
            title: "(a) SFT teaches the format: held-out parallel ratio between 60% and 99%",
            seeds: Vec::new(),
            measured_only: false,
        },
        Finding {
            title: "(b) every Parallel-R1 row beats its SFT start and the continued-SFT control (Avg Mean@k, > 2 SE)",
            seeds: Vec::new(),
            measured_only: false,
        },
        Finding {
            title: "(c) Parallel-R1 beats the sequential GRPO baseline (Avg Mean@k, > 2 SE)",
            seeds: Vec::new(),
            measured_only: false,
        },
        Finding {
            title: "(d) S2 keeps a higher parallel ratio than S1 (> 2 SE)",
            seeds: Vec::new(),
            measured_only: false,
        },
        Finding {
            title: "(e) strategy evolution: verification share and median block position, first vs last quarter of RL steps",
            seeds: Vec::new(),
            measured_only: true,
        },
    ];
    for seed in seeds {
        let rows = &seed.rows;
        let of = |role: Role| rows.iter().filter(move |r| r.role == Some(role));
        let r1: Vec<usize> = (0..rows.len())
            .filter(|&i| rows[i].role.is_some_and(Role::is_parallel_r1))
            .collect();
        let verdicts = [
            sft_format(of(Role::Sft)),
            r1_over_starts(rows, &r1, of(Role::Control).next()),
            r1_over_grpo(rows, &r1, of(Role::Grpo).next()),
            s2_over_s1(of(Role::ParallelR1S1).next(), of(Role::ParallelR1S2).next()),
            strategy(rows, &r1),
        ];
        for (finding, (held, numbers)) in findings.iter_mut().zip(verdicts) {
            finding.seeds.push((seed.seed, held, numbers));
        }
    }
    findings
}

fn sft_format<'a>(rows: impl Iterator<Item = &'a RowOutcome>) -> (bool, String) {
    let mut held = true;
    let mut parts = Vec::new();
    for row in rows {
        let ratio = row.result.parallel_ratio.unwrap_or(0.0);
        held &= (0.6..=0.99).contains(&ratio);
        parts.push(format!("{} {}%", row.name, pct(ratio)));
    }
    held &= !parts.is_empty();
    (held, parts.join(", "))
}

fn r1_over_starts(
    rows: &[RowOutcome],
    r1: &[usize],
    control: Option<&RowOutcome>,
) -> (bool, String) {
    let mut held = !r1.is_empty() && control.is_some();
    let mut parts = Vec::new();
    for &i in r1 {
        let Some(own) = level(&rows[i], Measure::MeanAtK) else {
            held = false;
            continue;
        };
        let start = sft_start(rows, i).map(|s| &rows[s]);
        let mut line = format!("{} {}", rows[i].name, pct(own.0));
        for (label, other) in [("its SFT start", start), ("the control", control)] {
            match other.and_then(|other| compare(&rows[i], other, Measure::MeanAtK)) {
                Some(c) => {
                    held &= c.wins();
                    let _ = write!(line, "; vs {label} ({c})");
                }
                None => held = false,
            }
        }
        parts.push(line);
    }
    (held, parts.join(" | "))
}

fn r1_over_grpo(rows: &[RowOutcome], r1: &[usize], grpo: Option<&RowOutcome>) -> (bool, String) {
    let Some((grpo, baseline)) =
        grpo.and_then(|g| level(g, Measure::MeanAtK).map(|level| (g, level)))
    else {
        return (false, "no GRPO row with results".into());
    };
    let mut held = !r1.is_empty();
    let mut parts = vec![format!("GRPO {}", pct(baseline.0))];
    for &i in r1 {
        let (Some(own), Some(c)) = (
            level(&rows[i], Measure::MeanAtK),
            compare(&rows[i], grpo, Measure::MeanAtK),
        ) else {
            held = false;
            continue;
        };
        held &= c.wins();
        parts.push(format!("{} {} ({c})", rows[i].name, pct(own.0)));
    }
    (held, parts.join("; "))
}

fn s2_over_s1(s1: Option<&RowOutcome>, s2: Option<&RowOutcome>) -> (bool, String) {
    let (Some(s1), Some(s2)) = (s1, s2) else {
        return (false, "an S1 or S2 row is missing".into());
    };
    let ratio = |row| level(row, Measure::ParallelRatio);
    match (
        ratio(s1),
        ratio(s2),
        compare(s2, s1, Measure::ParallelRatio),
    ) {
        (Some(a), Some(b), Some(c)) => (
            c.wins(),
            format!("S1 {}%, S2 {}% ({c})", pct(a.0), pct(b.0)),
        ),
        _ => (false, "an S1 or S2 row is missing its results".into()),
    }
}

/// Block-weighted verification share, the mean of per-step median positions, and the blocks,
/// over some steps.
fn quarter(points: &[&StrategyPoint]) -> Option<(f64, f64, i64)> {
    let blocks: i64 = points.iter().map(|p| p.blocks).sum();
    if blocks == 0 {
        return None;
    }
    let verification = points
        .iter()
        .map(|p| p.verification_share.unwrap_or(0.0) * p.blocks as f64)
        .sum::<f64>()
        / blocks as f64;
    let medians: Vec<f64> = points
        .iter()
        .filter_map(|p| p.rel_position_median)
        .collect();
    let median = medians.iter().sum::<f64>() / medians.len().max(1) as f64;
    Some((verification, median, blocks))
}

/// Holds when the verification share rises in every Parallel-R1 row that has blocks to measure.
fn strategy(rows: &[RowOutcome], r1: &[usize]) -> (bool, String) {
    let (mut measured, mut rising) = (0, 0);
    let mut parts = Vec::new();
    for &i in r1 {
        let points = &rows[i].strategy;
        let n = points.len();
        if n < 4 {
            continue;
        }
        let first: Vec<&StrategyPoint> = points[..n / 4].iter().collect();
        let last: Vec<&StrategyPoint> = points[n - n / 4..].iter().collect();
        match (quarter(&first), quarter(&last)) {
            (Some(a), Some(b)) => {
                measured += 1;
                rising += usize::from(b.0 > a.0);
                parts.push(format!(
                    "{}: verification {}% -> {}%, median position {:.2} -> {:.2} ({} -> {} blocks)",
                    rows[i].name,
                    pct(a.0),
                    pct(b.0),
                    a.1,
                    b.1,
                    a.2,
                    b.2
                ));
            }
            _ => parts.push(format!("{}: too few blocks to measure", rows[i].name)),
        }
    }
    (measured > 0 && rising == measured, parts.join(" | "))
}

pub fn render(findings: &[Finding]) -> String {
    let mut out = String::from("Findings of the paper, on this suite's results:\n");
    for f in findings {
        let verdict = match (f.measured_only, f.reproduced()) {
            (true, true) => "measured: verification rises in every row under every seed",
            (true, false) => "measured: verification does not rise in every row under every seed",
            (false, true) => "REPRODUCED",
            (false, false) => "NOT REPRODUCED",
        };
        let _ = writeln!(out, "\n{}\n  verdict: {verdict}", f.title);
        for (seed, held, numbers) in &f.seeds {
            let mark = if *held { "holds" } else { "fails" };
            let _ = writeln!(out, "  seed {seed} ({mark}): {numbers}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn row(name: &str, role: Role, start: Option<usize>, mean: f64, parallel: f64) -> RowOutcome {
        let result = BenchmarkResult {
            benchmark: "b".into(),
            k: 4,
            prompts: 512,
            step: 0,
            mean_at_k: mean,
            pass_at_k: mean,
            parallel_ratio: parallel,
            format_valid_ratio: 1.0,
            mean_response_tokens: None,
            mean_at_k_se: Some(0.01),
            pass_at_k_se: Some(0.01),
            greedy: None,
            temperature: Some(1.0),
            top_p: Some(1.0),
            max_response_tokens: Some(192),
        };
        RowOutcome {
            name: name.into(),
            role: Some(role),
            start,
            result: ResultRow {
                experiment_id: uuid::Uuid::nil(),
                method: name.into(),
                status: "completed".into(),
                parallel_ratio: Some(parallel),
                average: Some(mean),
                results: BTreeMap::from([("b".into(), result)]),
            },
            prompts: BTreeMap::new(),
            strategy: Vec::new(),
        }
    }

    fn suite(s1: f64, s2: f64, s2_ratio: f64) -> Vec<RowOutcome> {
        vec![
            row("Base", Role::Base, None, 0.3, 0.0),
            row("SFT", Role::Sft, None, 0.4, 0.8),
            row("Control", Role::Control, Some(1), 0.42, 0.8),
            row("GRPO", Role::Grpo, None, 0.45, 0.0),
            row("S1", Role::ParallelR1S1, Some(1), s1, 0.2),
            row("S2", Role::ParallelR1S2, Some(1), s2, s2_ratio),
        ]
    }

    #[test]
    fn a_finding_holds_only_beyond_two_standard_errors_and_under_every_seed() {
        // SE of a difference here is sqrt(2) points: 2.9 points is not enough, 3 is.
        let seeds = [
            SeedOutcome {
                seed: 1,
                rows: suite(0.50, 0.52, 0.6),
            },
            SeedOutcome {
                seed: 2,
                rows: suite(0.50, 0.479, 0.1),
            },
        ];
        let findings = judge(&seeds);
        assert!(findings[0].reproduced(), "SFT's ratio 80% is in range");
        // Seed 2's S2 beats GRPO by 2.9 points, just over 2 SE (2.83): (b) and (c) hold in both.
        assert!(findings[1].reproduced());
        assert!(findings[2].reproduced());
        // S2 keeps more blocks than S1 in seed 1 only.
        assert_eq!(
            findings[3].seeds.iter().map(|s| s.1).collect::<Vec<_>>(),
            [true, false]
        );
        assert!(!findings[3].reproduced());
        let text = render(&findings);
        assert!(text.contains(
            "(d) S2 keeps a higher parallel ratio than S1 (> 2 SE)\n  verdict: NOT REPRODUCED"
        ));
        assert!(
            text.contains("seed 2 (fails): S1 20.0%, S2 10.0% (-10.0, SE 2.2)"),
            "{text}"
        );
    }

    #[test]
    fn s2_keeps_more_blocks_only_beyond_two_standard_errors() {
        // 512 prompts: SE of a ratio near 12% is 1.4 points, of the difference 2.0.
        let held = |s2_ratio: f64| {
            s2_over_s1(
                Some(&row("S1", Role::ParallelR1S1, None, 0.4, 0.12)),
                Some(&row("S2", Role::ParallelR1S2, None, 0.4, s2_ratio)),
            )
            .0
        };
        assert!(!held(0.13), "one point is noise");
        assert!(held(0.17));
    }

    #[test]
    fn strategy_evolution_holds_only_when_verification_rises_in_every_row() {
        let series = |shares: [f64; 4]| -> Vec<StrategyPoint> {
            (0..4)
                .map(|i| StrategyPoint {
                    run_id: uuid::Uuid::nil(),
                    step: i + 1,
                    trajectories: 8,
                    mean_reward: 0.0,
                    accuracy: 0.0,
                    parallel_ratio: 0.5,
                    mean_blocks: 1.0,
                    mean_block_share: 0.3,
                    accuracy_parallel: None,
                    accuracy_sequential: None,
                    format_valid_ratio: 1.0,
                    blocks: 4,
                    rel_position_mean: Some(0.3),
                    rel_position_q1: Some(0.2),
                    rel_position_median: Some(0.3),
                    rel_position_q3: Some(0.4),
                    exploration_share: Some(1.0 - shares[i as usize]),
                    verification_share: Some(shares[i as usize]),
                })
                .collect()
        };
        let judged = |s2: [f64; 4]| {
            let mut rows = suite(0.5, 0.5, 0.5);
            rows[4].strategy = series([0.25, 0.5, 0.5, 0.75]);
            rows[5].strategy = series(s2);
            let findings = judge(&[SeedOutcome { seed: 1, rows }]);
            (findings[4].reproduced(), render(&findings))
        };
        let (held, text) = judged([0.5, 0.5, 0.5, 0.75]);
        assert!(held, "{text}");
        assert!(
            text.contains(
                "S1: verification 25.0% -> 75.0%, median position 0.30 -> 0.30 (4 -> 4 blocks)"
            ),
            "{text}"
        );
        let (held, text) = judged([0.75, 0.5, 0.5, 0.5]);
        assert!(!held, "S2's share falls: {text}");
        assert!(text.contains("does not rise in every row"), "{text}");
    }

    /// A row evaluated on benchmark "b" with 4 samples of each prompt, `correct[i]` right on
    /// prompt i, and the standard error its evaluation would report on its own.
    fn sampled(correct: &[i64]) -> RowOutcome {
        let scores: Vec<f64> = correct.iter().map(|&c| c as f64 / 4.0).collect();
        let n = scores.len() as f64;
        let mean = scores.iter().sum::<f64>() / n;
        let sd = (scores.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
        let mut row = row("row", Role::ParallelR1, None, mean, 0.5);
        let result = row.result.results.get_mut("b").unwrap();
        result.mean_at_k_se = Some(sd / n.sqrt());
        let prompts = correct.iter().enumerate().map(|(i, &c)| PromptScore {
            prompt_id: format!("p{i}"),
            samples: 4,
            correct: c,
            parallel: 2,
        });
        row.prompts = BTreeMap::from([("b".into(), prompts.collect())]);
        row
    }

    #[test]
    fn rows_sampled_on_the_same_prompts_are_compared_prompt_by_prompt() {
        // Half the 200 prompts are easy for both rows, half hard; each row's own standard error
        // (3.5 points) is mostly that spread of difficulty, which a difference cancels.
        let before: Vec<i64> = (0..200).map(|i| if i < 100 { 4 } else { 0 }).collect();
        let mut better = before.clone();
        better[100..108].fill(4);
        let c = compare(&sampled(&better), &sampled(&before), Measure::MeanAtK).unwrap();
        assert!(c.paired);
        assert!((c.difference - 0.04).abs() < 1e-9);
        assert!(c.wins(), "8 prompts gained, none lost: {c}");
        assert_eq!(c.to_string(), "+4.0, paired SE 1.4");
        let mut unpaired = sampled(&better);
        unpaired.prompts.clear();
        let c = compare(&unpaired, &sampled(&before), Measure::MeanAtK).unwrap();
        assert!(!c.paired && !c.wins(), "as if independent: {c}");
        // Gains and losses on different prompts are noise, paired or not.
        let mut mixed = better.clone();
        mixed[..4].fill(0);
        let c = compare(&sampled(&mixed), &sampled(&before), Measure::MeanAtK).unwrap();
        assert!(c.paired && !c.wins(), "{c}");
    }

    #[test]
    fn a_row_within_noise_of_its_start_does_not_beat_it() {
        let rows = suite(0.42, 0.43, 0.6);
        let findings = judge(&[SeedOutcome { seed: 1, rows }]);
        // S1 is 2 points over its SFT start: under 2 SE (2.8 points).
        assert!(!findings[1].reproduced());
        assert!(!findings[2].reproduced(), "below GRPO");
    }
}
