// The experiments list: search and filters (kept in the URL), live status and per-stage progress,
// cancel, selection for comparing, and submitting a spec by pasting or uploading it.

import { api, ApiError, ExperimentPage, ListedExperiment } from "../api";
import { empty, errorBox, h, keepingFocus, loading, replace, Requests, shortId, statusBadge, throttle, when } from "../dom";
import { subscribe } from "../live";
import { navigate } from "../router";
import { lineOfField } from "../spec_field";

const STATUSES = ["queued", "running", "completed", "failed", "cancelled", "imported"];
const PAGE = 25;

export function experimentsPage(root: HTMLElement, url: URL): () => void {
  const params = url.searchParams;
  document.title = "Experiments · prl";
  const requests = new Requests();
  const cursors: (string | undefined)[] = [undefined];
  let page: ExperimentPage | null = null;
  const selected = new Set<string>();

  const name = h("input", { type: "search", id: "f-name", value: params.get("name") ?? "", placeholder: "name contains…" }) as HTMLInputElement;
  const status = h(
    "select",
    { id: "f-status" },
    h("option", { value: "" }, "any"),
    STATUSES.map((s) => h("option", { value: s, selected: params.get("status") === s }, s)),
  ) as HTMLSelectElement;
  const tag = h("input", { type: "text", id: "f-tag", value: params.get("tag") ?? "", placeholder: "tag" }) as HTMLInputElement;
  const table = h("div", { class: "table-wrap" });
  const pager = h("nav", { class: "pager", "aria-label": "Pages" });
  const compare = h("button", { type: "button", disabled: true }, "Compare selected") as HTMLButtonElement;
  compare.addEventListener("click", () => navigate(`/compare?experiments=${[...selected].join(",")}`));

  const filters = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter experiments" },
    h("label", { for: "f-name" }, "Search"),
    name,
    h("label", { for: "f-status" }, "Status"),
    status,
    h("label", { for: "f-tag" }, "Tag"),
    tag,
    compare,
  );
  filters.addEventListener("submit", (e) => e.preventDefault());
  const refilter = () => {
    const query = new URLSearchParams();
    if (name.value) query.set("name", name.value);
    if (status.value) query.set("status", status.value);
    if (tag.value) query.set("tag", tag.value);
    history.replaceState(null, "", `/${query.size ? `?${query}` : ""}`);
    cursors.length = 1;
    void load();
  };
  let typing: number | undefined;
  for (const input of [name, tag]) input.addEventListener("input", () => (clearTimeout(typing), (typing = window.setTimeout(refilter, 250))));
  status.addEventListener("change", refilter);

  async function load(quiet = false): Promise<void> {
    const current = requests.begin();
    if (!quiet) replace(table, loading("experiments"));
    try {
      const answer = await api.experiments({
        name: name.value || undefined,
        status: status.value || undefined,
        tag: tag.value || undefined,
        cursor: cursors[cursors.length - 1],
        limit: PAGE,
      });
      if (!current()) return;
      page = answer;
      keepingFocus(render);
    } catch (e) {
      if (current()) replace(table, errorBox(e));
    }
  }

  function render(): void {
    if (!page) return;
    if (page.items.length === 0) {
      replace(table, empty(name.value || status.value || tag.value ? "No experiment matches these filters." : "No experiments yet. Submit one below."));
    } else {
      replace(
        table,
        h(
          "table",
          { class: "experiments", "aria-label": "Experiments" },
          h(
            "thead",
            {},
            h("tr", {}, ["", "Name", "Status", "Stages", "Tags", "Submitted", ""].map((c, i) => h("th", { scope: "col" }, i === 0 ? h("span", { class: "sr-only" }, "Select") : c))),
          ),
          h("tbody", {}, page.items.map(row)),
        ),
      );
    }
    replace(
      pager,
      h("button", { type: "button", disabled: cursors.length === 1, onclick: () => (cursors.pop(), void load()) }, "← Newer"),
      h("span", {}, ` page ${cursors.length} `),
      h("button", { type: "button", disabled: !page.next_cursor, onclick: () => (cursors.push(page!.next_cursor!), void load()) }, "Older →"),
    );
  }

  function row(x: ListedExperiment): HTMLElement {
    const pick = h("input", { type: "checkbox", id: `pick-${x.id}`, checked: selected.has(x.id), "aria-label": `Select ${x.name} for comparing` }) as HTMLInputElement;
    pick.addEventListener("change", () => {
      if (pick.checked) selected.add(x.id);
      else selected.delete(x.id);
      compare.disabled = selected.size === 0;
    });
    const active = x.status === "queued" || x.status === "running";
    return h(
      "tr",
      { "data-id": x.id },
      h("td", {}, pick),
      h("td", {}, h("a", { href: `/experiments/${x.id}`, id: `open-${x.id}` }, x.name), h("div", { class: "muted mono" }, shortId(x.id))),
      h("td", {}, statusBadge(x.status), x.status_reason ? h("div", { class: "muted small" }, x.status_reason) : null),
      h("td", {}, h("ol", { class: "stages" }, x.stages.map(stageProgress))),
      h("td", {}, x.tags.map((t) => h("span", { class: "tag" }, t))),
      h("td", {}, h("time", { datetime: x.submitted_at }, when(x.submitted_at))),
      h("td", {}, active ? h("button", { type: "button", class: "danger", id: `cancel-${x.id}`, "aria-label": `Cancel ${x.name}`, onclick: () => void cancel(x) }, "Cancel") : null),
    );
  }

  async function cancel(x: ListedExperiment): Promise<void> {
    if (!confirm(`Cancel ${x.name}?`)) return;
    try {
      await api.cancel(x.id);
      await load(true);
    } catch (e) {
      alert((e as Error).message);
    }
  }

  const refresh = throttle(() => void load(true), 1000);
  const unsubscribe = subscribe((notices) => {
    if (notices.some((n) => n.stream_type !== "dataset")) refresh();
  });

  replace(
    root,
    h("h1", {}, "Experiments"),
    filters,
    table,
    pager,
    submitForm(() => void load(true)),
  );
  void load();
  return () => {
    requests.dispose();
    refresh.cancel();
    clearTimeout(typing);
    unsubscribe();
  };
}

