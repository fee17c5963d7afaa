//! REST over the analytics views: the strategy-evolution series, the run comparison, trajectory
//! search with keyset pagination, and downsampled metric series. The SQL is the views'
//! (`api/migrations/0004_analytics.sql`); see docs/analytics.md.

use super::params::{bool_parameter, float_parameter, id_list, int_parameter};
use crate::answer_cache::Versions;
use crate::auth::ReadAccess;
use crate::error::ApiError;
use crate::state::AppState;
use actix_web::http::header::{self, ContentType};
use actix_web::{HttpRequest, HttpResponse, get, web};
use bytes::Bytes;
use prl_schema::analysis::{BlockShape, Role, analyze};
use prl_schema::parallel::FormatIssue;
use prl_schema::word_filter;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

const MAX_RUNS: usize = 50;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RunsQuery {
    /// Comma-separated run ids.
    #[param(
        pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(,[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})*$"
    )]
    pub runs: String,
}

/// One run's numbers at one RL step (the `strategy_evolution` view).
#[derive(Serialize, Deserialize, Debug, sqlx::FromRow, utoipa::ToSchema)]
pub struct StrategyPoint {
    pub run_id: Uuid,
    pub step: i64,
    pub trajectories: i64,
    pub mean_reward: f64,
    pub accuracy: f64,
    pub parallel_ratio: f64,
    pub mean_blocks: f64,
    pub mean_block_share: f64,
    /// Accuracy of the responses that used a block; null when none did.
    pub accuracy_parallel: Option<f64>,
    /// Accuracy of the responses without a block; null when all used one.
    pub accuracy_sequential: Option<f64>,
    pub format_valid_ratio: f64,
    pub blocks: i64,
    pub rel_position_mean: Option<f64>,
    pub rel_position_q1: Option<f64>,
    pub rel_position_median: Option<f64>,
    pub rel_position_q3: Option<f64>,
    pub exploration_share: Option<f64>,
    pub verification_share: Option<f64>,
}

/// The strategy-evolution series of one or more runs, step by step. Served from the API's copy
/// while the runs' rows are unchanged; `Cache-Control: no-cache` reads them from the database.
#[utoipa::path(context_path = "/api/v1", params(RunsQuery), responses((status = 200, body = Vec<StrategyPoint>), (status = 400, body = crate::error::ErrorBody)))]
#[get("/analytics/strategy")]
pub async fn strategy(
    _: ReadAccess,
    state: web::Data<AppState>,
    request: HttpRequest,
    query: web::Query<RunsQuery>,
) -> Result<HttpResponse, ApiError> {
    let runs = id_list("runs", &query.runs, MAX_RUNS)?;
    let versions = "SELECT run_id, generation, NULL::text FROM strategy_versions
                    WHERE run_id = ANY($1) ORDER BY run_id";
    answer_kept(
        &state,
        &request,
        "strategy",
        versions,
        &runs,
        async |conn| {
            sqlx::query_as::<_, StrategyPoint>(
            "SELECT run_id, step, trajectories, mean_reward, accuracy, parallel_ratio, mean_blocks,
                    mean_block_share, accuracy_parallel, accuracy_sequential, format_valid_ratio,
                    blocks, rel_position_mean, rel_position_q1, rel_position_median,
                    rel_position_q3, exploration_share, verification_share
             FROM strategy_evolution WHERE run_id = ANY($1) ORDER BY run_id, step",
        )
        .bind(&runs)
        .fetch_all(conn)
        .await
        },
    )
    .await
}

