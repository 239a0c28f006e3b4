#!/usr/bin/env bash
# Start the MLflow tracking server with the right backend store, then hand over to it (`mlflow server "$@"`).
#
#   entrypoint.sh --host=0.0.0.0 --port=5000 --serve-artifacts --artifacts-destination=/mlflow/artifacts ...
#
# Backend store: PostgreSQL when the `postgres` compose profile runs the database (its host, MLFLOW_DB_HOST,
# default mlflow-db, resolves on the compose network), else SQLite in MLFLOW_DATA_DIR (default /mlflow, the
# mlflow-data volume). The URI goes to MLflow through MLFLOW_BACKEND_STORE_URI, so the database password never
# shows in the process list or the log. Env for PostgreSQL: POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB.
set -euo pipefail

data_dir=${MLFLOW_DATA_DIR:-/mlflow}
db_host=${MLFLOW_DB_HOST:-mlflow-db}

if [[ -n "${MLFLOW_BACKEND_STORE_URI:-}" ]]; then
    echo "mlflow: backend store from MLFLOW_BACKEND_STORE_URI"
elif getent hosts "${db_host}" >/dev/null; then
    : "${POSTGRES_PASSWORD:?the postgres profile is on (${db_host} resolves) but POSTGRES_PASSWORD is empty: set it in .env}"
    password=$(python -c 'import os, urllib.parse; print(urllib.parse.quote(os.environ["POSTGRES_PASSWORD"], safe=""))')
    user=${POSTGRES_USER:-mlflow}
    db=${POSTGRES_DB:-mlflow}
    export MLFLOW_BACKEND_STORE_URI="postgresql+psycopg://${user}:${password}@${db_host}:5432/${db}"
    echo "mlflow: backend store PostgreSQL ${user}@${db_host}:5432/${db}"
else
    mkdir -p "${data_dir}"
    export MLFLOW_BACKEND_STORE_URI="sqlite:///${data_dir}/mlflow.db"
    echo "mlflow: backend store SQLite ${data_dir}/mlflow.db"
fi

exec mlflow server "$@"