function stageProgress(s: ListedExperiment["stages"][number]): HTMLElement {
  const step = s.last_step ?? 0;
  const label = `${s.name} (${s.kind}): ${s.status}${s.steps ? `, step ${step} of ${s.steps}` : s.last_step !== null ? `, step ${step}` : ""}`;
  return h(
    "li",
    { class: `stage status-${s.status}`, title: label },
    h("span", { class: "stage-name" }, s.name),
    s.steps
      ? h("progress", { max: s.steps, value: s.status === "completed" ? s.steps : step, "aria-label": label })
      : h("span", { class: "muted small", "aria-label": label }, s.status),
  );
}

/** Pasting or uploading a spec (JSON or TOML); a rejected field is shown beside the spec. */
function submitForm(onSubmitted: () => void): HTMLElement {
  const text = h("textarea", { id: "spec", rows: 14, spellcheck: "false", "aria-describedby": "spec-help spec-error", placeholder: '{"name": "...", "model": "tiny", "stages": [...]}' }) as HTMLTextAreaElement;
  const file = h("input", { type: "file", id: "spec-file", accept: ".json,.toml,application/json,application/toml" }) as HTMLInputElement;
  const error = h("div", { id: "spec-error", class: "field-error", role: "alert", "aria-live": "assertive" });
  const done = h("p", { class: "state", role: "status" });
  const gutter = h("div", { class: "gutter", "aria-hidden": "true" });
  file.addEventListener("change", async () => {
    const f = file.files?.[0];
    if (f) text.value = await f.text();
  });
  const form = h(
    "form",
    { class: "submit", "aria-labelledby": "submit-title" },
    h("h2", { id: "submit-title" }, "Submit an experiment"),
    h("p", { id: "spec-help", class: "muted" }, "Paste a spec (JSON or TOML, as in deploy/suite/) or upload a file."),
    h("label", { for: "spec-file" }, "Spec file "),
    file,
    h("div", { class: "spec-editor" }, h("label", { for: "spec", class: "sr-only" }, "Spec"), h("div", { class: "spec-box" }, gutter, text), error),
    done,
  );
  const button = h("button", { type: "submit" }, "Submit") as HTMLButtonElement;
  form.insertBefore(button, done);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (button.disabled) return;
    replace(error);
    replace(done);
    replace(gutter);
    error.style.marginTop = "";
    text.removeAttribute("aria-invalid");
    const spec = text.value;
    if (!spec.trim()) {
      replace(error, h("strong", {}, "spec"), ": paste or upload a spec first");
      return;
    }
    const format = spec.trimStart().startsWith("{") ? "json" : "toml";
    button.disabled = true;
    try {
      const accepted = await api.submit(spec, format);
      replace(done, "Submitted ", h("a", { href: `/experiments/${accepted.id}` }, shortId(accepted.id)), ` (${accepted.status}).`);
      onSubmitted();
    } catch (err) {
      const e = err as ApiError;
      text.setAttribute("aria-invalid", "true");
      const field = e.field ?? e.parameter;
      const line = field ? lineOfField(spec, field) : null;
      replace(
        error,
        field ? h("strong", { class: "field-name" }, field) : null,
        line !== null ? h("span", { class: "muted" }, ` (line ${line + 1})`) : null,
        field ? ": " : null,
        e.message.startsWith(`${field}: `) ? e.message.slice(field!.length + 2) : e.message,
      );
      if (line !== null) {
        const lineHeight = parseFloat(getComputedStyle(text).lineHeight) || 18;
        const top = Math.max(0, line * lineHeight - text.scrollTop);
        gutter.append(h("span", { class: "gutter-mark", style: `top: ${top + 4}px` }, "▶"));
        error.style.marginTop = `${Math.min(top, text.clientHeight - 40)}px`;
        const starts = spec.split("\n").slice(0, line).reduce((n, l) => n + l.length + 1, 0);
        text.focus();
        text.setSelectionRange(starts, starts + (spec.split("\n")[line]?.length ?? 0));
      }
    } finally {
      button.disabled = false;
    }
  });
  return form;
}
