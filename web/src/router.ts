// Client-side routing on real paths (the API answers any of them with the app), so that every
// view, with its selection and filters in the query, is a link that can be shared.

import { sweepCharts } from "./charts";

type Page = (root: HTMLElement, url: URL) => (() => void) | void;

const routes: [RegExp, Page][] = [];
let cleanup: (() => void) | void;
let root: HTMLElement;
let first = true;

export function route(pattern: RegExp, page: Page): void {
  routes.push([pattern, page]);
}

export function navigate(to: string): void {
  history.pushState(null, "", to);
  render();
}

export function start(container: HTMLElement): void {
  root = container;
  window.addEventListener("popstate", render);
  document.addEventListener("click", (e) => {
    const a = (e.target as Element).closest("a");
    if (!a || a.target || a.origin !== location.origin || a.pathname.startsWith("/api/") || e.metaKey || e.ctrlKey || e.shiftKey) return;
    // In-page anchors (the skip link) keep the browser's own behaviour.
    if (a.hash && a.pathname === location.pathname && a.search === location.search) return;
    e.preventDefault();
    navigate(a.pathname + a.search);
  });
  render();
}

/** Shows the current page again, with fresh data (after the token changed, say). */
export function refresh(): void {
  render();
}

function render(): void {
  if (cleanup) cleanup();
  sweepCharts();
  const url = new URL(location.href);
  for (const link of document.querySelectorAll<HTMLAnchorElement>("nav.site a")) {
    const current = link.pathname === "/" ? url.pathname === "/" || url.pathname.startsWith("/experiments") : url.pathname.startsWith(link.pathname);
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  for (const [pattern, page] of routes) {
    const m = pattern.exec(url.pathname);
    if (m) {
      root.replaceChildren();
      cleanup = page(root, url);
      // After a navigation, keyboard and screen-reader users continue in the new content; on
      // the first load focus stays at the top, so that Tab reaches the skip link first.
      if (!first) root.focus({ preventScroll: true });
      first = false;
      window.scrollTo(0, 0);
      return;
    }
  }
  root.replaceChildren();
  const p = document.createElement("p");
  p.className = "state error";
  p.textContent = `No page at ${url.pathname}.`;
  root.append(p);
}
