// The trajectory browser: filters (kept in the URL) over the logged rollouts of chosen runs, a
// page at a time, each trajectory with its parallel paths side by side.

import { api, TrajectoryPage } from "../api";
import { empty, errorBox, fmt, h, loading, replace, Requests, shortId } from "../dom";
import { navigate } from "../router";
import { renderTrajectory } from "../trajectory";

const FILTERS = ["runs", "step_min", "step_max", "reward_min", "reward_max", "correct", "parallel", "role", "kind", "benchmark", "q"] as const;
const PAGE = 20;

export function trajectoriesPage(root: HTMLElement, url: URL): () => void {
  document.title = "Trajectories · prl";
  const params = url.searchParams;
  const requests = new Requests();
  const input = (name: string, label: string, attrs: Record<string, string> = {}) => {
    const el = h("input", { id: `t-${name}`, name, value: params.get(name) ?? "", ...attrs }) as HTMLInputElement;
    return [h("label", { for: `t-${name}` }, label), el];
  };
  const choice = (name: string, label: string, options: [string, string][]) => [
    h("label", { for: `t-${name}` }, label),
    h("select", { id: `t-${name}`, name }, options.map(([v, text]) => h("option", { value: v, selected: (params.get(name) ?? "") === v }, text))),
  ];
  const form = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter trajectories" },
    input("runs", "Run ids", { placeholder: "comma-separated", size: "40" }),
    input("step_min", "Step from", { type: "number", min: "0", class: "narrow" }),
    input("step_max", "to", { type: "number", min: "0", class: "narrow" }),
    input("reward_min", "Reward from", { type: "number", step: "any", class: "narrow" }),
    input("reward_max", "to", { type: "number", step: "any", class: "narrow" }),
    choice("correct", "Correct", [["", "any"], ["true", "yes"], ["false", "no"]]),
    choice("parallel", "Parallel", [["", "any"], ["true", "has a block"], ["false", "no block"]]),
    choice("role", "Role", [["", "any"], ["exploration", "exploration"], ["verification", "verification"]]),
    choice("kind", "From", [["", "RL and evaluations"], ["rollout", "RL rollouts"], ["evaluation", "evaluations"]]),
    input("benchmark", "Benchmark", { placeholder: "e.g. builtin:easy-test" }),
    input("q", "Text", { type: "search", placeholder: "words in the response" }),
    h("button", { type: "submit" }, "Show"),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const query = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (String(v).trim()) query.set(k, String(v).trim());
    navigate(`/trajectories?${query}`);
  });
  const list = h("div", { class: "trajectories" });
  const pager = h("nav", { class: "pager", "aria-label": "Pages" });
  const status = h("p", { class: "muted", role: "status", "aria-live": "polite" });
  replace(root, h("h1", {}, "Trajectories"), form, pager, status, list);

  const filters: Record<string, string> = {};
  for (const name of FILTERS) {
    const v = params.get(name);
    if (v) filters[name] = v;
  }
  if (!filters.runs) {
    replace(list, loading("runs with trajectories"));
    void runChooser(list, requests);
    return () => requests.dispose();
  }
  const cursors: (string | undefined)[] = [undefined];
  async function load(): Promise<void> {
    const current = requests.begin();
    replace(list, loading("trajectories"));
    let page: TrajectoryPage;
    try {
      page = await api.trajectories({ ...filters, after: cursors[cursors.length - 1], limit: PAGE });
    } catch (e) {
      if (current()) replace(list, errorBox(e));
      return;
    }
    if (!current()) return;
    status.textContent = `${page.items.length} trajectories on page ${cursors.length}${page.next ? "; more follow" : ""}.`;
    replace(list, page.items.length === 0 ? empty("No trajectory matches these filters.") : page.items.map(renderTrajectory));
    replace(
      pager,
      h("button", { type: "button", disabled: cursors.length === 1, onclick: () => (cursors.pop(), void load()) }, "← Previous"),
      h("span", {}, ` page ${cursors.length} `),
      h("button", { type: "button", disabled: !page.next, onclick: () => (cursors.push(page.next!), void load()) }, "Next →"),
    );
  }
  void load();
  return () => requests.dispose();
}

/** With no run named: the runs of the newest experiments that logged trajectories, to pick from. */
async function runChooser(container: HTMLElement, requests: Requests): Promise<void> {
  const current = requests.begin();
  try {
    const page = await api.experiments({ limit: 50 });
    const runs = page.items.length ? await api.comparison("experiments", page.items.map((x) => x.id)) : [];
    if (!current()) return;
    if (runs.length === 0) {
      replace(container, empty("No run has logged trajectories yet (RL stages and imports do)."));
      return;
    }
    const chosen = new Set<string>();
    const show = h("button", { type: "button", disabled: true }, "Show their trajectories") as HTMLButtonElement;
    show.addEventListener("click", () => navigate(`/trajectories?runs=${[...chosen].join(",")}`));
    replace(
      container,
      h(
        "fieldset",
        { class: "run-chooser" },
        h("legend", {}, "Runs with trajectories, newest experiments first"),
        h(
          "ul",
          { class: "pick-list" },
          runs.map((r) => {
            const id = `run-${r.run_id}`;
            const box = h("input", { type: "checkbox", id }) as HTMLInputElement;
            box.addEventListener("change", () => {
              if (box.checked) chosen.add(r.run_id);
              else chosen.delete(r.run_id);
              show.disabled = chosen.size === 0;
            });
            return h("li", {}, box, h("label", { for: id }, `${r.experiment} · ${r.stage ?? r.stage_idx} `, h("span", { class: "muted small" }, `run ${shortId(r.run_id)}, ${fmt(r.trajectories)} trajectories`)));
          }),
        ),
        show,
      ),
    );
  } catch (e) {
    if (current()) replace(container, errorBox(e));
  }
}
