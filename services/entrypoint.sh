#!/usr/bin/env bash
# Entrypoint of the jupyter and verl images: refuse to run as root, set umask 0002, then run the command.
#
#   ENTRYPOINT ["/opt/stack/entrypoint.sh"]  + the service's command, e.g. ray-node.sh head / jupyter lab ...
#
# Compose runs both containers as HOST_UID:HOST_GID (`user:` in docker-compose.yml), so everything they write
# to models/, data/ and the HF cache is yours; umask 0002 keeps it writable by your group too. Processes that
# `docker compose exec` starts skip this script: they get the same user from Compose and umask 0002 from the
# image (a .pth file for Python, BASH_ENV and bash.bashrc for bash).
set -euo pipefail

if [[ "$(id -u)" == 0 ]]; then
    cat >&2 <<'MSG'
entrypoint: refusing to run as root (HOST_UID=0 in .env). Files written to models/, data/ and the Hugging Face
cache would belong to root, and JupyterLab refuses root. Set HOST_UID and HOST_GID in .env to the ids of the
non-root user who owns this checkout (`id -u` / `id -g` as that user; on a root-only machine create one:
useradd -m researcher && chown -R researcher: . && then use its ids), then: docker compose up -d
MSG
    exit 2
fi
umask 0002
mkdir -p "${HOME}"
exec "$@"
