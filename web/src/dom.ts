// A small DOM builder and the formatting and state helpers every page shares.

type Child = Node | string | number | null | undefined | false | Child[];
type Attrs = Record<string, string | number | boolean | null | undefined | EventListener>;

/** Builds an element: `on*` attributes become listeners, `false`/`null` attributes are left out. */
export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el: Node, children: Child[]): void {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function replace(el: Element, ...children: Child[]): void {
  el.replaceChildren();
  append(el, children);
}

/** The random tail of an id: time-ordered (v7) ids share their first digits. */
export const shortId = (id: string): string => id.slice(-8);

export function fmt(value: number | null | undefined, digits = 3): string {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  return Number.isInteger(value) ? String(value) : value.toFixed(digits);
}

export const pct = (value: number | null | undefined): string =>
  value === null || value === undefined ? "–" : `${(value * 100).toFixed(1)}`;

export function when(iso: string | null): string {
  if (!iso) return "–";
  const d = new Date(iso);
  return d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

export const statusBadge = (status: string): HTMLElement =>
  h("span", { class: `badge status-${status}`, "data-status": status }, status);

export const loading = (what: string): HTMLElement =>
  h("p", { class: "state loading", role: "status", "aria-live": "polite" }, `Loading ${what}…`);

export const empty = (text: string): HTMLElement => h("p", { class: "state empty" }, text);

/** An error as the API gave it, naming the parameter or field it is about. */
export function errorBox(e: unknown): HTMLElement {
  const { message, field, parameter } = e as { message?: string; field?: string; parameter?: string };
  const about = field ?? parameter;
  const text = message ?? String(e);
  return h("p", { class: "state error", role: "alert" }, about && !text.startsWith(`${about}:`) ? `${about}: ${text}` : text);
}

export interface Throttled {
  (): void;
  cancel(): void;
}

/** Calls `fn` at most once per `ms`, trailing; `cancel` drops a pending call. */
export function throttle(fn: () => void, ms: number): Throttled {
  let timer: number | undefined;
  const call = () => {
    if (timer !== undefined) return;
    timer = window.setTimeout(() => {
      timer = undefined;
      fn();
    }, ms);
  };
  call.cancel = () => {
    clearTimeout(timer);
    timer = undefined;
  };
  return call;
}

/**
 * Numbers a page's requests so that only the newest one's answer is shown: `begin()` starts one
 * and returns a check that stays true while no newer request began and the page is still shown.
 */
export class Requests {
  private seq = 0;
  private disposed = false;
  begin(): () => boolean {
    const mine = ++this.seq;
    return () => !this.disposed && mine === this.seq;
  }
  dispose(): void {
    this.disposed = true;
  }
  get live(): boolean {
    return !this.disposed;
  }
}

/**
 * Runs `fn` one call at a time: a call made while one runs is folded into a single further run
 * after it, so refreshes never overlap and the last one always happens.
 */
export function serialized(fn: () => Promise<void>): () => Promise<void> {
  let running: Promise<void> | null = null;
  let again = false;
  const run = async (): Promise<void> => {
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      do {
        again = false;
        await fn();
      } while (again);
    })().finally(() => (running = null));
    return running;
  };
  return run;
}

/** Re-renders with `render` and gives focus back to the element that had it (by id). */
export function keepingFocus(render: () => void): void {
  const id = document.activeElement?.id;
  render();
  if (id) document.getElementById(id)?.focus({ preventScroll: true });
}
