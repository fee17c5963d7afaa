// One trajectory as a reader wants it: the main thread as text, each parallel block's paths side
// by side as columns with the summary under them, and format problems marked where they occur.

import { FormatIssue, Schemas, TrajectoryView } from "./api";
import { fmt, h, shortId } from "./dom";

type Tag = Schemas["Tag"];

const TAGS: Record<Tag, string> = {
  open_parallel: "<Parallel>",
  close_parallel: "</Parallel>",
  open_path: "<Path>",
  close_path: "</Path>",
  open_summary: "<Summary>",
  close_summary: "</Summary>",
};

const OPEN_PATH = "<Path>";
const OPEN_SUMMARY = "<Summary>";
const CLOSE_SUMMARY = "</Summary>";

/** What a format issue means, in words. */
export function describeIssue(issue: FormatIssue): string {
  switch (issue.issue) {
    case "unclosed":
      return `${TAGS[issue.tag]} is never closed`;
    case "unexpected":
      return `${TAGS[issue.tag]} is out of place`;
    case "nested":
      return `${TAGS[issue.tag]} is nested inside a path or summary`;
    case "too_few_paths":
      return `block ${issue.block + 1} has ${issue.paths} path(s); at least 2 are needed`;
    case "text_outside_paths":
      return `block ${issue.block + 1} has text outside its paths`;
    case "missing_summary":
      return `block ${issue.block + 1} has no <Summary>`;
  }
}

/** UTF-16 index of every byte offset and every character offset of `text`. */
class Offsets {
  private readonly byChar: number[] = [];
  private readonly byByte = new Map<number, number>();
  constructor(text: string) {
    let byte = 0;
    let unit = 0;
    for (const ch of text) {
      this.byChar.push(unit);
      this.byByte.set(byte, unit);
      const code = ch.codePointAt(0)!;
      byte += code < 0x80 ? 1 : code < 0x800 ? 2 : code < 0x10000 ? 3 : 4;
      unit += ch.length;
    }
    this.byChar.push(unit);
    this.byByte.set(byte, unit);
  }
  char(c: number): number {
    return this.byChar[Math.min(c, this.byChar.length - 1)];
  }
  byte(b: number): number {
    return this.byByte.get(b) ?? this.byChar[this.byChar.length - 1];
  }
}

interface Mark {
  at: number;
  text: string;
}

const issueMark = (m: Mark): HTMLElement => h("mark", { class: "issue", title: m.text }, `⚠ ${m.text}`);

/** `text[from, to)` with the marks that fall inside it. */
function marked(text: string, from: number, to: number, marks: Mark[]): (Node | string)[] {
  const out: (Node | string)[] = [];
  let pos = from;
  for (const m of marks.filter((m) => m.at >= from && (m.at < to || (to === text.length && m.at === to)))) {
    if (m.at > pos) out.push(text.slice(pos, m.at));
    out.push(issueMark(m));
    pos = m.at;
  }
  if (to > pos) out.push(text.slice(pos, to));
  return out;
}

export function renderTrajectory(t: TrajectoryView): HTMLElement {
  const text = t.response;
  const offsets = new Offsets(text);
  const marks: Mark[] = t.format_issues
    .map((i) => ({ at: offsets.byte(i.at), text: describeIssue(i) }))
    .sort((a, b) => a.at - b.at);
  const body = h("div", { class: "response" });
  let pos = 0;
  t.blocks.forEach((block, b) => {
    const start = offsets.char(block.chars.start);
    const end = offsets.char(block.chars.end);
    body.append(h("div", { class: "main-text" }, marked(text, pos, start, marks)));
    const paths = block.path_ranges.map((r) => ({ from: offsets.char(r.start), to: offsets.char(r.end) }));
    // A problem at a path's or the summary's own opening tag is shown where that text starts.
    const atTag = (from: number, tag: string) =>
      marks.filter((m) => m.at >= from - tag.length && m.at < from).map(issueMark);
    const columns = h(
      "div",
      { class: "paths", style: `--paths: ${Math.max(paths.length, 1)}`, role: "group", "aria-label": `Block ${b + 1}: ${paths.length} paths side by side` },
      paths.map((p, i) =>
        h(
          "div",
          { class: "path" },
          h("div", { class: "path-head" }, `Path ${i + 1}`, block.conclusions[i] ? h("span", { class: "conclusion" }, ` → ${block.conclusions[i]}`) : null),
          h("div", { class: "path-text" }, atTag(p.from, OPEN_PATH), marked(text, p.from, p.to, marks)),
        ),
      ),
    );
    let after = end;
    let summary: HTMLElement | null = null;
    // Where marks are drawn inside the block: each path and the summary, with their opening tags.
    const placed = paths.map((p) => ({ from: p.from - OPEN_PATH.length, to: p.to }));
    if (block.summary_range) {
      const from = offsets.char(block.summary_range.start);
      const to = offsets.char(block.summary_range.end);
      summary = h("div", { class: "summary" }, h("span", { class: "summary-head" }, "Summary: "), atTag(from, OPEN_SUMMARY), marked(text, from, to, marks));
      after = text.startsWith(CLOSE_SUMMARY, to) ? to + CLOSE_SUMMARY.length : to;
      placed.push({ from: from - OPEN_SUMMARY.length, to });
    }
    const blockMarks = marks.filter((m) => m.at >= start && m.at < after && !placed.some((r) => m.at >= r.from && m.at <= r.to));
    body.append(
      h(
        "figure",
        { class: `block role-${block.role}`, "data-role": block.role },
        h("figcaption", {}, `Parallel block ${b + 1} · `, h("span", { class: `role role-${block.role}` }, block.role), blockMarks.map(issueMark)),
        columns,
        summary,
      ),
    );
    pos = after;
  });
  body.append(h("div", { class: "main-text" }, marked(text, pos, text.length, marks.filter((m) => m.at >= pos))));
  return h(
    "article",
    { class: `trajectory${t.format_valid ? "" : " invalid"}`, "data-id": t.id, "aria-label": `Trajectory ${t.id}` },
    h(
      "header",
      {},
      h("span", {}, `run ${shortId(t.run_id)} · step ${t.step}${t.benchmark ? ` · evaluation on ${t.benchmark}` : ""} · prompt ${t.prompt_id} · sample ${t.sample}`),
      h("span", { class: `badge ${t.correct ? "ok" : "bad"}` }, t.correct ? "correct" : "wrong"),
      h("span", {}, `reward ${fmt(t.reward, 2)}`),
      h("span", {}, `answer ${t.answer ?? "–"} (truth ${t.truth})`),
      t.response_tokens !== null ? h("span", {}, `${t.response_tokens} tokens`) : null,
      t.format_valid ? null : h("span", { class: "badge bad" }, `format invalid: ${t.format_issues.map(describeIssue).join("; ")}`),
    ),
    h("details", {}, h("summary", {}, "Prompt"), h("pre", { class: "prompt" }, t.prompt)),
    body,
  );
}
