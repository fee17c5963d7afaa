"""Ingest peers of prl's analytics benchmark: how fast MLflow, Aim or trackio record the same RL
trajectories, text included, the way their users keep rollouts, durably in a fresh directory on
local disk. The clock runs from the first logging call to the return of the last one, the final
flush/close included; reading the JSONL and, where the tool has a step of its own for it,
creating the empty store (MLflow's schema, `aim init`) are not timed.

After the clock, what the store holds is read back from disk, untimed, with the tool's own reading
API or files, and reported as "stored" (trajectories found): MLflow, the rows of every logged table
artifact of every run (MlflowClient.load_table); Aim, the 'response' Text values tracked across
runs, read from a reindexed copy of the repo (Aim's SDK sees a run only once its index has it);
trackio, the rows of the tables logged in its SQLite file. For trackio the strategy-evolution
numbers of the first run are also computed by SQL over that file, timed warm, and checked against
the same numbers computed from TEXTS.jsonl; "strategy_sql_trajectories" says how many trajectories
of that run the query covered (the input is a sample: the first steps of each run).

MLflow keeps the list of a run's tables in one tag (mlflow.loggedArtifacts) capped at 8,000
characters, so a run with more than about 140 steps (142 with a file per step, as named here)
cannot be recorded this way: the script then stops with a message.

Usage: bench_ingest_peers.py PEER TEXTS.jsonl [--workdir DIR]  -> prints a JSON report on stdout.

PEER is mlflow, aim or trackio. TEXTS.jsonl has one trajectory a line: run_id, step, sample, text,
reward, correct, format_valid and blocks (rel_position and role of each). The rows are logged run
by run, each run's steps in the order they first appear, at most CHUNK rows per table.
"""

import argparse
import contextlib
import importlib.metadata
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

# Rows per logged table: one step of a run can hold thousands of trajectories.
CHUNK = 100

# Nothing leaves the machine: the peers' telemetry and hub look-ups off.
QUIET = {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
}


def read_runs(path: str) -> dict:
    """{run_id: {step: [rows]}}, runs and steps in the order they first appear."""
    runs: dict = defaultdict(lambda: defaultdict(list))
    with open(path) as f:
        for line in f:
            row = json.loads(line)
            runs[row["run_id"]][row["step"]].append(row)
    return runs


def chunks(rows: list):
    """The rows, CHUNK at a time."""
    for i in range(0, len(rows), CHUNK):
        yield rows[i:i + CHUNK]


TABLE_COLUMNS = ("sample", "text", "reward", "correct", "format_valid")


def record(row: dict) -> dict:
    """A trajectory as a table row: the text with its scores."""
    return {**{c: row[c] for c in TABLE_COLUMNS}, "n_blocks": len(row["blocks"])}


def columns(rows: list) -> dict:
    """Trajectories as a table's columns."""
    records = [record(r) for r in rows]
    return {c: [r[c] for r in records] for c in records[0]}


def store_bytes(directory: Path) -> int:
    """The bytes the store takes on disk."""
    return sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())


# --- MLflow -----------------------------------------------------------------------------------

# MLflow lists a run's tables in one tag (mlflow.loggedArtifacts) of at most this many
# characters; past it the tag is truncated and the next log_table fails to parse it.
MLFLOW_TAG_LIMIT = 8000


def mlflow_files(steps: dict) -> tuple[list, str]:
    """(rows, artifact_file) for each log_table call of one run, and how the files are named.

    A file per chunk of a step, unless the run's list of tables would outgrow MLflow's tag: then
    a file per step, the later chunks appended to it by log_table (which re-reads the file).
    """
    per_chunk = [
        (rows, f"rollouts/step_{step:06d}_{part:03d}.json")
        for step, all_rows in steps.items()
        for part, rows in enumerate(chunks(all_rows))
    ]
    per_step = [(rows, f"rollouts/step_{step:06d}.json")
                for step, all_rows in steps.items() for rows in chunks(all_rows)]
    for calls, naming in ((per_chunk, "a JSON file per chunk"),
                          (per_step, "a JSON file per step, chunks appended")):
        files = dict.fromkeys(f for _, f in calls)
        tag = json.dumps([{"path": f, "type": "table"} for f in files])
        if len(tag) <= MLFLOW_TAG_LIMIT:
            return calls, naming
    raise SystemExit(
        f"mlflow: {len(steps)} steps in one run do not fit MLflow's {MLFLOW_TAG_LIMIT}-character "
        "list of a run's tables"
    )


