// Finds where a field named by a validation error (`stages[1].learning_rate`) is written in a
// JSON or TOML spec, so that the error can be shown beside it. Each step of the path searches
// only inside the object or table the previous step found; a field that is not written (a
// missing one) resolves to the innermost enclosing element.

type Segment = string | number;

interface Span {
  start: number;
  end: number;
}

export function parsePath(path: string): Segment[] {
  const out: Segment[] = [];
  for (const part of path.split(".")) {
    const m = /^([^[\]]*)((?:\[\d+\])*)$/.exec(part);
    if (!m) return out;
    if (m[1]) out.push(m[1]);
    for (const i of m[2].matchAll(/\[(\d+)\]/g)) out.push(Number(i[1]));
  }
  return out;
}

/** The 0-based line of the field in `text`, or null when nothing of its path is written there. */
export function lineOfField(text: string, path: string): number | null {
  const segments = parsePath(path);
  const at = text.trimStart().startsWith("{") ? inJson(text, segments) : inToml(text, segments);
  return at === null ? null : text.slice(0, at).split("\n").length - 1;
}

function inJson(text: string, segments: Segment[]): number | null {
  let span: Span = { start: 0, end: text.length };
  let found: number | null = null;
  for (const seg of segments) {
    let next: Span | null = null;
    if (typeof seg === "string") {
      const key = findKey(text, span, seg);
      if (key !== null) {
        found = key;
        next = valueSpan(text, key + seg.length + 2);
      }
    } else {
      next = element(text, span, seg);
      if (next) found = next.start;
    }
    if (!next) return found;
    span = next;
  }
  return found;
}

/** Skips a JSON string starting at `i` (a quote); returns the index after it. */
function skipString(text: string, i: number): number {
  for (i++; i < text.length; i++) {
    if (text[i] === "\\") i++;
    else if (text[i] === '"') return i + 1;
  }
  return i;
}

/** Where `"key":` is written at the top level of the object spanning `span`. */
function findKey(text: string, span: Span, key: string): number | null {
  let depth = 0;
  for (let i = span.start; i < span.end; i++) {
    const c = text[i];
    if (c === '"') {
      const end = skipString(text, i);
      if (depth === 1 && text.slice(i + 1, end - 1) === key && /^\s*:/.test(text.slice(end, end + 20))) return i;
      i = end - 1;
    } else if (c === "{" || c === "[") depth++;
    else if (c === "}" || c === "]") depth--;
  }
  return null;
}

/** The span of the value after the colon that follows `from`. */
function valueSpan(text: string, from: number): Span | null {
  const colon = text.indexOf(":", from);
  if (colon < 0) return null;
  let i = colon + 1;
  while (/\s/.test(text[i] ?? "")) i++;
  return { start: i, end: endOfValue(text, i) };
}

function endOfValue(text: string, i: number): number {
  let depth = 0;
  for (; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      i = skipString(text, i) - 1;
      if (depth === 0) return i + 1;
    } else if (c === "{" || c === "[") depth++;
    else if (c === "}" || c === "]") {
      depth--;
      if (depth === 0) return i + 1;
      if (depth < 0) return i;
    } else if (depth === 0 && c === ",") return i;
  }
  return i;
}

/** The n-th element of the array spanning `span`. */
function element(text: string, span: Span, n: number): Span | null {
  let i = text.indexOf("[", span.start);
  if (i < 0 || i >= span.end) return null;
  for (let index = 0; ; index++) {
    i++;
    while (/\s/.test(text[i] ?? "")) i++;
    if (i >= span.end || text[i] === "]") return null;
    const end = endOfValue(text, i);
    if (index === n) return { start: i, end };
    i = text.indexOf(",", end);
    if (i < 0 || i >= span.end) return null;
  }
}

function inToml(text: string, segments: Segment[]): number | null {
  let span: Span = { start: 0, end: text.length };
  let found: number | null = null;
  for (let k = 0; k < segments.length; k++) {
    const seg = segments[k];
    if (typeof seg === "number") continue;
    const next = segments[k + 1];
    if (typeof next === "number") {
      // An array of tables: the (n+1)-th `[[seg]]` header, up to the next header.
      let at = -1;
      for (let j = 0, from = span.start; j <= next; j++, from = at + 1) {
        at = text.indexOf(`[[${seg}]]`, from);
        if (at < 0) return found;
      }
      found = at;
      const rest = /^\s*\[/m.exec(text.slice(at + seg.length + 4));
      span = { start: at, end: rest ? at + seg.length + 4 + rest.index : text.length };
    } else {
      const re = new RegExp(`^[ \\t]*(?:${seg.replace(/[^\w-]/g, "\\$&")}\\s*=|\\[${seg.replace(/[^\w-]/g, "\\$&")}\\])`, "m");
      const m = re.exec(text.slice(span.start, span.end));
      if (!m) return found;
      found = span.start + m.index + (m[0].length - m[0].trimStart().length);
    }
  }
  return found;
}
