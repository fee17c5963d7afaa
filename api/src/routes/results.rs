//! The comparison table: one row per experiment, shaped like the paper's main table.

use super::params::id_list;
use crate::auth::ReadAccess;
use crate::error::ApiError;
use crate::state::AppState;
use actix_web::{HttpResponse, get, web};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

/// The most experiments one table compares.
const MAX_EXPERIMENTS: usize = 100;

#[derive(Deserialize, utoipa::IntoParams)]
pub struct ResultsQuery {
    /// Comma-separated experiment ids, in the order of the rows.
    #[param(
        pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(,[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})*$"
    )]
    pub experiments: String,
}

/// One benchmark's numbers in a row, under one protocol.
#[derive(Serialize, Deserialize, Clone, Debug, sqlx::FromRow, utoipa::ToSchema)]
pub struct BenchmarkResult {
    pub benchmark: String,
    pub k: i32,
    pub prompts: i32,
    /// The training step of the evaluated weights.
    pub step: i64,
    pub mean_at_k: f64,
    pub pass_at_k: f64,
    pub parallel_ratio: f64,
    pub format_valid_ratio: f64,
    pub mean_response_tokens: Option<f64>,
    /// Standard errors over prompts, where recorded.
    #[serde(default)]
    pub mean_at_k_se: Option<f64>,
    #[serde(default)]
    pub pass_at_k_se: Option<f64>,
    /// Greedy accuracy, when the evaluation decoded greedily too.
    #[serde(default)]
    pub greedy: Option<f64>,
    /// How Mean@k was sampled (unknown for imports).
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub max_response_tokens: Option<i32>,
}

impl BenchmarkResult {
    /// What makes two results comparable: the benchmark is one thing, the protocol another.
    fn protocol(&self) -> String {
        let mut out = format!("k={}", self.k);
        if let Some(t) = self.temperature {
            out += &format!(", T={t}");
        }
        if let Some(p) = self.top_p.filter(|p| *p < 1.0) {
            out += &format!(", top-p={p}");
        }
        if let Some(m) = self.max_response_tokens {
            out += &format!(", max {m} tokens");
        }
        out
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, utoipa::ToSchema)]
pub struct ResultRow {
    pub experiment_id: Uuid,
    /// The experiment's name: the method.
    pub method: String,
    pub status: String,
    /// The mean of the benchmarks' parallel ratios.
    pub parallel_ratio: Option<f64>,
    /// The mean of the benchmarks' Mean@k, as the paper's Avg column.
    pub average: Option<f64>,
    pub results: BTreeMap<String, BenchmarkResult>,
}

#[derive(Serialize, Deserialize, Clone, Debug, utoipa::ToSchema)]
pub struct ResultsTable {
    /// The table's column groups, sorted: one per benchmark, or one per benchmark and protocol
    /// where rows evaluated a benchmark under more than one (`benchmark [k=4, T=1, ...]`), so that
    /// no column mixes two protocols. Rows' `results` are keyed by these.
    pub benchmarks: Vec<String>,
    pub rows: Vec<ResultRow>,
}