/// `read`'s rows as JSON: the answer kept under `kind` and `ids` when the versions that the
/// statement `versions` reads for `ids` are those it was read at, else read now and kept. Both
/// statements go through one connection (see `answer_cache`).
async fn answer_kept<T: Serialize>(
    state: &AppState,
    request: &HttpRequest,
    kind: &'static str,
    versions: &'static str,
    ids: &[Uuid],
    read: impl AsyncFnOnce(&mut PgConnection) -> Result<Vec<T>, sqlx::Error>,
) -> Result<HttpResponse, ApiError> {
    let json = |body: Bytes| {
        HttpResponse::Ok()
            .content_type(ContentType::json())
            .body(body)
    };
    let mut conn = state.analytics.acquire().await?;
    if !state.answers.enabled() {
        return Ok(json(to_json(&read(&mut conn).await?)));
    }
    // The ids as a set, as the statements take them.
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let versions: Versions = sqlx::query_as(versions)
        .bind(&sorted)
        .fetch_all(&mut *conn)
        .await?;
    let key = (kind, sorted);
    let bypass = request
        .headers()
        .get_all(header::CACHE_CONTROL)
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|d| d.trim().eq_ignore_ascii_case("no-cache"))
        });
    if !bypass && let Some(body) = state.answers.get(&key, &versions) {
        return Ok(json(body));
    }
    let body = to_json(&read(&mut conn).await?);
    state.answers.put(key, versions, body.clone());
    Ok(json(body))
}

fn to_json<T: Serialize>(rows: &[T]) -> Bytes {
    // Ids, numbers (a non-finite one is written null) and text always serialise.
    serde_json::to_vec(rows)
        .expect("rows of ids, numbers and text serialise")
        .into()
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ComparisonQuery {
    /// Comma-separated run ids.
    #[param(
        pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(,[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})*$"
    )]
    pub runs: Option<String>,
    /// Comma-separated experiment ids: every run of each.
    #[param(
        pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(,[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})*$"
    )]
    pub experiments: Option<String>,
}

/// One run over all its steps (the `run_comparison` view).
#[derive(Serialize, Deserialize, Debug, sqlx::FromRow, utoipa::ToSchema)]
pub struct RunComparison {
    pub experiment_id: Uuid,
    pub experiment: String,
    pub stage_idx: i32,
    pub stage: Option<String>,
    pub run_id: Uuid,
    pub steps: i64,
    pub last_step: i64,
    pub trajectories: i64,
    pub mean_reward: f64,
    pub accuracy: f64,
    pub parallel_ratio: f64,
    pub mean_blocks: f64,
    pub accuracy_parallel: Option<f64>,
    pub accuracy_sequential: Option<f64>,
    pub format_valid_ratio: f64,
    pub mean_response_tokens: Option<f64>,
    pub rel_position_mean: Option<f64>,
    pub exploration_share: Option<f64>,
    pub verification_share: Option<f64>,
}

