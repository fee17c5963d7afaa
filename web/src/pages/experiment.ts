// One experiment: its stages and runs with live status (or, for a run logged by another tool,
// its params, tags and artifacts), metric curves of every run overlaid, the strategy-evolution
// charts, evaluation results and checkpoints.

import { api, authHeaders, BenchmarkResult, Checkpoint, ExperimentDetail, RunView, token } from "../api";
import { positionChart, roleChart, StrategySeries } from "../charts";
import { empty, errorBox, fmt, h, keepingFocus, loading, pct, replace, Requests, serialized, shortId, statusBadge, throttle, when } from "../dom";
import { subscribe } from "../live";
import { MetricsPanel } from "../metrics_panel";

export function experimentPage(root: HTMLElement, url: URL): () => void {
  const id = url.pathname.split("/")[2];
  const head = h("div", { class: "experiment-head" }, loading("the experiment"));
  const section = (title: string, titleId: string, what: string) =>
    h("section", { "aria-labelledby": titleId }, h("h2", { id: titleId }, title), loading(what));
  const stages = section("Stages", "stages-title", "stages");
  const curves = section("Metrics", "curves-title", "metrics");
  const strategy = section("Strategy evolution", "strategy-title", "the strategy analysis");
  const evaluations = section("Evaluations", "evals-title", "evaluations");
  const checkpoints = section("Checkpoints", "ckpt-title", "checkpoints");
  replace(root, head, stages, curves, strategy, evaluations, checkpoints);

  const requests = new Requests();
  let panel: MetricsPanel | null = null;
  let runKey = "";
  let problem = "";
  const watched = new Set<string>([id]);

  // What the notices since the last refresh touched; a refresh re-reads only that (the head and
  // stages always: one cheap request).
  type Part = "metrics" | "strategy" | "evaluations" | "checkpoints";
  const ALL: Part[] = ["metrics", "strategy", "evaluations", "checkpoints"];
  let pending = new Set<Part>(ALL);
  const TOUCHES: Record<string, Part[]> = {
    MetricsReported: ["metrics"],
    ArtifactStored: [],
    TrajectoriesRecorded: ["strategy"],
    EvaluationReported: ["evaluations"],
    CheckpointSaved: ["checkpoints"],
  };

  // Loads run one at a time (`serialized`), so an older answer never lands after a newer one.
  const load = serialized(async (): Promise<void> => {
    const parts = pending;
    pending = new Set();
    const current = requests.begin();
    let d: ExperimentDetail;
    try {
      d = await api.experiment(id);
    } catch (e) {
      if (current()) replace(head, errorBox(e));
      return;
    }
    if (!current()) return;
    document.title = `${d.name} · prl`;
    d.runs.forEach((r) => watched.add(r.id));
    d.stages.forEach((s) => s.job_id && watched.add(s.job_id));
    keepingFocus(() => {
      renderHead(d);
      if (d.tracked) renderTracked(d.tracked);
      else renderStages(d);
    });
    const labelled = d.runs.map((r) => ({ id: r.id, label: stageName(d, r) }));
    const key = labelled.map((r) => r.id).join();
    if (!panel || key !== runKey) {
      runKey = key;
      panel?.dispose();
      panel = new MetricsPanel(labelled);
      replace(curves, h("h2", { id: "curves-title" }, "Metrics"), panel.root);
      parts.add("metrics");
      parts.add("strategy");
    }
    await Promise.all([
      parts.has("metrics") && panel.load(),
      parts.has("strategy") && loadStrategy(d, current),
      parts.has("evaluations") && loadRunTable(evaluations, ["evals-title", "Evaluations"], d, current, api.evaluations, EVAL_COLUMNS, evalRow),
      parts.has("checkpoints") && loadRunTable(checkpoints, ["ckpt-title", "Checkpoints"], d, current, api.checkpoints, CHECKPOINT_COLUMNS, checkpointRow),
    ]);
  });

  function renderHead(d: ExperimentDetail): void {
    const active = d.status === "queued" || d.status === "running";
    const cancel = h("button", { type: "button", class: "danger", id: "cancel-experiment" }, "Cancel experiment") as HTMLButtonElement;
    const shown = h("span", { class: "field-error", role: "alert" }, problem);
    cancel.addEventListener("click", async () => {
      if (!confirm(`Cancel ${d.name}?`)) return;
      cancel.disabled = true;
      try {
        await api.cancel(d.id);
        problem = "";
        await load();
      } catch (e) {
        cancel.disabled = false;
        problem = (e as Error).message;
        shown.textContent = problem;
      }
    });
    replace(
      head,
      h("h1", {}, d.name, " ", statusBadge(d.status)),
      h(
        "dl",
        { class: "facts" },
        h("dt", {}, "id"),
        h("dd", { class: "mono" }, d.id),
        h("dt", {}, "model"),
        h("dd", {}, d.model),
        h("dt", {}, "submitted"),
        h("dd", {}, when(d.submitted_at)),
        d.finished_at ? [h("dt", {}, "finished"), h("dd", {}, when(d.finished_at))] : null,
        d.status_reason ? [h("dt", {}, "reason"), h("dd", {}, d.status_reason)] : null,
        d.imported_from ? [h("dt", {}, "imported from"), h("dd", { class: "mono" }, d.imported_from)] : null,
        d.tracked ? [h("dt", {}, "logged by"), h("dd", {}, d.tracked.source, d.tracked.group ? ` into “${d.tracked.group}”` : "", d.tracked.user_id ? ` as ${d.tracked.user_id}` : "")] : null,
        d.tags.length ? [h("dt", {}, "tags"), h("dd", {}, d.tags.map((t) => h("span", { class: "tag" }, t)))] : null,
      ),
      h(
        "p",
        { class: "actions" },
        active ? cancel : null,
        h("a", { href: `/compare?experiments=${d.id}` }, "Compare with others"),
        rlRuns(d).length ? h("a", { href: `/trajectories?runs=${rlRuns(d).map((r) => r.id).join(",")}` }, "Browse trajectories") : null,
        shown,
      ),
    );
  }

  function renderStages(d: ExperimentDetail): void {
    // Why a queued stage's job waits when no daemon can take it (from the daemons' presence).
    const waiting = (job: string | null | undefined) => d.jobs.find((j) => j.id === job)?.waiting ?? null;
    replace(
      stages,
      h("h2", { id: "stages-title" }, "Stages"),
      h(
        "table",
        { "aria-label": "Stages" },
        h("thead", {}, h("tr", {}, ["#", "Stage", "Kind", "Status", "Progress", "Run", "Attempt", "Worker"].map((c) => h("th", { scope: "col" }, c)))),
        h(
          "tbody",
          {},
          d.stages.map((s) => {
            const run = d.runs.find((r) => r.id === s.run_id);
            const total = stageSteps(d, s.idx);
            const step = run?.last_step ?? null;
            return h(
              "tr",
              {},
              h("td", {}, s.idx),
              h("td", {}, s.name),
              h("td", {}, s.kind),
              h("td", {}, statusBadge(s.status)),
              h(
                "td",
                {},
                total ? h("progress", { max: total, value: s.status === "completed" ? total : (step ?? 0), "aria-label": `${s.name}: step ${step ?? 0} of ${total}` }) : null,
                ` ${step ?? "–"}${total ? ` / ${total}` : ""}`,
              ),
              h("td", { class: "mono" }, run ? [shortId(run.id), " ", h("a", { href: `/compare?runs=${run.id}`, "aria-label": `Compare run ${shortId(run.id)} with others` }, "compare")] : "–"),
              h("td", {}, run ? run.attempt : "–"),
              h("td", {}, run?.worker_id ?? (waiting(s.job_id) ? h("span", { class: "waiting" }, "waiting: ", waiting(s.job_id)) : "–")),
            );
          }),
        ),
      ),
    );
  }

  /** A run logged by another tool (an MLflow client): what it logged besides metrics. */
  function renderTracked(t: NonNullable<ExperimentDetail["tracked"]>): void {
    const pairs = (label: string, values: Record<string, string>) => {
      const keys = Object.keys(values).sort();
      return keys.length
        ? h(
            "table",
            { "aria-label": label },
            h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Key"), h("th", { scope: "col" }, "Value"))),
            h("tbody", {}, keys.map((k) => h("tr", {}, h("td", { class: "mono" }, k), h("td", {}, values[k])))),
          )
        : empty(`No ${label.toLowerCase()}.`);
    };
    replace(
      stages,
      h("h2", { id: "stages-title" }, "Logged run"),
      h("h3", {}, "Params"),
      pairs("Params", t.params),
      h("h3", {}, "Tags"),
      pairs("Tags", Object.fromEntries(Object.entries(t.tags).filter(([k]) => !k.startsWith("mlflow.source")))),
      h("h3", {}, "Artifacts"),
      t.artifacts.length
        ? h(
            "ul",
            { "aria-label": "Artifacts" },
            t.artifacts.map((a) => h("li", {}, artifactLink(a.url, a.path), ` ${fmt(a.size_bytes / 1024)} KiB`)),
          )
        : empty("No artifacts."),
    );
  }

  async function loadStrategy(d: ExperimentDetail, current: () => boolean): Promise<void> {
    const runs = rlRuns(d);
    const title = h("h2", { id: "strategy-title" }, "Strategy evolution");
    if (runs.length === 0) {
      replace(strategy, title, empty("No RL run: the strategy analysis reads RL trajectories."));
      return;
    }
    try {
      const points = await api.strategy(runs.map((r) => r.id));
      if (!current()) return;
      const blocks = runs.map((run) => {
        const mine = points.filter((p) => p.run_id === run.id);
        const s: StrategySeries = {
          label: stageName(d, run),
          steps: mine.map((p) => p.step),
          q1: mine.map((p) => p.rel_position_q1 ?? null),
          median: mine.map((p) => p.rel_position_median ?? null),
          q3: mine.map((p) => p.rel_position_q3 ?? null),
          mean: mine.map((p) => p.rel_position_mean ?? null),
          exploration: mine.map((p) => p.exploration_share ?? null),
          verification: mine.map((p) => p.verification_share ?? null),
        };
        const position = h("div", { class: "chart", "data-chart": "position" });
        const roles = h("div", { class: "chart", "data-chart": "roles" });
        return { s, position, roles, count: mine.length };
      });
      replace(
        strategy,
        title,
        h("p", { class: "muted" }, "Are blocks used to explore (paths reach new answers) or to verify (paths re-derive an answer already stated)? See docs/analytics.md for the rule."),
        blocks.map((b) => h("div", { class: "pair" }, b.position, b.roles)),
      );
      for (const b of blocks) {
        positionChart(b.position, b.s);
        roleChart(b.roles, b.s);
      }
    } catch (e) {
      if (current()) replace(strategy, title, errorBox(e));
    }
  }

  /** A section holding one table of what each run of `d` has (its evaluations, its checkpoints). */
  async function loadRunTable<T>(
    section: HTMLElement,
    [titleId, label]: [string, string],
    d: ExperimentDetail,
    current: () => boolean,
    fetch: (run: string) => Promise<T[]>,
    columns: string[],
    row: (stage: string, item: T) => HTMLElement,
  ): Promise<void> {
    const title = h("h2", { id: titleId }, label);
    try {
      const all = await Promise.all(d.runs.map((r) => fetch(r.id)));
      if (!current()) return;
      const rows = d.runs.flatMap((r, i) => all[i].map((item) => row(stageName(d, r), item)));
      replace(
        section,
        title,
        rows.length === 0
          ? empty(`No ${label.toLowerCase()} yet.`)
          : h(
              "table",
              { "aria-label": label },
              h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
              h("tbody", {}, rows),
            ),
      );
    } catch (e) {
      if (current()) replace(section, title, errorBox(e));
    }
  }

  const refresh = throttle(() => void load(), 1000);
  const unsubscribe = subscribe((notices) => {
    const mine = notices.filter((n) => watched.has(n.stream_id));
    for (const n of mine) (TOUCHES[n.event_type] ?? ALL).forEach((p) => pending.add(p));
    if (mine.length) refresh();
  });
  void load();
  return () => {
    requests.dispose();
    panel?.dispose();
    refresh.cancel();
    unsubscribe();
  };
}

