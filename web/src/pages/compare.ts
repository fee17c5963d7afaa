// Comparing experiments as the paper's main table does (method, parallel ratio, Mean@k and Pass@k
// per benchmark, the average; the best of each column marked), and runs by what their logged
// trajectories show, with all their curves overlaid. The selection is the URL's `experiments` and
// `runs`, so a comparison is a link.

import { api, ExperimentDetail, ExperimentSummary, ResultsTable, RunComparison } from "../api";
import { empty, errorBox, fmt, h, loading, pct, replace, Requests, serialized, statusBadge, throttle } from "../dom";
import { subscribe } from "../live";
import { MetricsPanel, RunRef } from "../metrics_panel";
import { navigate } from "../router";

const ids = (url: URL, name: string): string[] => (url.searchParams.get(name) ?? "").split(",").filter(Boolean);

export function comparePage(root: HTMLElement, url: URL): () => void {
  document.title = "Compare · prl";
  const experiments = ids(url, "experiments");
  const runIds = ids(url, "runs");
  const picker = h("section", { class: "picker", "aria-labelledby": "pick-title" });
  const table = h("section", { "aria-labelledby": "table-title" });
  const runsTable = h("section", { "aria-labelledby": "runs-title" });
  const curves = h("section", { "aria-labelledby": "overlay-title" });
  replace(root, h("h1", {}, "Compare"), picker, table, runsTable, curves);
  void renderPicker(picker, experiments, runIds);
  if (experiments.length === 0 && runIds.length === 0) {
    replace(table, empty("Pick experiments or runs above, or tick experiments in the experiments list."));
    return () => {};
  }

  const requests = new Requests();
  let panel: MetricsPanel | null = null;
  let runKey = "";
  const watched = new Set<string>([...experiments, ...runIds]);
  const load = serialized(async (): Promise<void> => {
    const current = requests.begin();
    try {
      const [results, details, byExperiment, byRun] = await Promise.all([
        experiments.length ? api.results(experiments) : null,
        Promise.all(experiments.map((id) => api.experiment(id))),
        experiments.length ? api.comparison("experiments", experiments) : [],
        runIds.length ? api.comparison("runs", runIds) : [],
      ]);
      if (!current()) return;
      replace(table, results ? [h("h2", { id: "table-title" }, "Results"), resultsTable(results)] : null);
      const compared = [...byExperiment, ...byRun.filter((r) => !byExperiment.some((e) => e.run_id === r.run_id))];
      replace(
        runsTable,
        h("h2", { id: "runs-title" }, "Runs: what their trajectories show"),
        compared.length ? runTable(compared) : empty("No trajectories logged for these runs (SFT and evaluation stages log none)."),
      );
      details.forEach((d) => d.runs.forEach((r) => watched.add(r.id)));
      const runs: RunRef[] = [...details.flatMap(trainingRuns), ...byRun.map((r) => ({ id: r.run_id, label: `${r.experiment} · ${r.stage ?? r.stage_idx}` }))];
      const unique = runs.filter((r, i) => runs.findIndex((o) => o.id === r.id) === i);
      const missing = runIds.filter((id) => !unique.some((r) => r.id === id));
      unique.push(...missing.map((id) => ({ id, label: `run ${id.slice(-8)}` })));
      const key = unique.map((r) => r.id).join();
      if (!panel || key !== runKey) {
        runKey = key;
        panel?.dispose();
        panel = new MetricsPanel(unique);
        replace(curves, h("h2", { id: "overlay-title" }, "Curves"), panel.root);
      }
      await panel.load();
    } catch (e) {
      if (current()) replace(table, h("h2", { id: "table-title" }, "Results"), errorBox(e));
    }
  });
  replace(table, loading("results"));
  replace(curves, loading("curves"));
  void load();
  const refresh = throttle(() => void load(), 1000);
  const unsubscribe = subscribe((notices) => {
    if (notices.some((n) => watched.has(n.stream_id))) refresh();
  });
  return () => {
    requests.dispose();
    panel?.dispose();
    refresh.cancel();
    unsubscribe();
  };
}

const trainingRuns = (d: ExperimentDetail): RunRef[] =>
  d.runs.filter((r) => d.stages[r.stage_idx]?.kind !== "eval").map((r) => ({ id: r.id, label: `${d.name} · ${d.stages[r.stage_idx]?.name ?? r.stage_idx}` }));

type Column<T> = { title: string; value: (r: T) => number | null | undefined; best?: boolean; show?: (v: number | null | undefined) => string };

/** A table whose `best` columns have their highest value bold, and read out as best. */
function markedTable<T>(label: string, rows: T[], head: (r: T) => Node[], headTitles: string[], columns: Column<T>[], key: (r: T) => Record<string, string>): HTMLElement {
  const best = columns.map((c) => (c.best ? Math.max(...rows.map((r) => c.value(r) ?? -Infinity)) : null));
  return h(
    "table",
    { class: "results", "aria-label": label },
    h("thead", {}, h("tr", {}, headTitles.map((t) => h("th", { scope: "col" }, t)), columns.map((c) => h("th", { scope: "col" }, c.title)))),
    h(
      "tbody",
      {},
      rows.map((r) =>
        h(
          "tr",
          key(r),
          head(r),
          columns.map((c, i) => {
            const v = c.value(r);
            const text = (c.show ?? pct)(v);
            const isBest = v !== null && v !== undefined && best[i] !== null && v === best[i] && rows.length > 1;
            return h("td", { class: isBest ? "best" : null, "data-column": c.title }, isBest ? h("strong", { title: "best in column" }, text, h("span", { class: "sr-only" }, " (best)")) : text);
          }),
        ),
      ),
    ),
  );
}

