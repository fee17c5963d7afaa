//! The comparison table printed as Markdown, shaped like the paper's main table: the parallel
//! ratio, Mean@k and Pass@k per benchmark and their average, the best of each column in bold.

use prl_api::routes::results::{BenchmarkResult, ResultsTable};

pub fn print_table(table: &ResultsTable) {
    print!("{}", render(table));
}

pub fn render(table: &ResultsTable) -> String {
    // Column headers and, per row, the values (in %) with their standard errors, None for a
    // missing result.
    type Cell = Option<(f64, Option<f64>)>;
    let mut headers = vec!["Parallel ratio %".to_owned()];
    let mut cells: Vec<Vec<Cell>> = table
        .rows
        .iter()
        .map(|r| vec![r.parallel_ratio.map(|p| (p, None))])
        .collect();
    for b in &table.benchmarks {
        let results: Vec<Option<&BenchmarkResult>> =
            table.rows.iter().map(|r| r.results.get(b)).collect();
        let k = results.iter().flatten().map(|x| x.k).next().unwrap_or(1);
        let short = b.strip_prefix("builtin:").unwrap_or(b);
        let mut column = |title: String, value: fn(&BenchmarkResult) -> Cell| {
            headers.push(title);
            for (row, result) in cells.iter_mut().zip(&results) {
                row.push(result.and_then(value));
            }
        };
        column(format!("{short} Mean@{k}"), |x| {
            Some((x.mean_at_k, x.mean_at_k_se))
        });
        column(format!("{short} Pass@{k}"), |x| {
            Some((x.pass_at_k, x.pass_at_k_se))
        });
        if results.iter().flatten().any(|x| x.greedy.is_some()) {
            column(format!("{short} greedy"), |x| x.greedy.map(|g| (g, None)));
        }
    }
    headers.push("Avg".to_owned());
    for (row, r) in cells.iter_mut().zip(&table.rows) {
        row.push(r.average.map(|a| (a, None)));
    }
    // The parallel ratio is not a score: it has no best.
    let best: Vec<Option<f64>> = (0..headers.len())
        .map(|c| {
            (c > 0).then_some(())?;
            cells
                .iter()
                .filter_map(|v| v[c].map(|x| x.0))
                .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))
        })
        .collect();
    let mut out = format!("| Method | {} |\n", headers.join(" | "));
    out += &format!("|---|{}\n", "---|".repeat(headers.len()));
    for (row, v) in table.rows.iter().zip(&cells) {
        let cells: Vec<String> = v
            .iter()
            .zip(&best)
            .map(|(x, best)| match x {
                Some((x, se)) => {
                    let value = match se {
                        Some(se) => format!("{:.1} ±{:.1}", x * 100.0, se * 100.0),
                        None => format!("{:.1}", x * 100.0),
                    };
                    if Some(*x) == *best {
                        format!("**{value}**")
                    } else {
                        value
                    }
                }
                None => "–".to_owned(),
            })
            .collect();
        let method = if row.status == "completed" {
            row.method.clone()
        } else {
            format!("{} ({})", row.method, row.status)
        };
        out += &format!("| {method} | {} |\n", cells.join(" | "));
    }
    out += &protocols(table);
    out
}

/// A line per benchmark saying how its Mean@k and Pass@k were sampled.
fn protocols(table: &ResultsTable) -> String {
    let mut out = String::new();
    for b in &table.benchmarks {
        let Some(x) = table.rows.iter().find_map(|r| r.results.get(b)) else {
            continue;
        };
        let short = b.strip_prefix("builtin:").unwrap_or(b);
        let Some(t) = x.temperature else {
            continue;
        };
        let top_p = x.top_p.filter(|p| *p < 1.0).map(|p| format!(", top-p {p}"));
        let limit = x
            .max_response_tokens
            .map(|m| format!(", at most {m} tokens"));
        out += &format!(
            "\n{short}: {} prompts × {} samples at temperature {t}{}{}, ± one standard error over prompts{}",
            x.prompts,
            x.k,
            top_p.unwrap_or_default(),
            limit.unwrap_or_default(),
            if x.greedy.is_some() {
                "; greedy: one response per prompt at temperature 0"
            } else {
                ""
            },
        );
    }
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prl_api::routes::results::{BenchmarkResult, ResultRow};
    use std::collections::BTreeMap;

    fn result(benchmark: &str, k: i32, mean: f64, pass: f64) -> BenchmarkResult {
        BenchmarkResult {
            benchmark: benchmark.into(),
            k,
            prompts: 8,
            step: 3,
            mean_at_k: mean,
            pass_at_k: pass,
            parallel_ratio: 0.5,
            format_valid_ratio: 1.0,
            mean_response_tokens: Some(100.0),
            mean_at_k_se: None,
            pass_at_k_se: None,
            greedy: None,
            temperature: None,
            top_p: None,
            max_response_tokens: None,
        }
    }

    #[test]
    fn the_table_has_a_column_pair_per_benchmark_and_marks_the_best() {
        let row = |method: &str, mean: f64, status: &str| ResultRow {
            experiment_id: uuid::Uuid::nil(),
            method: method.into(),
            status: status.into(),
            parallel_ratio: Some(0.5),
            average: Some(mean),
            results: BTreeMap::from([(
                "builtin:hard-test".into(),
                result("builtin:hard-test", 4, mean, 0.9),
            )]),
        };
        let table = ResultsTable {
            benchmarks: vec!["builtin:hard-test".into()],
            rows: vec![row("SFT", 0.25, "completed"), row("R1", 0.5, "failed")],
        };
        let text = render(&table);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "| Method | Parallel ratio % | hard-test Mean@4 | hard-test Pass@4 | Avg |"
        );
        assert_eq!(lines[2], "| SFT | 50.0 | 25.0 | **90.0** | 25.0 |");
        assert_eq!(
            lines[3],
            "| R1 (failed) | 50.0 | **50.0** | **90.0** | **50.0** |"
        );
    }

    #[test]
    fn standard_errors_a_greedy_column_and_the_protocol_are_shown() {
        let mut x = result("builtin:easy-test", 4, 0.5, 0.75);
        x.mean_at_k_se = Some(0.012);
        x.pass_at_k_se = Some(0.02);
        x.greedy = Some(0.6);
        x.temperature = Some(1.0);
        x.top_p = Some(1.0);
        x.max_response_tokens = Some(192);
        let table = ResultsTable {
            benchmarks: vec!["builtin:easy-test".into()],
            rows: vec![ResultRow {
                experiment_id: uuid::Uuid::nil(),
                method: "R1".into(),
                status: "completed".into(),
                parallel_ratio: Some(0.5),
                average: Some(0.5),
                results: BTreeMap::from([("builtin:easy-test".into(), x)]),
            }],
        };
        let text = render(&table);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "| Method | Parallel ratio % | easy-test Mean@4 | easy-test Pass@4 | easy-test greedy | Avg |"
        );
        assert_eq!(
            lines[2],
            "| R1 | 50.0 | **50.0 ±1.2** | **75.0 ±2.0** | **60.0** | **50.0** |"
        );
        assert!(
            text.contains("easy-test: 8 prompts × 4 samples at temperature 1, at most 192 tokens"),
            "{text}"
        );
    }
}
