"""Ingest rate of MLflow's `log_batch` against one tracking server (prl's /mlflow or `mlflow server`).

    bench_mlflow_log_batch.py URI POINTS CLIENTS

Each of CLIENTS processes opens a run of its own and logs POINTS metric points with
MlflowClient.log_batch, 1,000 per request (MLflow's limit: ten metrics over 100 steps), one
request at a time, as a training loop's logger does. Prints one JSON line: points/s over all
clients, from the first request to the last answer, and the slowest request.
"""

import json
import sys
import time
from multiprocessing import Pool

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

KEYS = ["loss", "reward", "accuracy", "lr", "entropy", "kl", "clip_frac", "grad_norm", "len", "parallel_ratio"]


def one_client(args):
    uri, points, index = args
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("log-batch-bench")
    experiment_id = experiment.experiment_id if experiment else client.create_experiment("log-batch-bench")
    run = client.create_run(experiment_id, run_name=f"client-{index}")
    now = int(time.time() * 1000)
    batches = []
    batch = []
    for step in range(points // len(KEYS)):
        for i, key in enumerate(KEYS):
            batch.append(Metric(key, step * 0.001 + i, now + step, step))
            if len(batch) == 1000:
                batches.append(batch)
                batch = []
    started = time.perf_counter()
    slowest = 0.0
    for b in batches:
        t = time.perf_counter()
        client.log_batch(run.info.run_id, metrics=b)
        slowest = max(slowest, time.perf_counter() - t)
    finished = time.perf_counter()
    client.set_terminated(run.info.run_id)
    return started, finished, slowest, sum(len(b) for b in batches)


def main():
    uri, points, clients = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    # The experiment exists before the clients race to make it.
    probe = MlflowClient(uri)
    if probe.get_experiment_by_name("log-batch-bench") is None:
        probe.create_experiment("log-batch-bench")
    with Pool(clients) as pool:
        results = pool.map(one_client, [(uri, points, i) for i in range(clients)])
    started = min(r[0] for r in results)
    finished = max(r[1] for r in results)
    total = sum(r[3] for r in results)
    print(json.dumps({
        "clients": clients,
        "points": total,
        "seconds": finished - started,
        "points_per_second": total / (finished - started),
        "slowest_request_ms": 1000 * max(r[2] for r in results),
    }))


if __name__ == "__main__":
    main()
