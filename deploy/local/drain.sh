#!/usr/bin/env bash
# Takes one replica of the deploy/local/start.sh cluster out of service the
# way Kubernetes takes out a pod: first the balancer stops sending it new
# calls (nginx marks it `down` and reloads; in Kubernetes, the endpoint
# removal that the preStop sleep waits for), then, after MD_DRAIN_DELAY
# seconds, SIGTERM starts its drain: calls in flight finish within its
# --grace_seconds and it exits 0. Waits for the exit, and prints its status.
#
#   deploy/local/drain.sh K       # K: the replica's number (replica-K)
#
# Environment: MD_RUN_DIR (default: /tmp/moondream-local), MD_DRAIN_DELAY
# (default: 1 s), MD_STOP_TIMEOUT (default: 40 s), MD_NGINX.
#
# A bare SIGTERM (no step 1) also drains without cutting a call in flight,
# but nginx may still send a new call on a kept-alive connection in the
# moment the replica's GOAWAY is on its way: gRPC then cancels that call
# before any work and nginx, which sees an HTTP 200 with a grpc-status,
# cannot retry it (deploy/README.md, "Drain, measured").
set -euo pipefail

K="${1:-}"
[[ "$K" =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 K   (drain replica-K)" >&2; exit 2; }
RUN="${MD_RUN_DIR:-${TMPDIR:-/tmp}/moondream-local}"
DELAY="${MD_DRAIN_DELAY:-1}"
STOP_TIMEOUT="${MD_STOP_TIMEOUT:-40}"
NGINX="${MD_NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}"
die() { echo "drain.sh: $*" >&2; exit 1; }

[ -f "$RUN/nginx.conf" ] || die "no cluster in $RUN (deploy/local/start.sh first)"
pid="$(cat "$RUN/replica-$K.pid" 2>/dev/null)" || die "no replica-$K in $RUN"
kill -0 "$pid" 2>/dev/null || die "replica-$K ($pid) is not running"

# 1. Out of both upstreams: its server lines end in "# replica-K".
sed -i -E "s/^( *server [^;]*[^;n ])( *);( *# replica-$K)$/\1 down\2;\3/" \
  "$RUN/nginx.conf"
grep -q "down; *# replica-$K\$" "$RUN/nginx.conf" || die "could not mark replica-$K down"
"$NGINX" -q -p "$RUN/" -e "$RUN/logs/error.log" -c "$RUN/nginx.conf" -s reload \
  || die "nginx did not reload"
echo "drain.sh: replica-$K marked down in nginx; SIGTERM in ${DELAY}s"
sleep "$DELAY"

# 2. The drain.
echo "drain.sh: SIGTERM to replica-$K"
kill -TERM "$pid"
end=$((SECONDS + STOP_TIMEOUT))
until [ -f "$RUN/replica-$K.exit" ]; do
  [ "$SECONDS" -lt "$end" ] || die "replica-$K still running after ${STOP_TIMEOUT}s"
  sleep 0.05
done
echo "drain.sh: replica-$K exit status $(cat "$RUN/replica-$K.exit")"
