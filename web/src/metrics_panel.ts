// Metric curves of one or more runs, overlaid: which metrics, smoothing and the x axis are the
// reader's choice; the server folds long series into about one point per pixel.

import uPlot from "uplot";
import { api, MetricBucket } from "./api";
import { Curve, curveChart, zoomOf } from "./charts";
import { errorBox, h, loading, replace, Requests } from "./dom";

export interface RunRef {
  id: string;
  label: string;
}

const PREFERRED = ["reward/mean", "accuracy", "parallel_ratio", "loss"];

const UNITS = [
  { name: "seconds", seconds: 1 },
  { name: "minutes", seconds: 60 },
  { name: "hours", seconds: 3600 },
];

export class MetricsPanel {
  readonly root = h("section", { class: "metrics", "aria-label": "Metric curves" });
  private readonly chooser = h("fieldset", { class: "metric-chooser" });
  private readonly charts = h("div", { class: "charts" });
  private readonly requests = new Requests();
  private names: string[] = [];
  private selected = new Set<string>();
  private smoothing = 0;
  private axis: "step" | "time" = "step";
  /** The fetched points of the selected metrics, per run, for redrawing without fetching. */
  private series: MetricBucket[][] = [];
  private plots = new Map<string, uPlot>();

  constructor(private runs: RunRef[]) {
    // The chart settings live in the URL too (`metrics`, `smoothing`, `axis`), so a shared link
    // shows the same charts.
    const params = new URL(location.href).searchParams;
    params.get("metrics")?.split(",").filter(Boolean).forEach((m) => this.selected.add(m));
    this.smoothing = Math.min(0.99, Math.max(0, Number(params.get("smoothing")) || 0));
    if (params.get("axis") === "time") this.axis = "time";
    const slider = h("input", { type: "range", min: 0, max: 0.99, step: 0.01, value: this.smoothing, id: "smoothing" }) as HTMLInputElement;
    const shown = h("output", { for: "smoothing" }, this.smoothing.toFixed(2));
    slider.addEventListener("input", () => {
      this.smoothing = Number(slider.value);
      shown.textContent = this.smoothing.toFixed(2);
      this.remember();
      this.render();
    });
    const axis = h(
      "select",
      { id: "axis" },
      h("option", { value: "step" }, "training step"),
      h("option", { value: "time" }, "elapsed time"),
    ) as HTMLSelectElement;
    axis.value = this.axis;
    axis.addEventListener("change", () => {
      this.axis = axis.value as "step" | "time";
      this.remember();
      this.render();
    });
    const controls = h(
      "div",
      { class: "controls" },
      h("label", { for: "smoothing" }, "Smoothing "),
      slider,
      shown,
      h("label", { for: "axis" }, " X axis "),
      axis,
      h("span", { class: "hint" }, " Drag across a chart to zoom; double-click to reset."),
    );
    replace(this.root, controls, this.chooser, this.charts);
  }

  dispose(): void {
    this.requests.dispose();
  }

  /** Writes the chart settings into the URL, keeping the page's own parameters. */
  private remember(): void {
    if (!this.requests.live) return;
    const url = new URL(location.href);
    const set = (key: string, value: string | null) => (value ? url.searchParams.set(key, value) : url.searchParams.delete(key));
    set("metrics", [...this.selected].sort().join(","));
    set("smoothing", this.smoothing > 0 ? this.smoothing.toFixed(2) : null);
    set("axis", this.axis === "time" ? "time" : null);
    const query = url.searchParams.toString().replace(/%2C/g, ",").replace(/%2F/g, "/");
    history.replaceState(null, "", query ? `${url.pathname}?${query}` : url.pathname);
  }

