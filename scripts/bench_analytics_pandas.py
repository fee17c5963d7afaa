"""The peer of prl's analytics benchmark: the strategy-evolution numbers and the cross-run
comparison computed with pandas from a JSONL dump (one trajectory per line, its blocks' relative
positions and roles inside), which is what a user without prl would write. The load is reported
apart; each query is then timed warm, as the DuckDB peer's: one run first, then the median of 9
(strategy evolution) or 5 (comparison) runs, each recomputing everything from the loaded
DataFrame.

Usage: bench_analytics_pandas.py DUMP.jsonl RUN_ID  -> prints a JSON report on stdout.
"""

import json
import math
import statistics
import sys
import time

import pandas as pd


def strategy(t: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Per step: the strategy_evolution view's numbers."""
    t = t.assign(parallel=t["blocks"].str.len() > 0, correct_i=t["correct"].astype(int))
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
    t = t.assign(parallel=t["blocks"].str.len() > 0, correct_i=t["correct"].astype(int))
    per_run = t.groupby("run_id").agg(
        steps=("step", "nunique"),
        trajectories=("correct", "size"),
        accuracy=("correct_i", "mean"),
        parallel_ratio=("parallel", "mean"),
        mean_reward=("reward", "mean"),
    )
    g = b.groupby("run_id")
    per_run["rel_position_mean"] = g["rel_position"].mean()
    per_run["exploration_share"] = g["exploration"].mean()
    return per_run.reset_index()


def blocks_of(t: pd.DataFrame) -> pd.DataFrame:
    exploded = t[["run_id", "step", "blocks"]].explode("blocks").dropna(subset=["blocks"])
    b = pd.DataFrame(exploded["blocks"].tolist(), index=exploded.index)
    b["run_id"] = exploded["run_id"].values
    b["step"] = exploded["step"].values
    b["exploration"] = (b["role"] == "exploration").astype(int)
    return b


def timed(query, times: int):
    """One warm-up, then `times` runs of query(); the median seconds and the last result."""
    query()
    seconds = []
    for _ in range(times):
        started = time.perf_counter()
        result = query()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), result


def one_run(t: pd.DataFrame, run: str) -> pd.DataFrame:
    """The strategy evolution of one run, from all the trajectories."""
    one = t[t["run_id"] == run]
    return strategy(one, blocks_of(one))


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
    t = pd.read_json(dump, lines=True)
    load_s = time.perf_counter() - started

    strategy_s, series = timed(lambda: one_run(t, run), 9)
    comparison_s, per_run = timed(lambda: comparison(t, blocks_of(t)), 5)

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
