// Typed access to the prl REST API. Every failure becomes an ApiError carrying the server's message.

// The API's types, generated from its OpenAPI document (web/openapi.json, which the Rust tests
// keep current) when the UI is built: `npm run generate`.
import type { components } from "./generated/openapi";

export type Schemas = components["schemas"];

export type StageProgress = Schemas["StageProgress"];
export type ExperimentSummary = Schemas["ExperimentSummary"];
export type ListedExperiment = Schemas["ListedExperiment"];
export type ExperimentPage = Schemas["ExperimentPage"];
export type StageView = Schemas["StageView"];
export type RunView = Schemas["RunView"];
export type ExperimentDetail = Schemas["ExperimentDetail"];
/** A bucket of a metric's values, with the seconds since the run's first value (the UI's own). */
export type MetricBucket = Schemas["MetricBucket"] & { elapsed_s?: number };
export type StrategyPoint = Schemas["StrategyPoint"];
export type BenchmarkResult = Schemas["BenchmarkResult"];
export type ResultRow = Schemas["ResultRow"];
export type ResultsTable = Schemas["ResultsTable"];
export type RunComparison = Schemas["RunComparison"];
export type Checkpoint = Schemas["CheckpointView"];
export type BlockShape = Schemas["BlockShape"];
export type CharRange = BlockShape["chars"];
export type FormatIssue = Schemas["FormatIssue"];
export type TrajectoryView = Schemas["TrajectoryView"];
export type TrajectoryPage = Schemas["TrajectoryPage"];
export type Accepted = Schemas["Accepted"];
export type Worker = Schemas["WorkerView"];
type ErrorBody = Schemas["ErrorBody"];

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
    const e = (json ?? {}) as Partial<ErrorBody>;
    const message =
      response.status === 401
        ? method === "GET"
          ? "This server's reads need the API token: set it with the Token button."
          : "This action needs the API token: set it with the Token button."
        : (e.message ?? `${response.status} ${response.statusText}`);
    throw new ApiError(message, response.status, e.error ?? "http", e.field ?? undefined, e.parameter ?? undefined);
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
  evaluations: (run: string) => request<BenchmarkResult[]>("GET", `/runs/${run}/evaluations`),
  checkpoints: (run: string) => request<Checkpoint[]>("GET", `/runs/${run}/checkpoints`),
  strategy: (runs: string[]) => request<StrategyPoint[]>("GET", `/analytics/strategy${q({ runs: runs.join(",") })}`),
  comparison: (by: "runs" | "experiments", ids: string[]) =>
    request<RunComparison[]>("GET", `/analytics/comparison${q({ [by]: ids.join(",") })}`),
  results: (experiments: string[]) =>
    request<ResultsTable>("GET", `/results${q({ experiments: experiments.join(",") })}`),
  trajectories: (params: Record<string, string | number | undefined>) =>
    request<TrajectoryPage>("GET", `/trajectories${q(params)}`),
  workers: () => request<Worker[]>("GET", "/workers"),
};
