// Finds where a field named by a validation error (`stages[1].learning_rate`) is written in a
// JSON or TOML spec, so that the error can be shown beside it.

type Segment = string | number;

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

/** The 0-based line of the field in `text`, or null when it is not written there. */
export function lineOfField(text: string, path: string): number | null {
  const segments = parsePath(path);
  const at = text.trimStart().startsWith("{") ? inJson(text, segments) : inToml(text, segments);
  return at === null ? null : text.slice(0, at).split("\n").length - 1;
}

function inJson(text: string, segments: Segment[]): number | null {
  let pos = 0;
  let found: number | null = null;
  for (const seg of segments) {
    if (typeof seg === "string") {
      const i = text.indexOf(`"${seg}"`, pos);
      if (i < 0) return found;
      found = i;
      pos = i + seg.length + 2;
    } else {
      const open = text.indexOf("[", pos);
      if (open < 0) return found;
      const start = nthElement(text, open, seg);
      if (start === null) return found;
      found = start;
      pos = start;
    }
  }
  return found;
}

/** Where the n-th element of the JSON array opening at `open` starts. */
function nthElement(text: string, open: number, n: number): number | null {
  let depth = 0;
  let index = 0;
  let inString = false;
  for (let i = open + 1; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (c === "\\") i++;
      else if (c === '"') inString = false;
      continue;
    }
    if (depth === 0 && index === n && !/\s/.test(c)) return i;
    if (c === '"') inString = true;
    else if (c === "[" || c === "{") depth++;
    else if (c === "]" || c === "}") {
      if (depth === 0) return null;
      depth--;
    } else if (c === "," && depth === 0) index++;
  }
  return null;
}

function inToml(text: string, segments: Segment[]): number | null {
  let pos = 0;
  let found: number | null = null;
  for (let k = 0; k < segments.length; k++) {
    const seg = segments[k];
    if (typeof seg === "number") continue;
    const next = segments[k + 1];
    if (typeof next === "number") {
      // An array of tables: the (n+1)-th `[[seg]]` header.
      let i = pos - 1;
      for (let j = 0; j <= next; j++) {
        i = text.indexOf(`[[${seg}]]`, i + 1);
        if (i < 0) return found;
      }
      found = i;
      pos = i;
    } else {
      const re = new RegExp(`^\\s*(?:${seg}\\s*=|\\[${seg}\\])`, "m");
      const m = re.exec(text.slice(pos));
      if (!m) return found;
      found = pos + m.index + (m[0].length - m[0].trimStart().length);
      pos = found + 1;
    }
  }
  return found;
}