def mlflow_peer(runs: dict, directory: Path) -> dict:
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(f"sqlite:///{directory}/mlflow.db")
    # The store's schema is made here, before the clock starts.
    experiment = mlflow.create_experiment(
        "prl-rollouts", artifact_location=(directory / "artifacts").as_uri())
    mlflow.set_experiment(experiment_id=experiment)
    plans = {run_id: mlflow_files(steps) for run_id, steps in runs.items()}

    started = time.perf_counter()
    for run_id, (calls, _) in plans.items():
        with mlflow.start_run(run_name=run_id):
            for rows, artifact_file in calls:
                mlflow.log_table(columns(rows), artifact_file=artifact_file)
    seconds = time.perf_counter() - started

    namings = sorted({naming for _, naming in plans.values()})
    return {
        "version": mlflow.__version__,
        "seconds": seconds,
        # Before the log_batch run adds its metrics to the same store.
        "store_bytes": store_bytes(directory),
        "stored": mlflow_stored(MlflowClient(), experiment),
        "metrics_per_second": mlflow_log_batch(MlflowClient(), experiment),
        "how": (
            f"one MLflow run per run in a local store (sqlite mlflow.db, artifacts beside it, "
            f"no server); per step of a run mlflow.log_table of its trajectories "
            f"(sample, text, reward, correct, format_valid, n_blocks), at most {CHUNK} rows a "
            f"call, {' / '.join(namings)}"
        ),
    }


def mlflow_stored(client, experiment: str) -> int:
    """The rows of every table logged in every run of the experiment, loaded back from the store
    with MLflow's own load_table (the run's mlflow.loggedArtifacts tag lists its tables)."""
    stored = 0
    for run in client.search_runs([experiment], max_results=50_000):
        tables = json.loads(run.data.tags.get("mlflow.loggedArtifacts", "[]"))
        for table in tables:
            if table.get("type") == "table":
                stored += len(client.load_table(experiment, table["path"],
                                                run_ids=[run.info.run_id]))
    return stored


