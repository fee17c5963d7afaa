#!/usr/bin/env bash
# The SQL of prl-api's query macros (sqlx::query!, query_scalar!, ...) is checked at compile time
# against what api/.sqlx/ records of each statement: its parameter and column types and
# nullability, as PostgreSQL described them for a database with every migration applied. This
# script makes that description: a throwaway PostgreSQL, the migrations, then `cargo check` of
# prl-api with the macros online (PRL_SQLX_DATABASE_URL, see api/sqlx.toml), saving what they saw.
#
#   scripts/sqlx_prepare.sh           rewrite api/.sqlx/ (after changing a query or a migration)
#   scripts/sqlx_prepare.sh --check   fail if api/.sqlx/ differs from what the code and the
#                                     migrations give now
#   scripts/sqlx_prepare.sh --check cargo clippy ...
#                                     the same, compiling with that command instead of
#                                     `cargo check -p prl-api`: deploy/test.sh runs its clippy
#                                     this way, so prl-api is not compiled twice
set -euo pipefail

MODE=write
case "${1:-}" in
  "") ;;
  --check) MODE=check; shift ;;
  *) echo "sqlx_prepare.sh: unknown argument: $1 (--check or nothing)" >&2; exit 2 ;;
esac
if [ $# -gt 0 ] && [ "$1" != cargo ]; then
  echo "sqlx_prepare.sh: after --check, a cargo command or nothing, not: $*" >&2
  exit 2
fi
BUILD=("$@")
[ ${#BUILD[@]} -gt 0 ] || BUILD=(cargo check --locked --quiet -p prl-api --all-targets)

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PGBIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
[ -x "$PGBIN/initdb" ] || PGBIN="$(dirname "$(command -v initdb 2>/dev/null || echo /none/initdb)")"
[ -x "$PGBIN/initdb" ] || { echo "sqlx_prepare.sh: no PostgreSQL server binaries (initdb) found" >&2; exit 2; }

WORK="$(mktemp -d)"
chmod 755 "$WORK"
# PostgreSQL refuses to run as root: then the cluster belongs to nobody.
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u nobody -- "$@"; else "$@"; fi
}
stop() {
  as_owner "$PGBIN/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap stop EXIT
mkdir "$WORK/data" "$WORK/queries"
[ "$(id -u)" -ne 0 ] || chown nobody "$WORK/data"
# A password, not trust: other local users could reach the cluster while it runs.
PASSWORD="$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
(umask 077; echo "$PASSWORD" > "$WORK/password")
[ "$(id -u)" -ne 0 ] || chown nobody "$WORK/password"
as_owner "$PGBIN/initdb" -D "$WORK/data" -U postgres --auth=scram-sha-256 --pwfile="$WORK/password" \
  --no-sync -E UTF8 >/dev/null
rm "$WORK/password"
PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
as_owner "$PGBIN/pg_ctl" -D "$WORK/data" -l "$WORK/data/server.log" -w \
  -o "-p $PORT -k $WORK/data -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
URL="postgres://postgres:$PASSWORD@127.0.0.1:$PORT/postgres"
for migration in api/migrations/*.sql; do
  psql -q -X -1 -v ON_ERROR_STOP=1 "$URL" -f "$migration" >/dev/null
done

# The macros run when prl-api compiles; an unchanged crate would not compile again.
touch api/src/lib.rs
PRL_SQLX_DATABASE_URL="$URL" SQLX_OFFLINE_DIR="$WORK/queries" "${BUILD[@]}"

if [ "$MODE" = check ]; then
  if ! diff -r -q api/.sqlx "$WORK/queries"; then
    echo "sqlx_prepare.sh: api/.sqlx/ no longer matches the queries and migrations: run scripts/sqlx_prepare.sh and commit it" >&2
    exit 1
  fi
  echo "api/.sqlx/ is current ($(ls "$WORK/queries" | wc -l) statements)"
else
  rm -rf api/.sqlx
  cp -r "$WORK/queries" api/.sqlx
  echo "api/.sqlx/: $(ls api/.sqlx | wc -l) statements"
fi
