// Live notices of new events from the API's Server-Sent Events stream. fetch() reads it rather
// than EventSource so that the bearer token can travel in a header when reads are protected.

import { authHeaders } from "./api";

export interface EventNotice {
  position: number;
  stream_type: string;
  stream_id: string;
  event_type: string;
  recorded_at: string;
}

type Listener = (notices: EventNotice[]) => void;

const listeners = new Set<Listener>();
let last: number | null = null;
let state: "connecting" | "live" | "offline" = "connecting";
const stateListeners = new Set<(s: typeof state) => void>();

/** Registers `fn` for every batch of notices; returns the function that unregisters it. */
export function subscribe(fn: Listener): () => void {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

export function onState(fn: (s: typeof state) => void): void {
  stateListeners.add(fn);
  fn(state);
}

function setState(s: typeof state): void {
  state = s;
  for (const fn of stateListeners) fn(s);
}

let wake: (value: unknown) => void = () => {};
let unauthorised = false;

/** Whether the server refused the stream for want of the token: it protects reads. */
export function readsNeedToken(): boolean {
  return unauthorised;
}

/** Ends the wait before the next reconnection (the token changed, say). */
export function reconnectNow(): void {
  wake(undefined);
}

/** Keeps one stream open for the page's life, resuming after the last notice seen. */
export async function connect(): Promise<void> {
  let delay = 1000;
  for (;;) {
    try {
      const url = `/api/v1/events/stream${last === null ? "" : `?after=${last}`}`;
      const response = await fetch(url, { headers: { Accept: "text/event-stream", ...authHeaders() } });
      unauthorised = response.status === 401;
      if (!response.ok || !response.body) throw new Error(`${response.status}`);
      setState("live");
      delay = 1000;
      await read(response.body);
    } catch {
      // Reconnected below; the page keeps what it shows.
    }
    setState("offline");
    await new Promise((r) => {
      wake = r;
      setTimeout(r, delay);
    });
    delay = Math.min(delay * 2, 15000);
  }
}

async function read(body: ReadableStream<Uint8Array>): Promise<void> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    const messages = buffer.split("\n\n");
    buffer = messages.pop() ?? "";
    const batch: EventNotice[] = [];
    for (const message of messages) {
      const lines = message.split("\n");
      // The server opens with a bare `id:` (where it starts), so a reconnect misses nothing.
      const id = lines.find((line) => line.startsWith("id: "));
      if (id) last = Number(id.slice(4));
      const data = lines
        .filter((line) => line.startsWith("data: "))
        .map((line) => line.slice(6))
        .join("\n");
      if (data) batch.push(JSON.parse(data) as EventNotice);
    }
    if (batch.length) {
      for (const fn of listeners) {
        try {
          fn(batch);
        } catch (e) {
          console.error("a live-update listener failed", e);
        }
      }
    }
  }
}
