// Charts on uPlot: metric curves (overlaid runs, smoothing, step or elapsed-time axis, drag to
// zoom) and the strategy-evolution charts. Points come already folded by the server.

import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { h } from "./dom";

/** Okabe-Ito: distinguishable with the common colour-vision deficiencies. */
export const PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"];

export interface Curve {
  label: string;
  /** Step, or time since the run's first value; ascending. */
  x: number[];
  y: number[];
  /** The bucket's min and max, drawn as a band when a point folds several steps. */
  lo?: number[];
  hi?: number[];
}

export interface CurveOptions {
  title: string;
  xLabel: string;
  /** 0 (raw) to 0.99: the weight of the past in an exponential moving average. */
  smoothing: number;
  /** The x range the reader zoomed to, kept when live data redraws the chart. */
  zoom?: { min: number; max: number };
}

/** A chart that remembers whether the reader zoomed it. */
type Zoomable = uPlot & { zoomed?: boolean };

/** The x range a reader zoomed `chart` to, or undefined when it shows everything. */
export function zoomOf(chart: Zoomable): { min: number; max: number } | undefined {
  return chart.zoomed ? { min: chart.scales.x.min!, max: chart.scales.x.max! } : undefined;
}

/** An exponential moving average, debiased at the start as TensorBoard does. */
export function smooth(y: number[], weight: number): number[] {
  if (weight <= 0) return y;
  let last = 0;
  let debias = 0;
  return y.map((v) => {
    last = last * weight + (1 - weight) * v;
    debias = debias * weight + (1 - weight);
    return last / debias;
  });
}

// uPlot keeps every plot (and a window listener for it) until `destroy()`: a chart is destroyed
// when its container gets a new one, and charts no longer in the page are swept.
const charts = new Set<uPlot>();
const byContainer = new WeakMap<HTMLElement, uPlot>();

export function sweepCharts(): void {
  for (const chart of charts) {
    if (!chart.root.isConnected) {
      chart.destroy();
      charts.delete(chart);
    }
  }
}

/** Empties `container`, destroying the chart it held. */
function clear(container: HTMLElement): void {
  const old = byContainer.get(container);
  if (old) {
    old.destroy();
    charts.delete(old);
    byContainer.delete(container);
  }
  container.replaceChildren();
  sweepCharts();
}

function keep(container: HTMLElement, chart: uPlot): uPlot {
  charts.add(chart);
  byContainer.set(container, chart);
  return chart;
}

new ResizeObserver(() => {
  for (const chart of charts) {
    const root = chart.root.parentElement;
    if (root?.isConnected) chart.setSize({ width: root.clientWidth, height: chart.height });
  }
}).observe(document.documentElement);

/** Mounts a chart in `container` (replacing what it held), with an accessible description. */
export function curveChart(container: HTMLElement, curves: Curve[], options: CurveOptions): uPlot | null {
  clear(container);
  const live = curves.filter((c) => c.x.length > 0);
  if (live.length === 0) {
    container.append(h("p", { class: "state empty" }, `No values of ${options.title} yet.`));
    return null;
  }
  const tables: uPlot.AlignedData[] = [];
  const xLabel = options.xLabel;
  const series: uPlot.Series[] = [{ label: xLabel.split(" ")[0] }];
  const bands: uPlot.Band[] = [];
  live.forEach((curve, i) => {
    const color = PALETTE[i % PALETTE.length];
    const banded = curve.lo && curve.hi && curve.lo.some((v, j) => v !== curve.hi![j]);
    tables.push([curve.x, smooth(curve.y, options.smoothing)] as uPlot.AlignedData);
    series.push({ label: curve.label, stroke: color, width: 2, spanGaps: true, points: { show: curve.x.length < 40 } });
    if (banded) {
      tables.push([curve.x, curve.hi!] as uPlot.AlignedData, [curve.x, curve.lo!] as uPlot.AlignedData);
      const hi = series.length;
      series.push(
        // Faint edges, so that a one-bucket spike still shows as a line.
        { label: `${curve.label} max`, stroke: `${color}80`, width: 1, spanGaps: true, points: { show: false } },
        { label: `${curve.label} min`, stroke: `${color}80`, width: 1, spanGaps: true, points: { show: false } },
      );
      bands.push({ series: [hi, hi + 1], fill: `${color}26` });
    }
  });
  const data = tables.length === 1 ? tables[0] : uPlot.join(tables);
  const width = Math.max(container.clientWidth, 320);
  const chart = new uPlot(
    {
      title: options.title,
      width,
      height: 240,
      series,
      bands,
      scales: { x: { time: false } },
      axes: [{ label: xLabel }, { size: 60 }],
      cursor: { drag: { x: true, y: false, setScale: true } },
      legend: { live: true },
      hooks: { setSelect: [(u) => u.select.width > 0 && ((u as Zoomable).zoomed = true)] },
    },
    data,
    container,
  ) as Zoomable;
  chart.over.addEventListener("dblclick", () => (chart.zoomed = false));
  if (options.zoom) {
    chart.setScale("x", options.zoom);
    chart.zoomed = true;
  }
  chart.root.setAttribute("role", "img");
  chart.root.setAttribute(
    "aria-label",
    `${options.title}: ${live.map((c) => `${c.label}, ${c.x.length} points, last ${c.y[c.y.length - 1]?.toFixed(4)}, max ${Math.max(...(c.hi ?? c.y)).toFixed(4)}`).join("; ")}. Drag to zoom, double-click to reset.`,
  );
  return keep(container, chart);
}