/** The runs that log trajectories: RL stages, and imported runs. */
const rlRuns = (d: ExperimentDetail): RunView[] => d.runs.filter((r) => !["sft", "eval"].includes(d.stages[r.stage_idx]?.kind ?? ""));

/** A download link; where a token is stored (reads may need it) the file is fetched with it. */
function artifactLink(url: string, path: string): HTMLElement {
  const name = path.split("/").pop() ?? path;
  const link = h("a", { href: url, class: "mono", download: name }, path);
  link.addEventListener("click", async (event) => {
    if (!token()) return;
    event.preventDefault();
    const response = await fetch(url, { headers: authHeaders() });
    if (!response.ok) {
      link.title = `download failed: ${response.status}`;
      return;
    }
    const blob = URL.createObjectURL(await response.blob());
    const save = h("a", { href: blob, download: name });
    save.click();
    URL.revokeObjectURL(blob);
  });
  return link;
}

function stageName(d: ExperimentDetail, run: RunView): string {
  // A logged run (no stages) is named by the experiment.
  return d.stages[run.stage_idx]?.name ?? (d.tracked ? d.name : `stage ${run.stage_idx}`);
}

function stageSteps(d: ExperimentDetail, idx: number): number | null {
  const stage = d.spec?.stages?.[idx] as { steps?: number; max_steps?: number } | undefined;
  return stage?.steps ?? stage?.max_steps ?? null;
}

