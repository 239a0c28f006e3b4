#!/usr/bin/env bash
# Start the MLflow tracking server with the chosen backend store and authentication, then hand over to it
# (`mlflow server "$@"`); refuse to start, with the fix, when a setting cannot work.
#
#   entrypoint.sh --host=0.0.0.0 --port=5000 --serve-artifacts --artifacts-destination=/mlflow/artifacts ...
#
# MLFLOW_BACKEND=sqlite|postgres and MLFLOW_AUTH=on|off|auto come from .env (docs/operations.md: "Security", "PostgreSQL
# instead of SQLite"). The store URI and the admin password reach MLflow through its environment, never the
# command line or the log.
set -euo pipefail

die() {
    echo "mlflow: error: $*" >&2
    exit 1
}

data_dir=${MLFLOW_DATA_DIR:-/mlflow}
mkdir -p "${data_dir}"

case "${MLFLOW_BACKEND:-sqlite}" in
sqlite)
    export MLFLOW_BACKEND_STORE_URI="sqlite:///${data_dir}/mlflow.db"
    echo "mlflow: backend store SQLite ${data_dir}/mlflow.db"
    ;;
postgres)
    db_host=${MLFLOW_DB_HOST:-mlflow-db}
    db_port=${MLFLOW_DB_PORT:-5432}
    wait_s=${MLFLOW_DB_WAIT_S:-30}
    [[ -n "${POSTGRES_PASSWORD:-}" ]] || die "MLFLOW_BACKEND=postgres but POSTGRES_PASSWORD is empty: set it in .env"
    # TCP reachability, retried for wait_s (the database may still be starting); credentials are checked by MLflow.
    if ! python - "${db_host}" "${db_port}" "${wait_s}" <<'EOF'; then
import socket, sys, time
host, port, deadline = sys.argv[1], int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
while True:
    try:
        socket.create_connection((host, port), timeout=3).close()
        break
    except OSError as exc:
        if time.monotonic() > deadline:
            sys.exit(f"{host}:{port}: {exc}")
        time.sleep(1)
EOF
        die "MLFLOW_BACKEND=postgres but the database ${db_host}:${db_port} did not answer within ${wait_s}s." \
            "Start it with the profile (docker compose --profile postgres up -d, or COMPOSE_PROFILES=postgres in" \
            ".env), or set MLFLOW_BACKEND=sqlite. Not starting on an empty SQLite store instead."
    fi
    password=$(python -c 'import os, urllib.parse; print(urllib.parse.quote(os.environ["POSTGRES_PASSWORD"], safe=""))')
    user=${POSTGRES_USER:-mlflow}
    db=${POSTGRES_DB:-mlflow}
    export MLFLOW_BACKEND_STORE_URI="postgresql+psycopg://${user}:${password}@${db_host}:${db_port}/${db}"
    echo "mlflow: backend store PostgreSQL ${user}@${db_host}:${db_port}/${db}"
    ;;
*)
    die "MLFLOW_BACKEND=${MLFLOW_BACKEND} is not a backend: use sqlite or postgres (.env)"
    ;;
esac

bind=${BIND_ADDRESS:-127.0.0.1}
auth=${MLFLOW_AUTH:-auto}
case "${auth}" in
auto)
    case "${bind}" in
    127.* | localhost | ::1 | "[::1]") auth=off ;;
    *) auth=on ;;
    esac
    ;;
on | off) ;;
*) die "MLFLOW_AUTH=${auth} is not a setting: use on, off or auto (.env)" ;;
esac

if [[ "${auth}" == on ]]; then
    user=${MLFLOW_TRACKING_USERNAME:-}
    password=${MLFLOW_TRACKING_PASSWORD:-}
    why="MLflow authentication is on (MLFLOW_AUTH=${MLFLOW_AUTH:-auto}, BIND_ADDRESS=${bind})"
    [[ -n "${user}" ]] || die "${why} but MLFLOW_TRACKING_USERNAME is empty: set it in .env"
    [[ ${#password} -ge 12 ]] ||
        die "${why} but MLFLOW_TRACKING_PASSWORD is empty or shorter than 12 characters: set it in .env" \
            "(generate one: openssl rand -hex 24)"
    [[ "${password}" != password1234 ]] || die "${why}: MLFLOW_TRACKING_PASSWORD is MLflow's old public default: set another in .env"
    if [[ -z "${MLFLOW_FLASK_SERVER_SECRET_KEY:-}" ]]; then
        key_file=${data_dir}/flask_secret_key
        if [[ ! -s "${key_file}" ]]; then
            (umask 077 && python -c 'import secrets; print(secrets.token_hex(32))' >"${key_file}")
        fi
        MLFLOW_FLASK_SERVER_SECRET_KEY=$(<"${key_file}")
        export MLFLOW_FLASK_SERVER_SECRET_KEY
    fi
    export MLFLOW_AUTH_CONFIG_PATH=${data_dir}/basic_auth.ini
    (
        umask 077
        cat >"${MLFLOW_AUTH_CONFIG_PATH}" <<EOF
# Written by services/mlflow/entrypoint.sh at every start; edit .env instead.
[mlflow]
default_permission = READ
database_uri = sqlite:///${data_dir}/basic_auth.db
admin_username = ${user}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
EOF
    )
    # The admin password reaches MLflow through its environment variable, never a file or the command line.
    export MLFLOW_AUTH_ADMIN_USERNAME=${user} MLFLOW_AUTH_ADMIN_PASSWORD=${password}
    set -- --app-name basic-auth "$@"
    echo "mlflow: authentication on (basic-auth; admin user ${user}; users in ${data_dir}/basic_auth.db)"
else
    echo "mlflow: authentication off (published on ${bind} only; MLFLOW_AUTH=on turns it on)"
fi

exec mlflow server "$@"
