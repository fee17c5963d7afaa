"""Log a training loop's metrics and rollouts to prl while it runs.

    import prl_client

    prl_client.init("grpo-s1", params={"lr": 1e-5})      # PRL_API_URL, PRL_TOKEN from the environment
    for step in range(steps):
        ...
        prl_client.log({"loss": loss, "reward": reward}, step=step)
        prl_client.log_trajectories(step, [
            {"prompt": p, "text": response, "reward": r, "correct": ok, "ground_truth": answer},
        ])
    prl_client.finish()

Calls return at once: a background thread sends what was logged in batches (every
`flush_seconds`, or sooner when a batch fills up) to `POST /api/v1/live-runs/{id}/batches`. A
batch is named when it is made and sent again under that name until prl answers, so a retry
after a timeout is recorded once. `finish()` sends what is left and marks the run finished. A
request prl refuses (a 4xx: bad input) is raised by the next call.

No dependencies beyond the standard library.
"""

import datetime
import json
import os
import threading
import time
import urllib.error
import urllib.request
import uuid

__all__ = ["Run", "PrlError", "init", "log", "log_trajectories", "finish"]


class PrlError(Exception):
    """prl refused a request: its JSON error's message, and the field it names."""

    def __init__(self, status, body):
        self.status = status
        self.body = body
        field = f" ({body.get('field')})" if isinstance(body, dict) and body.get("field") else ""
        message = body.get("message") if isinstance(body, dict) else str(body)
        super().__init__(f"prl answered {status}: {message}{field}")