/// Runs side by side, chosen by run or by experiment. Served from the API's copy while the runs'
/// rows and experiments are unchanged; `Cache-Control: no-cache` reads them from the database.
#[utoipa::path(context_path = "/api/v1", params(ComparisonQuery), responses((status = 200, body = Vec<RunComparison>), (status = 400, body = crate::error::ErrorBody)))]
#[get("/analytics/comparison")]
pub async fn comparison(
    _: ReadAccess,
    state: web::Data<AppState>,
    request: HttpRequest,
    query: web::Query<ComparisonQuery>,
) -> Result<HttpResponse, ApiError> {
    let (column, ids) = match (&query.runs, &query.experiments) {
        (Some(runs), None) => ("run_id", id_list("runs", runs, MAX_RUNS)?),
        (None, Some(experiments)) => (
            "experiment_id",
            id_list("experiments", experiments, MAX_RUNS)?,
        ),
        _ => {
            return Err(ApiError::bad_parameter(
                "runs",
                "give either runs or experiments (comma-separated ids)",
            ));
        }
    };
    // `column` is one of two constants.
    let sql = format!(
        "SELECT experiment_id, experiment, stage_idx, stage, run_id, steps, last_step,
                trajectories, mean_reward, accuracy, parallel_ratio, mean_blocks,
                accuracy_parallel, accuracy_sequential, format_valid_ratio, mean_response_tokens,
                rel_position_mean, exploration_share, verification_share
         FROM run_comparison WHERE {column} = ANY($1) ORDER BY experiment_id, stage_idx, run_id"
    );
    // A row shows its experiment's name, which a tracked run's update may change; which runs an
    // experiment has shows in the runs' versions.
    let (kind, versions) = if column == "run_id" {
        (
            "comparison of runs",
            "SELECT v.run_id, v.generation, e.name FROM strategy_versions v
             JOIN runs r ON r.id = v.run_id JOIN experiments e ON e.id = r.experiment_id
             WHERE v.run_id = ANY($1) ORDER BY v.run_id",
        )
    } else {
        (
            "comparison of experiments",
            "SELECT v.run_id, v.generation, e.name FROM runs r
             JOIN strategy_versions v ON v.run_id = r.id JOIN experiments e ON e.id = r.experiment_id
             WHERE r.experiment_id = ANY($1) ORDER BY v.run_id",
        )
    };
    answer_kept(&state, &request, kind, versions, &ids, async |conn| {
        sqlx::query_as::<_, RunComparison>(sqlx::AssertSqlSafe(sql))
            .bind(&ids)
            .fetch_all(conn)
            .await
    })
    .await
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TrajectoryQuery {
    /// Comma-separated run ids (required).
    #[param(
        pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(,[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})*$"
    )]
    pub runs: String,
    #[param(value_type = Option<i64>, minimum = 0)]
    pub step_min: Option<String>,
    #[param(value_type = Option<i64>, minimum = 0)]
    pub step_max: Option<String>,
    /// `true` or `false`.
    #[param(value_type = Option<bool>)]
    pub correct: Option<String>,
    /// `true`: with at least one block; `false`: without.
    #[param(value_type = Option<bool>)]
    pub parallel: Option<String>,
    /// `exploration` or `verification`: with at least one block of that role.
    #[param(pattern = r"^(exploration|verification)$")]
    pub role: Option<String>,
    #[param(value_type = Option<f64>)]
    pub reward_min: Option<String>,
    #[param(value_type = Option<f64>)]
    pub reward_max: Option<String>,
    /// Words that must all occur in the response (PostgreSQL full-text search, `simple` config).
    pub q: Option<String>,
    /// `rollout`: RL's rollouts only; `evaluation`: evaluations' generations only.
    #[param(pattern = r"^(rollout|evaluation)$")]
    pub kind: Option<String>,
    /// An evaluation's benchmark, as its results name it (` (greedy)` for its greedy pass).
    pub benchmark: Option<String>,
    /// The `next` cursor of the previous page.
    pub after: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 200)]
    pub limit: Option<String>,
}

/// A trajectory with its parsed structure.
#[derive(Serialize, Deserialize, Debug, utoipa::ToSchema)]
pub struct TrajectoryView {
    /// `position:idx`, the trajectory's place in the log.
    pub id: String,
    pub run_id: Uuid,
    pub step: i64,
    /// The evaluation benchmark it was generated for; null for an RL rollout.
    pub benchmark: Option<String>,
    pub prompt_id: String,
    pub sample: i32,
    pub reward: f64,
    pub correct: bool,
    pub answer: Option<String>,
    pub truth: String,
    pub response_tokens: Option<i32>,
    pub format_valid: bool,
    pub response: String,
    /// The prompt, from the recorded batch.
    pub prompt: String,
    pub blocks: Vec<BlockShape>,
    pub format_issues: Vec<FormatIssue>,
}

#[derive(Serialize, Deserialize, Debug, utoipa::ToSchema)]
pub struct TrajectoryPage {
    pub items: Vec<TrajectoryView>,
    /// Pass as `after` for the next page; null on the last page.
    pub next: Option<String>,
}

