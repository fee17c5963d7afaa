// Typed access to the prl REST API. Every failure becomes an ApiError carrying the server's message.

export interface StageProgress {
  idx: number;
  name: string;
  kind: string;
  status: string;
  last_step: number | null;
  steps: number | null;
}

export interface ExperimentSummary {
  id: string;
  name: string;
  tags: string[];
  model: string;
  status: string;
  status_reason: string | null;
  version: number;
  submitted_at: string;
  updated_at: string;
  finished_at: string | null;
}

export interface ListedExperiment extends ExperimentSummary {
  stages: StageProgress[];
}

export interface ExperimentPage {
  items: ListedExperiment[];
  next_cursor: string | null;
}

export interface StageView {
  idx: number;
  name: string;
  kind: string;
  status: string;
  job_id: string | null;
  run_id: string | null;
}

export interface RunView {
  id: string;
  job_id: string | null;
  stage_idx: number;
  status: string;
  attempt: number;
  worker_id: string | null;
  last_step: number | null;
  latest_metrics: Record<string, number>;
  started_at: string | null;
  finished_at: string | null;
}

export interface ExperimentDetail extends ExperimentSummary {
  spec: { stages?: Record<string, unknown>[] } | null;
  imported_from: string | null;
  stages: StageView[];
  runs: RunView[];
}

export interface MetricBucket {
  name: string;
  first_step: number;
  last_step: number;
  count: number;
  min: number;
  max: number;
  last: number;
  time: string;
  /** Seconds since the run's first value, worked out by the UI. */
  elapsed_s?: number;
}

export interface StrategyPoint {
  run_id: string;
  step: number;
  trajectories: number;
  mean_reward: number;
  accuracy: number;
  parallel_ratio: number;
  mean_blocks: number;
  mean_block_share: number;
  accuracy_parallel: number | null;
  accuracy_sequential: number | null;
  format_valid_ratio: number;
  blocks: number;
  rel_position_mean: number | null;
  rel_position_q1: number | null;
  rel_position_median: number | null;
  rel_position_q3: number | null;
  exploration_share: number | null;
  verification_share: number | null;
}

export interface BenchmarkResult {
  benchmark: string;
  k: number;
  prompts: number;
  step: number;
  mean_at_k: number;
  pass_at_k: number;
  parallel_ratio: number;
  format_valid_ratio: number;
  mean_response_tokens: number | null;
  mean_at_k_se: number | null;
  pass_at_k_se: number | null;
  greedy: number | null;
  temperature: number | null;
  top_p: number | null;
  max_response_tokens: number | null;
}

export interface ResultRow {
  experiment_id: string;
  method: string;
  status: string;
  parallel_ratio: number | null;
  average: number | null;
  results: Record<string, BenchmarkResult>;
}

export interface ResultsTable {
  benchmarks: string[];
  rows: ResultRow[];
}

export interface RunComparison {
  experiment_id: string;
  experiment: string;
  stage_idx: number;
  stage: string | null;
  run_id: string;
  steps: number;
  last_step: number;
  trajectories: number;
  mean_reward: number;
  accuracy: number;
  parallel_ratio: number;
  mean_blocks: number;
  accuracy_parallel: number | null;
  accuracy_sequential: number | null;
  format_valid_ratio: number;
  mean_response_tokens: number | null;
  rel_position_mean: number | null;
  exploration_share: number | null;
  verification_share: number | null;
}

export interface Evaluation extends BenchmarkResult {
  recorded_at?: string;
}

export interface Checkpoint {
  step: number;
  uri: string;
  sha256: string;
  size_bytes: number;
  recorded_at: string;
}

export interface CharRange {
  start: number;
  end: number;
}

export interface BlockShape {
  chars: CharRange;
  /** Each path's text, in characters, as the server's parser found it. */
  path_ranges: CharRange[];
  summary_range: CharRange | null;
  path_chars: number[];
  summary_chars: number | null;
  conclusions: (string | null)[];
  role: "exploration" | "verification";
}

export interface FormatIssue {
  issue: string;
  tag?: string;
  at: number;
  block?: number;
  paths?: number;
}