function runTable(rows: RunComparison[]): HTMLElement {
  const columns: Column<RunComparison>[] = [
    { title: "Last step", value: (r) => r.last_step, show: (v) => fmt(v) },
    { title: "Trajectories", value: (r) => r.trajectories, show: (v) => fmt(v) },
    { title: "Mean reward", value: (r) => r.mean_reward, best: true, show: (v) => fmt(v, 3) },
    { title: "Accuracy (%)", value: (r) => r.accuracy, best: true },
    { title: "Parallel (%)", value: (r) => r.parallel_ratio },
    { title: "Blocks per response", value: (r) => r.mean_blocks, show: (v) => fmt(v, 2) },
    { title: "Accuracy with blocks (%)", value: (r) => r.accuracy_parallel, best: true },
    { title: "Accuracy without (%)", value: (r) => r.accuracy_sequential, best: true },
    { title: "Format-valid (%)", value: (r) => r.format_valid_ratio, best: true },
    { title: "Exploration (%)", value: (r) => r.exploration_share },
    { title: "Verification (%)", value: (r) => r.verification_share },
    { title: "Block position", value: (r) => r.rel_position_mean, show: (v) => fmt(v, 2) },
  ];
  return markedTable(
    "Runs compared by their trajectories",
    rows,
    (r) => [h("th", { scope: "row" }, h("a", { href: `/experiments/${r.experiment_id}` }, r.experiment), ` · ${r.stage ?? r.stage_idx}`, h("div", { class: "muted mono" }, r.run_id.slice(-8)))],
    ["Run"],
    columns,
    (r) => ({ "data-run": r.run_id }),
  );
}

/** The paper's table: the best value of each column in bold, marked for screen readers too. */
export function resultsTable(t: ResultsTable): HTMLElement {
  if (t.rows.length === 0) return empty("Nothing to compare.");
  type Row = ResultsTable["rows"][number];
  // The parallel ratio describes behaviour, not quality: no best is marked there.
  const columns: Column<Row>[] = [{ title: "Parallel ratio (%)", value: (r) => r.parallel_ratio }];
  for (const b of t.benchmarks) {
    const k = t.rows.map((r) => r.results[b]?.k).find((k) => k !== undefined);
    columns.push(
      { title: `${b} Mean@${k}`, value: (r) => r.results[b]?.mean_at_k, best: true },
      { title: `${b} Pass@${k}`, value: (r) => r.results[b]?.pass_at_k, best: true },
    );
    if (t.rows.some((r) => r.results[b]?.greedy != null)) {
      columns.push({ title: `${b} greedy`, value: (r) => r.results[b]?.greedy ?? undefined, best: true });
    }
  }
  columns.push({ title: "Avg. (Mean@k)", value: (r) => r.average, best: true });
  return markedTable(
    "Results, as in the paper's main table",
    t.rows,
    (r) => [h("th", { scope: "row" }, h("a", { href: `/experiments/${r.experiment_id}` }, r.method)), h("td", {}, statusBadge(r.status))],
    ["Method", "Status"],
    columns,
    (r) => ({ "data-experiment": r.experiment_id }),
  );
}

async function renderPicker(section: HTMLElement, ids: string[], runIds: string[]): Promise<void> {
  const chosen = new Set(ids);
  const runs = h("input", { type: "text", id: "pick-runs", value: runIds.join(","), placeholder: "comma-separated run ids", size: 50 }) as HTMLInputElement;
  const filter = h("input", { type: "search", id: "pick-filter", placeholder: "name contains…" }) as HTMLInputElement;
  const list = h("ul", { class: "pick-list" });
  const apply = h("button", { type: "button" }, "Compare") as HTMLButtonElement;
  apply.addEventListener("click", () => {
    const query = new URLSearchParams();
    if (chosen.size) query.set("experiments", [...chosen].join(","));
    const picked = runs.value.split(/[\s,]+/).filter(Boolean);
    if (picked.length) query.set("runs", picked.join(","));
    navigate(`/compare?${query.toString().replace(/%2C/g, ",")}`);
  });
  replace(
    section,
    h("h2", { id: "pick-title" }, "Experiments"),
    h("label", { for: "pick-filter" }, "Find "),
    filter,
    list,
    h("p", {}, h("label", { for: "pick-runs" }, "Runs "), runs),
    apply,
  );
  replace(list, loading("experiments"));
  const show = async () => {
    try {
      const page = await api.experiments({ name: filter.value || undefined, limit: 50 });
      const known: ExperimentSummary[] = page.items;
      replace(
        list,
        known.map((x) => {
          const id = `pick-${x.id}`;
          const box = h("input", { type: "checkbox", id, checked: chosen.has(x.id) }) as HTMLInputElement;
          box.addEventListener("change", () => (box.checked ? chosen.add(x.id) : chosen.delete(x.id)));
          return h("li", {}, box, h("label", { for: id }, x.name, " ", statusBadge(x.status)));
        }),
      );
    } catch (e) {
      replace(list, errorBox(e));
    }
  };
  let typing: number | undefined;
  filter.addEventListener("input", () => (clearTimeout(typing), (typing = window.setTimeout(show, 250))));
  await show();
}