#[derive(sqlx::FromRow)]
struct TrajectoryRow {
    position: i64,
    idx: i32,
    run_id: Uuid,
    step: i64,
    benchmark: Option<String>,
    prompt_id: String,
    sample: i32,
    reward: f64,
    correct: bool,
    answer: Option<String>,
    truth: String,
    response_tokens: Option<i32>,
    format_valid: bool,
    response: String,
    prompt: Option<String>,
}

fn cursor(text: &str) -> Result<(i64, i32), ApiError> {
    let bad = || ApiError::bad_parameter("after", format!("{text:?} is not a cursor from `next`"));
    let (position, idx) = text.split_once(':').ok_or_else(bad)?;
    Ok((
        position.parse().map_err(|_| bad())?,
        idx.parse().map_err(|_| bad())?,
    ))
}

/// A search page's statement. `$runs_rows` is, for each named run `r`, the query of its rows `t`
/// of `trajectories` in log order, up to its own conditions; the filters every search applies
/// follow (parameters 4-8, 10-11 the cursor, 13-14). The first `$12` rows of each run, then of
/// them all, are the page's keys; then come the page's rows, and each of its events' payload
/// once for the page's texts and prompts (a page's trajectories come from a few events, whose
/// payloads, a whole batch where the texts are kept, are costly to read per row). Each key's
/// text is taken out of its batch there: a join of the keys to whole batches was a nested loop
/// that read every batch again for every key (5 ms of a 50-row page from 27 events). The
/// `OFFSET 0`s make each event's payload read per event, not per key.
macro_rules! search_page {
    ($runs_rows:literal) => {
        concat!(
            "WITH keys AS (
             SELECT k.* FROM (SELECT DISTINCT unnest($1::uuid[]) AS run_id) AS r, ",
            $runs_rows,
            "
               AND ($4::bool IS NULL OR t.correct = $4)
               AND ($5::bool IS NULL OR (t.blocks > 0) = $5)
               AND ($6::text IS NULL
                    OR ($6 = 'exploration' AND t.exploration_blocks > 0)
                    OR ($6 = 'verification' AND t.verification_blocks > 0))
               AND ($7::float8 IS NULL OR t.reward >= $7)
               AND ($8::float8 IS NULL OR t.reward <= $8)
               AND ($10::bigint IS NULL OR t.position > $10 OR t.idx > $11)
               AND ($13::bool IS NULL OR (t.benchmark IS NOT NULL) = $13)
               AND ($14::text IS NULL OR t.benchmark = $14)
             ORDER BY t.position, t.idx
             LIMIT $12
             ) AS k
             ORDER BY k.position, k.idx
             LIMIT $12
             ), texts AS MATERIALIZED (
             SELECT e.position, x.idx, x.response, b.prompts
             FROM events e
             CROSS JOIN LATERAL (SELECT e.payload->'trajectories' AS trajectories,
                                        e.payload->'prompts' AS prompts
                                 OFFSET 0) AS b
             CROSS JOIN LATERAL (SELECT k.idx, b.trajectories->k.idx->>'text' AS response
                                 FROM keys k WHERE k.position = e.position
                                 OFFSET 0) AS x
             WHERE e.position IN (SELECT position FROM keys)
             )
             SELECT t.position, t.idx, t.run_id, t.step, t.benchmark, t.prompt_id, t.sample,
                    t.reward, t.correct, t.answer, t.truth, t.response_tokens, t.format_valid,
                    x.response,
                    (SELECT p->>'text' FROM jsonb_array_elements(x.prompts) p
                     WHERE (p->>'group')::int = t.group_idx LIMIT 1) AS prompt
             FROM keys JOIN trajectories t USING (run_id, position, idx)
             JOIN texts x USING (position, idx)
             ORDER BY position, idx"
        )
    };
}

