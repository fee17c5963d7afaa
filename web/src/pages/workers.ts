// The trainer daemons that announce themselves: where each runs, its device and labels, the job
// it holds, and when it was last heard from. Refreshed every few seconds (presence is not in
// the event log, so no live notice tells of it).

import { api, Worker } from "../api";
import { empty, errorBox, fmt, h, loading, replace, Requests, shortId, statusBadge } from "../dom";

const REFRESH_MS = 5000;

export function workersPage(root: HTMLElement): () => void {
  document.title = "Workers · prl";
  const requests = new Requests();
  const table = h("div", { class: "table-wrap" });
  const status = h("p", { class: "muted", role: "status", "aria-live": "polite" });
  replace(
    root,
    h("h1", {}, "Workers"),
    h("p", { class: "muted" }, "Trainer daemons heard from in the last day. A stage's resources decide which of them may take its job."),
    status,
    table,
  );
  replace(table, loading("workers"));
  async function load(): Promise<void> {
    const current = requests.begin();
    let workers: Worker[];
    try {
      workers = await api.workers();
    } catch (e) {
      if (current()) replace(table, errorBox(e));
      return;
    }
    if (!current()) return;
    const active = workers.filter((w) => w.status === "active").length;
    status.textContent = `${active} active, ${workers.length - active} lost.`;
    if (workers.length === 0) {
      replace(table, empty("No daemon has announced itself. Start one with prl-trainer (or prl up)."));
      return;
    }
    replace(
      table,
      h(
        "table",
        { "aria-label": "Workers" },
        h("thead", {}, h("tr", {}, ["Worker", "Status", "Host", "Device", "GPU memory", "Labels", "Kinds", "Job", "Last seen"].map((c) => h("th", { scope: "col" }, c)))),
        h(
          "tbody",
          {},
          workers.map((w) =>
            h(
              "tr",
              { "data-worker": w.worker_id },
              h("td", { class: "mono" }, w.worker_id),
              h("td", {}, statusBadge(w.status)),
              h("td", {}, w.host),
              h("td", { class: "mono" }, w.device),
              h("td", {}, w.gpu_memory_gb == null ? "–" : `${fmt(w.gpu_memory_gb, 0)} GB`),
              h("td", { class: "mono" }, Object.entries(w.labels).map(([k, v]) => `${k}=${v}`).join(" ") || "–"),
              h("td", {}, w.kinds.join(", ") + (w.backend === "verl" ? " (verl on Ray)" : "")),
              h("td", { class: "mono" }, w.job ? `run ${shortId(w.job.run_id)} · attempt ${w.job.attempt}` : "idle"),
              h("td", {}, `${fmt(w.seconds_since_seen, 0)} s ago`),
            ),
          ),
        ),
      ),
    );
  }
  void load();
  const timer = window.setInterval(() => void load(), REFRESH_MS);
  return () => {
    window.clearInterval(timer);
    requests.dispose();
  };
}
