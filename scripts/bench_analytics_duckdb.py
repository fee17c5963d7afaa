"""The DuckDB peer of prl's analytics benchmark: the JSONL dump (one trajectory per line, its
blocks' relative positions and roles inside) is first turned into two Parquet files holding only
the projected columns, sorted by run and step (the load, reported apart), then the
strategy-evolution numbers of one run and the cross-run comparison are computed by SQL over
those files, warm, in one connection with DuckDB's default threads. The numbers and their
definitions are bench_analytics_pandas.py's.

Usage: bench_analytics_duckdb.py DUMP.jsonl RUN_ID  -> prints a JSON report on stdout.
"""

import json
import os
import statistics
import sys
import tempfile
import time

import duckdb

# The dump's columns with their types, so nothing depends on DuckDB's inference.
COLUMNS = {
    "run_id": "UUID",
    "step": "BIGINT",
    "correct": "BOOLEAN",
    "reward": "DOUBLE",
    "format_valid": "BOOLEAN",
    "blocks": "STRUCT(rel_position DOUBLE, role VARCHAR)[]",
}

# Per step, the strategy_evolution view's numbers (the pandas script's strategy()).
STRATEGY = """
WITH t AS (
    SELECT step,
           count(*) AS trajectories,
           avg(correct::INTEGER) AS accuracy,
           avg(parallel::INTEGER) AS parallel_ratio,
           avg(reward) AS mean_reward,
           avg(correct::INTEGER) FILTER (WHERE parallel) AS accuracy_parallel,
           avg(correct::INTEGER) FILTER (WHERE NOT parallel) AS accuracy_sequential
    FROM read_parquet($trajectories) WHERE run_id = $run::UUID GROUP BY step
), b AS (
    SELECT step,
           avg(rel_position) AS rel_position_mean,
           quantile_cont(rel_position, 0.25) AS rel_position_q1,
           median(rel_position) AS rel_position_median,
           quantile_cont(rel_position, 0.75) AS rel_position_q3,
           avg((role = 'exploration')::INTEGER) AS exploration_share
    FROM read_parquet($blocks) WHERE run_id = $run::UUID GROUP BY step
)
SELECT t.*, b.* EXCLUDE (step) FROM t LEFT JOIN b USING (step) ORDER BY step
"""

# Per run, the run_comparison view's numbers (the pandas script's comparison()).
COMPARISON = """
WITH t AS (
    SELECT run_id,
           count(DISTINCT step) AS steps,
           count(*) AS trajectories,
           avg(correct::INTEGER) AS accuracy,
           avg(parallel::INTEGER) AS parallel_ratio,
           avg(reward) AS mean_reward
    FROM read_parquet($trajectories) GROUP BY run_id
), b AS (
    SELECT run_id,
           avg(rel_position) AS rel_position_mean,
           avg((role = 'exploration')::INTEGER) AS exploration_share
    FROM read_parquet($blocks) GROUP BY run_id
)
SELECT t.*, b.* EXCLUDE (run_id) FROM t LEFT JOIN b USING (run_id) ORDER BY run_id
"""


def to_parquet(con: duckdb.DuckDBPyConnection, dump: str, directory: str) -> dict:
    """Writes the trajectories' and the blocks' projected columns as Parquet; their paths."""
    paths = {
        "trajectories": os.path.join(directory, "trajectories.parquet"),
        "blocks": os.path.join(directory, "blocks.parquet"),
    }
    con.execute(
        "CREATE TEMP TABLE dump AS SELECT * FROM read_json($dump, format = 'newline_delimited', "
        "columns = $columns)",
        {"dump": dump, "columns": COLUMNS},
    )
    # Sorted by run and step, so a one-run query skips the other runs' row groups.
    con.execute(
        f"""COPY (SELECT run_id, step, correct, reward, format_valid, len(blocks) > 0 AS parallel
                  FROM dump ORDER BY run_id, step)
            TO '{paths["trajectories"]}' (FORMAT parquet)"""
    )
    con.execute(
        f"""COPY (SELECT run_id, step, b.rel_position, b.role
                  FROM (SELECT run_id, step, unnest(blocks) AS b FROM dump)
                  ORDER BY run_id, step)
            TO '{paths["blocks"]}' (FORMAT parquet)"""
    )
    con.execute("DROP TABLE dump")
    return paths


def timed(con: duckdb.DuckDBPyConnection, sql: str, params: dict, times: int):
    """One warm-up, then `times` runs of a fresh query; the median seconds and the last rows."""
    con.execute(sql, params).fetchall()
    seconds = []
    for _ in range(times):
        started = time.perf_counter()
        cursor = con.execute(sql, params)
        rows = cursor.fetchall()
        seconds.append(time.perf_counter() - started)
    columns = [d[0] for d in cursor.description]
    return statistics.median(seconds), [dict(zip(columns, row)) for row in rows]


COMPARISON_KEYS = ("run_id", "steps", "trajectories", "accuracy", "parallel_ratio", "mean_reward",
                   "rel_position_mean", "exploration_share")


def comparison_records(rows: list) -> list:
    """The comparison's rows as the pandas script reports them: run_id as a string (DuckDB
    gives a uuid.UUID), by run_id."""
    records = [{k: str(r[k]) if k == "run_id" else r[k] for k in COMPARISON_KEYS} for r in rows]
    return sorted(records, key=lambda r: r["run_id"])


def main() -> None:
    dump, run = sys.argv[1], sys.argv[2]
    con = duckdb.connect()
    with tempfile.TemporaryDirectory(prefix="prl-duckdb-") as directory:
        started = time.perf_counter()
        paths = to_parquet(con, dump, directory)
        load_s = time.perf_counter() - started

        strategy_s, series = timed(con, STRATEGY, {**paths, "run": run}, 9)
        comparison_s, per_run = timed(con, COMPARISON, paths, 5)

    print(json.dumps({
        "duckdb": duckdb.__version__,
        "load_s": load_s,
        "strategy_s": strategy_s,
        "comparison_s": comparison_s,
        "strategy": series,
        "comparison": comparison_records(per_run),
    }))


if __name__ == "__main__":
    main()