/// A page's keys without words: from each named run's range of the primary key of trajectories
/// (run_id, position, idx, step, with every filtered column included) in log order, filtered
/// inside that index (no heap read, no scan of other runs' rows), and bounded by the first and
/// last positions of the asked steps' events (from trajectory_batches, which has every
/// trajectory's event: a late step's rows are found without walking the run's earlier ones,
/// and a page after a cursor starts there; the `OFFSET 0` keeps that lookup on the run's
/// (run_id, step) index, where min and max alone would walk the whole log's primary key from
/// either end).
const KEYS_OF_SEARCH: &str = search_page!(
    "LATERAL (SELECT min(position) AS first, max(position) AS last
              FROM (SELECT b.position FROM trajectory_batches b
                    WHERE b.run_id = r.run_id AND b.step BETWEEN $2 AND $3
                    OFFSET 0) AS b) AS span, LATERAL (
     SELECT t.run_id, t.position, t.idx
     FROM trajectories t
     WHERE t.run_id = r.run_id AND t.step BETWEEN $2 AND $3
       AND t.position BETWEEN greatest(span.first, $10) AND span.last"
);

/// A page's keys with words: each named run's batches in log order, those whose filter of words
/// may hold the query's (`words_may_contain`), then their trajectories whose own filters may
/// hold them, then the text, which decides. Texts are read from their events' payloads once per
/// event (the join depends on the position alone, so PostgreSQL keeps the last events' texts in
/// a Memoize; `coalesce` keeps it a left join, whose filter then cannot move into it and depend
/// on `idx`). An ILIKE of every word of the query comes before `to_tsvector`, which costs ~40 µs
/// a text and decides: it is what rules out most texts of rows written before the filters. The
/// ILIKE cannot drop a match: the `simple` config's words are lower-cased pieces of the text,
/// and ILIKE lower-cases both sides the same way.
const KEYS_OF_TEXT_SEARCH: &str = search_page!(
    "LATERAL (
     SELECT t.run_id, t.position, t.idx
     FROM (SELECT b.position FROM trajectory_batches b
           WHERE b.run_id = r.run_id AND b.position >= coalesce($10, 0)
             AND b.step BETWEEN $2 AND $3
             AND words_may_contain(b.words, b.position, $15::int8[])
           ORDER BY b.position) AS b
     JOIN trajectories t ON t.run_id = r.run_id AND t.position = b.position
     LEFT JOIN LATERAL (SELECT e.payload->'trajectories' AS texts FROM events e
                        WHERE e.position = t.position
                        OFFSET 0) AS e ON true
     WHERE words_may_contain(t.words, t.position + t.idx + 1, $15) AND coalesce(
             e.texts->t.idx->>'text' ILIKE ALL (ARRAY(
                 SELECT '%' || replace(replace(replace(w, '\\', '\\\\'), '%', '\\%'), '_', '\\_') || '%'
                 FROM unnest(tsvector_to_array(to_tsvector('simple', $9::text))) AS w))
             AND to_tsvector('simple', e.texts->t.idx->>'text') @@ plainto_tsquery('simple', $9),
             false)"
);

