#!/usr/bin/env bash
# Stops what deploy/local/start.sh started, from the pid files in its run
# directory: nginx first (so no new calls arrive), then every replica with
# SIGTERM (each drains: in-flight requests finish within its --grace_seconds),
# SIGKILL for any still running after MD_STOP_TIMEOUT seconds.
#
#   deploy/local/stop.sh
#
# Environment: MD_RUN_DIR (default: /tmp/moondream-local), MD_STOP_TIMEOUT
# (default: 40, more than the default --grace_seconds of 30).
set -uo pipefail

RUN="${MD_RUN_DIR:-${TMPDIR:-/tmp}/moondream-local}"
STOP_TIMEOUT="${MD_STOP_TIMEOUT:-40}"
[ -d "$RUN" ] || { echo "stop.sh: no run directory $RUN: nothing to stop"; exit 0; }

# The pid in FILE, if that process is alive and is what FILE says (a pid can
# be reused by an unrelated process after its owner exited).
live_pid() {
  local file="$1" what="$2" pid
  [ -f "$file" ] || return 1
  pid="$(cat "$file" 2>/dev/null)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$what" || return 1
  echo "$pid"
}

# Waits up to $2 seconds for the pids in $1 to go.
wait_gone() {
  local pids="$1" end=$((SECONDS + $2)) p left
  while :; do
    left=""
    for p in $pids; do kill -0 "$p" 2>/dev/null && left+=" $p"; done
    [ -z "$left" ] && return 0
    [ "$SECONDS" -ge "$end" ] && { echo "$left"; return 1; }
    sleep 0.1
  done
}

if pid="$(live_pid "$RUN/nginx.pid" nginx)"; then
  kill -QUIT "$pid"  # graceful: finishes the calls it is proxying
  if ! wait_gone "$pid" 10 > /dev/null; then kill -KILL "$pid" 2>/dev/null; fi
  echo "stop.sh: nginx ($pid) stopped"
fi
rm -f "$RUN/nginx.pid"

pids=""
for f in "$RUN"/replica-*.pid; do
  [ -f "$f" ] || continue
  if pid="$(live_pid "$f" moondream-server)"; then
    kill -TERM "$pid" && pids+=" $pid"
  fi
done
if [ -n "$pids" ]; then
  if left="$(wait_gone "$pids" "$STOP_TIMEOUT")"; then
    echo "stop.sh: replicas ($pids ) drained and exited"
  else
    echo "stop.sh: replicas ($left ) still running after ${STOP_TIMEOUT}s: SIGKILL"
    for p in $left; do kill -KILL "$p" 2>/dev/null; done
    wait_gone "$left" 5 > /dev/null
  fi
fi
# The waiters write replica-K.exit as their replica goes; give them a moment.
for f in "$RUN"/replica-*.pid; do
  [ -f "$f" ] || continue
  e="${f%.pid}.exit"
  for _ in $(seq 1 20); do [ -f "$e" ] && break; sleep 0.05; done
  [ -f "$e" ] && echo "stop.sh: $(basename "${f%.pid}") exit status $(cat "$e")"
  rm -f "$f"
done
exit 0
