#!/usr/bin/env bash
# Run podman's container healthchecks without systemd (scripts/engine/podman.sh starts this in the background).
#
#   bash scripts/engine/healthchecks.sh        # forever: every TICK s for starting containers, every SLOW s after
#
# Podman schedules healthchecks with systemd timers; without systemd no check ever runs, containers stay
# "starting" and Compose's `depends_on: condition: service_healthy` waits forever. This loop runs
# `podman healthcheck run` itself: every TICK seconds while a container is starting (so the stack is up as soon
# as it is healthy), every SLOW seconds once it is healthy or unhealthy (a Ray status check costs a CPU second).
set -euo pipefail

TICK=${TICK:-2}
SLOW=${SLOW:-20}
declare -A last=()

while true; do
    now=${SECONDS}
    while IFS='|' read -r id status; do
        [[ -n "${id}" ]] || continue
        if [[ "${status}" == *"(starting)"* ]] || ((now - ${last[${id}]:-0} >= SLOW)); then
            last[${id}]=${now}
            podman healthcheck run "${id}" >/dev/null 2>&1 &
        fi
    done < <(podman ps --filter status=running --format '{{.ID}}|{{.Status}}' 2>/dev/null || true)
    wait
    sleep "${TICK}"
done
