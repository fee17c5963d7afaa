// Comparing experiments as the paper's main table does (method, parallel ratio, Mean@k and Pass@k
// per benchmark, the average; the best of each column marked), with their curves overlaid. The
// selection is the URL's `experiments`, so a comparison is a link.

import { api, ExperimentSummary, ResultsTable } from "../api";
import { empty, errorBox, h, loading, pct, replace, Requests, statusBadge, throttle } from "../dom";
import { subscribe } from "../live";
import { MetricsPanel, RunRef } from "../metrics_panel";
import { navigate } from "../router";

export function comparePage(root: HTMLElement, url: URL): () => void {
  document.title = "Compare · prl";
  const ids = (url.searchParams.get("experiments") ?? "").split(",").filter(Boolean);
  const picker = h("section", { class: "picker", "aria-labelledby": "pick-title" });
  const table = h("section", { "aria-labelledby": "table-title" });
  const curves = h("section", { "aria-labelledby": "overlay-title" });
  replace(root, h("h1", {}, "Compare"), picker, table, curves);
  void renderPicker(picker, ids);
  if (ids.length === 0) {
    replace(table, empty("Pick experiments above, or tick them in the experiments list."));
    return () => {};
  }

  const requests = new Requests();
  let panel: MetricsPanel | null = null;
  let runKey = "";
  const watched = new Set<string>(ids);
  async function load(): Promise<void> {
    const current = requests.begin();
    try {
      const [results, details] = await Promise.all([api.results(ids), Promise.all(ids.map((id) => api.experiment(id)))]);
      if (!current()) return;
      replace(table, h("h2", { id: "table-title" }, "Results"), resultsTable(results));
      details.forEach((d) => d.runs.forEach((r) => watched.add(r.id)));
      const runs: RunRef[] = details.flatMap((d) =>
        d.runs.filter((r) => d.stages[r.stage_idx]?.kind !== "eval").map((r) => ({ id: r.id, label: `${d.name} · ${d.stages[r.stage_idx]?.name ?? r.stage_idx}` })),
      );
      const key = runs.map((r) => r.id).join();
      if (!panel || key !== runKey) {
        runKey = key;
        panel?.dispose();
        panel = new MetricsPanel(runs);
        replace(curves, h("h2", { id: "overlay-title" }, "Curves"), panel.root);
      }
      await panel.load();
    } catch (e) {
      if (current()) replace(table, h("h2", { id: "table-title" }, "Results"), errorBox(e));
    }
  }
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

/** The paper's table: the best value of each column in bold, marked for screen readers too. */
export function resultsTable(t: ResultsTable): HTMLElement {
  if (t.rows.length === 0) return empty("Nothing to compare.");
  type Column = { title: string; value: (r: ResultsTable["rows"][number]) => number | null | undefined };
  const columns: Column[] = [{ title: "Parallel ratio (%)", value: (r) => r.parallel_ratio }];
  for (const b of t.benchmarks) {
    const k = t.rows.map((r) => r.results[b]?.k).find((k) => k !== undefined);
    columns.push(
      { title: `${b} Mean@${k}`, value: (r) => r.results[b]?.mean_at_k },
      { title: `${b} Pass@${k}`, value: (r) => r.results[b]?.pass_at_k },
    );
  }
  columns.push({ title: "Avg. (Mean@k)", value: (r) => r.average });
  // The parallel ratio describes behaviour, not quality: no best is marked there.
  const best = columns.map((c, i) => (i === 0 ? null : Math.max(...t.rows.map((r) => c.value(r) ?? -Infinity))));
  return h(
    "table",
    { class: "results", "aria-label": "Results, as in the paper's main table" },
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Method"), h("th", { scope: "col" }, "Status"), columns.map((c) => h("th", { scope: "col" }, c.title)))),
    h(
      "tbody",
      {},
      t.rows.map((r) =>
        h(
          "tr",
          { "data-experiment": r.experiment_id },
          h("th", { scope: "row" }, h("a", { href: `/experiments/${r.experiment_id}` }, r.method)),
          h("td", {}, statusBadge(r.status)),
          columns.map((c, i) => {
            const v = c.value(r);
            const isBest = v !== null && v !== undefined && best[i] !== null && v === best[i] && t.rows.length > 1;
            return h("td", { class: isBest ? "best" : null, "data-column": c.title }, isBest ? h("strong", { title: "best in column" }, pct(v), h("span", { class: "sr-only" }, " (best)")) : pct(v));
          }),
        ),
      ),
    ),
  );
}

async function renderPicker(section: HTMLElement, ids: string[]): Promise<void> {
  const chosen = new Set(ids);
  const filter = h("input", { type: "search", id: "pick-filter", placeholder: "name contains…" }) as HTMLInputElement;
  const list = h("ul", { class: "pick-list" });
  const apply = h("button", { type: "button" }, "Compare") as HTMLButtonElement;
  apply.addEventListener("click", () => navigate(`/compare?experiments=${[...chosen].join(",")}`));
  replace(
    section,
    h("h2", { id: "pick-title" }, "Experiments"),
    h("label", { for: "pick-filter" }, "Find "),
    filter,
    list,
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
