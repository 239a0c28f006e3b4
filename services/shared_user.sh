#!/usr/bin/env bash
# Build-time step of the jupyter and verl images (services/*/Dockerfile). The containers run as
# HOST_UID:HOST_GID (docker-compose.yml), an id the image has no account for, and every process, however
# started, creates group-writable files (umask 0002): bash through BASH_ENV (set by the Dockerfile:
# `docker compose exec verl bash run_ppo.sh`) and bash.bashrc (interactive shells); Python through the venv's
# .pth file (install_lock.sh --shared-umask); JupyterLab and Ray through services/entrypoint.sh.
# HOME=/home/stack is sticky and world-writable (caches, Jupyter runtime files); /cache/huggingface is the
# mount point of the shared HF cache volume, whose mode a new volume copies.
#
#   shared_user.sh [FOLDER ...]    # also create these folders (the image's working directory)
set -euo pipefail

printf 'umask 0002\n' >/etc/profile.d/umask-shared.sh
printf '. /etc/profile.d/umask-shared.sh\n' >>/etc/bash.bashrc
mkdir -p /cache/huggingface /home/stack "$@"
chmod 0777 /cache/huggingface
chmod 1777 /home/stack
