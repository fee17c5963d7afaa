#!/usr/bin/env bash
# MLflow's log_batch through prl's /mlflow and through `mlflow server` (the same pinned client,
# scripts/requirements-mlflow.txt), side by side in one run on this machine:
#   prl          target/release/prl up (its private PostgreSQL, fsync on), no trainers
#   mlflow/sqlite    `mlflow server` on a SQLite file, as it starts by default
#   mlflow/postgres  `mlflow server` on a database of the same PostgreSQL cluster prl uses
# Each is sent POINTS points by one client, then by CLIENTS clients at once; the figures and
# prl's ratio to each are printed (BENCHMARKS.md records them).
#
#   scripts/bench_mlflow.sh [POINTS] [CLIENTS]     (default 100000 and 4)
set -euo pipefail
POINTS="${1:-100000}"
CLIENTS="${2:-4}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$(bash "$ROOT/scripts/python_venv.sh" mlflow)"
PRL="$ROOT/target/release/prl"
[ -x "$PRL" ] || { echo "bench_mlflow.sh: build $PRL first (cargo build --release --bin prl)" >&2; exit 2; }

WORK="$(mktemp -d)"
chmod 755 "$WORK" # the private PostgreSQL may run as a user of its own
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_for() { # url pid log
  for _ in $(seq 600); do
    curl -sf "$1" >/dev/null && return 0
    kill -0 "$2" 2>/dev/null || { cat "$3" >&2; exit 1; }
    sleep 0.2
  done
  echo "bench_mlflow.sh: $1 did not answer" >&2; exit 1
}

PRL_PORT="$(free_port)"
"$PRL" --home "$WORK/prl" up --trainers 0 --port "$PRL_PORT" >"$WORK/prl.log" 2>&1 &
PIDS+=($!)
wait_for "http://127.0.0.1:$PRL_PORT/healthz" $! "$WORK/prl.log"
eval "$("$PRL" --home "$WORK/prl" env)"
# SQLAlchemy names the scheme and driver: postgresql+psycopg2://.
MLFLOW_DB="postgresql+psycopg2://${DATABASE_URL#*://}"
MLFLOW_DB="${MLFLOW_DB%/*}/mlflow"
psql -q -X "$DATABASE_URL" -c "CREATE DATABASE mlflow" >/dev/null

SQLITE_PORT="$(free_port)"
"$VENV/bin/mlflow" server --backend-store-uri "sqlite:///$WORK/mlflow.db" \
  --artifacts-destination "$WORK/mlruns-sqlite" --host 127.0.0.1 --port "$SQLITE_PORT" \
  >"$WORK/mlflow-sqlite.log" 2>&1 &
PIDS+=($!)
wait_for "http://127.0.0.1:$SQLITE_PORT/health" $! "$WORK/mlflow-sqlite.log"
PG_PORT="$(free_port)"
"$VENV/bin/mlflow" server --backend-store-uri "$MLFLOW_DB" \
  --artifacts-destination "$WORK/mlruns-pg" --host 127.0.0.1 --port "$PG_PORT" \
  >"$WORK/mlflow-pg.log" 2>&1 &
PIDS+=($!)
wait_for "http://127.0.0.1:$PG_PORT/health" $! "$WORK/mlflow-pg.log"

run() { # name uri clients
  MLFLOW_TRACKING_TOKEN="$PRL_TOKEN" "$VENV/bin/python" "$ROOT/scripts/bench_mlflow_log_batch.py" \
    "$2" "$POINTS" "$3" | tail -n 1 | python3 -c "import json,sys; r=json.load(sys.stdin); print('$1', r['clients'], round(r['points_per_second']), round(r['slowest_request_ms']))"
}
RESULTS="$WORK/results"
for clients in 1 "$CLIENTS"; do
  run prl "http://127.0.0.1:$PRL_PORT/mlflow" "$clients" | tee -a "$RESULTS"
  run mlflow/sqlite "http://127.0.0.1:$SQLITE_PORT" "$clients" | tee -a "$RESULTS"
  run mlflow/postgres "http://127.0.0.1:$PG_PORT" "$clients" | tee -a "$RESULTS"
done
python3 - "$RESULTS" "$POINTS" <<'PY'
import sys
rows = [line.split() for line in open(sys.argv[1])]
rate = {(r[0], int(r[1])): int(r[2]) for r in rows}
slowest = {(r[0], int(r[1])): int(r[3]) for r in rows}
print(f"\nlog_batch, {sys.argv[2]} points per client, 1,000 per request")
print(f"{'server':<16} {'clients':>7} {'points/s':>10} {'slowest ms':>11} {'prl / it':>9}")
for (server, clients), r in sorted(rate.items(), key=lambda kv: (kv[0][1], kv[0][0] != 'prl', kv[0][0])):
    ratio = rate[('prl', clients)] / r
    print(f"{server:<16} {clients:>7} {r:>10,} {slowest[(server, clients)]:>11,} {ratio:>8.1f}x")
PY