export interface TrajectoryView {
  id: string;
  run_id: string;
  step: number;
  benchmark: string | null;
  prompt_id: string;
  sample: number;
  reward: number;
  correct: boolean;
  answer: string | null;
  truth: string;
  response_tokens: number | null;
  format_valid: boolean;
  response: string;
  prompt: string;
  blocks: BlockShape[];
  format_issues: FormatIssue[];
}

export interface TrajectoryPage {
  items: TrajectoryView[];
  next: string | null;
}

export interface Accepted {
  id: string;
  status: string;
  version: number;
}

/** An error answer of the API (or of the network), with what it names. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly code: string,
    readonly field?: string,
    readonly parameter?: string,
  ) {
    super(message);
  }
}

const TOKEN_KEY = "prl.token";

export function token(): string {
  return localStorage.getItem(TOKEN_KEY) ?? "";
}

export function setToken(value: string): void {
  if (value) localStorage.setItem(TOKEN_KEY, value);
  else localStorage.removeItem(TOKEN_KEY);
}

export function authHeaders(): Record<string, string> {
  const t = token();
  return t ? { Authorization: `Bearer ${t}` } : {};
}

async function request<T>(method: string, path: string, body?: BodyInit, contentType?: string): Promise<T> {
  const headers: Record<string, string> = { Accept: "application/json", ...authHeaders() };
  if (contentType) headers["Content-Type"] = contentType;
  let response: Response;
  try {
    response = await fetch(`/api/v1${path}`, { method, headers, body });
  } catch (e) {
    throw new ApiError(`The API cannot be reached: ${(e as Error).message}`, 0, "network");
  }
  const text = await response.text();
  let json: unknown = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    // A non-JSON answer (a proxy's error page): reported below with its status.
  }
  if (!response.ok) {
    const e = (json ?? {}) as { error?: string; message?: string; field?: string; parameter?: string };
    const message =
      response.status === 401
        ? method === "GET"
          ? "This server's reads need the API token: set it with the Token button."
          : "This action needs the API token: set it with the Token button."
        : (e.message ?? `${response.status} ${response.statusText}`);
    throw new ApiError(message, response.status, e.error ?? "http", e.field, e.parameter);
  }
  return json as T;
}

const q = (params: Record<string, string | number | boolean | undefined | null>): string => {
  const s = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") s.set(k, String(v));
  const text = s.toString();
  return text ? `?${text}` : "";
};

export const api = {
  experiments: (p: { name?: string; status?: string; tag?: string; cursor?: string; limit?: number }) =>
    request<ExperimentPage>("GET", `/experiments${q(p)}`),
  experiment: (id: string) => request<ExperimentDetail>("GET", `/experiments/${encodeURIComponent(id)}`),
  submit: (spec: string, format: "json" | "toml") =>
    request<Accepted>("POST", "/experiments", spec, format === "toml" ? "application/toml" : "application/json"),
  cancel: (id: string) =>
    request<Accepted>("POST", `/experiments/${encodeURIComponent(id)}/cancel`, JSON.stringify({ reason: "cancelled in the web UI" }), "application/json"),
  metrics: (run: string, names: string[] | null, buckets: number) =>
    request<MetricBucket[]>("GET", `/runs/${run}/metrics${q({ names: names?.join(","), buckets })}`),
  evaluations: (run: string) => request<Evaluation[]>("GET", `/runs/${run}/evaluations`),
  checkpoints: (run: string) => request<Checkpoint[]>("GET", `/runs/${run}/checkpoints`),
  strategy: (runs: string[]) => request<StrategyPoint[]>("GET", `/analytics/strategy${q({ runs: runs.join(",") })}`),
  comparison: (by: "runs" | "experiments", ids: string[]) =>
    request<RunComparison[]>("GET", `/analytics/comparison${q({ [by]: ids.join(",") })}`),
  results: (experiments: string[]) =>
    request<ResultsTable>("GET", `/results${q({ experiments: experiments.join(",") })}`),
  trajectories: (params: Record<string, string | number | undefined>) =>
    request<TrajectoryPage>("GET", `/trajectories${q(params)}`),
};
