#!/bin/sh
# One-shot: create Temporal's two PostgreSQL databases and bring their schemas up to date.
# Safe to re-run: `create` and `setup-schema` are allowed to fail when the database or its
# version table already exist; `update-schema` must succeed, so a broken database still fails.
set -eu

: "${POSTGRES_SEEDS:?}" "${POSTGRES_USER:?}" "${SQL_PASSWORD:?}"
DB_PORT="${DB_PORT:-5432}"
SCHEMA_ROOT=/etc/temporal/schema/postgresql/v12

echo "waiting for PostgreSQL at ${POSTGRES_SEEDS}:${DB_PORT}"
until nc -z -w 2 "${POSTGRES_SEEDS}" "${DB_PORT}"; do sleep 1; done

sql_tool() {
  temporal-sql-tool --plugin postgres12 --ep "${POSTGRES_SEEDS}" -u "${POSTGRES_USER}" \
    -p "${DB_PORT}" "$@"
}

for pair in temporal:temporal temporal_visibility:visibility; do
  db="${pair%%:*}"
  schema="${pair##*:}"
  sql_tool --db "${db}" create || echo "database ${db} already exists"
  sql_tool --db "${db}" setup-schema -v 0.0 || echo "schema of ${db} already set up"
  sql_tool --db "${db}" update-schema -d "${SCHEMA_ROOT}/${schema}/versioned"
done
echo "temporal schema ready"
