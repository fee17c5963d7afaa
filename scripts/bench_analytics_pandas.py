"""The peer of prl's analytics benchmark: the strategy-evolution numbers and the cross-run
comparison computed with pandas from a JSONL dump (one trajectory per line, its blocks' relative
positions and roles inside), which is what a user without prl would write. The load reads the
dump in chunks into two compact frames (trajectories with a `parallel` flag, and their blocks,
runs as categories), the columns DuckDB's peer keeps in Parquet: read whole, the dump of 10M
trajectories held as Python objects needs more than this machine's 24 GB. The load is reported
apart; each query is then timed warm, as the DuckDB peer's: one run first, then the median of 9
(strategy evolution) or 5 (comparison) runs, each recomputing everything from the loaded frames.

Usage: bench_analytics_pandas.py DUMP.jsonl RUN_ID  -> prints a JSON report on stdout.
"""

import json
import math
import statistics
import sys
import time

import pandas as pd

# Lines parsed at a time while loading: a few hundred MB of Python objects at most.
CHUNK = 250_000


def strategy(t: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Per step: the strategy_evolution view's numbers."""
    t = t.assign(correct_i=t["correct"].astype(int))
    per_step = t.groupby("step").agg(
        trajectories=("correct", "size"),
        accuracy=("correct_i", "mean"),
        parallel_ratio=("parallel", "mean"),
        mean_reward=("reward", "mean"),
    )
    per_step["accuracy_parallel"] = t[t["parallel"]].groupby("step")["correct_i"].mean()
    per_step["accuracy_sequential"] = t[~t["parallel"]].groupby("step")["correct_i"].mean()
    g = b.groupby("step")
    per_step["rel_position_mean"] = g["rel_position"].mean()
    per_step["rel_position_q1"] = g["rel_position"].quantile(0.25)
    per_step["rel_position_median"] = g["rel_position"].median()
    per_step["rel_position_q3"] = g["rel_position"].quantile(0.75)
    per_step["exploration_share"] = g["exploration"].mean()
    return per_step.reset_index()


def comparison(t: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Per run: the run_comparison view's numbers."""
    t = t.assign(correct_i=t["correct"].astype(int))
    per_run = t.groupby("run_id", observed=True).agg(
        steps=("step", "nunique"),
        trajectories=("correct", "size"),
        accuracy=("correct_i", "mean"),
        parallel_ratio=("parallel", "mean"),
        mean_reward=("reward", "mean"),
    )
    g = b.groupby("run_id", observed=True)
    per_run["rel_position_mean"] = g["rel_position"].mean()
    per_run["exploration_share"] = g["exploration"].mean()
    return per_run.reset_index()


def load(dump: str):
    """The trajectories' and the blocks' projected columns, read from the dump chunk by chunk."""
    trajectories, blocks = [], []
    for chunk in pd.read_json(dump, lines=True, chunksize=CHUNK):
        trajectories.append(pd.DataFrame({
            "run_id": chunk["run_id"],
            "step": chunk["step"].astype("int32"),
            "correct": chunk["correct"].astype(bool),
            "reward": chunk["reward"].astype("float64"),
            "parallel": chunk["blocks"].str.len() > 0,
        }))
        exploded = chunk[["run_id", "step", "blocks"]].explode("blocks").dropna(subset=["blocks"])
        parts = pd.DataFrame(exploded["blocks"].tolist())
        blocks.append(pd.DataFrame({
            "run_id": exploded["run_id"].to_numpy(),
            "step": exploded["step"].to_numpy().astype("int32"),
            "rel_position": parts["rel_position"].astype("float64").to_numpy(),
            "exploration": (parts["role"] == "exploration").astype("int8").to_numpy(),
        }))
    t = pd.concat(trajectories, ignore_index=True)
    b = pd.concat(blocks, ignore_index=True)
    runs = pd.CategoricalDtype(sorted(t["run_id"].unique()))
    return t.astype({"run_id": runs}), b.astype({"run_id": runs})


def timed(query, times: int):
    """One warm-up, then `times` runs of query(); the median seconds and the last result."""
    query()
    seconds = []
    for _ in range(times):
        started = time.perf_counter()
        result = query()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), result


def one_run(t: pd.DataFrame, b: pd.DataFrame, run: str) -> pd.DataFrame:
    """The strategy evolution of one run, from all the trajectories."""
    return strategy(t[t["run_id"] == run], b[b["run_id"] == run])


COMPARISON_KEYS = ("run_id", "steps", "trajectories", "accuracy", "parallel_ratio", "mean_reward",
                   "rel_position_mean", "exploration_share")


def comparison_records(per_run: pd.DataFrame) -> list:
    """The comparison's rows as JSON objects, full precision, null where NaN, by run_id."""
    def value(key, v):
        if key == "run_id":
            return str(v)
        if key in ("steps", "trajectories"):
            return int(v)
        v = float(v)
        return None if math.isnan(v) else v

    rows = [{k: value(k, r[k]) for k in COMPARISON_KEYS} for r in per_run.to_dict("records")]
    return sorted(rows, key=lambda r: r["run_id"])


def main() -> None:
    dump, run = sys.argv[1], sys.argv[2]
    started = time.perf_counter()
    t, b = load(dump)
    load_s = time.perf_counter() - started

    strategy_s, series = timed(lambda: one_run(t, b, run), 9)
    comparison_s, per_run = timed(lambda: comparison(t, b), 5)

    print(json.dumps({
        "pandas": pd.__version__,
        "load_s": load_s,
        "strategy_s": strategy_s,
        "comparison_s": comparison_s,
        "strategy": json.loads(series.to_json(orient="records")),
        "comparison": comparison_records(per_run),
    }))


if __name__ == "__main__":
    main()