  /** Finds the metric names, then fetches and draws; call again to refresh with new values. */
  async load(): Promise<void> {
    if (this.runs.length === 0) {
      replace(this.charts, h("p", { class: "state empty" }, "No runs yet."));
      return;
    }
    const current = this.requests.begin();
    if (this.names.length === 0) replace(this.charts, loading("metrics"));
    try {
      const seen = await Promise.all(this.runs.map((r) => api.metrics(r.id, null, 1)));
      if (!current()) return;
      const names = [...new Set(seen.flat().map((b) => b.name))].sort();
      if (names.join() !== this.names.join()) {
        this.names = names;
        if (this.selected.size === 0) PREFERRED.filter((n) => names.includes(n)).slice(0, 3).forEach((n) => this.selected.add(n));
        if (this.selected.size === 0 && names.length) this.selected.add(names[0]);
        this.renderChooser();
      }
      await this.fetch();
    } catch (e) {
      if (current()) replace(this.charts, errorBox(e));
    }
  }

  private renderChooser(): void {
    replace(
      this.chooser,
      h("legend", {}, "Metrics"),
      this.names.length === 0 ? h("span", { class: "state empty" }, "No metrics reported yet.") : null,
      this.names.map((name, i) => {
        const id = `metric-${i}`;
        const box = h("input", { type: "checkbox", id, value: name, checked: this.selected.has(name) }) as HTMLInputElement;
        box.addEventListener("change", () => {
          if (box.checked) this.selected.add(name);
          else this.selected.delete(name);
          this.remember();
          void this.fetch().catch((e) => replace(this.charts, errorBox(e)));
        });
        return h("label", { class: "check", for: id }, box, name);
      }),
    );
  }

  private async fetch(): Promise<void> {
    const names = this.names.filter((n) => this.selected.has(n));
    const current = this.requests.begin();
    const buckets = Math.min(1000, Math.max(100, Math.round(this.charts.clientWidth || 800)));
    const series = names.length ? await Promise.all(this.runs.map((r) => api.metrics(r.id, names, buckets))) : [];
    if (!current()) return;
    for (const points of series) {
      const start = Math.min(...points.map((p) => Date.parse(p.time)));
      for (const p of points) p.elapsed_s = (Date.parse(p.time) - start) / 1000;
    }
    this.series = series;
    this.render();
  }

  private render(): void {
    const names = this.names.filter((n) => this.selected.has(n));
    if (names.length === 0) {
      replace(this.charts, this.names.length ? h("p", { class: "state empty" }, "Pick a metric above.") : null);
      return;
    }
    const elapsed = Math.max(0, ...this.series.flat().map((b) => b.elapsed_s ?? 0));
    const unit = this.axis === "step" ? null : elapsed < 120 ? UNITS[0] : elapsed < 3 * 3600 ? UNITS[1] : UNITS[2];
    // A zoom survives live redraws on the same axis, not a change of axis.
    const zooms = new Map([...this.plots].map(([key, plot]) => [key, zoomOf(plot)]));
    this.plots.clear();
    const boxes = names.map((name) => ({ name, box: h("div", { class: "chart", "data-metric": name }) }));
    replace(this.charts, boxes.map((b) => b.box));
    for (const { name, box } of boxes) {
      const curves: Curve[] = this.runs.map((run, i) => toCurve(run.label, (this.series[i] ?? []).filter((b) => b.name === name), unit));
      const key = `${this.axis}:${name}`;
      const xLabel = unit ? `${unit.name} since the run's first value` : "step";
      const plot = curveChart(box, curves, { title: name, xLabel, smoothing: this.smoothing, zoom: zooms.get(key) });
      if (plot) this.plots.set(key, plot);
    }
  }
}

/** Elapsed time is counted per run, so that runs started at different times overlay. */
function toCurve(label: string, points: MetricBucket[], unit: (typeof UNITS)[number] | null): Curve {
  return {
    label,
    x: points.map((p) => (unit ? (p.elapsed_s ?? 0) / unit.seconds : p.last_step)),
    y: points.map((p) => p.last),
    lo: points.map((p) => p.min),
    hi: points.map((p) => p.max),
  };
}
