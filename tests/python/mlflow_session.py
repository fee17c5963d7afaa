"""An MLflow client session against prl, as a user's training script would run it.

Run by tests/integration/mlflow.rs with the pinned `mlflow` (scripts/requirements-mlflow.txt);
MLFLOW_TRACKING_URI points at prl's /mlflow and MLFLOW_TRACKING_TOKEN holds its token. It logs a
run through the fluent API and the client (10,000 metric points in batches, params, tags, an
input dataset, an artifact), finishes it, reads everything back through MLflow's own client,
checks MLflow's errors, and prints what it saw as one JSON line for the Rust side to compare
with the log and the read models.
"""

import json
import math
import os
import sys
import tempfile
import time

import mlflow
import numpy as np
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

STEPS = 1000
KEYS = ["loss", "reward", "accuracy", "lr", "entropy", "kl", "clip_frac", "grad_norm", "len", "parallel_ratio"]


def expect_error(code, call):
    try:
        call()
    except MlflowException as e:
        assert e.error_code == code, f"expected {code}, got {e.error_code}: {e}"
        return str(e)
    raise AssertionError(f"expected {code}, the call succeeded")


def main():
    client = MlflowClient()
    experiment = mlflow.set_experiment(sys.argv[1])
    with mlflow.start_run(run_name="grpo-s1") as run:
        run_id = run.info.run_id
        mlflow.log_params({"lr": "1e-5", "rollout_n": 8, "reward": "S1"})
        mlflow.set_tags({"method": "parallel-r1", "stage": "rl"})
        mlflow.log_input(mlflow.data.from_numpy(np.arange(12).reshape(4, 3), name="gsm8k-train"), context="training")
        started = time.perf_counter()
        now = int(time.time() * 1000)
        batch = []
        for step in range(STEPS):
            for i, key in enumerate(KEYS):
                value = 1.0 / (1 + step) if key == "loss" else step * 0.001 + i
                batch.append(Metric(key, value, now + step, step))
                if len(batch) == 1000:
                    client.log_batch(run_id, metrics=batch)
                    batch = []
        elapsed = time.perf_counter() - started
        mlflow.log_metric("diverged", float("nan"), step=0)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "samples.txt")
            with open(path, "w") as f:
                f.write("<Parallel><Path>2+2=4</Path></Parallel>\n")
            mlflow.log_artifact(path, artifact_path="rollouts")
        # A param keeps its value, as in MLflow.
        changed = expect_error("INVALID_PARAMETER_VALUE", lambda: client.log_param(run_id, "lr", "3e-5"))
        client.log_param(run_id, "lr", "1e-5")

    finished = client.get_run(run_id)
    history = client.get_metric_history(run_id, "loss")
    searched = client.search_runs(
        [experiment.experiment_id],
        filter_string="metrics.loss < 0.01 and params.lr = '1e-5' and tags.method = 'parallel-r1'",
        order_by=["metrics.loss ASC"],
    )
    not_matching = client.search_runs([experiment.experiment_id], filter_string="params.lr = '2e-5'")
    found = client.search_experiments(filter_string=f"name = '{sys.argv[1]}'")
    artifacts = client.list_artifacts(run_id, "rollouts")
    with tempfile.TemporaryDirectory() as tmp:
        local = client.download_artifacts(run_id, "rollouts/samples.txt", tmp)
        with open(local) as f:
            downloaded = f.read()
    missing = expect_error("RESOURCE_DOES_NOT_EXIST", lambda: client.get_run("0" * 32))
    taken = expect_error("RESOURCE_ALREADY_EXISTS", lambda: client.create_experiment(sys.argv[1]))

    client.delete_run(run_id)
    deleted = client.search_runs([experiment.experiment_id])
    deleted_log = expect_error("INVALID_PARAMETER_VALUE", lambda: client.log_metric(run_id, "x", 1.0))
    client.restore_run(run_id)

    print(json.dumps({
        "run_id": run_id,
        "experiment_id": experiment.experiment_id,
        "status": finished.info.status,
        "end_time": finished.info.end_time,
        "params": finished.data.params,
        "tags": {k: v for k, v in finished.data.tags.items() if not k.startswith("mlflow.source")},
        "latest": {k: (None if math.isnan(v) else v) for k, v in finished.data.metrics.items()},
        "inputs": [d.dataset.name for d in finished.inputs.dataset_inputs],
        "history": [[m.step, m.value] for m in history],
        "searched": [r.info.run_id for r in searched],
        "not_matching": len(not_matching),
        "experiments_found": [e.name for e in found],
        "artifacts": [[a.path, a.is_dir, a.file_size] for a in artifacts],
        "downloaded": downloaded,
        "errors": {"changed_param": changed, "missing_run": missing, "taken_name": taken, "deleted_run": deleted_log},
        "visible_after_delete": len(deleted),
        "points_per_second": len(KEYS) * STEPS / elapsed,
    }))


if __name__ == "__main__":
    main()