/// The latest evaluation of each benchmark for each experiment, with the averages.
#[utoipa::path(context_path = "/api/v1", params(ResultsQuery), responses((status = 200, body = ResultsTable), (status = 400, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
#[get("/results")]
pub async fn table(
    _: ReadAccess,
    state: web::Data<AppState>,
    query: web::Query<ResultsQuery>,
) -> Result<HttpResponse, ApiError> {
    let ids = id_list("experiments", &query.experiments, MAX_EXPERIMENTS)?;
    let found: Vec<(Uuid, String, String)> =
        sqlx::query_as("SELECT id, name, status FROM experiments WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_all(&state.analytics)
            .await?;
    if let Some(missing) = ids.iter().find(|id| !found.iter().any(|f| f.0 == **id)) {
        return Err(ApiError::NotFound(format!("experiment {missing}")));
    }
    let results: Vec<(Uuid, sqlx::types::Json<BenchmarkResult>)> = sqlx::query_as(
        "SELECT experiment_id, json_build_object('benchmark', benchmark, 'k', k, 'prompts', prompts,
                'step', step, 'mean_at_k', mean_at_k, 'pass_at_k', pass_at_k,
                'parallel_ratio', parallel_ratio, 'format_valid_ratio', format_valid_ratio,
                'mean_response_tokens', mean_response_tokens, 'mean_at_k_se', mean_at_k_se,
                'pass_at_k_se', pass_at_k_se, 'greedy', greedy, 'temperature', temperature,
                'top_p', top_p, 'max_response_tokens', max_response_tokens)
         FROM experiment_results WHERE experiment_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(&state.analytics)
    .await?;
    // A benchmark evaluated under several protocols gets a column per protocol.
    let mut protocols: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (_, r) in &results {
        let seen = protocols.entry(&r.benchmark).or_default();
        if !seen.contains(&r.protocol()) {
            seen.push(r.protocol());
        }
    }
    let column = |r: &BenchmarkResult| match protocols[r.benchmark.as_str()].len() {
        1 => r.benchmark.clone(),
        _ => format!("{} [{}]", r.benchmark, r.protocol()),
    };
    let mut benchmarks: Vec<String> = results.iter().map(|(_, r)| column(r)).collect();
    benchmarks.sort();
    benchmarks.dedup();
    let rows = ids
        .iter()
        .map(|id| {
            let (_, name, status) = found.iter().find(|f| f.0 == *id).expect("checked above");
            let results: BTreeMap<String, BenchmarkResult> = results
                .iter()
                .filter(|(e, _)| e == id)
                .map(|(_, r)| (column(r), r.0.clone()))
                .collect();
            let mean = |f: fn(&BenchmarkResult) -> f64| {
                (!results.is_empty())
                    .then(|| results.values().map(f).sum::<f64>() / results.len() as f64)
            };
            ResultRow {
                experiment_id: *id,
                method: name.clone(),
                status: status.clone(),
                parallel_ratio: mean(|r| r.parallel_ratio),
                average: mean(|r| r.mean_at_k),
                results,
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(ResultsTable { benchmarks, rows }))
}

/// One prompt of an evaluation: how many responses were sampled for it, how many were correct,
/// and how many opened a parallel block.
#[derive(Serialize, Deserialize, Clone, Debug, sqlx::FromRow, utoipa::ToSchema)]
pub struct PromptScore {
    pub prompt_id: String,
    pub samples: i64,
    pub correct: i64,
    pub parallel: i64,
}

/// The prompts of one experiment's evaluation of one benchmark (the one its table row shows).
#[derive(Serialize, Deserialize, Clone, Debug, utoipa::ToSchema)]
pub struct PromptScores {
    pub experiment_id: Uuid,
    pub benchmark: String,
    pub prompts: Vec<PromptScore>,
}

/// Per prompt, the sampled responses behind each result of `/results`: what a paired comparison
/// of two rows evaluated on the same prompts needs (a prompt's difficulty is shared by both and
/// cancels in the difference). Greedy responses are not among them.
#[utoipa::path(context_path = "/api/v1", params(ResultsQuery), responses((status = 200, body = Vec<PromptScores>), (status = 400, body = crate::error::ErrorBody)))]
#[get("/results/prompts")]
pub async fn prompt_scores(
    _: ReadAccess,
    state: web::Data<AppState>,
    query: web::Query<ResultsQuery>,
) -> Result<HttpResponse, ApiError> {
    let ids = id_list("experiments", &query.experiments, MAX_EXPERIMENTS)?;
    // The evaluation's own responses: its run, benchmark and step, from its latest attempt. The
    // latest attempt is found once per result, before the join: left to the planner, which
    // expects a row where an evaluation has thousands, it was found again for every response
    // (quadratic: 3.4 s for 9 results of 2,048 responses).
    let rows: Vec<(Uuid, String, String, i64, i64, i64)> = sqlx::query_as(
        "WITH x AS MATERIALIZED (
             SELECT r.experiment_id, r.benchmark, r.run_id, r.step,
                    (SELECT max(u.attempt) FROM trajectories u
                     WHERE u.run_id = r.run_id AND u.benchmark = r.benchmark
                       AND u.step = r.step) AS attempt
             FROM experiment_results r
             WHERE r.experiment_id = ANY($1)
         )
         SELECT x.experiment_id, x.benchmark, t.prompt_id, count(*), count(*) FILTER (WHERE t.correct),
                count(*) FILTER (WHERE t.blocks > 0)
         FROM x
         JOIN trajectories t ON t.run_id = x.run_id AND t.benchmark = x.benchmark AND t.step = x.step
                            AND t.attempt = x.attempt
         GROUP BY 1, 2, 3
         ORDER BY 1, 2, 3",
    )
    .bind(&ids)
    .fetch_all(&state.analytics)
    .await?;
    let mut out: Vec<PromptScores> = Vec::new();
    for (experiment_id, benchmark, prompt_id, samples, correct, parallel) in rows {
        let score = PromptScore {
            prompt_id,
            samples,
            correct,
            parallel,
        };
        match out.last_mut() {
            Some(last) if last.experiment_id == experiment_id && last.benchmark == benchmark => {
                last.prompts.push(score)
            }
            _ => out.push(PromptScores {
                experiment_id,
                benchmark,
                prompts: vec![score],
            }),
        }
    }
    Ok(HttpResponse::Ok().json(out))
}