def mlflow_log_batch(client, experiment: str, points: int = 100_000) -> float:
    """Metric points/s of MlflowClient.log_batch into the same store: 1,000 points a call (ten
    keys over 100 steps), as a training loop's logger sends them."""
    from mlflow.entities import Metric

    keys = [f"metric_{i}" for i in range(10)]
    run = client.create_run(experiment, run_name="log-batch")
    now = int(time.time() * 1000)
    batches = [
        [Metric(key, first + s * 0.001, now + first + s, first + s)
         for s in range(100) for key in keys]
        for first in range(0, points // len(keys), 100)
    ]
    started = time.perf_counter()
    for batch in batches:
        client.log_batch(run.info.run_id, metrics=batch)
    seconds = time.perf_counter() - started
    client.set_terminated(run.info.run_id)
    return sum(len(b) for b in batches) / seconds


# --- Aim --------------------------------------------------------------------------------------


def aim_peer(runs: dict, directory: Path) -> dict:
    import aim

    aim.Repo.from_path(str(directory), init=True)
    started = time.perf_counter()
    for run_id, steps in runs.items():
        # No system-resource thread and no terminal capture: only the tracking is measured.
        run = aim.Run(repo=str(directory), experiment="prl-rollouts",
                      system_tracking_interval=None, capture_terminal_logs=False)
        run.name = run_id
        for step, rows in steps.items():
            # Aim keeps one value per step of a series (name + context): a later one overwrites.
            # A step holds several trajectories of each sample index, so the context also
            # carries which of them this is.
            seen: dict = defaultdict(int)
            for r in rows:
                context = {"sample": r["sample"], "group": seen[r["sample"]]}
                seen[r["sample"]] += 1
                run.track(aim.Text(r["text"]), name="response", step=step, context=context)
                run.track(r["reward"], name="reward", step=step, context=context)
        run.close()
    seconds = time.perf_counter() - started
    return {
        "version": importlib.metadata.version("aim"),
        "seconds": seconds,
        "store_bytes": store_bytes(directory),
        "stored": aim_stored(directory),
        "how": (
            "one Aim run per run in a local Aim repo; per trajectory run.track of "
            "aim.Text(text) as 'response' and of the reward as 'reward' at its step, with "
            "context {sample, group} (group: which of the step's trajectories with that sample "
            "index, as Aim keeps one value per step and context); runs closed at the end"
        ),
    }


def aim_stored(directory: Path) -> int:
    """The 'response' Text values tracked across the repo's runs, read back with Aim's SDK.

    Aim's SDK lists a run only once the repo's index has it, which Aim's UI or `aim storage
    reindex` does; the index is rebuilt in a copy, so the measured store stays as written.
    """
    import aim

    with tempfile.TemporaryDirectory(prefix="prl-aim-read-") as scratch:
        copy = Path(scratch) / "repo"
        shutil.copytree(directory, copy)
        repo = aim.Repo.from_path(str(copy))
        repo._recreate_index()  # what `aim storage reindex` does
        stored = 0
        for run in repo.iter_runs():
            for name, context, _ in run.iter_sequence_info_by_type(("aim.text",)):
                if name == "response":
                    steps, values = run.get_text_sequence(name, context).values.sparse_list()
                    stored += sum(1 for v in values if v is not None)
        repo.close()
    return stored


# --- trackio ----------------------------------------------------------------------------------

# The strategy-evolution numbers of one run straight from trackio's SQLite: each logged table
# is a JSON array of rows in metrics.metrics; the median interpolates as PostgreSQL's and
# pandas' do. Columns: step, trajectories, parallel_ratio, accuracy, rel_position_median,
# exploration_share.
TRACKIO_STRATEGY = """
WITH rows AS (
    SELECT m.step, r.value AS row
    FROM metrics m, json_each(m.metrics, '$.rollouts._value') r
    WHERE m.run_name = :run
), t AS (
    SELECT step, count(*) AS trajectories, avg(json_extract(row, '$.correct')) AS accuracy,
           avg(json_array_length(row, '$.blocks') > 0) AS parallel_ratio
    FROM rows GROUP BY step
), b AS (
    SELECT rows.step, json_extract(b.value, '$.rel_position') AS rel,
           json_extract(b.value, '$.role') = 'exploration' AS exploration
    FROM rows, json_each(rows.row, '$.blocks') b
), ranked AS (
    SELECT step, rel, exploration,
           row_number() OVER (PARTITION BY step ORDER BY rel) AS rn,
           count(*) OVER (PARTITION BY step) AS n
    FROM b
), per_step AS (
    SELECT step, avg(CASE WHEN rn IN ((n + 1) / 2, (n + 2) / 2) THEN rel END) AS median,
           avg(exploration) AS exploration_share
    FROM ranked GROUP BY step
)
SELECT t.step, t.trajectories, t.parallel_ratio, t.accuracy,
       per_step.median AS rel_position_median,
       per_step.exploration_share
FROM t LEFT JOIN per_step USING (step) ORDER BY t.step
"""


def trackio_peer(runs: dict, directory: Path) -> dict:
    # trackio reads its directory once, on import.
    os.environ["TRACKIO_DIR"] = str(directory)
    os.environ["HF_HOME"] = str(directory / "hf")
    import trackio

    project = "prl-rollouts"
    started = time.perf_counter()
    for run_id, steps in runs.items():
        # No CPU/GPU monitor threads: only the logging is measured.
        trackio.init(project=project, name=run_id, embed=False,
                     auto_log_cpu=False, auto_log_gpu=False)
        for step, all_rows in steps.items():
            for rows in chunks(all_rows):
                # The blocks go in too, so the store can answer the strategy query below.
                table = [{**record(r), "blocks": r["blocks"]} for r in rows]
                trackio.log({"rollouts": trackio.Table(data=table)}, step=step)
        trackio.finish()
    seconds = time.perf_counter() - started

    from trackio.sqlite_storage import SQLiteStorage

    db = SQLiteStorage.get_project_db_path(project)
    first = next(iter(runs))
    strategy_s, per_step = trackio_strategy(db, first)
    trackio_check(per_step, runs[first], first)
    return {
        "version": trackio.__version__,
        "seconds": seconds,
        "store_bytes": store_bytes(directory),
        "stored": trackio_stored(db),
        "strategy_sql_s": strategy_s,
        "strategy_sql_trajectories": sum(row[1] for row in per_step),
        "how": (
            f"one trackio run per run (trackio.init) in its local SQLite store ({db.name}, "
            f"TRACKIO_DIR set to the work directory); per step of a run trackio.log of a "
            f"trackio.Table of its trajectories (sample, text, reward, correct, format_valid, "
            f"n_blocks, blocks), at most {CHUNK} rows a call, as trackio's docs log completions "
            f"with their rewards; trackio.finish() per run"
        ),
    }


def trackio_strategy(db: Path, run: str) -> tuple[float, list]:
    """Median seconds of 9 warm runs (after one) of TRACKIO_STRATEGY, read-only; its rows."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    con.execute(TRACKIO_STRATEGY, {"run": run}).fetchall()
    seconds = []
    for _ in range(9):
        started = time.perf_counter()
        rows = con.execute(TRACKIO_STRATEGY, {"run": run}).fetchall()
        seconds.append(time.perf_counter() - started)
    con.close()
    return statistics.median(seconds), rows


def trackio_check(per_step: list, steps: dict, run: str) -> None:
    """Stops unless TRACKIO_STRATEGY's rows are the numbers computed from the input's rows of
    the run (within 1e-9; null where a step has no blocks)."""
    def expected(step: int, rows: list) -> tuple:
        blocks = [b for r in rows for b in r["blocks"]]
        return (
            step,
            len(rows),
            sum(1 for r in rows if r["blocks"]) / len(rows),
            sum(1 for r in rows if r["correct"]) / len(rows),
            statistics.median(b["rel_position"] for b in blocks) if blocks else None,
            (sum(1 for b in blocks if b["role"] == "exploration") / len(blocks)
             if blocks else None),
        )

    names = ("step", "trajectories", "parallel_ratio", "accuracy", "rel_position_median",
             "exploration_share")
    want = [expected(step, rows) for step, rows in sorted(steps.items())]
    if [row[0] for row in per_step] != [row[0] for row in want]:
        raise SystemExit(
            f"trackio: the strategy SQL over run {run} gives steps "
            f"{[row[0] for row in per_step]}, the input has {[row[0] for row in want]}"
        )
    for got, exp in zip(per_step, want):
        for name, a, b in zip(names, got, exp):
            if (a is None) != (b is None) or (a is not None and abs(a - b) > 1e-9):
                raise SystemExit(
                    f"trackio: the strategy SQL over run {run}, step {got[0]}: {name} is {a}, "
                    f"the input gives {b}"
                )


def trackio_stored(db: Path) -> int:
    """The rows of every table logged in trackio's SQLite file, all runs (each logged table is a
    JSON array of rows under its key in metrics.metrics)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    (stored,) = con.execute(
        """SELECT coalesce(sum(json_array_length(v.value, '$._value')), 0)
           FROM metrics m, json_each(m.metrics) v
           WHERE json_extract(v.value, '$._type') = 'trackio.table'"""
    ).fetchone()
    con.close()
    return stored


PEERS = {"mlflow": mlflow_peer, "aim": aim_peer, "trackio": trackio_peer}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("peer", choices=sorted(PEERS))
    parser.add_argument("texts")
    parser.add_argument("--workdir", default=None,
                        help="where the fresh store goes and stays (default: a tempdir, removed)")
    args = parser.parse_args()
    os.environ.update(QUIET)

    runs = read_runs(args.texts)
    trajectories = sum(len(rows) for steps in runs.values() for rows in steps.values())
    directory = Path(tempfile.mkdtemp(prefix=f"prl-{args.peer}-", dir=args.workdir)).resolve()
    # The peers print progress: stdout carries only the report.
    with contextlib.redirect_stdout(sys.stderr):
        report = PEERS[args.peer](runs, directory)
    seconds = report.pop("seconds")
    result = {
        "peer": args.peer,
        "version": report.pop("version"),
        "trajectories": trajectories,
        "seconds": seconds,
        "per_second": trajectories / seconds,
        "how": report.pop("how"),
        **report,
    }
    if args.workdir is None:
        shutil.rmtree(directory, ignore_errors=True)
    else:
        result["store"] = str(directory)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