/// Trajectories of some runs, filtered, in log order, a page at a time.
#[utoipa::path(context_path = "/api/v1", params(TrajectoryQuery), responses((status = 200, body = TrajectoryPage), (status = 400, body = crate::error::ErrorBody)))]
#[get("/trajectories")]
pub async fn search(
    _: ReadAccess,
    state: web::Data<AppState>,
    query: web::Query<TrajectoryQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let runs = id_list("runs", &q.runs, MAX_RUNS)?;
    let step_min = int_parameter("step_min", q.step_min.as_deref(), 0, 0..=i64::MAX)?;
    let step_max = int_parameter("step_max", q.step_max.as_deref(), i64::MAX, 0..=i64::MAX)?;
    let correct = bool_parameter("correct", q.correct.as_deref())?;
    let parallel = bool_parameter("parallel", q.parallel.as_deref())?;
    let role = q
        .role
        .as_deref()
        .map(|r| {
            Role::parse(r).ok_or_else(|| {
                ApiError::bad_parameter(
                    "role",
                    format!("role must be exploration or verification, not {r:?}"),
                )
            })
        })
        .transpose()?;
    let reward_min = float_parameter("reward_min", q.reward_min.as_deref())?;
    let reward_max = float_parameter("reward_max", q.reward_max.as_deref())?;
    let after = q.after.as_deref().map(cursor).transpose()?;
    let limit = int_parameter("limit", q.limit.as_deref(), 50, 1..=200)?;
    let text = q.q.filter(|t| !t.trim().is_empty());
    let evaluation = match q.kind.as_deref() {
        None => None,
        Some("rollout") => Some(false),
        Some("evaluation") => Some(true),
        Some(other) => {
            return Err(ApiError::bad_parameter(
                "kind",
                format!("kind must be rollout or evaluation, not {other:?}"),
            ));
        }
    };

    // Where the query's words are in filters of the texts' words; `None` without words, or when
    // its words have no run of ASCII letters or digits (nothing for a filter to test).
    let words = match &text {
        Some(text) => {
            let lexemes: Vec<String> =
                sqlx::query_scalar("SELECT tsvector_to_array(to_tsvector('simple', $1))")
                    .bind(text)
                    .fetch_one(&state.analytics)
                    .await?;
            word_filter::query_numbers(&lexemes)
        }
        None => None,
    };
    let sql = if text.is_some() {
        KEYS_OF_TEXT_SEARCH
    } else {
        KEYS_OF_SEARCH
    };
    // A search by words is planned for its own values every time (an unnamed statement). The
    // plan the server caches for a prepared statement after five runs is made for any steps and
    // any words: it expects a few rows, sorts them all and so tests every batch of the run
    // before returning the page (3-6 s for common words in a run of 200,000 trajectories);
    // planned with the values, it sorts a batch at a time and stops when the page is full.
    let rows: Vec<TrajectoryRow> = sqlx::query_as(sql)
        .persistent(text.is_none())
        .bind(&runs)
        .bind(step_min)
        .bind(step_max)
        .bind(correct)
        .bind(parallel)
        .bind(role.map(Role::as_str))
        .bind(reward_min)
        .bind(reward_max)
        .bind(text)
        .bind(after.map(|a| a.0))
        .bind(after.map(|a| a.1))
        .bind(limit + 1)
        .bind(evaluation)
        .bind(q.benchmark.filter(|b| !b.is_empty()))
        .bind(words)
        .fetch_all(&state.analytics)
        .await?;
    let more = rows.len() as i64 > limit;
    let items: Vec<TrajectoryView> = rows
        .into_iter()
        .take(limit as usize)
        .map(|r| {
            let analysis = analyze(&r.response);
            TrajectoryView {
                id: format!("{}:{}", r.position, r.idx),
                run_id: r.run_id,
                step: r.step,
                benchmark: r.benchmark,
                prompt_id: r.prompt_id,
                sample: r.sample,
                reward: r.reward,
                correct: r.correct,
                answer: r.answer,
                truth: r.truth,
                response_tokens: r.response_tokens,
                format_valid: r.format_valid,
                prompt: r.prompt.unwrap_or_default(),
                blocks: analysis.blocks,
                format_issues: analysis.parsed.issues,
                response: r.response,
            }
        })
        .collect();
    let next = more.then(|| items.last().map(|t| t.id.clone())).flatten();
    Ok(HttpResponse::Ok().json(TrajectoryPage { items, next }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct MetricsQuery {
    /// Comma-separated metric names (default: every metric the run reported).
    pub names: Option<String>,
    /// How many buckets to fold the steps into, 1 to 10000 (default 1000).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 10000)]
    pub buckets: Option<String>,
}

/// Steps `first..=last` of one metric folded into one point.
#[derive(Serialize, Deserialize, Debug, sqlx::FromRow, utoipa::ToSchema)]
pub struct MetricBucket {
    pub name: String,
    pub first_step: i64,
    pub last_step: i64,
    pub count: i64,
    pub min: f64,
    pub max: f64,
    /// The value at `last_step`.
    pub last: f64,
    /// When the value at `last_step` was recorded (for a wall-clock axis).
    pub time: chrono::DateTime<chrono::Utc>,
}

/// A run's metric series, folded server-side into at most `buckets` points per metric, each
/// keeping the min and max (so spikes survive) and the last value.
#[utoipa::path(context_path = "/api/v1", params(MetricsQuery), responses((status = 200, body = Vec<MetricBucket>), (status = 400, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
#[get("/runs/{id}/metrics")]
pub async fn metrics(
    _: ReadAccess,
    state: web::Data<AppState>,
    path: web::Path<Uuid>,
    query: web::Query<MetricsQuery>,
) -> Result<HttpResponse, ApiError> {
    let run = path.into_inner();
    let buckets = int_parameter("buckets", query.buckets.as_deref(), 1000, 1..=10_000)?;
    let names: Option<Vec<String>> = query.names.as_deref().map(|n| {
        n.split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    });
    super::require_run(&state.analytics, run).await?;
    // Buckets split the reported step range evenly; within one, rows are in log order, so the
    // last value is the newest report of the bucket's last step.
    let points: Vec<MetricBucket> = sqlx::query_as(
        "WITH v AS (
             SELECT m.step, m.position, m.recorded_at, kv.key AS name, kv.value::float8 AS value
             FROM run_metrics m
             JOIN events e ON e.position = m.position
             CROSS JOIN LATERAL jsonb_each_text(e.payload->'values') kv
             WHERE m.run_id = $1 AND ($2::text[] IS NULL OR kv.key = ANY($2))
               AND kv.value IS NOT NULL
         ), range AS (SELECT min(step) AS lo, max(step) AS hi FROM v),
         b AS (
             SELECT v.*, CASE WHEN r.hi = r.lo THEN 0
                              ELSE least($3 - 1, ((v.step - r.lo) * $3) / (r.hi - r.lo + 1)) END AS bucket
             FROM v, range r
         )
         SELECT name, min(step) AS first_step, max(step) AS last_step, count(*) AS count,
                min(value) AS min, max(value) AS max,
                (array_agg(value ORDER BY step DESC, position DESC))[1] AS last,
                (array_agg(recorded_at ORDER BY step DESC, position DESC))[1] AS time
         FROM b GROUP BY name, bucket ORDER BY name, bucket",
    )
    .bind(run)
    .bind(names)
    .bind(buckets)
    .fetch_all(&state.analytics)
    .await?;
    Ok(HttpResponse::Ok().json(points))
}

/// One saved checkpoint of a run.
#[derive(Serialize, Deserialize, Debug, sqlx::FromRow, utoipa::ToSchema)]
pub struct CheckpointView {
    pub step: i64,
    pub uri: String,
    pub sha256: String,
    pub size_bytes: i64,
    pub recorded_at: chrono::DateTime<chrono::Utc>,
}

/// A run's checkpoints, by step.
#[utoipa::path(context_path = "/api/v1", responses((status = 200, body = Vec<CheckpointView>), (status = 404, body = crate::error::ErrorBody)))]
#[get("/runs/{id}/checkpoints")]
pub async fn checkpoints(
    _: ReadAccess,
    state: web::Data<AppState>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let run = path.into_inner();
    super::require_run(&state.analytics, run).await?;
    let rows: Vec<CheckpointView> = sqlx::query_as(
        "SELECT step, uri, sha256, size_bytes, recorded_at FROM checkpoints WHERE run_id = $1 ORDER BY step",
    )
    .bind(run)
    .fetch_all(&state.analytics)
    .await?;
    Ok(HttpResponse::Ok().json(rows))
}