class Run:
    """One live run. Thread-safe: any thread may log."""

    def __init__(self, name, *, url=None, token=None, tags=None, params=None, key=None,
                 source="client", flush_seconds=2.0, max_points=1000, max_trajectories=2000,
                 retry_for_seconds=600.0):
        self.url = (url or os.environ.get("PRL_API_URL") or "http://127.0.0.1:8080").rstrip("/")
        if self.url.endswith("/api/v1"):
            self.url = self.url[: -len("/api/v1")]
        self.token = token or os.environ.get("PRL_TOKEN")
        self.flush_seconds = flush_seconds
        self.max_points = max_points
        self.max_trajectories = max_trajectories
        self.retry_for_seconds = retry_for_seconds
        body = {"name": name, "tags": list(tags or []), "source": source,
                # As Python writes them (str(1e-05) is "1e-05"), like MLflow's params.
                "params": {str(k): str(v) for k, v in (params or {}).items()}}
        # A key makes the start safe to send again: a lost answer's retry finds the same run.
        body["key"] = key if key is not None else uuid.uuid4().hex
        started = self._send("POST", "/api/v1/live-runs", body)
        self.id = started["experiment_id"]
        self.run_id = started["run_id"]
        self._lock = threading.Lock()
        self._metrics = []
        self._lines = []
        self._unsent = None
        self._error = None
        self._finished = False
        self._wake = threading.Event()
        self._idle = threading.Condition(self._lock)
        self._sending = False
        self._thread = threading.Thread(target=self._loop, name="prl-client", daemon=True)
        self._thread.start()

    # --- what a training loop calls ---

    def log(self, metrics, step):
        """Metric values (name to number) at a training step."""
        values = {str(k): _number(v) for k, v in metrics.items()}
        self._add(lambda: self._metrics.append({"step": int(step), "values": values,
                                                 "time": _now()}))

    def log_trajectories(self, step, records):
        """Sampled responses at a step: each a dict with `prompt`, `text` and `reward`, and
        optionally `correct`, `ground_truth`, `answer` and `data_source`."""
        lines = []
        for i, r in enumerate(records):
            missing = [k for k in ("prompt", "text", "reward") if k not in r]
            if missing:
                raise ValueError(f"record {i} lacks {', '.join(missing)}")
            line = {"input": r["prompt"], "output": r["text"], "score": float(r["reward"]),
                    "step": int(step)}
            if r.get("correct") is not None:
                line["acc"] = bool(r["correct"])
            if r.get("ground_truth") is not None:
                line["gts"] = str(r["ground_truth"])
            if r.get("answer") is not None:
                line["pred"] = str(r["answer"])
            if r.get("data_source") is not None:
                line["data_source"] = str(r["data_source"])
            lines.append(json.dumps(line))
        self._add(lambda: self._lines.extend(lines))

    def finish(self, status="finished"):
        """Sends what is left, then marks the run `finished`, `failed` or `killed`."""
        self.flush()
        with self._lock:
            self._finished = True
        self._wake.set()
        self._thread.join()
        self._raise_error()
        return self._send("POST", f"/api/v1/live-runs/{self.id}/finish", {"status": status})

    def flush(self):
        """Waits until everything logged so far is recorded."""
        self._wake.set()
        with self._idle:
            while (self._metrics or self._lines or self._unsent or self._sending) and self._error is None:
                self._idle.wait(0.1)
                self._wake.set()
        self._raise_error()

    # --- sending ---

    def _add(self, append):
        self._raise_error()
        with self._lock:
            if self._finished:
                raise RuntimeError("the run has finished")
            append()
            full = len(self._metrics) >= self.max_points or len(self._lines) >= self.max_trajectories
        if full:
            self._wake.set()

    def _raise_error(self):
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _loop(self):
        while True:
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            with self._lock:
                batch, self._unsent = self._unsent, None
                if batch is None:
                    metrics, self._metrics = self._metrics[: self.max_points], self._metrics[self.max_points:]
                    lines, self._lines = self._lines[: self.max_trajectories], self._lines[self.max_trajectories:]
                    if metrics or lines:
                        batch = {"batch": uuid.uuid4().hex, "metrics": metrics}
                        if lines:
                            batch["rollouts"] = [{"name": "client", "content": "\n".join(lines)}]
                finished = self._finished
                self._sending = batch is not None
            if batch is not None:
                try:
                    self._send("POST", f"/api/v1/live-runs/{self.id}/batches", batch)
                except Exception as e:  # raised by the caller's next call
                    with self._lock:
                        if not isinstance(e, PrlError):
                            # prl could not be reached for retry_for_seconds: the batch is sent
                            # again, under its name, at the next flush; nothing is dropped.
                            self._unsent = batch
                        self._error = e
                finally:
                    with self._idle:
                        self._sending = False
                        self._idle.notify_all()
                if self._error is None and (self._metrics or self._lines or self._unsent):
                    self._wake.set()
                continue
            if finished:
                return

    def _send(self, method, path, body):
        """One request, retried with backoff while prl cannot be reached or answers 5xx/429."""
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        deadline = time.monotonic() + self.retry_for_seconds
        pause = 0.25
        while True:
            request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=60) as answer:
                    return json.loads(answer.read() or b"null")
            except urllib.error.HTTPError as e:
                text = e.read()
                try:
                    error = json.loads(text)
                except ValueError:
                    error = text.decode(errors="replace")
                if e.code < 500 and e.code not in (408, 429):
                    raise PrlError(e.code, error) from None
                last = PrlError(e.code, error)
            except (urllib.error.URLError, OSError) as e:
                last = e
            if time.monotonic() + pause > deadline:
                raise last
            time.sleep(pause)
            pause = min(pause * 2, 10.0)


def _number(v):
    v = float(v)
    if v != v:
        return "NaN"
    if v in (float("inf"), float("-inf")):
        return "Infinity" if v > 0 else "-Infinity"
    return v


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_run = None


def init(name, **options):
    """Starts the run the module-level functions log to (see `Run` for the options)."""
    global _run
    _run = Run(name, **options)
    return _run


def _current():
    if _run is None:
        raise RuntimeError("call prl_client.init(...) first")
    return _run


def log(metrics, step):
    _current().log(metrics, step)


def log_trajectories(step, records):
    _current().log_trajectories(step, records)


def finish(status="finished"):
    return _current().finish(status)
