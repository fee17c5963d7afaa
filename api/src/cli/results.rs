//! The comparison table printed as Markdown, shaped like the paper's main table: the parallel
//! ratio, Mean@k and Pass@k per benchmark and their average, the best of each column in bold.

use crate::routes::results::ResultsTable;

pub fn print_table(table: &ResultsTable) {
    print!("{}", render(table));
}

pub fn render(table: &ResultsTable) -> String {
    // Column headers and, per row, the values (in %), with None for a missing result.
    let mut headers = vec!["Parallel ratio %".to_owned()];
    for b in &table.benchmarks {
        let k = table
            .rows
            .iter()
            .find_map(|r| r.results.get(b).map(|x| x.k))
            .unwrap_or(1);
        let short = b.strip_prefix("builtin:").unwrap_or(b);
        headers.push(format!("{short} Mean@{k}"));
        headers.push(format!("{short} Pass@{k}"));
    }
    headers.push("Avg".to_owned());
    let values: Vec<Vec<Option<f64>>> = table
        .rows
        .iter()
        .map(|r| {
            let mut v = vec![r.parallel_ratio];
            for b in &table.benchmarks {
                let x = r.results.get(b);
                v.push(x.map(|x| x.mean_at_k));
                v.push(x.map(|x| x.pass_at_k));
            }
            v.push(r.average);
            v.into_iter().map(|x| x.map(|x| x * 100.0)).collect()
        })
        .collect();
    // The parallel ratio is not a score: it has no best.
    let best: Vec<Option<f64>> = (0..headers.len())
        .map(|c| {
            (c > 0).then_some(())?;
            values
                .iter()
                .filter_map(|v| v[c])
                .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))
        })
        .collect();
    let mut out = format!("| Method | {} |\n", headers.join(" | "));
    out += &format!("|---|{}\n", "---|".repeat(headers.len()));
    for (row, v) in table.rows.iter().zip(&values) {
        let cells: Vec<String> = v
            .iter()
            .zip(&best)
            .map(|(x, best)| match x {
                Some(x) if Some(*x) == *best => format!("**{x:.1}**"),
                Some(x) => format!("{x:.1}"),
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
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::results::{BenchmarkResult, ResultRow};
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
}
