#!/usr/bin/env bash
# Run podman's container healthchecks without systemd (scripts/engine/podman.sh starts this in the background).
#
#   bash scripts/engine/healthchecks.sh        # forever
#
# Podman schedules healthchecks with systemd timers; without systemd no check ever runs, containers stay
# "starting" and Compose's `depends_on: condition: service_healthy` waits forever. This loop runs
# `podman healthcheck run` for every running container with a healthcheck, every `interval` of that
# healthcheck, as Docker does: so `start_period` and `retries` mean what they mean on a Docker host.
set -euo pipefail

declare -A last=() interval=()

while true; do
    now=${SECONDS}
    while read -r id; do
        [[ -n "${id}" ]] || continue
        if [[ -z "${interval[${id}]:-}" ]]; then
            seconds=$(podman inspect --format \
                '{{if .Config.Healthcheck}}{{.Config.Healthcheck.Interval.Seconds}}{{else}}none{{end}}' "${id}" 2>/dev/null || true)
            seconds=${seconds%%.*}
            case "${seconds}" in
            none | "") interval[${id}]=0 ;;          # no healthcheck
            0) interval[${id}]=30 ;;                 # Docker's default interval
            *) interval[${id}]=${seconds} ;;
            esac
            last[${id}]=${now} # the first check one interval after start, as Docker runs it
        fi
        if ((interval[${id}] > 0 && now - last[${id}] >= interval[${id}])); then
            last[${id}]=${now}
            podman healthcheck run "${id}" >/dev/null 2>&1 &
        fi
    done < <(podman ps --filter status=running --format '{{.ID}}' 2>/dev/null || true)
    sleep 1
done