export interface StrategySeries {
  label: string;
  steps: number[];
  q1: (number | null)[];
  median: (number | null)[];
  q3: (number | null)[];
  mean: (number | null)[];
  exploration: (number | null)[];
  verification: (number | null)[];
}

/** A chart over steps of values in [0, 1], for the strategy series. */
function stepChart(
  container: HTMLElement,
  steps: number[],
  title: string,
  yLabel: string,
  series: uPlot.Series[],
  values: (number | null)[][],
  description: string,
  bands: uPlot.Band[] = [],
): uPlot | null {
  clear(container);
  if (steps.length === 0) {
    container.append(h("p", { class: "state empty" }, "No parallel blocks recorded yet."));
    return null;
  }
  const chart = new uPlot(
    {
      title,
      width: Math.max(container.clientWidth, 320),
      height: 240,
      scales: { x: { time: false }, y: { range: [0, 1] } },
      axes: [{ label: "step" }, { label: yLabel, size: 60 }],
      series: [{ label: "step" }, ...series.map((x) => ({ spanGaps: true, ...x }))],
      bands,
      cursor: { drag: { x: true, y: false, setScale: true } },
    },
    [steps, ...values] as uPlot.AlignedData,
    container,
  );
  chart.root.setAttribute("role", "img");
  chart.root.setAttribute("aria-label", `${description}, ${steps.length} steps.`);
  return keep(container, chart);
}

/** Where blocks sit in responses, step by step: the quartile band with median and mean. */
export const positionChart = (container: HTMLElement, s: StrategySeries): uPlot | null =>
  stepChart(
    container,
    s.steps,
    `Relative position of blocks (${s.label})`,
    "relative position",
    [
      { label: "q3", stroke: PALETTE[0], width: 1 },
      { label: "median", stroke: PALETTE[0], width: 2.5 },
      { label: "q1", stroke: PALETTE[0], width: 1 },
      { label: "mean", stroke: PALETTE[1], width: 1.5, dash: [6, 4] },
    ],
    [s.q3, s.median, s.q1, s.mean],
    "Relative block position per step: interquartile band, median and mean",
    [{ series: [1, 3], fill: `${PALETTE[0]}33` }],
  );

/** The share of blocks that explore and that verify, step by step. */
export const roleChart = (container: HTMLElement, s: StrategySeries): uPlot | null =>
  stepChart(
    container,
    s.steps,
    `Exploration and verification (${s.label})`,
    "share of blocks",
    [
      { label: "exploration", stroke: PALETTE[2], width: 2 },
      { label: "verification", stroke: PALETTE[3], width: 2, dash: [8, 4] },
    ],
    [s.exploration, s.verification],
    "Exploration and verification shares of blocks per step",
  );