const EVAL_COLUMNS = ["Stage", "Benchmark", "Step", "k", "Temperature", "Prompts", "Mean@k", "Pass@k", "Greedy", "Parallel %", "Format-valid %", "Tokens"];
const CHECKPOINT_COLUMNS = ["Stage", "Step", "Location", "Size", "sha256", "Saved"];

const evalRow = (stage: string, e: BenchmarkResult): HTMLElement =>
  h(
    "tr",
    {},
    h("td", {}, stage),
    h("td", {}, e.benchmark),
    h("td", {}, e.step),
    h("td", {}, e.k),
    h("td", {}, e.temperature ?? "–"),
    h("td", {}, e.prompts),
    h("td", {}, pct(e.mean_at_k)),
    h("td", {}, pct(e.pass_at_k)),
    h("td", {}, e.greedy == null ? "–" : pct(e.greedy)),
    h("td", {}, pct(e.parallel_ratio)),
    h("td", {}, pct(e.format_valid_ratio)),
    h("td", {}, fmt(e.mean_response_tokens, 1)),
  );

const checkpointRow = (stage: string, c: Checkpoint): HTMLElement =>
  h(
    "tr",
    {},
    h("td", {}, stage),
    h("td", {}, c.step),
    h("td", { class: "mono" }, c.uri),
    h("td", {}, `${(c.size_bytes / 1e6).toFixed(1)} MB`),
    h("td", { class: "mono", title: c.sha256 }, c.sha256.slice(0, 12)),
    h("td", {}, when(c.recorded_at)),
  );
